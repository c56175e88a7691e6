"""Builders for the stateful-layer tests: a replicated-partition stand-in, ports, agent calls.

- :func:`loop_partition`: an ext4 file system on a loop device, mounted in
  a temporary directory (truncate + mkfs.ext4 + losetup + mount), always
  unmounted and detached again, after killing (by pid) any process still
  holding it: those can only be servers this test started on it.
- :func:`workspace`: a scratch directory the service users may traverse.
- :func:`free_port`: a port the kernel just handed out (bind port 0).
- :class:`AgentCall`: runs an installed agent the way the executor does
  (clean environment, OCF_RESKEY_* parameters, a timeout), remembers what
  it started and stops it at the end.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from requires import need_binary, need_root


def sh(*argv, check=True, timeout=60):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count):
    ports = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def kill_9(*pids):
    """SIGKILL pids and wait (10 s at most) until none is alive; zombies count as dead."""
    from hapack.procfs import alive
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < end:
        time.sleep(0.05)


def kill_holders(path):
    """KILL every process using path (servers this test started there), by pid."""
    from hapack.procfs import alive, holders
    pids = [pid for pid, _, _ in holders(path)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < end:
        time.sleep(0.05)
    return pids


@contextlib.contextmanager
def workspace(tag):
    """A scratch directory the service users can traverse (pytest's own is 0700)."""
    path = tempfile.mkdtemp(prefix=f"hapack-{tag}-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def loop_partition(workdir, size_mb=200, label="hapack-test"):
    """Yield the mount point of a fresh ext4 loop mount below workdir."""
    need_root()
    need_binary("losetup", "mkfs.ext4", "mount", "umount")
    image, mountpoint = os.path.join(workdir, "partition.img"), os.path.join(workdir, "mnt")
    os.makedirs(mountpoint, exist_ok=True)
    with open(image, "wb") as handle:
        handle.truncate(size_mb << 20)
    sh("mkfs.ext4", "-q", "-F", "-L", label, "-E", "nodiscard", image)
    device = sh("losetup", "--find", "--show", image).stdout.strip()
    mounted = False
    try:
        sh("mount", "-t", "ext4", device, mountpoint)
        mounted = True
        yield mountpoint
    finally:
        if mounted:
            kill_holders(mountpoint)
            for _ in range(50):
                if sh("umount", mountpoint, check=False).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                sh("umount", "-l", mountpoint, check=False)
        sh("losetup", "-d", device, check=False)
        with contextlib.suppress(OSError):
            os.unlink(image)


def owned_dir(path, user, mode=0o700):
    """A directory owned by user (e.g. the data directory on the partition)."""
    os.makedirs(path, exist_ok=True)
    shutil.chown(path, user, user)
    os.chmod(path, mode)
    return path


def secret_file(path, password, mode=0o600):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    os.chmod(path, mode)
    return path


class AgentCall:
    """Call an installed agent with fixed parameters; stop what it started at the end."""

    def __init__(self, path, instance, params, timeout_ms=30000):
        self.path, self.instance, self.params = path, instance, dict(params)
        self.timeout_ms = timeout_ms
        self.started = False

    def env(self, level=None, timeout_ms=None, interval_ms=None, **override):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "OCF_ROOT": "/usr/lib/ocf",
               "OCF_RESOURCE_INSTANCE": self.instance,
               "OCF_RESKEY_CRM_meta_timeout": str(timeout_ms or self.timeout_ms)}
        if level is not None:
            env["OCF_CHECK_LEVEL"] = str(level)
        if interval_ms is not None:
            env["OCF_RESKEY_CRM_meta_interval"] = str(interval_ms)
        params = dict(self.params, **override)
        env.update({f"OCF_RESKEY_{k}": str(v) for k, v in params.items() if v is not None})
        return env

    def __call__(self, action, level=None, timeout_ms=None, interval_ms=10000, extra_env=None,
                 **override):
        """Run one action: a CompletedProcess with .returncode, .stdout, .stderr."""
        env = self.env(level, timeout_ms, None if action != "monitor" else interval_ms, **override)
        env.update(extra_env or {})
        result = subprocess.run([self.path, action], env=env, capture_output=True, text=True,
                                timeout=(timeout_ms or self.timeout_ms) / 1000 + 30)
        if action == "start" and result.returncode == 0:
            self.started = True
        return result

    def start_ok(self):
        result = self("start")
        assert result.returncode == 0, result.stderr

    def expect(self, *steps):
        """Run (action, level, expected code) steps in order, asserting each code."""
        for action, level, code in steps:
            result = self(action, level=level)
            assert result.returncode == code, f"{action} (level {level}): {result.stderr}"

    def assert_level_20_across_a_restart(self):
        """Level 20 passes, stop leaves it not running, and after start level 20 passes."""
        self.expect(("monitor", 20, 0), ("stop", None, 0), ("monitor", 0, 7),
                    ("start", None, 0), ("monitor", 20, 0))

    def assert_wrong_password_refused(self, wrong, monitor_says, start_says):
        """With the password file wrong: a running instance's level-10 monitor fails
        (1), and start fails as misconfigured (6), leaving nothing running."""
        self.start_ok()
        result = self("monitor", level=10, credentials_file=wrong)
        assert result.returncode == 1 and monitor_says in reason(result), result.stderr
        self.expect(("stop", None, 0))
        result = self("start", credentials_file=wrong)
        assert result.returncode == 6 and start_says in reason(result), result.stderr
        self.expect(("monitor", 0, 7))

    def assert_ocf_tester_passes(self):
        """ocf-tester's whole sequence, from a stopped instance."""
        need_binary("ocf-tester")
        assert self("stop").returncode == 0
        argv = ["ocf-tester", "-n", self.instance]
        for key, value in self.params.items():
            argv += ["-o", f"{key}={value}"]
        result = subprocess.run(argv + [self.path], capture_output=True, text=True, timeout=300)
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "passed all tests" in output, output

    def cleanup(self):
        if self.started:
            self("stop")


def reason(result):
    """The ocf-exit-reason of a finished call ('' when none)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("ocf-exit-reason:")]
    return lines[-1][len("ocf-exit-reason:"):] if lines else ""

