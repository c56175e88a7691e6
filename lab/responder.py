"""A tiny TCP service for tests: ``responder.py IP PORT`` (standard library only).

Answers every connection with the node's hostname and a newline, then closes
it, so a client can tell which node holds a VIP. It binds with IP_FREEBIND,
so it can be started on every node for a VIP that is not (yet) there: only the
node holding the address receives connections. Prints ``listening`` once
ready.
"""

import socket
import sys

IP_FREEBIND = 15


def serve(ip: str, port: int) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    server.bind((ip, port))
    server.listen(64)
    answer = (socket.gethostname() + "\n").encode()
    print(f"listening {ip}:{port}", flush=True)
    while True:
        conn, _ = server.accept()
        try:
            conn.sendall(answer)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
