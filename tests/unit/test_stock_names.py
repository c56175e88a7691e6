"""The stock agents' parameter names, accepted as deprecated aliases.

Each alias is a real parameter of resource-agents' own agent (read from its installed
meta-data), reads into the hapack parameter it names, is warned about once per run
whatever the action, and conflicts with the hapack name only when the two differ.
"""

import io
import os
import subprocess

import pytest

from hapack.agents import ocf_agent
from hapack.ocf import OCF, Action, Agent, Param
from hapack.params import ParamError, from_environ, parse

STOCK = "/usr/lib/ocf/resource.d/heartbeat"
PAIRS = {"vip": "IPaddr2", "apache": "apache", "nginx": "nginx", "tomcat": "tomcat",
         "postgresql": "pgsql", "partition": "Filesystem"}


def stock_names(agent):
    from lxml import etree
    env = dict(os.environ, OCF_ROOT="/usr/lib/ocf")
    text = subprocess.run([os.path.join(STOCK, agent), "meta-data"], capture_output=True,
                          env=env, timeout=60).stdout
    return {p.get("name") for p in etree.fromstring(text).iter("parameter")}


ALIASES = [(ours, alias, p.name) for ours in PAIRS for p in ocf_agent(ours).params
           for alias in p.aliases]


def test_the_issue_s_names_are_all_accepted():
    found = {(ours, alias) for ours, alias, _ in ALIASES}
    assert {("vip", "iflabel"), ("apache", "configfile"), ("apache", "statusurl"),
            ("tomcat", "tomcat_user"), ("postgresql", "pgctl"), ("postgresql", "pgdba"),
            ("postgresql", "pgport"), ("nginx", "configfile")} <= found


@pytest.mark.parametrize("ours, alias, name", ALIASES)
def test_every_alias_is_the_stock_agent_s_own_name(ours, alias, name):
    stock = stock_names(PAIRS[ours])
    assert alias in stock and alias not in {p.name for p in ocf_agent(ours).params}


@pytest.mark.parametrize("ours", sorted(PAIRS))
def test_names_shared_with_the_stock_agent_are_never_aliases(ours):
    names = {p.name for p in ocf_agent(ours).params}
    aliases = {a for p in ocf_agent(ours).params for a in p.aliases}
    assert not names & aliases


SAMPLE = {"config": "/etc/x.conf", "binary": "/usr/sbin/x", "status_url": "http://127.0.0.1/s",
          "status_regex": "ok", "test_url": "http://127.0.0.1/t", "test_regex": "fine",
          "user": "tomcat", "pidfile": "/run/x.pid", "output_log": "/var/log/x.out",
          "port": "5433", "database": "db", "label": "vip"}


@pytest.mark.parametrize("ours, alias, name", [a for a in ALIASES if a[2] in SAMPLE])
def test_an_alias_alone_sets_the_parameter_and_is_reported(ours, alias, name):
    params = ocf_agent(ours).params
    used = []
    raw = from_environ(params, {f"OCF_RESKEY_{alias}": SAMPLE[name]}, used=used)
    assert raw == {name: SAMPLE[name]} and used == [(alias, name)]
    same = from_environ(params, {f"OCF_RESKEY_{alias}": SAMPLE[name],
                                 f"OCF_RESKEY_{name}": SAMPLE[name]})
    assert same == {name: SAMPLE[name]}
    with pytest.raises(ParamError, match=f"and as its deprecated name {alias}"):
        from_environ(params, {f"OCF_RESKEY_{alias}": SAMPLE[name],
                              f"OCF_RESKEY_{name}": SAMPLE[name] + "x"})


def test_pgctl_is_read_as_the_directory_of_pg_ctl():
    params = ocf_agent("postgresql").params
    for given in ("/usr/lib/postgresql/15/bin/pg_ctl", "/usr/lib/postgresql/15/bin/pg_ctl/"):
        raw = from_environ(params, {"OCF_RESKEY_pgctl": given})
        assert parse(params, {**raw, "pgdata": "/srv/pg"}).bindir == "/usr/lib/postgresql/15/bin"
    with pytest.raises(ParamError):  # a pg_ctl elsewhere than bindir: a conflict
        from_environ(params, {"OCF_RESKEY_pgctl": "/opt/pg/bin/pg_ctl",
                              "OCF_RESKEY_bindir": "/usr/lib/postgresql/15/bin"})


@pytest.mark.parametrize("nic, label, result", [
    ("eth0:web", None, ("eth0", "web")), ("eth0:web", "web", ("eth0", "web")),
    ("eth0", "web", ("eth0", "web")), ("eth0", None, ("eth0", None)),
    ("br-lan:a:b", None, ("br-lan", "a:b")),
])
def test_ipaddr2_nic_with_label(nic, label, result):
    from hapack.ocf.vip import stock_forms
    raw, notes = stock_forms({"nic": nic, **({"label": label} if label else {})})
    assert (raw["nic"], raw.get("label")) == result
    assert bool(notes) == (":" in nic)


