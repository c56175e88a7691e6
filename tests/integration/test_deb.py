"""The Debian package: built from this checkout, then installed, used and purged in a
throwaway Debian 12 root, so the machine's own install is never touched.

The root comes from mmdebstrap (Debian's archive) with what an operator has before
installing hapack: pacemaker-cli-utils, resource-agents (ocf-tester) and xmllint. It is
cached as a tarball in /var/cache/hapack (rebuilt after a week or when the list below
changes), and so are the .debs apt fetches for hapack's dependencies, so a rerun needs no
network. Every command inside the root runs in its own mount and PID namespace (and a
network namespace where it needs no network): /proc, /sys and /dev are mounted there and
vanish with it, also when a step fails or times out; the extracted root is then removed.
"""

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from hapack import install
from requires import need_root

CHECKOUT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CACHE = "/var/cache/hapack"
SUITE = "bookworm"
SOURCES = ("deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main")
# what the machine has before hapack: Pacemaker's command line tools (pacemaker-remote
# satisfies their dependency without a whole cluster stack), resource-agents, xmllint, and
# what every Debian system has (priority required or important: apt never autoremoves them)
BASE = ("pacemaker-cli-utils", "pacemaker-remote", "resource-agents", "libxml2-utils",
        "mount", "e2fsprogs", "tzdata")
DEPENDENCIES = ("python3-pyghmi", "python3-pyroute2", "python3-lxml")
MAX_AGE = 7 * 24 * 3600
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("mmdebstrap", "lintian", "dpkg-buildpackage", "dh", "unshare", "ip")
# not the package's files: state and caches of apt and dpkg, logs, runtime directories
VOLATILE = ("proc", "sys", "dev", "run", "tmp", "var/tmp", "var/cache", "var/log",
            "var/lib/apt", "var/lib/dpkg")
VIP = "198.18.201.100"


def _tools():
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"not installed: {missing} (./run setup installs .ci/packages.txt)"


@contextlib.contextmanager
def _locked(name):
    """Other test runs on this machine share the cache: one writer at a time."""
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, f"{name}.lock"), "w", encoding="ascii") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def base_tarball() -> str:
    key = hashlib.sha256(repr((SUITE, SOURCES, BASE)).encode()).hexdigest()[:12]
    path = os.path.join(CACHE, f"debian12-{key}.tar")
    with _locked("debian12"):
        if os.path.exists(path) and time.time() - os.path.getmtime(path) < MAX_AGE:
            return path
        partial = f"{path}.partial"
        done = subprocess.run(["mmdebstrap", "--variant=apt", "--format=tar", f"--include={','.join(BASE)}",
                               "--skip=cleanup/apt/lists", SUITE, partial, *SOURCES],
                              capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"mmdebstrap failed:\n{done.stderr[-3000:]}"
        os.replace(partial, path)
        for old in os.listdir(CACHE):  # earlier lists of packages
            if old.startswith("debian12-") and old.endswith(".tar") and old != os.path.basename(path):
                os.unlink(os.path.join(CACHE, old))
        return path


class Root:
    """An extracted Debian root; ``run`` executes a command inside it."""

    def __init__(self, tarball: str) -> None:
        self.path = tempfile.mkdtemp(prefix="hapack-deb-root-")
        self.archives = os.path.join(CACHE, "debian12-archives")
        os.makedirs(os.path.join(self.archives, "partial"), exist_ok=True)
        try:
            subprocess.run(["tar", "-C", self.path, "-xf", tarball], check=True, timeout=300)
        except BaseException:
            self.remove()
            raise

    def run(self, *argv, network=True, netsetup="", timeout=300, check=True, env=()):
        r = self.path
        script = ["set -e", f"mount -t proc proc {r}/proc", f"mount -t sysfs sys {r}/sys",
                  f"mount --bind /dev {r}/dev",
                  f"mount --bind {self.archives} {r}/var/cache/apt/archives"]
        if network:
            script.append(f"mount --bind /etc/resolv.conf {r}/etc/resolv.conf")
        else:
            script += ["ip link set lo up", netsetup]
        script.append(f'exec chroot {r} env -i PATH={PATH} HOME=/root LANG=C.UTF-8 '
                      f'{" ".join(env)} "$@"')
        namespaces = ["--mount", "--pid", "--fork", "--kill-child"] + ([] if network else ["--net"])
        done = subprocess.run(["unshare", *namespaces, "sh", "-c", "\n".join(script), "sh",
                               *argv], capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"{argv} -> {done.returncode}\n{done.stdout[-3000:]}" \
                                         f"\n{done.stderr[-3000:]}"
        return done

    def files(self) -> set[str]:
        """Every path in the root but the volatile ones, with its type."""
        found = set()
        for folder, dirs, names in os.walk(self.path):
            rel = os.path.relpath(folder, self.path)
            dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(rel, d)) not in VOLATILE]
            for name in dirs + names:
                path = os.path.join(folder, name)
                kind = "l" if os.path.islink(path) else "d" if os.path.isdir(path) else "f"
                found.add(f"{kind} /{os.path.normpath(os.path.join(rel, name))}")
        return found

    def remove(self) -> None:
        # every mount lived in a namespace that is gone; never delete through one
        for sub in ("proc", "sys", "dev", "var/cache/apt/archives", "etc/resolv.conf"):
            assert not os.path.ismount(os.path.join(self.path, sub)), f"{sub} still mounted"
        shutil.rmtree(self.path)


