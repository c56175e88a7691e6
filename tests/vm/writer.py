"""Append numbered records to a file with fsync, acknowledging each one to the host.

Run inside a guest: ``python3 -I writer.py <data file> <ack file>``. Record n
(``n`` and a padding of 100 bytes) is written and fsync'ed to the data file on
the replicated partition; only then is ``n`` appended to the ack file, which
lives on the guest's 9p job share (the host sees each write at once). Protocol
C means fsync returned after the peer's disk had the record too: every
number in the ack file must survive the loss of this guest.
"""

import os
import sys


def main(data_path, ack_path):
    data = os.open(data_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    n = 0
    while True:
        os.write(data, f"{n:08d} {'x' * 100}\n".encode())
        os.fsync(data)
        os.write(ack, f"{n}\n".encode())
        n += 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
