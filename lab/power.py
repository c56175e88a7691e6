"""The power supply of a lab node: the ``chassis_control`` program of its BMC.

``ipmi_sim`` runs ``<python> -I -S power.py <lab dir> <node> get power`` or
``... set power 0|1`` / ``set reset 1`` synchronously inside its single
thread, so everything here is quick and uses the standard library only.
``Lab`` imports the same :class:`PowerSwitch` to pull the plug at teardown.

Power on starts ``unshare --net --mount --uts --ipc --pid --fork --mount-proc
--kill-child=SIGKILL nodeinit.py``, already inside the node's cgroups, then
plugs the node's three cables: veth pairs whose node end (eth0, eth1, eth2,
fixed MACs) is created directly in the new network namespace and whose host
end joins the lab bridge. Power off SIGKILLs every process of the node's
freezer cgroup, the ``unshare`` process (the power cord) and the node's PID 1,
then thaws the cgroup so that a frozen node dies too (pitfall P9). The
namespaces are anonymous: when the last process dies they and the cables,
with any VIP on them, vanish.

The power state is a flag in ``power.json``, as on a real BMC: a node whose
kernel died (``Lab.crash``) is still "on" until someone powers it off.

The hook ipmi_sim runs is a small ``sh`` script (:func:`hook_script`): it answers
``get power`` itself from that flag, as a BMC reads its own power state (a few
milliseconds; an interpreter's start cost 20-150 ms here, which every status
question, hamon's or a fence agent's, paid on top of the IPMI exchange), and hands
everything else to this module.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

UNSHARE = ["unshare", "--net", "--mount", "--uts", "--ipc", "--pid", "--fork",
           "--mount-proc", "--kill-child=SIGKILL"]
WIRE_TIMEOUT = 3.0
GONE_TIMEOUT = 2.0
POLL = 0.005


class PowerError(RuntimeError):
    """The power switch could not do what it was asked."""


def _starttime(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    return None if rest[0] in ("Z", "X") else int(rest[19])


def _alive(ident) -> bool:
    return bool(ident) and _starttime(ident[0]) == ident[1]


def _kill(ident) -> None:
    if _alive(ident):
        try:
            os.kill(ident[0], signal.SIGKILL)
        except ProcessLookupError:
            pass


class PowerSwitch:
    """Power on, off, reset and status of one node; state in ``nodes/<node>/``."""

    def __init__(self, lab_dir: Path, node: str):
        config = json.loads((lab_dir / "lab.json").read_text())
        self.node = node
        self.cfg = config["nodes"][node]
        self.dir = Path(self.cfg["dir"])
        self.state_path = self.dir / "power.json"

    # -- state -----------------------------------------------------------
    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {"on": False}

    def _save(self, state: dict) -> None:
        tmp = self.state_path.with_name(f".power.json.{os.getpid()}")
        tmp.write_text(json.dumps(state, sort_keys=True) + "\n")
        os.replace(tmp, self.state_path)

    def is_on(self) -> bool:
        return bool(self.state().get("on"))

    def log(self, start: float, text: str, result: str, seconds: float) -> None:
        with open(self.dir / "power.log", "a") as handle:
            handle.write(f"{start:.6f}\t{text}\t{result}\t{seconds:.6f}\n")

    def members(self) -> list[int]:
        """Host pids in the node's freezer cgroup."""
        try:
            text = Path(self.cfg["freezer"], "cgroup.procs").read_text()
        except FileNotFoundError:
            return []
        return [int(line) for line in text.split()]

    def _lock(self):
        fd = os.open(self.dir / "power.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    # -- actions ---------------------------------------------------------
    def on(self) -> str:
        fd = self._lock()
        try:
            if self.is_on():
                return "already on"
            self._pull_plug(self.state())
            self._boot()
            return "on"
        finally:
            os.close(fd)

    def off(self) -> str:
        fd = self._lock()
        try:
            state = self.state()
            was_on = state.get("on")
            steps = self._pull_plug(state)
            state["on"] = False
            state["off_since"] = time.time()
            self._save(state)
            return f"off ({steps})" if was_on else "already off"
        finally:
            os.close(fd)

    def reset(self) -> str:
        self.off()
        self.on()
        return "reset"

    # -- internals -------------------------------------------------------
    def _join_cgroups(self) -> None:
        """preexec_fn of unshare: enter every cgroup of the node (os calls only)."""
        pid = str(os.getpid()).encode()
        for group in self.cfg["cgroups"]:
            fd = os.open(os.path.join(group, "cgroup.procs"), os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def _boot(self) -> None:
        for group in self.cfg["cgroups"]:
            os.makedirs(group, exist_ok=True)
        (self.dir / "boot").write_text(f"poweron {time.monotonic():.6f} {time.time():.6f}\n")
        with open(self.dir / "console.log", "ab") as console:
            console.write(f"=== power on {time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n".encode())
            console.flush()
            proc = subprocess.Popen(
                UNSHARE + self.cfg["init_argv"], stdin=subprocess.DEVNULL, stdout=console,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                preexec_fn=self._join_cgroups,
            )
        cord = (proc.pid, _starttime(proc.pid))
        state = self.state()
        state.update(on=True, unshare=cord, init=None, since=time.time(),
                     boots=state.get("boots", 0) + 1)
        self._save(state)
        try:
            self._wait_netns(proc.pid)
            self._plug_cables(proc.pid)
            state["init"] = self._wait_init(proc.pid)
        except Exception:
            self._pull_plug(state)
            state["on"] = False
            self._save(state)
            raise
        self._save(state)

    def _wait_netns(self, pid: int) -> None:
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + WIRE_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if os.readlink(f"/proc/{pid}/ns/net") != own:
                    return
            except FileNotFoundError:
                raise PowerError(f"unshare for {self.node} died at power on") from None
            time.sleep(POLL)
        raise PowerError(f"{self.node}: no network namespace after {WIRE_TIMEOUT}s")

    def _wait_init(self, pid: int) -> list[int]:
        deadline = time.monotonic() + WIRE_TIMEOUT
        children = Path(f"/proc/{pid}/task/{pid}/children")
        while time.monotonic() < deadline:
            try:
                found = children.read_text().split()
            except FileNotFoundError:
                raise PowerError(f"unshare for {self.node} died at power on") from None
            if found:
                init = int(found[0])
                return [init, _starttime(init)]
            time.sleep(POLL)
        raise PowerError(f"{self.node}: PID 1 did not start within {WIRE_TIMEOUT}s")

    def _plug_cables(self, pid: int) -> None:
        cut = self.cut_links()
        lines = []
        for cable in self.cfg["veths"]:
            lines.append(f"link add {cable['host']} address {cable['host_mac']} type veth "
                         f"peer name {cable['peer']} address {cable['mac']} netns {pid}")
            lines.append(f"link set {cable['host']} addrgenmode none")
            state = "down" if cable["link"] in cut else "up"
            lines.append(f"link set {cable['host']} master {cable['bridge']} {state}")
        run = subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                             capture_output=True, timeout=WIRE_TIMEOUT)
        if run.returncode != 0:
            raise PowerError(f"{self.node}: wiring failed: {run.stderr.strip()}")

    def unplug_cables(self) -> None:
        """Delete the host ends now: the kernel frees a dead netns's devices only later."""
        present = [c["host"] for c in self.cfg["veths"] if os.path.exists(f"/sys/class/net/{c['host']}")]
        if present:
            subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"link del {n}\n" for n in present),
                           text=True, capture_output=True, timeout=WIRE_TIMEOUT)

    def cut_links(self) -> set[str]:
        try:
            return set((self.dir / "cut").read_text().split())
        except FileNotFoundError:
            return set()

    def _pull_plug(self, state: dict) -> str:
        """Kill everything of the node, frozen or not, and wait until it is gone.

        Returns how long each step took, for the power log.
        """
        t0 = time.monotonic()
        for pid in self.members():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _kill(state.get("unshare"))
        _kill(state.get("init"))
        freezer = Path(self.cfg["freezer"], "freezer.state")
        if freezer.exists():
            freezer.write_text("THAWED\n")
        t1 = time.monotonic()
        self.unplug_cables()
        t2 = time.monotonic()
        deadline = t2 + GONE_TIMEOUT
        while time.monotonic() < deadline:
            if not (self.members() or _alive(state.get("unshare")) or _alive(state.get("init"))):
                break
            time.sleep(POLL)
        t3 = time.monotonic()
        (self.dir / "boot").write_text(f"off {time.monotonic():.6f} {time.time():.6f}\n")
        return f"kill {t1 - t0:.3f}s, unplug {t2 - t1:.3f}s, reap {t3 - t2:.3f}s"


