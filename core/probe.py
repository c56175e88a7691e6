"""The error a health probe raises when a service does not answer as expected.

The probes themselves speak each protocol directly and bound every exchange
by one timeout: HTTP in ``hapack.ocf._http``, PostgreSQL, STOMP and LDAP in
``hapack.ocf._pgwire``, ``_stomp`` and ``_ldapwire`` (over ``_wire``).
"""


class ProbeError(Exception):
    """The service did not answer as expected; the message says how."""
