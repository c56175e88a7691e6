"""The lab's arbiter: ``arbiter.py <arbiter dir>`` (standard library only).

The third host of a quorum device: it runs Debian's ``corosync-qnetd``, which
gives its vote to one side of a split. The lab's reaper starts it as
``unshare --net --mount --propagation private -- arbiter.py DIR``, so this
process holds the arbiter's network namespace (the lab plugs it into the BMC
network) and a private mount namespace in which it:

1. mounts a tmpfs on /run (qnetd's lock file and its socket for
   ``corosync-qnetd-tool``, in /run/corosync-qnetd);
2. bind-mounts ``DIR/qnetd`` (the NSS database made with
   ``corosync-qnetd-certutil``) over /etc/corosync/qnetd, the fixed path qnetd
   reads, so the host's own is never touched;
3. starts ``corosync-qnetd -f -4`` (IPv4, every address: it may start before its
   interface is plugged in), its pid in ``DIR/qnetd.pid``, its output in
   ``DIR/qnetd.log``; and starts it again on SIGUSR1 when it is not running
   (the lab's ``arbiter_start``), never on its own: a killed arbiter stays down.

qnetd dies with this process (PR_SET_PDEATHSIG), so the lab's teardown of the
namespace takes it along.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

MS_NOSUID, MS_NODEV, MS_BIND = 2, 4, 4096
PR_SET_PDEATHSIG = 1
QNETD_ETC = "/etc/corosync/qnetd"
QNETD = ["corosync-qnetd", "-f", "-4"]
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype, flags: int, data=None) -> None:
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                     ctypes.c_ulong(flags), data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


SIGNALS = {signal.SIGCHLD, signal.SIGUSR1}


def _die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


class Arbiter:
    def __init__(self, directory: str):
        self.dir = directory
        self.child = None

    def prepare(self) -> None:
        mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
        os.makedirs("/run/corosync-qnetd", exist_ok=True)
        mount(os.path.join(self.dir, "qnetd"), QNETD_ETC, None, MS_BIND)
        for key in ("all", "default"):
            with open(f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6", "w") as handle:
                handle.write("1\n")

    def start(self) -> None:
        if self.child is not None and self.child.poll() is None:
            return
        with open(os.path.join(self.dir, "qnetd.log"), "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.child = subprocess.Popen(QNETD, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=ENV, cwd="/",
                                          close_fds=True, preexec_fn=_die_with_parent)
        tmp = os.path.join(self.dir, "qnetd.pid.tmp")
        with open(tmp, "w") as handle:
            handle.write(f"{self.child.pid}\n")
        os.replace(tmp, os.path.join(self.dir, "qnetd.pid"))

    def loop(self) -> None:
        while True:
            info = signal.sigtimedwait(SIGNALS, 1.0)
            if self.child is not None:
                self.child.poll()
            if info is not None and info.si_signo == signal.SIGUSR1:
                self.start()


def main(argv: list[str]) -> int:
    os.closerange(3, 65536)
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    arbiter = Arbiter(argv[0])
    arbiter.prepare()
    arbiter.start()
    arbiter.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