HOOK = """#!/bin/sh
# {node}'s power switch for ipmi_sim (hapack.lab.power): "get power" is answered here
# from the power flag as power.py writes it; anything else (and a flag this cannot
# read) goes to power.py. Generated; do not edit.
if [ "$#" -eq 2 ] && [ "$1" = get ] && [ "$2" = power ]; then
    state=
    if [ ! -e {state} ]; then
        state=0
    elif read -r line 2>/dev/null < {state}; then
        case $line in
            *'"on": true'*) state=1 ;;
            *'"on": false'*) state=0 ;;
        esac
    fi
    if [ -n "$state" ]; then
        echo "power:$state"
        printf '%s\\tget power\\tpower:%s\\t0.000000\\n' "$(date +%s.%N)" "$state" >> {log}
        exit 0
    fi
fi
exec {python} -I -S {power_py} {lab_dir} {node_arg} "$@"
"""


def hook_script(python: str, lab_dir: Path, node: str, node_dir: Path) -> str:
    """The ``chassis_control`` script of ``node``'s BMC (see the module's docstring)."""
    import shlex
    return HOOK.format(node=node, state=shlex.quote(str(node_dir / "power.json")),
                       log=shlex.quote(str(node_dir / "power.log")),
                       python=shlex.quote(python), power_py=shlex.quote(os.path.abspath(__file__)),
                       lab_dir=shlex.quote(str(lab_dir)), node_arg=shlex.quote(node))


