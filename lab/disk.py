"""The replicated partition stand-in: one block device both nodes see.

The kernel here has no DRBD, so the lab offers an ext4 file system on a loop
device, visible in every node like a SAN LUN. Code that uses it should depend
only on :class:`BlockDevice` (``device_for(node)``, ``fstype``, ``label``), so a
DRBD pair (``/dev/drbd0`` on each node, a resource name, promote/demote) can
replace :class:`SharedDisk` later without touching its callers.

Nothing guards against mounting it on both nodes at once: that is the job of
the partition agent and fencing, which is what the lab is for.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class DiskError(RuntimeError):
    """The shared disk could not be built or removed."""


class BlockDevice(Protocol):
    """What the partition agent and the tests may rely on."""

    fstype: str
    label: str

    def device_for(self, node: str) -> str:
        """Path of the block device as seen inside ``node``."""


@dataclass(frozen=True)
class SharedDisk:
    """An ext4 file system on a loop device, the same device in every node."""

    device: str
    image: Path
    fstype: str = "ext4"
    label: str = "hapack"
    size_mb: int = 64

    def device_for(self, node: str) -> str:
        return self.device

    @classmethod
    def create(cls, image: Path, size_mb: int = 64, label: str = "hapack") -> "SharedDisk":
        """Make a sparse image, format it ext4 and attach it to a free loop device."""
        with open(image, "wb") as handle:
            handle.truncate(size_mb * 1024 * 1024)
        _run(["mkfs.ext4", "-q", "-F", "-L", label, "-E", "nodiscard", str(image)])
        device = _run(["losetup", "--find", "--show", str(image)]).strip()
        return cls(device=device, image=image, label=label, size_mb=size_mb)

    def to_json(self) -> dict:
        return {"device": self.device, "image": str(self.image), "fstype": self.fstype,
                "label": self.label, "size_mb": self.size_mb}

    @classmethod
    def from_json(cls, data: dict) -> "SharedDisk":
        return cls(device=data["device"], image=Path(data["image"]), fstype=data["fstype"],
                   label=data["label"], size_mb=data["size_mb"])


def loop_devices_of(image: Path) -> list[str]:
    """Every loop device backed by ``image`` (from ``losetup -j``)."""
    if not image.exists():
        return []
    out = _run(["losetup", "-j", str(image)])
    return parse_losetup_j(out)


def parse_losetup_j(text: str) -> list[str]:
    return [line.split(":", 1)[0] for line in text.splitlines() if line.startswith("/dev/")]


def detach(image: Path) -> None:
    """Detach every loop device of ``image`` and delete the image."""
    for device in loop_devices_of(image):
        _run(["losetup", "-d", device])
    try:
        os.unlink(image)
    except FileNotFoundError:
        pass


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise DiskError(f"{' '.join(argv)} failed (rc {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout
