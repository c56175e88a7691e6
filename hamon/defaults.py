"""hamon's defaults, declared once: the ``[hamon]`` table's (:class:`~hapack.hamon.config.Settings`)
and those of the :class:`~hapack.hamon.snapshot.Policy` that decide() reads. Times in seconds."""

from hapack.stack.model import DEFAULT_MIGRATION_THRESHOLD

PORT = 5405
KEY_FILE = "/etc/hapack/hamon.key"
INTERVAL = 0.2
DEAD_TIME = 1.2
WARN_TIME = 0.0                  # 0: two heartbeat intervals (at most half the dead time)
POWER_QUERY_SPACING = 1.0        # at least this long between two early BMC questions
INITDEAD = 10.0
FENCE_DELAY = 1.0
FENCE_TIMEOUT = 10.0
FENCE_RETRIES = 3
FENCE_RETRY_INTERVAL = 5.0
VIP_ORDER = ""                   # "": before_fence unless the stack sets vip.start_after
PING_INTERVAL = 0.2
AUTO_FAILBACK = False
FAILBACK_HOLDDOWN = 300.0
STATE_DIR = "/var/lib/hamon"
RUN_DIR = "/run/hamon"
EVENT_LOG = "/var/log/hamon/events.jsonl"
OCF_ROOT = "/usr/lib/ocf"
FENCE_AGENT = "/usr/sbin/fence_bmc"
METRICS_ADDRESS = ""              # "": no metrics; "lan:9665", "127.0.0.1:9665" (hamon.metrics)
MIGRATION_THRESHOLD = DEFAULT_MIGRATION_THRESHOLD  # the stack's [cluster] default


def warn(dead_time: float, warn_time: float = WARN_TIME, interval: float = INTERVAL) -> float:
    """The warn time in effect: ``warn_time``, or when it is 0 two heartbeat intervals (one
    heartbeat missed on every link, with an interval of slack), at most half the dead time."""
    return warn_time or min(2 * interval, dead_time / 2)