@pytest.fixture(scope="module")
def deb():
    need_root()
    _tools()
    out = tempfile.mkdtemp(prefix="hapack-deb-out-")
    try:
        started = time.monotonic()
        done = subprocess.run([os.path.join(CHECKOUT, "packaging", "build-deb"), out],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        path = done.stdout.strip().splitlines()[-1]
        assert os.path.basename(path) == f"hapack_{_version()}_all.deb"
        print(f"\nbuilt {path} in {time.monotonic() - started:.1f}s")
        yield path
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _version():
    from importlib.metadata import version
    return version("hapack")


@pytest.fixture(scope="module")
def root(deb):
    started = time.monotonic()
    tarball = base_tarball()
    print(f"\nbase root ready in {time.monotonic() - started:.1f}s")
    tree = Root(tarball)
    try:
        tree.before = tree.files()
        tree.had = _installed(tree, (*DEPENDENCIES, "hapack"))
        shutil.copy(deb, os.path.join(tree.path, "tmp"))
        with _locked("debian12-apt"):
            started = time.monotonic()
            tree.run("apt-get", "install", "-y", "-q", f"/tmp/{os.path.basename(deb)}",
                     env=("DEBIAN_FRONTEND=noninteractive",), timeout=900)
            print(f"apt install in {time.monotonic() - started:.1f}s")
        tree.contents = tree.run("dpkg", "-L", "hapack").stdout.split()
        yield tree
    finally:
        tree.remove()


def _installed(tree, packages):
    done = tree.run("dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n", *packages,
                    check=False)
    return {line.split()[0] for line in done.stdout.splitlines() if line.endswith(" installed")}


def test_lintian_reports_no_error(deb):
    done = subprocess.run(["lintian", "--pedantic", "--display-info", deb], capture_output=True,
                          text=True, timeout=600)
    tags = [line for line in done.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "P:")]
    print("\nlintian:\n" + "\n".join(tags))
    assert not [tag for tag in tags if tag.startswith("E:")], "\n".join(tags)
    assert done.returncode == 0, done.stdout + done.stderr


def test_apt_install_pulls_debians_own_dependencies(root):
    assert root.had == set(), f"the base root already had {root.had}"
    assert _installed(root, (*DEPENDENCIES, "hapack")) == {*DEPENDENCIES, "hapack"}
    # no venv, nothing from PyPI: hapack and its libraries are Debian's
    assert not os.path.exists(os.path.join(root.path, "opt/hapack"))
    assert not root.run("sh", "-c", "ls /usr/local/lib/python3*/dist-packages 2>/dev/null || "
                        "true").stdout.strip()
    where = root.run("python3", "-c", "import hapack, pyghmi, pyroute2, lxml; print("
                     "hapack.__file__, pyghmi.__file__, pyroute2.__file__, lxml.__file__)")
    assert all(p.startswith("/usr/lib/python3/dist-packages/") for p in where.stdout.split())


