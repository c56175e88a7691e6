"""The [alerts] table: what it reads, what it refuses (exit 2 from hapack render, a clear
message naming the key, never a secret), and how it is rendered into the CIB, crm and pcs."""

import random
import shlex
from pathlib import Path

import pytest
from lxml import etree

from hapack import render
from hapack.alerts import recipient_attributes, recipient_value, sink_for, sink_from_environ
from hapack.cib import cib as cibmod
from hapack.cib import crm, pcs
from hapack.stack import StackError, loads

ROOT = Path(__file__).resolve().parents[2]
LAB = (ROOT / "examples" / "stack.toml").read_text()
SECRET = "Zq9-s3cr3t-Tok"

FULL = f"""
[alerts]
select_attributes = ["master-partition", "#health"]
timeout = "40s"

[[alerts.recipients]]
sink = "webhook"
url = "https://ops:{SECRET}@hooks.example.com:8443/hapack?k=1"
headers = {{ Authorization = "Bearer {SECRET}", X-Team = "ha" }}
ca_file = "/etc/ssl/ca.pem"
timeout = "2s"
retries = 3

[[alerts.recipients]]
sink = "syslog"
socket = "/run/log.sock"
facility = "local3"

[[alerts.recipients]]
sink = "command"
command = ["/usr/local/bin/page", "--team", "ha ops", "it's"]
timeout = "15s"
"""

MINIMAL = """
[alerts]
[[alerts.recipients]]
sink = "syslog"
"""


def stack(extra):
    return loads(LAB + extra, "stack.toml", check_agents=False)


def problems(extra):
    with pytest.raises(StackError) as info:
        stack(extra)
    return info.value


def test_no_table_no_alerts():
    assert stack("").alerts is None
    assert cibmod.build(stack(""), "s").find("configuration/alerts") is None


def test_the_full_table_is_read():
    a = stack(FULL).alerts
    assert (a.select_fencing, a.select_nodes, a.select_resources) == (True, True, True)
    assert a.select_attributes == ("master-partition", "#health")
    assert a.timeout == 40_000 and a.deadline == 38_000
    web, log, cmd = a.recipients
    assert web.url.startswith("https://ops:") and dict(web.headers)["X-Team"] == "ha"
    assert (web.timeout, web.retries, web.ca_file) == (2000, 3, "/etc/ssl/ca.pem")
    assert web.worst_case_ms == 4 * 2000 + 500 * (1 + 2 + 3)
    assert (log.socket, log.facility) == ("/run/log.sock", "local3")
    assert cmd.command == ("/usr/local/bin/page", "--team", "ha ops", "it's") and cmd.timeout == 15_000
    assert SECRET not in repr(a)


def test_defaults():
    a = stack(MINIMAL + '[[alerts.recipients]]\nsink = "webhook"\nurl = "http://198.18.0.1/"\n'
              '[[alerts.recipients]]\nsink = "command"\ncommand = ["/bin/true"]\n').alerts
    assert (a.select_fencing, a.select_nodes, a.select_resources, a.select_attributes) == (
        True, True, True, False)
    assert a.timeout == 30_000
    log, web, cmd = a.recipients
    assert (log.socket, log.facility) == ("/dev/log", "daemon")
    assert (web.timeout, web.retries) == (5000, 2) and cmd.timeout == 10_000


