"""A unix-socket client connects with the service user's effective ids when asked
(PostgreSQL's peer authentication, Debian's default for postgres, then sees that
user, as with stock pgsql's psql run through su), and root's ids are back after
every connect, failed ones included."""

import os
import pwd
import shutil
import socket
import struct
import tempfile

import pytest

from hapack.ocf._wire import Wire
from hapack.probe import ProbeError
from requires import need_root

NOBODY = pwd.getpwnam("nobody")


def peer_of(server):
    conn, _ = server.accept()
    with conn:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)  # pid, uid, gid


@pytest.fixture
def server():
    folder = tempfile.mkdtemp(prefix="hapack-wire-")  # in /tmp: reachable by nobody
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o777)
    sock.listen(4)
    yield sock, path
    sock.close()
    shutil.rmtree(folder)


def assert_root_again():
    assert (os.geteuid(), os.getegid()) == (0, 0)
    assert os.getresuid() == (0, 0, 0) and os.getresgid() == (0, 0, 0)


@pytest.mark.parametrize("peer", [None, (NOBODY.pw_uid, NOBODY.pw_gid), (0, 0)])
def test_the_server_sees_the_peer_asked_for(server, peer):
    need_root()
    sock, path = server
    for _ in range(3):  # repeated: the ids are restored each time
        wire = Wire(path, 2, "test", peer)
        _pid, uid, gid = peer_of(sock)
        wire.sock.close()
        assert (uid, gid) == (peer or (0, 0))
        assert_root_again()


@pytest.mark.parametrize("where", ["missing", "dir/none", ""])
def test_ids_restored_when_the_connect_fails(tmp_path, where):
    need_root()
    with pytest.raises(ProbeError):
        Wire(str(tmp_path / where) if where else "", 1, "test", (NOBODY.pw_uid,
                                                                NOBODY.pw_gid))
    assert_root_again()


def test_a_socket_the_peer_cannot_reach_fails_and_restores(server):
    need_root()
    sock, path = server
    os.chmod(os.path.dirname(path), 0o700)
    with pytest.raises(ProbeError):
        Wire(path, 1, "test", (NOBODY.pw_uid, NOBODY.pw_gid))
    assert_root_again()
