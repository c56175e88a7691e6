"""The drivers' translations and checks, without a BMC: IPMI error texts and
completion codes, the pinned pyghmi session, Redfish certificate checks."""

import datetime
import ipaddress

import pytest

from hapack.params import parse
from hapack.stonith import ipmi, redfish
from hapack.stonith.drivers import CYCLE, OFF, ON, driver_class, endpoint
from hapack.stonith.errors import (AuthError, BmcError, BmcRefused, BmcUnreachable,
                                   ConfigError, UntrustedCertificate)
from hapack.stonith.fence_bmc import AGENT


def settings(**raw):
    raw.setdefault("ip", "192.0.2.1")
    return parse(AGENT.params, {k: str(v) for k, v in raw.items()})


# -- IPMI ------------------------------------------------------------------------

@pytest.mark.parametrize("text, error", [
    ("None", BmcUnreachable),      # what pyghmi says after ~4 s of a dead BMC
    ("timeout", BmcUnreachable),
    ("Incorrect password provided", AuthError),
    ("Unauthorized name in RAKP2", AuthError),
    ("Unauthorized role or privilege level requested", AuthError),
    ("Invalid authentication algorithm", BmcRefused),
    ("Insufficient resources to create new session", BmcError),
])
def test_login_errors_get_their_meaning(text, error):
    exc = ipmi.login_error(text, "192.0.2.1:623", "admin")
    assert type(exc) is error
    assert "192.0.2.1:623" in str(exc) and str(exc) != "None"


class FakeSession:
    def __init__(self, *responses):
        self.responses = list(responses)
        self.sent = []

    def raw_command(self, netfn, command, data=()):
        self.sent.append((netfn, command, tuple(data)))
        return self.responses.pop(0)


def test_chassis_status_bit_0_is_the_power():
    session = FakeSession({"code": 0, "data": bytearray(b"\x01\x00\x00")},
                          {"code": 0, "data": bytearray(b"\x60\x00\x00")})
    driver = ipmi.IpmiDriver(session, "bmc")
    assert (driver.get_power(), driver.get_power()) == (ON, OFF)
    assert session.sent == [(0, 1, ())] * 2


def test_chassis_control_codes():
    session = FakeSession(*[{"code": 0, "data": b""}] * 3)
    driver = ipmi.IpmiDriver(session, "bmc")
    for state in (OFF, ON, CYCLE):
        driver.set_power(state)
    assert [sent[2] for sent in session.sent] == [(0,), (1,), (2,)]


def test_completion_codes_split_into_refused_and_retryable():
    driver = ipmi.IpmiDriver(FakeSession({"code": 0xCC, "error": "Invalid data field"},
                                         {"code": 0xC0, "error": "Node busy"}), "bmc")
    with pytest.raises(BmcRefused, match="0xcc"):
        driver.set_power(CYCLE)
    with pytest.raises(BmcError, match="Node busy") as info:
        driver.set_power(OFF)
    assert info.value.transient


def test_pinned_session_chooses_the_cipher_suite():

    def initialized(cls):
        session = object.__new__(cls)  # skip pyghmi's network setup
        session.maxtimeout, session.logontries = 2, 1
        session._initsession()
        return session

    assert initialized(ipmi.session_class(None)).attemptedhash == 256  # 17, then 3
    assert initialized(ipmi.session_class(3)).attemptedhash == 1


def test_pyghmi_io_waits_are_sliced_once(monkeypatch):
    from pyghmi.ipmi.private import session
    calls = []
    monkeypatch.setattr(session, "_io_wait", lambda t, a=None, q=None: calls.append((t, a, q)))
    ipmi.slice_io_waits(session)
    ipmi.slice_io_waits(session)  # idempotent: one wrapper, not two
    session._io_wait(0.7, ("::ffff:127.0.0.1", 623, 0, 0))
    session._io_wait(0.001)
    assert calls == [(ipmi.IO_SLICE, ("::ffff:127.0.0.1", 623, 0, 0), None), (0.001, None, None)]