def test_the_package_ships_agents_commands_unit_and_man_pages(root):
    wanted = [f"/usr/lib/ocf/resource.d/hapack/{a}" for a in install.OCF_AGENTS]
    wanted += ["/usr/sbin/fence_bmc", "/usr/sbin/hapack", "/usr/sbin/hamon",
               "/usr/lib/stonith/plugins/external/bmc", "/lib/systemd/system/hamon.service"]
    wanted += [f"/usr/share/man/man8/{n}.8.gz" for n in ("fence_bmc", "hamon", "hapack")]
    wanted += [f"/usr/share/man/man7/ocf_hapack_{a}.7.gz" for a in install.OCF_AGENTS]
    assert not [path for path in wanted if path not in root.contents]
    for path in wanted[:-len(install.OCF_AGENTS) - 4]:
        with open(os.path.join(root.path, path.lstrip("/")), encoding="utf-8") as handle:
            assert handle.readline() == "#!/usr/bin/python3 -IS\n", path
    unit = root.run("cat", "/lib/systemd/system/hamon.service").stdout
    assert "\nExecStart=/usr/sbin/hamon run " in unit
    docs = [line.removeprefix("Documentation=file://") for line in unit.splitlines()
            if line.startswith("Documentation=file://")]
    assert docs and all(os.path.isfile(os.path.join(root.path, d.lstrip("/"))) for d in docs)
    enabled = root.run("sh", "-c", "ls /etc/systemd/system/*.wants/ || true").stdout.split()
    assert "hamon.service" not in enabled, "hamon must not be enabled by the package"
    man = root.run("sh", "-c", "zcat /usr/share/man/man8/fence_bmc.8.gz").stdout
    assert man.startswith(".TH FENCE_BMC 8 ") and "\\-\\-password\\-file" in man


def test_crm_resource_lists_every_agent(root):
    listed = root.run("crm_resource", "--list-agents", "ocf:hapack").stdout.split()
    assert sorted(listed) == sorted(install.OCF_AGENTS)


def test_stonith_admin_lists_fence_bmc_and_the_glue_plugin(root):
    """--list-installed needs no running fencer: it reads /usr/sbin/fence_* and the
    cluster-glue plugin directory itself (so it runs without a network here)."""
    listed = root.run("stonith_admin", "--list-installed", network=False).stdout.split()
    assert "fence_bmc" in listed and "external/bmc" in listed


def test_the_commands_work_as_typed_in_a_root_login_shell(root):
    stack = os.path.join(root.path, "tmp", "stack.toml")
    shutil.copy(os.path.join(CHECKOUT, "examples", "stack.toml"), stack)
    script = ("hapack --help && hamon --help && hapack render cib /tmp/stack.toml > /tmp/cib.xml"
              " && fence_bmc --action=metadata > /tmp/fence.xml")
    done = root.run("bash", "-lc", script, network=False)
    assert "usage: hapack COMMAND" in done.stdout and "usage: hamon" in done.stdout
    cib = os.path.join(root.path, "tmp", "cib.xml")
    expected = subprocess.run([sys.executable, "-m", "hapack.cli", "render", "cib", stack],
                              capture_output=True, timeout=60, check=True).stdout
    with open(cib, "rb") as handle:
        assert handle.read() == expected, "Debian's libraries render another CIB than the venv"
    from hapack.stonith.fence_bmc import AGENT
    from hapack.stonith.metadata import metadata_xml
    with open(os.path.join(root.path, "tmp", "fence.xml"), encoding="utf-8") as handle:
        assert handle.read().strip() == metadata_xml(AGENT).strip()
    refused = root.run("hapack", "install", check=False)
    assert refused.returncode == 1 and "Debian package" in refused.stderr


def test_ocf_tester_passes_for_the_vip_agent(root):
    netsetup = ("ip link add h0 type veth peer name h1 && ip addr add 198.18.201.1/24 dev h0 && "
                "ip link set h0 up && ip link set h1 up")
    done = root.run("ocf-tester", "-n", "vip-deb", "-o", f"ip={VIP}", "-o", "cidr_netmask=24",
                    "/usr/lib/ocf/resource.d/hapack/vip", network=False, netsetup=netsetup,
                    timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed all tests" in done.stdout + done.stderr


def test_purge_leaves_no_file_behind(root):
    """Last: apt purge, then the dependencies it pulled; the tree is as before install."""
    with _locked("debian12-apt"):
        root.run("apt-get", "purge", "-y", "-q", "hapack", env=("DEBIAN_FRONTEND=noninteractive",))
        root.run("apt-get", "autoremove", "--purge", "-y", "-q",
                 env=("DEBIAN_FRONTEND=noninteractive",))
    after = root.files()
    inside = [os.path.join(root.path, path.lstrip("/")) for path in root.contents]
    left = [path for path in inside if os.path.lexists(path) and not os.path.isdir(path)]
    assert left == [], f"files of the package left behind: {left}"  # its dirs: below
    assert sorted(after - root.before)[:20] == [], "new files after purge"
    assert sorted(root.before - after) == [], "files of the base root removed"
    assert _installed(root, (*DEPENDENCIES, "hapack")) == set()
