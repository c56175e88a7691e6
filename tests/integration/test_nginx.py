"""ocf:hapack:nginx against a second nginx instance of its own (loopback, free port)."""

from requires import need_binary
from layer_fixtures import HttpServerCases, Nginx


def setup_module():
    need_binary("nginx")


class TestNginx(HttpServerCases):
    kind = Nginx
