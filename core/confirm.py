"""The fence confirmation file: "the peer's power was verified off", for one promotion.

Written by whoever verified a power-off through the peer's BMC (hamon after
``fence_bmc off`` or a status read of off, cluster-glue's ``external/bmc``
after a verified ``off``/``reset``), read by the partition agent's promotion
gate (:mod:`hapack.ocf._gate`), the only reader. The format lives here only::

    hapack-fence-confirmation 1
    peer=node2                  the node whose power was verified off
    node=node1                  the node that verified it, the one allowed to promote
    how=fence_bmc off           what verified it (for people)
    boot=<boot id>              /proc/sys/kernel/random/boot_id of the writer
    boottime=1234.567890        CLOCK_BOOTTIME seconds when it was written

A confirmation is valid for :data:`MAX_AGE` seconds, on the node that wrote
it, in the boot that wrote it: the age is measured on CLOCK_BOOTTIME (which
no clock step, NTP slew or suspend moves backwards) and is only comparable
within one boot, so a file from another boot, from the future or older than
:data:`MAX_AGE` is refused, whatever the wall clock says. It must be a
regular file (never followed through a symlink) owned by root or this user,
writable by its owner only, complete (every line present, nothing else).

Any promotion consumes it (:func:`consume` removes it): one verified
power-off allows one promotion. An empty path disables it: nothing is
written, nothing is accepted.
"""

import os
import stat
import time

MAGIC = "hapack-fence-confirmation 1"
KEYS = ("peer", "node", "how", "boot", "boottime")
MAX_AGE = 300.0      # seconds from the verified power-off to the promotion
MAX_SIZE = 4096
BOOT_ID = "/proc/sys/kernel/random/boot_id"


class ConfirmationError(Exception):
    """A confirmation could not be written or consumed (the message says why)."""


class Confirmation:
    """A valid confirmation: ``peer`` was verified off, ``node`` may promote once."""

    __slots__ = KEYS

    def __init__(self, peer: str, node: str, how: str, boot: str, boottime: float) -> None:
        self.peer, self.node, self.how = peer, node, how
        self.boot, self.boottime = boot, boottime

    def __repr__(self) -> str:
        return f"Confirmation(peer={self.peer!r}, node={self.node!r}, how={self.how!r})"


def boot_id() -> str:
    """This boot's id, or '' when it cannot be read (then nothing is valid)."""
    try:
        with open(BOOT_ID, encoding="ascii") as handle:
            return handle.read().strip()
    except (OSError, ValueError):
        return ""


def now() -> float:
    """Seconds since boot, suspend included; never stepped."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _name(what: str, value: str) -> str:
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise ConfirmationError(f"{what} {value!r} is not a node name")
    return value


def render(peer: str, node: str, how: str, boot: str, boottime: float) -> str:
    """The file's text (every value checked: one line each, no injected keys)."""
    _name("peer", peer)
    _name("node", node)
    if peer == node:
        raise ConfirmationError(f"{node} cannot confirm its own power-off")
    how = " ".join(how.split()) or "?"
    if not how.isprintable():
        raise ConfirmationError("how must be printable text")
    micro = int(boottime * 1_000_000)  # rounded down: a fresh file is never "in the future"
    return (f"{MAGIC}\npeer={peer}\nnode={node}\nhow={how}\nboot={boot}\n"
            f"boottime={micro // 1_000_000}.{micro % 1_000_000:06d}\n")


def write(path: str, peer: str, node: str, how: str) -> bool:
    """Record that ``peer``'s power was verified off, for a promotion on ``node``.

    Atomic (a private temporary file in the same directory, renamed over the
    old one), mode 0600, never through a symlink. Returns False when
    ``path`` is empty (disabled); raises ConfirmationError when it cannot be
    written.
    """
    if not path:
        return False
    boot = boot_id()
    if not boot:
        raise ConfirmationError(f"cannot write {path}: this boot's id is unreadable")
    text = render(peer, node, how, boot, now())
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        _unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # replaces a planted symlink itself, never its target
    except OSError as exc:
        try:
            _unlink(tmp)
        except OSError:
            pass  # the directory itself is unusable: there is no temporary file
        raise ConfirmationError(f"cannot write {path}: {exc.strerror or exc}") from None
    return True


def read(path: str, node: str, peer: str | None = None) -> tuple[Confirmation | None, str]:
    """(the valid confirmation, '') or (None, why not: '' when there is none at all).

    Valid: complete, this boot, 0 <= age <= MAX_AGE on CLOCK_BOOTTIME,
    written on ``node`` (the one about to promote) about another node, and
    about ``peer`` when the caller knows the peer's name.
    """
    if not path:
        return None, ""
    try:
        text = _read_private(path)
    except FileNotFoundError:
        return None, ""
    except (OSError, ConfirmationError) as exc:
        return None, f"{path}: {exc.strerror if isinstance(exc, OSError) else exc}"
    found = parse(text)
    if isinstance(found, str):
        return None, f"{path}: {found}"
    why = _invalid(found, node, peer)
    return (None, f"{path}: {why}") if why else (found, "")


def _read_private(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfirmationError("not a regular file")
        if info.st_uid not in (0, os.geteuid()):
            raise ConfirmationError(f"owned by uid {info.st_uid}, not root")
        if info.st_mode & 0o022:
            raise ConfirmationError(f"writable by group or others "
                                    f"(mode {stat.S_IMODE(info.st_mode):04o})")
        data = handle.read(MAX_SIZE + 1)
    if len(data) > MAX_SIZE:
        raise ConfirmationError("too large to be a confirmation")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfirmationError("not UTF-8 text") from None


def parse(text: str) -> Confirmation | str:
    """The Confirmation in text, or why it is not one (incomplete, malformed)."""
    lines = text.split("\n")
    if lines[-1] != "" or not lines or lines[0] != MAGIC:
        return "not a complete hapack fence confirmation"
    values: dict[str, str] = {}
    for line in lines[1:-1]:
        key, sep, value = line.partition("=")
        if not sep or key not in KEYS or key in values:
            return "not a complete hapack fence confirmation"
        values[key] = value
    if set(values) != set(KEYS):
        return "not a complete hapack fence confirmation"
    try:
        boottime = float(values["boottime"])
    except ValueError:
        return "its time is not a number"
    if boottime != boottime or boottime in (float("inf"), float("-inf")):
        return "its time is not a number"
    return Confirmation(values["peer"], values["node"], values["how"], values["boot"], boottime)


def _invalid(found: Confirmation, node: str, peer: str | None) -> str:
    if found.peer == node or not found.peer:
        return "names this node as powered off"
    if peer is not None and found.peer != peer:
        return f"names {found.peer}, not the peer {peer}"
    if found.node != node:
        return f"was written for {found.node}, not this node ({node})"
    boot = boot_id()
    if not boot or found.boot != boot:
        return "was written before this node's last boot"
    age = now() - found.boottime
    if age < 0:
        return "is dated in the future"
    if age > MAX_AGE:
        return f"is {age:.0f}s old (at most {MAX_AGE:.0f}s)"
    return ""


def consume(path: str) -> bool:
    """Use the confirmation up (any promotion does): True if one was removed.

    Raises ConfirmationError when it exists and cannot be removed (the
    promotion must then not go ahead: the confirmation would count again).
    """
    if not path:
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfirmationError(f"cannot consume {path}: {exc.strerror}") from None
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