BAD = {
    "unknown key": ('[alerts]\nselect_fencin = true\n[[alerts.recipients]]\nsink = "syslog"\n',
                    "alerts.select_fencin", "unknown key"),
    "no recipients": ("[alerts]\n", "alerts.recipients", "is required"),
    "empty recipients": ("[alerts]\nrecipients = []\n", "alerts.recipients", "at least one"),
    "recipients a table": ("[alerts]\n[alerts.recipients]\nsink = 'syslog'\n",
                           "alerts.recipients", "array of tables"),
    "no sink": ('[alerts]\n[[alerts.recipients]]\nurl = "http://h/"\n',
                "alerts.recipients[0].sink", "is required"),
    "unknown sink": ('[alerts]\n[[alerts.recipients]]\nsink = "email"\n',
                     "alerts.recipients[0].sink", "not one of: webhook, syslog, command"),
    "key of another sink": ('[alerts]\n[[alerts.recipients]]\nsink = "syslog"\nurl = "http://h/"\n',
                            "alerts.recipients[0].url", "unknown key"),
    "webhook without url": ('[alerts]\n[[alerts.recipients]]\nsink = "webhook"\n',
                            "alerts.recipients[0].url", "is required"),
    "ftp url": (f'[alerts]\n[[alerts.recipients]]\nsink = "webhook"\nurl = "ftp://u:{SECRET}@h/"\n',
                "alerts.recipients[0].url", "http:// or https://"),
    "url without host": (f'[alerts]\n[[alerts.recipients]]\nsink = "webhook"\nurl = "https:///{SECRET}"\n',
                         "alerts.recipients[0].url", "with a host"),
    "bad port": (f'[alerts]\n[[alerts.recipients]]\nsink = "webhook"\nurl = "https://h:99999/{SECRET}"\n',
                 "alerts.recipients[0].url", "http:// or https://"),
    "newline in url": (f'[alerts]\n[[alerts.recipients]]\nsink = "webhook"\nurl = "https://h/{SECRET}\\n"\n',
                       "alerts.recipients[0].url", "without newline"),
    "header value newline": ('[alerts]\n[[alerts.recipients]]\nsink = "webhook"\nurl = "https://h/"\n'
                             f'headers = {{ Authorization = "Bearer {SECRET}\\r\\nX: y" }}\n',
                             "alerts.recipients[0].headers.Authorization", "not shown"),
    "header name": ('[alerts]\n[[alerts.recipients]]\nsink = "webhook"\nurl = "https://h/"\n'
                    f'headers = {{ "Bad Name" = "{SECRET}" }}\n',
                    'alerts.recipients[0].headers.Bad Name', "not a valid HTTP header name"),
    "header a number": ('[alerts]\n[[alerts.recipients]]\nsink = "webhook"\nurl = "https://h/"\n'
                        'headers = { X-N = 1 }\n', "alerts.recipients[0].headers.X-N", "expected a string"),
    "retries": ('[alerts]\n[[alerts.recipients]]\nsink = "webhook"\nurl = "https://h/"\nretries = 11\n',
                "alerts.recipients[0].retries", "outside 0..10"),
    "bare timeout": ('[alerts]\n[[alerts.recipients]]\nsink = "webhook"\nurl = "https://h/"\ntimeout = 5\n',
                     "alerts.recipients[0].timeout", "write the unit"),
    "too slow for Pacemaker": ('[alerts]\n[[alerts.recipients]]\nsink = "webhook"\nurl = "https://h/"\n'
                               'timeout = "10s"\nretries = 3\n',
                               "alerts.recipients[0]", "Pacemaker would kill the alert agent"),
    "command slower than the alert timeout": (
        '[alerts]\ntimeout = "10s"\n[[alerts.recipients]]\nsink = "command"\ncommand = ["/bin/x"]\n'
        'timeout = "9s"\n', "alerts.recipients[0]", "more than alerts.timeout (10s) less 2s"),
    "alert timeout": ('[alerts]\ntimeout = "1s"\n[[alerts.recipients]]\nsink = "syslog"\n',
                      "alerts.timeout", "outside 5s..10min"),
    "relative command": ('[alerts]\n[[alerts.recipients]]\nsink = "command"\ncommand = ["page"]\n',
                         "alerts.recipients[0].command", "not an absolute path"),
    "command a string": ('[alerts]\n[[alerts.recipients]]\nsink = "command"\ncommand = "/bin/page x"\n',
                         "alerts.recipients[0].command", "array of strings"),
    "command newline": ('[alerts]\n[[alerts.recipients]]\nsink = "command"\ncommand = ["/bin/x", "a\\nb"]\n',
                        "alerts.recipients[0].command", "control character"),
    "facility": ('[alerts]\n[[alerts.recipients]]\nsink = "syslog"\nfacility = "local9"\n',
                 "alerts.recipients[0].facility", "not one of"),
    "socket relative": ('[alerts]\n[[alerts.recipients]]\nsink = "syslog"\nsocket = "dev/log"\n',
                        "alerts.recipients[0].socket", "not an absolute path"),
    "selects nothing": ('[alerts]\nselect_fencing = false\nselect_nodes = false\n'
                        'select_resources = false\n[[alerts.recipients]]\nsink = "syslog"\n',
                        "alerts.select_fencing", "report nothing"),
    "select_attributes a string": ('[alerts]\nselect_attributes = "all"\n[[alerts.recipients]]\n'
                                   'sink = "syslog"\n', "alerts.select_attributes", "true, false or"),
    "select_attributes name": ('[alerts]\nselect_attributes = ["a b"]\n[[alerts.recipients]]\n'
                               'sink = "syslog"\n', "alerts.select_attributes", "not a node attribute"),
    "select a string": ('[alerts]\nselect_nodes = "yes"\n[[alerts.recipients]]\nsink = "syslog"\n',
                        "alerts.select_nodes", "expected a boolean"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_tables_are_refused_naming_the_key(name):
    extra, key, fragment = BAD[name]
    error = problems(extra)
    assert any(k == key and fragment in m for k, m in error.problems), error.problems
    assert SECRET not in str(error)


@pytest.mark.parametrize("name", BAD)
def test_hapack_render_exits_2_writes_nothing_and_never_echoes_a_secret(name, tmp_path, capsys):
    extra, key, _ = BAD[name]
    path = tmp_path / "stack.toml"
    path.write_text(LAB + extra)
    out = tmp_path / "cib.xml"
    for form in ("cib", "crm", "pcs"):
        assert render.main([form, str(path), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"{path}: {key}" in err and SECRET not in err
        assert not out.exists()


def test_secrets_never_in_messages_whatever_else_is_wrong():
    """A secret in the URL's user info, path, query or a header, next to every other
    mistake a recipient can hold: the message names keys, never the secret."""
    rng = random.Random(17)
    spellings = [f"https://u:{SECRET}@h/", f"http://h/{SECRET}", f"https://h/?t={SECRET}",
                 f"https://{SECRET}@h/", f"ftp://u:{SECRET}@h/", f"https://h:0x/{SECRET}",
                 f"https:///{SECRET}", f"{SECRET}", f"https://h/{SECRET}\\t"]
    mistakes = ['retries = -1', 'timeout = "0ms"', 'timeout = 3', 'headers = 5',
                f'headers = {{ A = "{SECRET}\\n" }}', f'headers = {{ "A B" = "{SECRET}" }}',
                'ca_file = "rel"', 'socket = "/x"', 'retries = 10\ntimeout = "20s"']
    for _ in range(200):
        lines = [f'url = "{rng.choice(spellings)}"'] + rng.sample(mistakes, rng.randint(0, 3))
        text = '[alerts]\n[[alerts.recipients]]\nsink = "webhook"\n' + "\n".join(lines) + "\n"
        try:
            stack(text)
        except StackError as exc:
            assert SECRET not in str(exc), text
        except Exception as exc:  # a TOML clash of two mistakes is still a StackError
            raise AssertionError(f"{type(exc).__name__} for {text!r}") from exc


# -- rendering --------------------------------------------------------------------------

def alerts_section(extra):
    return cibmod.build(stack(extra), "stack.toml").find("configuration/alerts")


def test_cib_alert_recipients_and_select():
    section = alerts_section(FULL)
    alert = section.find("alert")
    assert (alert.get("id"), alert.get("path")) == ("hapack", "/usr/sbin/hapack-alert")
    pairs = {nv.get("name"): nv.get("value") for nv in alert.find("instance_attributes")}
    assert pairs == {"hapack_cluster": "hapack-lab", "hapack_deadline": "38"}
    assert alert.find("meta_attributes/nvpair").get("value") == "40s"
    select = alert.find("select")
    assert [c.tag for c in select] == ["select_fencing", "select_nodes", "select_resources",
                                       "select_attributes"]
    assert [a.get("name") for a in select.iter("attribute")] == ["master-partition", "#health"]
    recipients = alert.findall("recipient")
    assert [r.get("id") for r in recipients] == [f"hapack-recipient-{i}" for i in (1, 2, 3)]
    assert recipients[2].get("value") == shlex.join(stack(FULL).alerts.recipients[2].command)
    assert [c.tag for c in alert if isinstance(c.tag, str)] == [
        "instance_attributes", "meta_attributes", "select", "recipient", "recipient", "recipient"]


@pytest.mark.parametrize("flags, tags", [
    ("", ["select_fencing", "select_nodes", "select_resources"]),
    ("select_nodes = false\n", ["select_fencing", "select_resources"]),
    ("select_fencing = false\nselect_resources = false\n", ["select_nodes"]),
    ("select_attributes = true\nselect_nodes = false\n",
     ["select_fencing", "select_resources", "select_attributes"]),
    ("select_attributes = true\n", None),          # everything: no <select> at all
])
def test_select_as_pacemaker_has_it(flags, tags):
    extra = MINIMAL.replace("[alerts]\n", "[alerts]\n" + flags)
    select = alerts_section(extra).find("alert/select")
    assert (None if select is None else [c.tag for c in select]) == tags
    script = crm.render(stack(extra), "stack.toml").decode()
    line = next((l for l in script.splitlines() if l.strip().startswith("select ")), None)
    assert (None if line is None else line.strip().rstrip(" \\").split()[1:]) == (
        None if tags is None else [t.removeprefix("select_") for t in tags])


def test_crm_alert_statement():
    script = crm.render(stack(FULL), "stack.toml").decode()
    lines = [l.strip().rstrip(" \\") for l in script[script.index("alert hapack"):].splitlines()]
    assert lines[:4] == [
        "alert hapack /usr/sbin/hapack-alert",
        "attributes hapack_cluster=hapack-lab hapack_deadline=38",
        "meta timeout=40s",
        "select fencing nodes resources attributes { master-partition #health }"]
    assert lines[4] == (f'to {{ "https://ops:{SECRET}@hooks.example.com:8443/hapack?k=1" '
                        "attributes hapack_sink=webhook hapack_timeout=2 hapack_retries=3 "
                        f'hapack_header_1="Authorization: Bearer {SECRET}" '
                        'hapack_header_2="X-Team: ha" hapack_ca_file=/etc/ssl/ca.pem }')
    assert lines[5] == "to { /run/log.sock attributes hapack_sink=syslog hapack_facility=local3 }"
    assert lines[6].startswith('to { "/usr/local/bin/page --team ')
    assert lines[6].endswith("attributes hapack_sink=command hapack_timeout=15 }")


def test_pcs_alert_lines_and_the_select_through_cibadmin():
    script = pcs.render(stack(FULL), "stack.toml").decode().splitlines()
    words = [shlex.split(l.removeprefix('pcs -f "$cib" ')) for l in script
             if l.startswith('pcs -f "$cib" alert')]
    assert words[0] == ["alert", "create", "path=/usr/sbin/hapack-alert", "id=hapack", "options",
                        "hapack_cluster=hapack-lab", "hapack_deadline=38", "meta", "timeout=40s"]
    assert [w[:5] for w in words[1:]] == [
        ["alert", "recipient", "add", "hapack", f"value={r}"] for r in
        (f"https://ops:{SECRET}@hooks.example.com:8443/hapack?k=1", "/run/log.sock",
         shlex.join(stack(FULL).alerts.recipients[2].command))]
    select = [l for l in script if l.startswith("CIB_file=")]
    assert len(select) == 1
    argv = shlex.split(select[0])
    assert argv[:4] == ['CIB_file=$cib', "cibadmin", "--modify", "--xml-text"]
    xml = etree.fromstring(argv[4])
    assert xml.get("id") == "hapack" and [c.tag for c in xml.find("select")] == [
        "select_fencing", "select_nodes", "select_resources", "select_attributes"]


def test_every_value_of_the_alerts_reaches_crm_and_pcs():
    section = alerts_section(FULL)
    crm_text = crm.render(stack(FULL), "stack.toml").decode()
    pcs_words = {w for l in pcs.render(stack(FULL), "stack.toml").decode().splitlines()
                 if l.startswith("pcs ") for w in shlex.split(l)}
    for nv in section.iter("nvpair"):
        assert f"{nv.get('name')}={nv.get('value')}" in pcs_words
        assert nv.get("name") in crm_text
    for recipient in section.iter("recipient"):
        assert f"value={recipient.get('value')}" in pcs_words


# -- one recipient: the stack file, the CIB's attributes, the agent: the same sink --------

def test_recipient_round_trips_through_the_agent_environment():
    """What the renderer writes for a recipient is what the agent builds back, for many
    spellings (seeded)."""
    rng = random.Random(5)
    for _ in range(150):
        sink = rng.choice(["webhook", "syslog", "command"])
        if sink == "webhook":
            host = rng.choice(["h.example", "198.18.0.9", "[2001:db8::1]"])
            user = rng.choice(["", f"u:{SECRET}@", "u%40x:p%3Aw@", "tok@"])
            body = (f'url = "{rng.choice(["http", "https"])}://{user}{host}'
                    f'{rng.choice(["", ":8443"])}/p?q=1"\n'
                    f'timeout = "{rng.choice(["100ms", "1.5s", "5s"])}"\nretries = {rng.randint(0, 3)}\n')
            if rng.random() < 0.5:
                body += f'headers = {{ Authorization = "Bearer {SECRET}", X-A = "b: c" }}\n'
            if rng.random() < 0.3:
                body += 'headers_file = "/etc/hapack/h"\nca_file = "/etc/ca.pem"\n'
        elif sink == "syslog":
            body = f'facility = "{rng.choice(["daemon", "local0", "local7", "user"])}"\n'
        else:
            args = rng.sample(["-a", "b c", "it's", '"q"', "$HOME", "*", "é"], rng.randint(0, 4))
            body = f'command = {["/usr/bin/x"] + args!r}\ntimeout = "3s"\n'.replace("'", '"') \
                if not any("'" in a or '"' in a for a in args) else 'command = ["/usr/bin/x"]\n'
        recipient = stack(f'[alerts]\n[[alerts.recipients]]\nsink = "{sink}"\n{body}').alerts.recipients[0]
        environ = {"CRM_alert_recipient": recipient_value(recipient), **recipient_attributes(recipient)}
        assert sink_from_environ(environ).spec() == sink_for(recipient).spec(), body