def main(argv: list[str]) -> int:
    """``power.py LAB_DIR NODE get power|boot ... | set power 0|1 | set reset 1``."""
    os.closerange(3, 65536)  # ipmi_sim leaks its sockets into the hook (pitfall P4)
    if len(argv) < 3:
        print("usage: power.py LAB_DIR NODE get|set PARAM [VALUE]...", file=sys.stderr)
        return 1
    lab_dir, node, op, args = Path(argv[0]), argv[1], argv[2], argv[3:]
    start, mono = time.time(), time.monotonic()
    switch = PowerSwitch(lab_dir, node)
    text = " ".join([op] + args)
    try:
        result = _dispatch(switch, op, args)
    except Exception as exc:  # noqa: BLE001 - report every failure to ipmi_sim as rc 1
        switch.log(start, text, f"error: {exc}", time.monotonic() - mono)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    switch.log(start, text, result, time.monotonic() - mono)
    return 0


def _dispatch(switch: PowerSwitch, op: str, args: list[str]) -> str:
    if op == "get":
        out = []
        for param in args:
            if param == "power":
                out.append(f"power:{int(switch.is_on())}")
            elif param == "boot":
                out.append("boot:default")
            else:
                raise PowerError(f"Invalid parameter: {param}")
        print("\n".join(out), flush=True)
        return " ".join(out)
    if op == "set":
        if len(args) % 2:
            raise PowerError("set needs PARAM VALUE pairs")
        results = []
        for param, value in zip(args[::2], args[1::2]):
            if param == "power":
                results.append(switch.on() if value == "1" else switch.off())
            elif param == "reset":
                results.append(switch.reset())
            elif param in ("boot", "identify", "shutdown"):
                results.append(f"{param} ignored")
            else:
                raise PowerError(f"Invalid parameter: {param}")
        return ", ".join(results)
    raise PowerError(f"Unknown operation: {op}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
