"""Adapt resource-agents' own ocft suites to hapack's agents: `python adapt.py` rewrites
the suites next to it from the installed ones (/usr/share/resource-agents/ocft/configs).

Only what the comparison needs changes, each as one substitution below (so the change
is this file, and `diff` against the installed suite shows it): the agent's name and
provider, the addresses (192.168.0.0/16 -> 198.18.0.0/16 inside a network namespace;
the IPv6 suites already use 2001:db8::/32), what promotion needs (Filesystem), and the
paths the tomcat suite asks to adjust to the local installation. The test that runs them is
tests/integration/test_ocft.py; the expected results are in EXPECTED there and in the
README ("ocft").
"""

import os
import sys

INSTALLED = "/usr/share/resource-agents/ocft/configs"
HERE = os.path.dirname(os.path.abspath(__file__))
AGENT_ROOT = "/usr/lib/ocf/resource.d/hapack"  # the test points it at its staged install

SUITES = {  # suite -> (stock agent, hapack agent, more substitutions)
    "IPaddr2": ("IPaddr2", "vip", (("192.168.", "198.18."),)),
    "IPaddr2v4": ("IPaddr2", "vip", (("192.168.", "198.18."),)),
    "IPaddr2v6": ("IPaddr2", "vip", ()),
    # promotion needs: a promotable partition outside a clone (promote_on_start) on a
    # block device every node sees (backend=shared; a fresh ext3 passes the gate's
    # on-disk check: cleanly unmounted, mounted nowhere)
    "Filesystem": ("Filesystem", "partition", (
        ("\tEnv OCF_RESKEY_directory=$OCFT_dir\n",
         "\tEnv OCF_RESKEY_directory=$OCFT_dir\n\tEnv OCF_RESKEY_backend=shared\n"
         "\tEnv OCF_RESKEY_promote_on_start=true\n"),)),
    "apache": ("apache", "apache", ()),
    # the suite's own "Adjust according to your configuration": this machine's Tomcat,
    # its user and Java (Debian's tomcat10, OpenJDK 17)
    "tomcat": ("tomcat", "tomcat", (
        ("catalina_home=/opt/tomcat7", "catalina_home=/usr/share/tomcat10"),
        ("tomcat_user=tomcat7", "tomcat_user=tomcat"),
        ("java_home=/usr/lib/jvm/java-1.6.0-openjdk.x86_64",
         "java_home=/usr/lib/jvm/java-17-openjdk-amd64"))),
    "pgsql": ("pgsql", "postgresql", ()),
}


def adapt(suite: str) -> str:
    stock, ours, more = SUITES[suite]
    with open(os.path.join(INSTALLED, suite), encoding="utf-8") as handle:
        text = handle.read()
    changes = ((f"Agent {stock}\n", f"Agent {ours}\n"),
               ("AgentRoot /usr/lib/ocf/resource.d/heartbeat", f"AgentRoot {AGENT_ROOT}"),
               *more)
    for old, new in changes:
        if old not in text:
            raise SystemExit(f"{suite}: {old!r} not found: the installed suite changed")
        text = text.replace(old, new)
    return text


def main(argv: "list[str]") -> int:
    check = "--check" in argv
    stale = []
    for suite in SUITES:
        path = os.path.join(HERE, suite)
        text = adapt(suite)
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current != text:
            stale.append(suite)
            if not check:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(text)
    if check and stale:
        print(f"out of date: {', '.join(stale)} (run python {__file__})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
