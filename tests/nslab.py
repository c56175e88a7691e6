"""Network-namespace hosts for integration tests (198.18.0.0/15 only).

A :class:`Segment` is one bridge with hosts (named network namespaces)
attached through veth pairs; everything it creates is removed by
:meth:`Segment.close`, also when the test failed. Names carry a per-run
prefix so parallel runs and other programs never collide.
"""

import os
import subprocess


def sh(*argv, check=True, input=None, timeout=30):
    return subprocess.run(argv, check=check, capture_output=True, text=True, input=input,
                          timeout=timeout)


class Host:
    def __init__(self, segment, name, mac, addrs):
        self.segment, self.name, self.mac, self.addrs = segment, name, mac, addrs

    def run(self, *argv, check=True, env=None, timeout=60, input=None):
        full = ["ip", "netns", "exec", self.name, *argv]
        return subprocess.run(full, check=check, capture_output=True, text=True, env=env,
                              timeout=timeout, input=input)

    def neighbour(self, ip):
        """(lladdr, state) of the neighbour entry for ip, or (None, None)."""
        out = self.run("ip", "neigh", "show", ip, "dev", "eth0").stdout.split()
        mac = out[out.index("lladdr") + 1] if "lladdr" in out else None
        return mac, (out[-1] if out else None)


class Segment:
    """A bridge in the root namespace with namespace hosts on it."""

    def __init__(self, tag, v4_subnet="198.18.200", v6_prefix="2001:db8:c8"):
        self.prefix = f"hp{os.getpid() % 10000}{tag}"[:9]
        self.bridge = f"{self.prefix}br"
        self.v4, self.v6 = v4_subnet, v6_prefix
        self.hosts = []
        sh("ip", "link", "add", self.bridge, "address", "02:00:c6:12:ff:f0", "type", "bridge",
           "mcast_snooping", "0")
        sh("ip", "link", "set", self.bridge, "up")

    def add_host(self, short, index):
        name = f"{self.prefix}{short}"
        mac = f"02:00:c6:12:c8:{index:02x}"
        addrs = (f"{self.v4}.{index}", f"{self.v6}::{index}")
        veth = f"{name}v"[:15]
        sh("ip", "netns", "add", name)
        host = Host(self, name, mac, addrs)
        self.hosts.append(host)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
        sh("ip", "-n", name, "link", "set", "eth0", "address", mac)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "addr", "add", f"{addrs[0]}/24", "dev", "eth0")
        sh("ip", "-n", name, "addr", "add", f"{addrs[1]}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        return host

    def close(self):
        for host in self.hosts:
            sh("ip", "netns", "del", host.name, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
