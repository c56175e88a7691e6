"""What can go wrong while fencing, each failure with its meaning.

Drivers translate their library's errors into these; the protocol runner
(:func:`hapack.stonith.fencing.run`) is the one place that turns them into a
message and an exit code. ``transient`` says whether trying again within
``power_timeout`` can help: a BMC that did not answer may answer the next
login, a BMC that refused the password will refuse it again (and repeated
bad logins can lock the account).
"""


class FenceError(Exception):
    """A fencing action failed; the message says why, for an operator."""

    transient = False


class ConfigError(FenceError):
    """The parameters are missing, invalid or contradictory."""


class WrongTarget(ConfigError):
    """Asked to fence a node that this device does not power."""


class AuthError(FenceError):
    """The BMC rejected the credentials or the privilege level."""


class UntrustedCertificate(FenceError):
    """The BMC's TLS certificate did not verify against the trusted CAs."""


class BmcRefused(FenceError):
    """The BMC answered but refused the command (unsupported, invalid)."""


class BmcUnreachable(FenceError):
    """The BMC did not answer (dead, wrong address or port, network down)."""

    transient = True


class BmcTimeout(BmcUnreachable):
    """One exchange with the BMC ran past its own deadline."""


class BmcError(FenceError):
    """The BMC answered with an error that may clear (busy, session lost)."""

    transient = True


class PowerTimeout(FenceError):
    """The BMC never reported the requested power state within power_timeout."""


class StatusUnknown(FenceError):
    """The BMC answered but its power state cannot be read as on or off."""
