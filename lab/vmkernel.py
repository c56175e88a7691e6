"""Debian's kernel for the VM tier: found in the archive, fetched once, cached.

The host kernel has no DRBD; Debian's own kernel has DRBD 8.4 as a module.
:func:`prepare` finds the ABI that ``linux-image-amd64`` currently depends on
(``apt-cache depends``; an ABI is never pinned, since Debian drops old ones
from the archive), downloads that one package with ``apt-get download``,
extracts it, runs depmod, keeps ``vmlinuz`` and the few modules a guest needs
(dependencies and soft dependencies resolved by ``modprobe --show-depends``)
and builds the initramfs: busybox-static, the modules and ``vm_init.sh``.

Cache layout (``$HAPACK_VM_CACHE``, default ``/var/cache/hapack/vm``)::

    <abi>/vmlinuz  <abi>/modules/*.ko  <abi>/modules.order  <abi>/prepared
    <abi>/initrd-<hash>.gz     (hash of init.sh, busybox and the modules)

With ``HAPACK_VM_FETCH=0`` nothing is downloaded: the newest kernel already
in the cache is used, or :class:`KernelUnavailable` says why there is none.
A stale package list is refreshed once (``apt-get update``) when the ABI it
names can no longer be downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hapack.params import parse_bool
from hapack.command import CommandError, run

from .state import locked

CACHE_ENV, FETCH_ENV = "HAPACK_VM_CACHE", "HAPACK_VM_FETCH"
DEFAULT_CACHE = Path("/var/cache/hapack/vm")
META_PACKAGE = "linux-image-amd64"
# What a guest needs; dependencies (crc32c, jbd2, lru_cache, ...) are resolved.
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "9pnet_virtio", "9p", "overlay", "ext4",
           "drbd")
BUSYBOX = Path("/bin/busybox")
INIT = Path(__file__).resolve().parent / "vm_init.sh"
TOOLS = ("apt-get", "apt-cache", "dpkg-deb", "depmod", "modprobe", "cpio")


class KernelUnavailable(RuntimeError):
    """No guest kernel can be had here (not cached, and fetching failed or is disabled)."""


@dataclass(frozen=True)
class Kernel:
    """A prepared guest kernel: boot it with ``-kernel vmlinuz -initrd initrd``."""

    abi: str
    vmlinuz: Path
    initrd: Path


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def fetch_allowed() -> bool:
    return parse_bool(os.environ.get(FETCH_ENV) or "1")


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 300) -> str:
    """stdout of argv (the project's command seam), or KernelUnavailable saying why not."""
    try:
        return run(argv, timeout=timeout, cwd=cwd, check=True).stdout
    except CommandError as exc:
        raise KernelUnavailable(str(exc)[-600:]) from None


def parse_abi(depends_output: str) -> str:
    """``6.1.0-56-amd64`` from ``apt-cache depends linux-image-amd64``."""
    match = re.search(r"Depends:\s*linux-image-(\d[^\s:]*-amd64)\b", depends_output)
    if not match:
        raise KernelUnavailable(f"{META_PACKAGE} names no kernel image in the package lists "
                                "(apt-get update?)")
    return match.group(1)


def abi_sort_key(abi: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", abi))


def current_abi() -> str:
    return parse_abi(_run(["apt-cache", "depends", META_PACKAGE], timeout=60))


def cached(cache: Path) -> list[str]:
    """ABIs prepared in the cache, newest last."""
    if not cache.is_dir():
        return []
    return sorted((p.name for p in cache.iterdir() if (p / "prepared").is_file()),
                  key=abi_sort_key)


def prepare(cache: Path | None = None, fetch: bool | None = None) -> Kernel:
    """The guest kernel, fetched and prepared on first use (see the module docstring)."""
    cache = cache_dir() if cache is None else cache
    fetch = fetch_allowed() if fetch is None else fetch
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing or not is_static(BUSYBOX):
        what = missing + ([] if is_static(BUSYBOX) else [f"a static {BUSYBOX} (busybox-static)"])
        raise KernelUnavailable(f"cannot prepare a guest kernel: missing {', '.join(what)}")
    if not fetch and not cached(cache):
        raise KernelUnavailable(f"no guest kernel in {cache} and fetching is disabled "
                                f"({FETCH_ENV}=0)")
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache / ".lock"):
        abi = _fetch(cache) if fetch else cached(cache)[-1]
        return _with_initrd(cache / abi, abi)


def _fetch(cache: Path) -> str:
    """The current ABI, downloaded into the cache unless already there."""
    try:
        abi = current_abi()
        if abi not in cached(cache):
            _download(cache, abi)
        return abi
    except KernelUnavailable as first:
        try:  # the package lists may name an ABI the archive dropped
            _run(["apt-get", "update", "-qq"], timeout=600)
            abi = current_abi()
            if abi not in cached(cache):
                _download(cache, abi)
            return abi
        except KernelUnavailable as second:
            if cached(cache):  # offline: the newest kernel fetched before still serves
                return cached(cache)[-1]
            raise KernelUnavailable(f"cannot fetch Debian's kernel: {second} "
                                    f"(before apt-get update: {first})") from None


def _download(cache: Path, abi: str) -> None:
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache))
    try:
        _run(["apt-get", "download", "-q", f"linux-image-{abi}"], cwd=work)
        deb = next(work.glob("*.deb"))
        tree = work / "tree"
        _run(["dpkg-deb", "-x", str(deb), str(tree)])
        _run(["depmod", "-b", str(tree), abi])  # the package ships no modules.dep
        stage = work / abi
        (stage / "modules").mkdir(parents=True)
        shutil.copy(tree / "boot" / f"vmlinuz-{abi}", stage / "vmlinuz")
        order = _copy_modules(tree, abi, stage / "modules")
        (stage / "modules.order").write_text("".join(f"{name}\n" for name in order))
        (stage / "prepared").write_text(f"{deb.name}\n")
        shutil.rmtree(cache / abi, ignore_errors=True)
        stage.rename(cache / abi)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_modules(tree: Path, abi: str, dest: Path) -> list[str]:
    """Copy MODULES and their dependencies flat into dest; their load order."""
    order: list[str] = []
    for module in MODULES:
        out = _run(["modprobe", "-d", str(tree), "-S", abi, "--show-depends", module])
        for line in out.splitlines():
            words = line.split()
            if len(words) < 2 or words[0] != "insmod":
                continue  # "builtin x": nothing to load
            src = Path(words[1])
            name = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", ".ko", src.name)
            if name not in order:
                order.append(name)
                _uncompressed_copy(src, dest / name)
    return order


def _uncompressed_copy(src: Path, dest: Path) -> None:
    """busybox insmod wants plain .ko files."""
    if src.suffix == ".xz":
        dest.write_bytes(lzma.decompress(src.read_bytes()))
    elif src.suffix == ".gz":
        dest.write_bytes(gzip.decompress(src.read_bytes()))
    elif src.suffix == ".zst":
        dest.write_bytes(subprocess.run(["zstd", "-dc", str(src)], capture_output=True,
                                        check=True).stdout)
    else:
        shutil.copy(src, dest)


def is_static(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (statically linked)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
                return False
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            handle.seek(phoff)
            table = handle.read(phentsize * phnum)
    except OSError:
        return False
    types = (struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum))
    return 3 not in types  # PT_INTERP


def _with_initrd(kdir: Path, abi: str) -> Kernel:
    modules = sorted((kdir / "modules").iterdir())
    digest = hashlib.sha256(INIT.read_bytes() + BUSYBOX.read_bytes()
                            + (kdir / "modules.order").read_bytes())
    for module in modules:
        digest.update(module.name.encode() + module.read_bytes())
    initrd = kdir / f"initrd-{digest.hexdigest()[:16]}.gz"
    if not initrd.is_file():
        _build_initrd(kdir, modules, initrd)
    return Kernel(abi=abi, vmlinuz=kdir / "vmlinuz", initrd=initrd)


def _build_initrd(kdir: Path, modules: list[Path], initrd: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=".initrd-", dir=kdir) as tmp:
        root = Path(tmp) / "root"
        for folder in ("bin", "sbin", "lib/modules", "proc", "sys", "dev", "mnt/lower", "mnt/rw",
                       "newroot"):
            (root / folder).mkdir(parents=True)
        shutil.copy(BUSYBOX, root / "bin" / "busybox")
        shutil.copy(INIT, root / "init")
        (root / "init").chmod(0o755)
        shutil.copy(kdir / "modules.order", root / "modules.order")
        for module in modules:
            shutil.copy(module, root / "lib" / "modules" / module.name)
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root,
                                 input="\n".join(["."] + names).encode() + b"\n",
                                 capture_output=True, check=True).stdout
        tmp_out = Path(tmp) / "initrd.gz"
        tmp_out.write_bytes(gzip.compress(archive, compresslevel=1))
        for old in kdir.glob("initrd-*.gz"):
            old.unlink()
        tmp_out.rename(initrd)
