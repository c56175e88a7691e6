"""ocf:hapack:apache against a second apache2 instance of its own (loopback, free port)."""

from requires import need_binary
from layer_fixtures import Apache, HttpServerCases


def setup_module():
    need_binary("apache2")


class TestApache(HttpServerCases):
    kind = Apache
