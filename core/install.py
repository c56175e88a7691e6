"""``hapack install``: make the agents visible to Pacemaker, the fencer and cluster-glue.

Writes one small executable per agent, each running with the interpreter of
the environment hapack is installed in:

- ``$OCF_ROOT/resource.d/hapack/<name>`` for every OCF agent (``ocf:hapack:<name>``);
- ``/usr/sbin/<fence agent>`` for the fencer (``stonith_admin -I``);
- the cluster-glue ``external/`` plugin directory for Heartbeat-era stonith;
- ``/usr/sbin/hapack-drbd-handler``, the partition agent's DRBD handlers;
- ``/usr/local/sbin/hapack`` and ``/usr/local/sbin/hamon``, so the commands work as typed
  in a root shell (``/usr/local/sbin`` is on root's default PATH; ``/usr/sbin`` is left
  to the Debian package, which ships them there).

A manifest records what was written, so ``--uninstall`` removes exactly
that; a second run changes nothing; ``--root`` stages into a tree.

For a regular (non-editable) install the wrappers start the interpreter
with ``-IS`` (isolated, no site) and put site-packages on ``sys.path`` themselves: skipping
``site`` saves about 10 ms per call, which matters for monitors that run
every few seconds for every resource on every node.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import stat
import sys
import sysconfig

from hapack.agents import (COMMANDS, FENCE_AGENTS, GLUE_PLUGINS, OCF_AGENTS, PROVIDER,
                           SBIN_TOOLS)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

COMMAND_DIR = "/usr/local/sbin"  # on root's PATH
GLUE_DIRS = ("/usr/lib/x86_64-linux-gnu/stonith/plugins/external",
             "/usr/lib/stonith/plugins/external")
MANIFEST = "/var/lib/hapack/install-manifest"
DEBIAN_PACKAGES = "/usr/lib/python3/dist-packages"  # where the .deb puts hapack


def glue_dir(root: str) -> str:
    for folder in GLUE_DIRS:
        if os.path.isdir(os.path.join(root, folder.lstrip("/"))):
            return folder
    return GLUE_DIRS[-1]


def interpreter() -> str:
    """This environment's python, by the venv's real directory.

    Not realpath(sys.executable): in a venv that is the base interpreter,
    without the venv's packages. The directory is resolved so that a venv
    reached through a symlink is written by its real path.
    """
    folder, name = os.path.split(sys.executable)
    return os.path.join(os.path.realpath(folder), name)


class Unreachable(RuntimeError):
    """The agents would run with an interpreter or packages other users cannot reach."""


def hidden(path: str, need: int = stat.S_IXOTH) -> str | None:
    """Why a user other than root cannot use ``path`` (``need``: the permission bit for
    others on the final file), following symbolic links hop by hop; None if it can.

    Pacemaker's controller runs each agent's ``meta-data`` as ``hacluster``: an
    interpreter under ``/root`` (pyenv, a venv in a home directory) fails there, the
    controller retries (1 s each for a fence agent) and reads no parameters, which
    delays every transition a new DC computes.
    """
    seen, todo = 0, os.path.abspath(path)
    while True:
        parts = todo.split("/")
        for i in range(2, len(parts) + 1):
            here = "/".join(parts[:i]) or "/"
            try:
                info = os.lstat(here)
            except OSError as exc:
                return f"{here}: {exc.strerror}"
            if stat.S_ISLNK(info.st_mode):
                seen += 1
                if seen > 40:
                    return f"{here}: too many levels of symbolic links"
                target = os.path.join(os.path.dirname(here), os.readlink(here))
                todo = os.path.normpath("/".join([target] + parts[i:]))
                break
            if i < len(parts) and not info.st_mode & stat.S_IXOTH:
                return f"{here} is mode {stat.S_IMODE(info.st_mode):04o} (others cannot enter it)"
            if i == len(parts) and not info.st_mode & need:
                return f"{here} is mode {stat.S_IMODE(info.st_mode):04o}"
        else:
            return None


def check_reachable(python: str, paths: list[str]) -> None:
    """Raise Unreachable unless every user can run ``python`` and read ``paths``."""
    problems = [f"the interpreter {python}: {why}" for why in [hidden(python)] if why]
    problems += [f"the packages in {p}: {why}" for p in paths
                 for why in [hidden(p, stat.S_IROTH | stat.S_IXOTH)] if why]
    if problems:
        raise Unreachable(
            "Pacemaker runs the agents' meta-data as the user hacluster, which cannot reach "
            + "; ".join(problems) + ". Install hapack in an environment every user can read, "
            "e.g. '/usr/bin/python3 -m venv /opt/hapack/venv' (README: Install)")


def wrapper(module: str, what: str, python: str | None = None,
            paths: list[str] | None = None) -> str:
    """The text of an executable that runs ``module.main()``.

    By default for this environment; ``python`` and ``paths`` write one for
    another interpreter whose packages live in ``paths`` (the Debian package).
    """
    if python is None:
        purelib = sysconfig.get_paths()["purelib"]
        platlib = sysconfig.get_paths()["platlib"]
        spec = importlib.util.find_spec(module)
        if spec is None:
            raise ModuleNotFoundError(f"{module} is in hapack's agent table but not installed",
                                      name=module)
        regular = spec.origin is not None and spec.origin.startswith(purelib)
        python, paths = interpreter(), list(dict.fromkeys([purelib, platlib])) if regular else None
        check_reachable(python, paths or [os.path.dirname(spec.origin or "")])
    if paths:
        head = f"#!{python} -IS\n"  # one shebang argument
        setup = f"import sys\nsys.path[:0] = {paths!r}\n"
    else:  # editable install: let site set up the import hooks
        head = f"#!{python} -I\n"
        setup = "import sys\n"
    return (f"{head}# {what}, installed by 'hapack install'; do not edit.\n{setup}"
            f"from {module} import main\nsys.exit(main())\n")


def entries(root: str, ocf_root: str,
            command_dir: str = COMMAND_DIR) -> list[tuple[str, str, str]]:
    """(path, module, what) of every executable this installation should have."""
    found = []
    for name, module in OCF_AGENTS.items():
        path = os.path.join(ocf_root, "resource.d", PROVIDER, name)
        found.append((path, module, f"ocf:{PROVIDER}:{name}"))
    for name, module in FENCE_AGENTS.items():
        found.append((os.path.join("/usr/sbin", name), module, f"stonith:{name}"))
    for name, module in SBIN_TOOLS.items():
        found.append((os.path.join("/usr/sbin", name), module, name))
    for name, module in GLUE_PLUGINS.items():
        found.append((os.path.join(glue_dir(root), name), module,
                      f"cluster-glue stonith external/{name}"))
    for name, module in COMMANDS.items():
        found.append((os.path.join(command_dir, name), module, f"the {name} command"))
    return found


def planned(root: str, ocf_root: str) -> list[tuple[str, ...]]:
    """(path, text) of every file this installation should have."""
    return [(path, wrapper(module, what)) for path, module, what in entries(root, ocf_root)]


def _staged(root, path):
    """Where an absolute target path lands under root."""
    return os.path.join(root, path.lstrip("/"))


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def _manifest(root):
    """path -> digest of what a previous run installed."""
    text = _read(_staged(root, MANIFEST)) or ""
    entries = {}
    for line in text.splitlines():
        digest, _, path = line.partition(" ")
        if path:
            entries[path] = digest
    return entries


def _write_manifest(root, entries):
    path = _staged(root, MANIFEST)
    if not entries:
        if os.path.exists(path):
            os.unlink(path)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{digest} {p}\n" for p, digest in sorted(entries.items()))


def install(root: str = "/", ocf_root: str = "/usr/lib/ocf", out: Callable = print) -> int:
    entries = _manifest(root)
    changed = 0
    for path, text in planned(root, ocf_root):
        target = _staged(root, path)
        if _read(target) == text and os.access(target, os.X_OK):
            out(f"unchanged  {target}")
        else:
            existing = _read(target)
            if existing is not None and path not in entries:
                out(f"replacing  {target} (not installed by hapack before)")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = target + ".hapack-new"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
            out(f"installed  {target}")
            changed += 1
        entries[path] = _digest(text)
    _write_manifest(root, entries)
    out(f"{changed} file(s) written, {len(entries) - changed} unchanged")
    return 0


def uninstall(root: str = "/", out: Callable = print) -> int:
    entries = _manifest(root)
    kept = {}
    for path, digest in sorted(entries.items()):
        target = _staged(root, path)
        text = _read(target)
        if text is None:
            out(f"absent     {target}")
        elif _digest(text) != digest:
            out(f"kept       {target} (changed since hapack installed it)")
            kept[path] = digest
            continue
        else:
            os.unlink(target)
            out(f"removed    {target}")
        folder = os.path.dirname(target)
        if os.path.basename(folder) == "hapack" and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
            out(f"removed    {folder}/")
    _write_manifest(root, kept)
    return 1 if kept else 0


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="hapack install", description=__doc__.split("\n\n")[0])
    cli.add_argument("--root", default="/", help="stage into this tree instead of /")
    cli.add_argument("--ocf-root", default=os.environ.get("OCF_ROOT", "/usr/lib/ocf"),
                     help="OCF_ROOT (default: $OCF_ROOT or /usr/lib/ocf)")
    cli.add_argument("--uninstall", action="store_true", help="remove what was installed")
    return cli


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    root = os.path.abspath(args.root)
    if root == "/" and os.path.dirname(__file__).startswith(f"{DEBIAN_PACKAGES}/"):
        print("hapack install: this hapack is the Debian package, which installed the agents "
              "and commands already ('hapack install' is for a venv)", file=sys.stderr)
        return 1
    try:
        if args.uninstall:
            return uninstall(root)
        return install(root, args.ocf_root)
    except PermissionError as exc:
        print(f"hapack install: {exc.strerror}: {exc.filename} (run as root, or use --root)",
              file=sys.stderr)
        return 4
    except Unreachable as exc:
        print(f"hapack install: {exc}", file=sys.stderr)
        return 1
