"""The stateful layers' protocol clients (STOMP, PostgreSQL v3, LDAPv3) against scripted servers."""

import hashlib
import socket
import struct
import threading

import pytest

from hapack.ocf import _ldapwire as ldap
from hapack.ocf import _pgwire as pg
from hapack.ocf import _stomp as stomp
from hapack.ocf._wire import AuthError, Wire
from hapack.probe import ProbeError


class ScriptedServer:
    """Accepts one connection and plays a script: each step waits for bytes (until
    ``ready(received)`` when the step is a (ready, reply) pair), then sends the
    reply (bytes, or a callable(received) -> bytes). Records what came."""

    def __init__(self, replies, family=socket.AF_INET, path=None):
        self.replies, self.received = list(replies), []
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(path if path else ("127.0.0.1", 0))
        self.sock.listen(1)
        self.address = path or self.sock.getsockname()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(5)
            for step in self.replies:
                ready, reply = step if isinstance(step, tuple) else (bool, step)
                data = b""
                while not data or not ready(data):
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    data += chunk
                self.received.append(data)
                conn.sendall(reply(data) if callable(reply) else reply)
            try:
                self.received.append(conn.recv(65536))
            except OSError:
                pass

    def close(self):
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def server():
    made = []

    def make(replies, **kwargs):
        made.append(ScriptedServer(replies, **kwargs))
        return made[-1]

    yield make
    for srv in made:
        srv.close()


# -- the connection --------------------------------------------------------------

def test_wire_reports_a_refused_connection_readably():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProbeError, match=r"cannot connect to thing: .*refused"):
        Wire(("127.0.0.1", port), 1, "thing")


def test_wire_times_out_on_a_silent_server(server):
    srv = server([])  # accepts, never answers
    wire = Wire(srv.address, 0.3, "silent")
    with pytest.raises(ProbeError, match="no answer in time"):
        wire.take(1)
    wire.close()


# -- STOMP ---------------------------------------------------------------------------

def test_stomp_frames_escape_headers():
    frame = stomp.encode("SEND", [("destination", "/queue/a:b"), ("x", "1\n2\\")], b"hi")
    assert frame == b"SEND\ndestination:/queue/a\\cb\nx:1\\n2\\\\\n\nhi\0"
    command, headers = stomp.parse_head(b"MESSAGE\r\nmessage-id:a\\cb\r\nmessage-id:dup\r\n")
    assert command == "MESSAGE" and headers == {"message-id": "a:b"}


def test_stomp_connect_and_clean_disconnect(server):
    srv = server([b"\nCONNECTED\nversion:1.2\n\n\0", b"RECEIPT\nreceipt-id:bye\n\n\0"])
    client = stomp.Stomp(*srv.address, timeout=2)
    assert client.connect("probe", "pw").headers["version"] == "1.2"
    client.disconnect()
    srv.close()
    assert srv.received[0].startswith(b"CONNECT\naccept-version:1.2\n")
    assert b"login:probe\npasscode:pw\n" in srv.received[0]
    assert srv.received[1] == b"DISCONNECT\nreceipt:bye\n\n\0"


def test_stomp_refused_login_is_an_auth_error(server):
    srv = server([b"ERROR\nmessage:User name [x] or password is invalid.\n\n\0"])
    client = stomp.Stomp(*srv.address, timeout=2)
    with pytest.raises(AuthError, match="login refused"):
        client.connect("x", "bad")
    client.close()


def test_stomp_round_trip_drains_stale_probes_and_reads_binary_bodies(server):
    def replies(data):
        body = data.split(b"SEND\n", 1)[1].split(b"\n\n", 1)[1].rstrip(b"\0")
        return (b"MESSAGE\ncontent-length:5\n\nol\0d!\0"  # a stale probe, NUL inside
                + b"RECEIPT\nreceipt-id:sent\n\n\0\n"
                + b"MESSAGE\nsubscription:hapack\n\n" + body + b"\0")

    subscribe_and_send = (lambda data: data.count(b"\0") >= 2, replies)
    srv = server([b"CONNECTED\n\n\0", subscribe_and_send])
    client = stomp.Stomp(*srv.address, timeout=2)
    client.connect()
    assert client.round_trip("hapack.probe", b"probe 42") == 1
    client.close()
    srv.close()
    assert b"persistent:true" in srv.received[1] and srv.received[-1].startswith(b"UNSUBSCRIBE")


