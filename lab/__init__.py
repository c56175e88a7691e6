"""hapack.lab: a faithful two-node cluster on one machine (docstring filled in below)."""

from .bmc import Bmc, BmcError
from .core import Lab, LabError, NodeCommandError, NodeDown, NodeFrozen, Spawned, missing_prerequisites
from .disk import BlockDevice, SharedDisk
from .observe import Mount, NodeProcess, PowerEvent, Sample, VipWatch
from .stack import ClusterView

__all__ = ["Bmc", "BmcError", "BlockDevice", "ClusterView", "Lab", "LabError", "Mount", "NodeCommandError",
           "NodeDown", "NodeFrozen", "NodeProcess", "PowerEvent", "Sample", "SharedDisk", "Spawned",
           "VipWatch", "missing_prerequisites"]
