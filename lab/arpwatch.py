"""Who answers ARP for the VIP, seen from the client's LAN (stdlib only, run with -I -S).

``python arpwatch.py VIP SRC_IP INTERVAL OUT``, in the client's network
namespace: every INTERVAL seconds, broadcast one ARP request for VIP (sender
SRC_IP, the client's address) on the namespace's one LAN interface; every
reply *to that request* (opcode 2, sender VIP, target SRC_IP) is written to
OUT as ``{"seq": N, "t": WALL, "mac": "..."}``, one JSON object a line, with
``seq`` the request it answers (the last one sent). Gratuitous ARP from a
VIP agent is not a reply to us and is not counted. Two MACs under one seq:
two nodes held the VIP at once. Runs until SIGTERM.
"""

import json
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def lan_interface():
    names = [name for _, name in socket.if_nameindex() if name != "lo"]
    if len(names) != 1:
        raise SystemExit(f"arpwatch: expected one LAN interface, found {names}")
    return names[0]


def request_frame(mac, src_ip, vip):
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, socket.inet_aton(src_ip),
                      b"\0" * 6, socket.inet_aton(vip))
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


def parse_reply(frame, src_ip, vip):
    """The sender MAC of an ARP reply from ``vip`` to ``src_ip``, else None."""
    if len(frame) < 42 or struct.unpack("!H", frame[12:14])[0] != ETH_P_ARP:
        return None
    op, sha, spa, _tha, tpa = struct.unpack("!6x H 6s 4s 6s 4s", frame[14:42])
    if op != 2 or spa != socket.inet_aton(vip) or tpa != socket.inet_aton(src_ip):
        return None
    return ":".join(f"{b:02x}" for b in sha)


def main(argv):
    vip, src_ip, interval, out_path = argv[0], argv[1], float(argv[2]), argv[3]
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((lan_interface(), ETH_P_ARP))
    frame = request_frame(sock.getsockname()[4], src_ip, vip)
    seq, next_send = 0, 0.0
    with open(out_path, "a", buffering=1) as out:
        out.write(json.dumps({"started": time.time()}) + "\n")
        while running[0]:
            now = time.monotonic()
            if now >= next_send:
                seq += 1
                sock.send(frame)
                next_send = now + interval
            try:
                ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
            except InterruptedError:
                continue
            if ready:
                mac = parse_reply(sock.recv(2048), src_ip, vip)
                if mac:
                    out.write(json.dumps({"seq": seq, "t": time.time(), "mac": mac}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