def test_stomp_error_during_round_trip_fails(server):
    srv = server([b"CONNECTED\n\n\0", b"ERROR\nmessage:store full\n\n\0"])
    client = stomp.Stomp(*srv.address, timeout=2)
    client.connect()
    with pytest.raises(ProbeError, match="store full"):
        client.round_trip("q", b"x")
    client.close()


# -- PostgreSQL --------------------------------------------------------------------

def backend(kind, payload=b""):
    return kind + struct.pack("!I", len(payload) + 4) + payload


READY = backend(b"Z", b"I")
AUTH_OK = backend(b"R", struct.pack("!I", 0)) + backend(b"S", b"server_version\x0015\x00") + \
    backend(b"K", struct.pack("!II", 1, 2)) + READY


def test_scram_matches_rfc7677():
    scram = pg.Scram("pencil", user="user", nonce="rOprNGfwEbeRWgbNEkqO")
    assert scram.first() == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = scram.final("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                        "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == ("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    scram.verify("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(AuthError):
        scram.verify("v=AAAA")


def test_scram_refuses_a_nonce_the_server_did_not_extend():
    with pytest.raises(ProbeError, match="nonce"):
        pg.Scram("pw", nonce="abc").final("r=xyz,s=AAAA,i=4096")


def test_md5_password_response():
    inner = hashlib.md5(b"secretpostgres").hexdigest()
    expected = "md5" + hashlib.md5(inner.encode() + b"salt").hexdigest()
    assert pg.md5_response("postgres", "secret", b"salt") == expected


def test_startup_packet_and_literal():
    packet = pg.startup_packet("mon", "db")
    assert struct.unpack("!II", packet[:8]) == (len(packet), 196608)
    assert b"user\0mon\0database\0db\0" in packet and packet.endswith(b"\0\0")
    assert pg.literal("it's") == "'it''s'"


def test_query_rows_nulls_and_errors_over_a_unix_socket(server, tmp_path):
    rows = (backend(b"T", b"\0\x02") + backend(b"D", b"\0\x02\0\0\0\x011\xff\xff\xff\xff")
            + backend(b"C", b"SELECT 1\0") + READY)
    error = backend(b"E", b"SERROR\0C42P01\0Mrelation \"x\" does not exist\0\0") + READY
    path = str(tmp_path / "pg.sock")
    srv = server([AUTH_OK, rows, error], family=socket.AF_UNIX, path=path)
    with pg.PgConnection(path, "mon", "postgres", None, 2) as conn:
        assert conn.query("SELECT 1, NULL") == [["1", None]]
        with pytest.raises(pg.PgError) as info:
            conn.query("SELECT * FROM x")
        assert info.value.sqlstate == "42P01"
    srv.close()
    assert srv.received[1] == backend(b"Q", b"SELECT 1, NULL\0")
    assert srv.received[-1] == backend(b"X")


def test_password_requested_without_credentials_is_an_auth_error(server, tmp_path):
    path = str(tmp_path / "pg.sock")
    server([backend(b"R", struct.pack("!I", 3))], family=socket.AF_UNIX, path=path)
    with pytest.raises(AuthError, match="set credentials_file"):
        pg.PgConnection(path, "mon", "postgres", None, 2)


def test_cleartext_password_goes_on_the_wire_only(server, tmp_path):
    path = str(tmp_path / "pg.sock")
    srv = server([backend(b"R", struct.pack("!I", 3)), AUTH_OK], family=socket.AF_UNIX, path=path)
    pg.PgConnection(path, "mon", "postgres", "s3cret", 2).close()
    srv.close()
    assert srv.received[1] == backend(b"p", b"s3cret\0")


def test_bad_password_is_an_auth_error(server, tmp_path):
    path = str(tmp_path / "pg.sock")
    refused = backend(b"E", b"SFATAL\0C28P01\0Mpassword authentication failed\0\0")
    server([backend(b"R", struct.pack("!I", 3)), refused], family=socket.AF_UNIX, path=path)
    with pytest.raises(AuthError, match="28P01"):
        pg.PgConnection(path, "mon", "postgres", "wrong", 2)


# -- LDAP --------------------------------------------------------------------------

def test_ber_lengths_and_integers():
    assert ldap.tlv(0x04, b"a" * 3) == b"\x04\x03aaa"
    assert ldap.tlv(0x04, b"a" * 200)[:3] == b"\x04\x81\xc8"
    assert ldap.tlv(0x04, b"a" * 300)[:4] == b"\x04\x82\x01\x2c"
    assert [ldap.integer(n) for n in (0, 127, 128, 256)] == \
        [b"\x02\x01\x00", b"\x02\x01\x7f", b"\x02\x02\x00\x80", b"\x02\x02\x01\x00"]
    tag, value, end = ldap.decode(ldap.tlv(0x30, b"x" * 300) + b"rest")
    assert (tag, len(value), end) == (0x30, 300, 304)
    with pytest.raises(ProbeError, match="truncated"):
        ldap.decode(b"\x30\x05ab")


def test_anonymous_bind_request_is_the_textbook_encoding(server):
    srv = server([bytes.fromhex("300c02010161070a010004000400")])
    client = ldap.Ldap(f"ldap://127.0.0.1:{srv.address[1]}/", 2)
    client.bind()
    client.close()
    srv.close()
    assert srv.received[0] == bytes.fromhex("300c020101600702010304008000")


def result(msgid, tag, code, diag=""):
    body = ldap.integer(code, 0x0A) + ldap.octets("") + ldap.octets(diag)
    return ldap.sequence(ldap.integer(msgid), ldap.tlv(tag, body))


def entry(msgid, dn, attrs):
    body = ldap.octets(dn) + ldap.sequence(*(
        ldap.sequence(ldap.octets(k), ldap.sequence(*map(ldap.octets, v), tag=0x31))
        for k, v in attrs.items()))
    return ldap.sequence(ldap.integer(msgid), ldap.tlv(ldap.ENTRY, body))


def test_bind_search_add_delete_over_ldapi(server, tmp_path):
    path = str(tmp_path / "ldapi")
    srv = server([result(1, ldap.BIND_RESPONSE, 0),
                  entry(2, "cn=p,dc=x", {"description": ["tok"]}) + result(2, ldap.DONE, 0),
                  result(3, ldap.ADD_RESPONSE, ldap.ALREADY_EXISTS),
                  result(4, ldap.DEL_RESPONSE, 0)], family=socket.AF_UNIX, path=path)
    client = ldap.Ldap("ldapi://" + path.replace("/", "%2F") + "/", 2)
    client.bind("cn=admin,dc=x", "pw")
    assert client.read("cn=p,dc=x", ("description",)) == {"description": ["tok"]}
    assert client.add("cn=p,dc=x", {"cn": ["p"]})[0] == ldap.ALREADY_EXISTS
    assert client.delete("cn=p,dc=x") == (0, "")
    client.unbind()
    srv.close()
    assert b"cn=admin,dc=x" in srv.received[0] and b"\x80\x02pw" in srv.received[0]
    assert srv.received[-1] == ldap.sequence(ldap.integer(5), ldap.tlv(ldap.UNBIND, b""))


def test_invalid_credentials_and_missing_suffix(server):
    srv = server([result(1, ldap.BIND_RESPONSE, ldap.INVALID_CREDENTIALS)])
    client = ldap.Ldap(f"ldap://127.0.0.1:{srv.address[1]}", 2)
    with pytest.raises(AuthError, match="invalid credentials"):
        client.bind("cn=admin,dc=x", "bad")
    client.close()
    srv = server([result(1, ldap.DONE, ldap.NO_SUCH_OBJECT, "no such suffix")])
    client = ldap.Ldap(f"ldap://127.0.0.1:{srv.address[1]}", 2)
    with pytest.raises(ProbeError, match="search of dc=gone: no such object"):
        client.read("dc=gone")
    client.close()


@pytest.mark.parametrize("url,expected", [
    ("ldap://127.0.0.1:3890/", ("127.0.0.1", 3890)),
    ("ldap://[::1]/", ("::1", 389)),
    ("ldapi://%2Frun%2Fx%2Fldapi/", "/run/x/ldapi"),
])
def test_ldap_addresses(url, expected):
    assert ldap.address(url) == expected


@pytest.mark.parametrize("url", ["ldaps://h/", "ldapi:///", "http://h/"])
def test_ldap_addresses_the_monitor_cannot_use(url):
    with pytest.raises(ValueError):
        ldap.address(url)
