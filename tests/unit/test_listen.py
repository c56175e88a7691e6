"""Ports and URLs from a web server's configuration: Listen/listen in every spelling.

The rule is the stock agents' (first directive, includes in place, bare port means
localhost, none means 80); each spelling is tried alone, after comments and decoys,
and moved into included files, directories and wildcards, with the invariant that
the first real directive wins.
"""

import itertools
import random

import pytest

from hapack.ocf import _listen
from hapack.ocf._listen import Listen
from hapack.ocf.nginx import _tokens

APACHE = [  # (directive text, expected)
    ("Listen 8080", Listen(None, 8080)),
    ("listen 8080", Listen(None, 8080)),
    ("Listen 198.18.0.5:8081", Listen("198.18.0.5", 8081)),
    ("Listen [2001:db8::a00:20ff:fea7:ccea]:8082", Listen("2001:db8::a00:20ff:fea7:ccea", 8082)),
    ("Listen [::]:8083", Listen("::", 8083)),
    ("Listen 0.0.0.0:8084", Listen("0.0.0.0", 8084)),
    ("Listen 443", Listen(None, 443, tls=True)),
    ("Listen 443 http", Listen(None, 443)),
    ("Listen 198.18.0.5:8443 https", Listen("198.18.0.5", 8443, tls=True)),
    ('Listen "127.0.0.1:8085"', Listen("127.0.0.1", 8085)),
    ("   Listen\t8086   ", Listen(None, 8086)),
    ("LISTEN localhost:8087", Listen("localhost", 8087)),
]

NGINX = [
    ("listen 8080;", Listen(None, 8080)),
    ("listen 8080 default_server;", Listen(None, 8080)),
    ("listen 127.0.0.1:8081;", Listen("127.0.0.1", 8081)),
    ("listen 127.0.0.1;", Listen("127.0.0.1", 80)),
    ("listen *:8082;", Listen(None, 8082)),
    ("listen [::]:8083 ipv6only=on;", Listen("::", 8083)),
    ("listen [::1];", Listen("::1", 80)),
    ("listen [2001:db8::5]:8084 ssl http2;", Listen("2001:db8::5", 8084, tls=True)),
    ("listen 443 ssl;", Listen(None, 443, tls=True)),
    ("listen localhost:8085 reuseport backlog=511;", Listen("localhost", 8085)),
    ("listen\n   8086\n   ;", Listen(None, 8086)),
    ('listen "8087";', Listen(None, 8087)),
    ("listen 8088 proxy_protocol; # a comment", Listen(None, 8088)),
]


def write(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path / "main.conf")


def apache_first(tmp_path, files):
    return _listen.apache_first(write(tmp_path, files), str(tmp_path))


def nginx_first(tmp_path, files):
    found = _listen.nginx_listens(write(tmp_path, files), _tokens)
    return found[0] if found else None


def nginx_conf(*lines):
    body = "\n".join(lines)
    return f"events {{ }}\nhttp {{\n  server {{\n    {body}\n  }}\n}}\n"


@pytest.mark.parametrize("text, expected", APACHE, ids=[t for t, _ in APACHE])
def test_apache_listen_spellings(tmp_path, text, expected):
    assert apache_first(tmp_path, {"main.conf": f"ServerName x\n{text}\n"}) == expected


@pytest.mark.parametrize("text, expected", NGINX, ids=[t for t, _ in NGINX])
def test_nginx_listen_spellings(tmp_path, text, expected):
    assert nginx_first(tmp_path, {"main.conf": nginx_conf(text)}) == expected


APACHE_DECOYS = ["# Listen 1111", "#Listen 1112", "ServerName listen.example",
                 "# a comment with Listen 1113 in it", "<IfModule x>", "</IfModule>",
                 "LogFormat \"Listen 1114\" common", "ListenBacklog 511"]
NGINX_DECOYS = ["# listen 1111;", "server_name listen;", "#listen 1112;",
                "add_header X-Listen \"listen 1113;\";", "location / { root /srv; }"]


def layouts(first, rest, decoys, include_line, rng):
    """(files) placing the first directive in main, an included file, a directory or a
    wildcard match, with decoys before it and other directives after it."""
    before = rng.sample(decoys, rng.randint(0, len(decoys)))
    after = rest[:rng.randint(0, len(rest))]
    kind = rng.choice(["main", "file", "dir", "glob"])
    if kind == "main":
        return {"main.conf": [*before, first, *after]}, {}
    extra = {"file": ("inc/one.conf", "inc/one.conf"), "dir": ("incdir", "incdir/b/00.conf"),
             "glob": ("inc/*.load", "inc/10-ports.load")}[kind]
    spec, path = extra
    files = {path: "\n".join([*before, first]) + "\n"}
    if kind == "glob":  # a later match in order must not win
        files["inc/20-more.load"] = "\n".join(after) + "\n"
    return {"main.conf": [include_line(spec), *after]}, files


