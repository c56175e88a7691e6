"""Seeing what a lab does: the client's view of a VIP, processes, mounts, power log.

Everything here reads host-side sources (``/proc``, files of the lab dir), so
it works on a frozen node too, where running a command inside would hang.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable


# -- the client's view of a service ----------------------------------------
@dataclass(frozen=True)
class Sample:
    """One try of the poller: when (both clocks), how long, and who answered."""

    mono: float
    wall: float
    seconds: float
    answer: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.answer is not None

    @property
    def result(self) -> str:
        return self.answer if self.answer is not None else f"error:{self.error}"


def parse_sample(line: str) -> Sample | None:
    parts = line.strip().split(None, 3)
    if len(parts) != 4:
        return None
    mono, wall, seconds, result = parts
    kind, _, value = result.partition(":")
    return Sample(float(mono), float(wall), float(seconds),
                  value if kind == "ok" else None, value if kind != "ok" else None)


class VipWatch:
    """Polls ``ip:port`` from the client namespace every ``interval`` seconds.

    Use as a context manager (or ``start()``/``stop()``); read ``samples``,
    ``changes()``, or block in ``wait_for()``.
    """

    def __init__(self, argv: list[str], ip: str, port: int):
        self.argv = argv
        self.ip, self.port = ip, port
        self._samples: list[Sample] = []
        self._cond = threading.Condition()
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> "VipWatch":
        self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name=f"vipwatch-{self.ip}", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_sample(line)
            if sample is not None:
                with self._cond:
                    self._samples.append(sample)
                    self._cond.notify_all()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> "VipWatch":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def samples(self) -> list[Sample]:
        with self._cond:
            return list(self._samples)

    def since(self, mono: float) -> list[Sample]:
        return [s for s in self.samples if s.mono >= mono]

    def changes(self) -> list[Sample]:
        """The first sample of every run of equal results."""
        return changes(self.samples)

    def wait_for(self, predicate: Callable[[Sample], bool] | str, timeout: float = 10.0,
                 after: float | None = None) -> Sample:
        """Block until a sample (started after ``after``, monotonic) matches; return it.

        ``predicate`` may be a hostname (answer equals it) or ``"error"`` (any error).
        """
        test = _predicate(predicate)
        after = after if after is not None else float("-inf")
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for sample in self._samples[seen:]:
                    if sample.mono >= after and test(sample):
                        return sample
                seen = len(self._samples)
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self._samples[-1].result if self._samples else "nothing"
                    raise TimeoutError(f"{self.ip}:{self.port}: no sample matching {predicate!r} "
                                       f"in {timeout}s (last: {last})")
                self._cond.wait(min(left, 0.5))


def _predicate(spec: Callable[[Sample], bool] | str) -> Callable[[Sample], bool]:
    if callable(spec):
        return spec
    if spec == "error":
        return lambda s: not s.ok
    return lambda s: s.answer == spec


def changes(samples: Iterable[Sample]) -> list[Sample]:
    out: list[Sample] = []
    for sample in samples:
        if not out or out[-1].result != sample.result:
            out.append(sample)
    return out


# -- the BMC power log -----------------------------------------------------
@dataclass(frozen=True)
class PowerEvent:
    """One call of a node's power switch: ``get power``, ``set power 0``...

    ``wall`` is when the BMC ran the hook, ``seconds`` how long the hook took.
    """

    wall: float
    command: str
    result: str
    seconds: float = 0.0

    @property
    def is_set(self) -> bool:
        return self.command.startswith("set ")


def parse_power_log(text: str) -> list[PowerEvent]:
    events = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) in (3, 4):
            try:
                seconds = float(parts[3]) if len(parts) == 4 else 0.0
                events.append(PowerEvent(float(parts[0]), parts[1], parts[2], seconds))
            except ValueError:
                continue
    return events


# -- boot stages -----------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    name: str
    mono: float
    wall: float


def parse_boot(text: str) -> list[Stage]:
    stages = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            stages.append(Stage(parts[0], float(parts[1]), float(parts[2])))
    return stages


# -- processes and mounts of a node ----------------------------------------
@dataclass(frozen=True)
class NodeProcess:
    """A process of a node: its pid inside the node and in the host."""

    pid: int
    host_pid: int
    ppid: int | None
    name: str
    cmdline: str


def parse_status(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def node_pid(status: dict[str, str]) -> int:
    """The innermost pid from ``NSpid:`` of /proc/<pid>/status."""
    return int(status["NSpid"].split()[-1])


def processes_in_pidns(pidns: str) -> list[NodeProcess]:
    """Every process whose PID namespace is ``pidns`` (``pid:[inode]``)."""
    found: list[tuple[int, dict[str, str], str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != pidns:
                continue
            status = parse_status(Path(f"/proc/{entry}/status").read_text())
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        found.append((int(entry), status, cmdline))
    to_node = {host: node_pid(status) for host, status, _ in found}
    procs = [NodeProcess(pid=to_node[host], host_pid=host, ppid=to_node.get(int(status["PPid"])),
                         name=status["Name"], cmdline=cmdline)
             for host, status, cmdline in found]
    return sorted(procs, key=lambda p: p.pid)


@dataclass(frozen=True)
class Mount:
    target: str
    fstype: str
    source: str
    options: str


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lfields, rfields = left.split(), right.split()
        target = lfields[4].replace("\\040", " ")
        mounts.append(Mount(target=target, fstype=rfields[0], source=rfields[1],
                            options=lfields[5]))
    return mounts
