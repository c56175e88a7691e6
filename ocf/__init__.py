"""hapack's OCF resource agents and the runner they stand on.

Agents: ``hapack.ocf.vip`` and the others in this package, each installed
as ``ocf:hapack:<name>`` by ``hapack install``.
"""

from hapack.ocf.runner import (  # noqa: F401  (the runner's public names)
    OCF, Action, Agent, ArgsError, ConfigError, Context, FailedPromoted, GenericError,
    NotInstalled, NotRunning, Notify, OCFError, PermError)
from hapack.params import Param  # noqa: F401
