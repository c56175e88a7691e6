"""fence_bmc (driver=redfish) as whole processes against sushy-tools' Redfish emulator.

The emulator (PyPI ``sushy-tools``, fake driver) serves one ComputerSystem
over HTTPS with a certificate from a throw-away CA, and HTTP basic auth from
a bcrypt htpasswd file. Its fake driver applies a power change some seconds
after the request (randomly 1-11 s upstream; pinned here to
``POWER_DELAY`` so the tests take a predictable time), which is what the
agent's verify loop has to wait out.
"""

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest

from test_fence_ipmi import BOUND, fence

POWER_DELAY = 2
LAUNCHER = r"""
import sys
from sushy_tools.emulator.resources.systems import fakedriver
class Fixed:  # the fake driver's "hardware" delay, pinned for the tests
    @staticmethod
    def randint(low, high):
        return %d
fakedriver.random = Fixed
from sushy_tools.emulator import main
sys.argv[0] = "sushy-emulator"
sys.exit(main.main())
""" % POWER_DELAY


def _pem_pair(tmp_path):
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("fence test CA")).issuer_name(
        name("fence test CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(1))
        .not_valid_after(now + datetime.timedelta(2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(1))
              .not_valid_after(now + datetime.timedelta(2))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.SubjectAlternativeName(
                  [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                  ca_key.public_key()), False)
              .sign(ca_key, hashes.SHA256()))
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "bmc.pem", "key": tmp_path / "bmc.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return paths


class RedfishEmulator:
    username = "admin"

    def __init__(self, workdir):
        self.dir = workdir
        self.password = "rf-" + os.urandom(6).hex()
        self.proc = None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def start(self, timeout=30.0):
        import bcrypt
        self.pem = _pem_pair(self.dir)
        users = self.dir / "htpasswd"
        users.write_text(f"{self.username}:"
                         f"{bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(4)).decode()}\n")
        config = self.dir / "emulator.conf"
        config.write_text(f"SUSHY_EMULATOR_AUTH_FILE = {str(users)!r}\n"
                          f"SUSHY_EMULATOR_STATE_DIR = {str(self.dir / 'state')!r}\n")
        log = open(self.dir / "emulator.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, "--config", str(config), "-i", "127.0.0.1",
             "-p", str(self.port), "--ssl-certificate", str(self.pem["cert"]),
             "--ssl-key", str(self.pem["key"]), "--fake"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        context = ssl.create_default_context(cafile=str(self.pem["ca"]))
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{self.port}/redfish/v1",
                                       context=context, timeout=2).read()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("sushy-emulator did not start: "
                                       + (self.dir / "emulator.log").read_text()[-2000:])
                time.sleep(0.1)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def stdin(self, action, **extra):
        params = {"action": action, "nodename": "peer", "plug": "peer", "hostname": "peer",
                  "driver": "redfish", "ip": "127.0.0.1", "ipport": self.port,
                  "username": self.username, "password": self.password,
                  "ca_file": self.pem["ca"], "power_timeout": 30}
        params.update(extra)
        return "".join(f"{k}={v}\n" for k, v in params.items() if v is not None)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    emulator = RedfishEmulator(tmp_path_factory.mktemp("redfish"))
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def agent_path(installed):
    return installed("fence_bmc")


def status(agent_path, emulator):
    return fence(agent_path, emulator.stdin("status")).returncode


def test_on_status_off_status(agent_path, emulator):
    result = fence(agent_path, emulator.stdin("on"))
    assert result.returncode == 0 and "ON" in result.stdout, result.stderr
    assert status(agent_path, emulator) == 0
    result = fence(agent_path, emulator.stdin("off"))
    assert (result.returncode, result.stdout) == (0, "Success: Powered OFF\n"), result.stderr
    assert status(agent_path, emulator) == 2


def test_reboot_and_monitor(agent_path, emulator):
    result = fence(agent_path, emulator.stdin("reboot"))
    assert (result.returncode, result.stdout) == (0, "Success: Rebooted\n"), result.stderr
    assert status(agent_path, emulator) == 0
    assert fence(agent_path, emulator.stdin("monitor")).returncode == 0
    assert fence(agent_path, emulator.stdin("list")).stdout == "peer\n"


def test_the_system_path_is_discovered_or_given(agent_path, emulator):
    assert fence(agent_path, emulator.stdin("on")).returncode == 0
    result = fence(agent_path, emulator.stdin("status", verbose=1))
    assert result.returncode == 0, result.stderr
    given = fence(agent_path, emulator.stdin(
        "status", systems_uri="/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094"))
    assert given.returncode == 0, given.stderr
    wrong = fence(agent_path, emulator.stdin("status", systems_uri="/redfish/v1/Systems/nope"))
    assert wrong.returncode == 1 and "not found" in wrong.stderr


def test_certificates_are_verified_by_default(agent_path, emulator):
    # without ca_file the system store is used, which does not know the test CA
    result = fence(agent_path, emulator.stdin("status", ca_file=None))
    assert result.returncode == 1 and "UntrustedCertificate" in result.stderr
    assert result.elapsed < BOUND
    assert fence(agent_path, emulator.stdin("off")).returncode == 0
    insecure = fence(agent_path, emulator.stdin("status", ca_file=None, ssl_insecure=1))
    assert insecure.returncode == 2, insecure.stderr


def test_a_wrong_password_fails_fast_and_is_never_shown(agent_path, emulator):
    wrong = "rf-wrong-" + emulator.password[-4:]
    result = fence(agent_path, emulator.stdin("off", password=wrong, verbose=1),
                   env={"HA_debug": "1"})
    assert result.returncode == 1 and "AuthError" in result.stderr, result.stderr
    assert result.elapsed < BOUND
    given = fence(agent_path, emulator.stdin(
        "status", password=wrong, systems_uri="/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-"
        "f3527a1ef094"))
    assert given.returncode == 1 and "rejected the login" in given.stderr, given.stderr
    for run in (result, given):
        assert wrong not in run.stdout + run.stderr
        assert emulator.password not in run.stdout + run.stderr


def test_an_unreachable_service_fails_within_the_deadline(agent_path, emulator):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    result = fence(agent_path, emulator.stdin("off", ipport=closed, power_timeout=2))
    assert result.returncode == 1 and "PowerTimeout" in result.stderr
    assert result.elapsed < 2 + BOUND
