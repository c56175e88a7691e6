"""Append numbered records to a file with fsync, acknowledging each one to the host.

Run inside a guest: ``python3 -I writer.py <data file> <ack file>``. Record n
(``n`` and a padding of 100 bytes) is written and fsync'ed to the data file on
the replicated partition; only then is ``n`` appended to the ack file, which
lives on the guest's 9p job share (the host sees each write at once). Protocol
C means fsync returned after the peer's disk had the record too: every
number in the ack file must survive the loss of this guest.

A writer started on a file that already has records (the campaign's, after a
failover) drops a torn last line (never acknowledged: its fsync never
returned) and goes on with the next number.
"""

import os
import sys


def resume(data_path):
    """The next record number; a torn last line is cut off."""
    try:
        with open(data_path, "rb") as handle:
            text = handle.read()
    except FileNotFoundError:
        return 0
    keep = text.rfind(b"\n") + 1
    if keep != len(text):
        os.truncate(data_path, keep)
    return text[:keep].count(b"\n")


def main(data_path, ack_path):
    os.makedirs(os.path.dirname(data_path), exist_ok=True)
    n = resume(data_path)
    data = os.open(data_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    while True:
        os.write(data, f"{n:08d} {'x' * 100}\n".encode())
        os.fsync(data)
        os.write(ack, f"{n}\n".encode())
        n += 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