def test_ipaddr2_nic_label_conflicting_with_label_is_refused():
    from hapack.ocf.vip import stock_forms
    with pytest.raises(ValueError, match="keep one"):
        stock_forms({"nic": "eth0:web", "label": "db"})


# -- the runner: every action, one warning, conflicts are configuration errors ----

CALLS = []


def _verb(ctx):
    CALLS.append((ctx.action, ctx.params.config))


TOY = Agent("toy", version="1", shortdesc="t", longdesc="t",
            params=(Param("config", "c", aliases=("configfile",)),
                    Param("nic", "n"), Param("label", "l", aliases=("iflabel",))),
            actions=(Action("start", _verb, 5), Action("stop", _verb, 5),
                     Action("monitor", _verb, 5)),
            validate=lambda ctx: None,
            translate=lambda raw: (raw, ["translated"] if raw.get("nic") == "x" else []))


def run(action, **env):
    out, err = io.StringIO(), io.StringIO()
    environ = {f"OCF_RESKEY_{k}": v for k, v in env.items()}
    return TOY.execute([action], environ, stdout=out, stderr=err), err.getvalue()


@pytest.mark.parametrize("action", ["start", "stop", "monitor", "validate-all"])
def test_every_action_warns_once_per_alias_used(action):
    CALLS.clear()
    rc, err = run(action, configfile="/etc/c", iflabel="web", nic="x")
    assert rc == OCF.SUCCESS
    assert err.count("parameter configfile is the stock agent's name of config") == 1
    assert err.count("parameter iflabel is the stock agent's name of label") == 1
    assert err.count("translated") == 1 and err.count("WARNING") == 3
    assert CALLS in ([(action, "/etc/c")], [])


@pytest.mark.parametrize("action", ["start", "monitor", "validate-all"])
def test_both_names_with_different_values_is_a_configuration_error(action):
    rc, err = run(action, configfile="/etc/a", config="/etc/b")
    expected = OCF.NOT_RUNNING if action == "monitor" else OCF.ERR_CONFIGURED  # a probe
    assert rc == expected and ("keep only config" in err or action == "monitor")
    assert run(action, configfile="/etc/a", config="/etc/a")[0] == OCF.SUCCESS


def test_no_alias_no_warning():
    assert run("start", config="/etc/c") == (OCF.SUCCESS, "")


def test_metadata_lists_each_alias_as_deprecated_and_not_required():
    from lxml import etree
    out = io.StringIO()
    ocf_agent("apache").execute(["meta-data"], {}, stdout=out)
    doc = etree.fromstring(out.getvalue().encode())
    alias = doc.find("parameters/parameter[@name='configfile']")
    assert alias.get("required") == "0"
    assert alias.findtext("shortdesc") == "Deprecated name of config"
    assert doc.find("parameters/parameter[@name='config']").get("required") == "1"


@pytest.mark.parametrize("prefix, wanted, result", [
    (24, None, "198.18.7.255"), (24, "+", "198.18.7.255"), (24, "-", "198.18.7.0"),
    (16, "-", "198.18.0.0"), (24, "198.18.7.127", "198.18.7.127"), (32, None, None),
    (31, "+", None), (32, "198.18.7.9", "198.18.7.9"),
])
def test_ipaddr2_broadcast_forms(prefix, wanted, result):
    from hapack.ocf.vip import _broadcast
    assert _broadcast("198.18.7.9", prefix, wanted) == result
    assert _broadcast("2001:db8::9", 64, wanted) is None


@pytest.mark.parametrize("text", ["x", "198.18.7", "198.18.7.256", "++", "2001:db8::1"])
def test_a_bad_broadcast_is_refused(text):
    with pytest.raises(ParamError):
        parse(ocf_agent("vip").params, {"ip": "198.18.7.9", "broadcast": text})


@pytest.mark.parametrize("ip, nic, rc", [
    ("fe80::2", None, OCF.ERR_CONFIGURED), ("FEBF::2", None, OCF.ERR_CONFIGURED),
    ("fe80::2", "eth0", OCF.SUCCESS), ("fec0::2", None, OCF.SUCCESS),
    ("2001:db8::2", None, OCF.SUCCESS),
])
def test_a_link_local_vip_needs_nic_as_ipaddr2_says(ip, nic, rc):
    env = {"OCF_RESKEY_ip": ip, "OCF_CHECK_LEVEL": "0",  # no route lookup
           **({"OCF_RESKEY_nic": nic} if nic else {})}
    err = io.StringIO()
    assert ocf_agent("vip").execute(["validate-all"], env, stderr=err) == rc, err.getvalue()


def test_the_adapted_ocft_suites_are_generated_from_the_installed_ones():
    script = os.path.join(os.path.dirname(__file__), "..", "data", "ocft", "adapt.py")
    result = subprocess.run(["python3", script, "--check"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