def test_ipmi_15_is_refused_with_a_reason():
    with pytest.raises(ConfigError, match="IPMI 1.5"):
        driver_class("ipmi").check(settings(lanplus="false"))


def test_kg_must_be_hexadecimal():
    assert ipmi.kg_bytes("0x0102ff") == b"\x01\x02\xff"
    with pytest.raises(ConfigError, match="hexadecimal_kg"):
        driver_class("ipmi").check(settings(hexadecimal_kg="zz"))


def test_endpoint_uses_the_driver_default_port():
    assert endpoint(settings(), driver_class("ipmi")) == "192.0.2.1:623"
    assert endpoint(settings(driver="redfish"), driver_class("redfish")) == "192.0.2.1:443"
    assert endpoint(settings(ip="2001:db8::1", ipport=8443),
                    driver_class("redfish")) == "[2001:db8::1]:8443"


# -- Redfish certificates ---------------------------------------------------------

def _certificate(subject, issuer_key, issuer=None, *, ca=False, ip=None):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if issuer is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.public_key()), critical=False)
    signer = issuer_key if issuer_key is not None else key
    return builder.sign(signer, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki():
    from cryptography.hazmat.primitives.serialization import Encoding
    ca, ca_key = _certificate("hapack test CA", None, ca=True)
    leaf, _ = _certificate("bmc", ca_key, ca, ip="127.0.0.1")
    stranger_ca, stranger_key = _certificate("someone else", None, ca=True)
    stranger, _ = _certificate("bmc", stranger_key, stranger_ca, ip="127.0.0.1")
    selfsigned, _ = _certificate("bmc", None, ca=True, ip="127.0.0.1")
    der = {name: cert.public_bytes(Encoding.DER) for name, cert in
           (("leaf", leaf), ("stranger", stranger), ("self", selfsigned))}
    return ca, selfsigned, der


def test_a_certificate_signed_by_the_ca_file_verifies(pki):
    ca, _, der = pki
    assert redfish.CaVerifier([ca], "127.0.0.1")(der["leaf"]) is True


def test_a_certificate_for_another_address_or_ca_is_refused(pki):
    ca, _, der = pki
    with pytest.raises(UntrustedCertificate, match="subjectAltName"):
        redfish.CaVerifier([ca], "127.0.0.2")(der["leaf"])
    with pytest.raises(UntrustedCertificate):
        redfish.CaVerifier([ca], "127.0.0.1")(der["stranger"])


def test_a_self_signed_certificate_listed_in_the_ca_file_is_pinned(pki):
    ca, selfsigned, der = pki
    assert redfish.CaVerifier([selfsigned], "127.0.0.1")(der["self"]) is True
    with pytest.raises(UntrustedCertificate):
        redfish.CaVerifier([ca], "127.0.0.1")(der["self"])


def test_verification_is_on_by_default():
    assert redfish.verifier(settings(driver="redfish")) is None  # system CAs + host name
    insecure = redfish.verifier(settings(driver="redfish", ssl_insecure="1"))
    assert insecure(b"anything") is True


def test_ca_file_checks(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        redfish.RedfishDriver.check(settings(driver="redfish", ca_file=tmp_path / "none.pem"))
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        redfish.RedfishDriver.check(settings(driver="redfish", ca_file=empty))
    with pytest.raises(ConfigError, match="not both"):
        redfish.RedfishDriver.check(settings(driver="redfish", ca_file=empty, ssl_insecure=1))


def test_redfish_open_errors():
    assert type(redfish.open_error("Access Denied", "h:443", "admin")) is AuthError
    assert type(redfish.open_error("Multi system manager, sysurl is required parameter",
                                   "h:443", "admin")) is ConfigError


def test_redfish_never_opens_a_session_it_would_leak():
    from pyghmi.redfish import command
    cls = redfish.basic_auth(command.Command)
    assert issubclass(cls, command.Command)
    assert cls._get_session_token(object.__new__(cls), wc=None) is None