def test_apache_first_listen_wins_in_any_layout(tmp_path):
    rng = random.Random(18)
    for n in range(300):
        (first, expected), *rest = rng.sample(APACHE, rng.randint(1, 4))
        main, files = layouts(first, [t for t, _ in rest], APACHE_DECOYS,
                              lambda spec: rng.choice(["Include", "IncludeOptional",
                                                       "include"]) + f" {spec}", rng)
        root = tmp_path / str(n)
        files["main.conf"] = "\n".join(main["main.conf"]) + "\n"
        assert apache_first(root, files) == expected, files


def test_nginx_first_listen_wins_in_any_layout(tmp_path):
    rng = random.Random(18)
    for n in range(300):
        (first, expected), *rest = rng.sample(NGINX, rng.randint(1, 4))
        main, files = layouts(first, [t for t, _ in rest], NGINX_DECOYS,
                              lambda spec: f"include {spec};", rng)
        if any(name.startswith("incdir") for name in files):  # nginx includes files only
            files = {name.replace("incdir/b/00.conf", "inc/00.conf"): text
                     for name, text in files.items()}
            main["main.conf"][0] = "include inc/00.conf;"
        root = tmp_path / str(n)
        files["main.conf"] = nginx_conf(*main["main.conf"])
        assert nginx_first(root, files) == expected, files


def test_nginx_reads_only_http_servers_and_skips_unix_sockets(tmp_path):
    conf = ("stream { server { listen 3306; proxy_pass db; } }\n"
            "mail { server { listen 25; } }\n"
            "http { listen_whatever 1; server { listen unix:/run/x.sock; listen 8090; } }\n")
    assert nginx_first(tmp_path, {"main.conf": conf}) == Listen(None, 8090)


def test_no_directive_means_none_and_bad_ports_are_errors(tmp_path):
    assert apache_first(tmp_path / "a", {"main.conf": "ServerName x\n"}) is None
    assert nginx_first(tmp_path / "b", {"main.conf": nginx_conf("root /srv;")}) is None
    for text in ("Listen 0", "Listen 65536", "Listen x:y", "Listen [::1"):
        with pytest.raises(ValueError):
            apache_first(tmp_path / "c", {"main.conf": text + "\n"})


def test_include_loops_and_missing_files_end(tmp_path):
    files = {"main.conf": "Include main.conf\nInclude nowhere.conf\nListen 8091\n"}
    assert apache_first(tmp_path, files) == Listen(None, 8091)
    files = {"main.conf": nginx_conf("include main.conf;", "include nowhere;", "listen 8092;")}
    assert nginx_first(tmp_path / "n", files) == Listen(None, 8092)


def test_status_locations_are_the_last_handler(tmp_path):
    conf = ("<Location /a>\n SetHandler server-status\n</Location>\n"
            '<Location "/b">\n  sethandler Server-Status\n</Location>\n'
            "<Location /c>\n SetHandler default-handler\n</Location>\n")
    assert _listen.apache_status_path(write(tmp_path, {"main.conf": conf}), "/") == "/b"
    conf = nginx_conf("location /x { root /srv; }", "location = /st { stub_status; }",
                      "location /y { stub_status on; allow all; }")
    assert _listen.nginx_status_path(write(tmp_path / "n", {"main.conf": conf}), _tokens) == "/y"


@pytest.mark.parametrize("listen, address, url", [
    (Listen(None, 8080), None, "http://127.0.0.1:8080/s"),
    (Listen("198.18.0.5", 8080), None, "http://198.18.0.5:8080/s"),
    (Listen("::", 8080), None, "http://[::1]:8080/s"),
    (Listen("0.0.0.0", 8080), None, "http://127.0.0.1:8080/s"),
    (Listen("2001:db8::5", 8443, tls=True), None, "https://[2001:db8::5]:8443/s"),
    (Listen("198.18.0.5", 8080), "127.0.0.1", "http://127.0.0.1:8080/s"),
])
def test_urls(listen, address, url):
    assert _listen.url(listen, address, "/s") == url


def test_every_spelling_pair_in_order_gives_the_first(tmp_path):
    for n, ((a, ea), (b, _)) in enumerate(itertools.permutations(APACHE, 2)):
        assert apache_first(tmp_path / f"a{n}", {"main.conf": f"{a}\n{b}\n"}) == ea
    for n, ((a, ea), (b, _)) in enumerate(itertools.permutations(NGINX, 2)):
        assert nginx_first(tmp_path / f"n{n}", {"main.conf": nginx_conf(a, b)}) == ea
