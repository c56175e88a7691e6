"""The client's view of a service: ``poller.py IP PORT INTERVAL TIMEOUT``.

Standard library only; runs in the lab's client namespace. Every INTERVAL
seconds (on a fixed grid, skipping slots when a try takes longer) it connects
to IP:PORT, reads one line and prints ``<monotonic> <wall> <seconds> <result>``
(start of the try, both clocks, and how long it took), where
result is ``ok:<answer>`` or ``error:<kind>`` (timeout, refused, reset,
unreachable, closed, or an errno name). CLOCK_MONOTONIC is shared by every
namespace, so the timestamps compare with the caller's ``time.monotonic()``.
"""

import errno
import socket
import sys
import time


def probe(ip: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((ip, port), timeout=timeout) as conn:
            data = conn.recv(256)
    except socket.timeout:
        return "error:timeout"
    except ConnectionRefusedError:
        return "error:refused"
    except ConnectionResetError:
        return "error:reset"
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "error:unreachable"
        return f"error:{errno.errorcode.get(exc.errno, 'oserror')}"
    answer = data.decode(errors="replace").strip()
    return f"ok:{answer}" if answer else "error:closed"


def main(argv: list[str]) -> int:
    ip, port, interval, timeout = argv[0], int(argv[1]), float(argv[2]), float(argv[3])
    start = time.monotonic()
    tick = 0
    while True:
        mono, wall = time.monotonic(), time.time()
        result = probe(ip, port, timeout)
        print(f"{mono:.6f} {wall:.6f} {time.monotonic() - mono:.6f} {result}", flush=True)
        tick = max(tick + 1, int((time.monotonic() - start) / interval) + 1)
        time.sleep(max(0.0, start + tick * interval - time.monotonic()))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (KeyboardInterrupt, BrokenPipeError):
        sys.exit(0)
