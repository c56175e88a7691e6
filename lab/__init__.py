"""hapack.lab: a faithful two-node cluster on this one machine.

Tests, the demo and the benchmarks run against it. "Power off" really means
power off: each node is one ``unshare`` process tree, and its BMC (an OpenIPMI
``ipmi_sim`` reached with ``ipmitool -I lanplus -C 3``) kills it.

Topology (one lab; ``hl<name>`` prefixes every host interface, and the subnets
are one free block of three /24 in 198.18.0.0/15, chosen per lab)::

    host: bridges hl<name>-lan   hl<name>-hb   hl<name>-bmc (.1 host, .21/.22 BMCs)
                    |  |  |         |  |           |  |
       client .50 --+  |  |         |  |           |  |      (no IPv6 anywhere)
       node1 eth0 .11 -+  |  eth1 .11 -+  eth2 .11 -+  |
       node2 eth0 .12 ----+  eth1 .12 ----+  eth2 .12 ----+
    VIP candidates: lan .100-.199

A node has its own net, mount, UTS, IPC and PID namespaces, a private /run,
/dev/shm, /tmp and /sys, and persistent per-node directories bind-mounted on
/etc/corosync, /etc/hapack, /var/lib/pacemaker, /var/lib/corosync, /var/log,
/etc/ha.d and /var/lib/heartbeat (these two seeded from the host's, as Debian's
heartbeat package installed them; for Heartbeat, see :mod:`hapack.lab.heartbeat`)
(and its own /etc/hosts). Its PID 1 is :mod:`hapack.lab.nodeinit`: hostname,
mounts, a simulated POST (``boot_delay``), network, then Corosync 3 (knet,
two links, aes256/sha256, two_node) and Pacemaker, or nothing
(``stack="none"``, e.g. for hamon), then the lab's boot services. Killing the
tree is a power loss: the namespaces, cables (veths) and any VIP vanish.

Life cycle::

    with Lab(stack="pacemaker") as lab:      # up: about 5 s to both online + quorum
        lab.exec("node1", ["crm_mon", "-1"]).stdout
        lab.power("node2", "off")            # ipmitool chassis power off
    # torn down here, also after an exception

API (``Lab``; nodes are ``"node1"``, ``"node2"``; links ``"lan"``, ``"hb"``, ``"bmc"``)

* ``Lab(name=None, stack="pacemaker"|"none", *, boot_delay=2.0, token_ms=1000,
  corosync_conf=None, cluster_options=None, services=None, disk_mb=64,
  persistent=False)``: a lab, not yet built. ``name``: 1-6 of [a-z0-9]
  (default: random). ``corosync_conf``: your own corosync.conf text instead
  of the lab's. ``cluster_options``: seed CIB properties (default
  ``{"dc-deadtime": "2s"}``). ``services``: ``[{"name", "argv", "env"?}]``
  started by every boot of every node (log: ``/var/log/hapack/<name>.log``).
  ``persistent``: stays up after this process exits (the CLI's labs).
* ``up() -> Lab`` / ``down() -> bool``; context manager. ``down`` is
  idempotent, works on half-built labs, and from the state file alone.
* ``Lab.attach(name)``, ``Lab.names()``, ``Lab.reap_stale()`` (labs whose
  owner process died), ``Lab.down_all()``; ``missing_prerequisites(stack)``.
* Facts: ``nodes``, ``name``, ``dir``, ``shared_dir``, ``node_dir(node)``,
  ``subnet(link)``, ``prefixlen(link)``, ``Lab.iface(link)`` (eth0/eth1/eth2),
  ``addr(node, link="lan")``, ``client_addr``, ``vip_candidates()``,
  ``free_vip(i=0)``, ``bmc(node) -> Bmc``, ``shared_disk -> SharedDisk``,
  ``corosync_conf``, ``cgroup(node, controller="freezer")``, ``plan``
  (names, MACs: :class:`hapack.lab.naming.Plan`).
* Power, through the BMC with ipmitool: ``power(node, "on"|"off"|"reset"|
  "cycle"|"status", wait=False) -> str`` (status gives "on"/"off"),
  ``power_on_all()``, ``wait_booted(node, timeout=None)``,
  ``wait_gone(node, timeout=10)``, ``running(node)``, ``power_state(node)``,
  ``set_boot_delay(seconds)``.
* Faults: ``crash(node)`` (SIGKILL of its PID 1; the BMC still says "on", as
  after a panic), ``freeze(node)`` / ``thaw(node)`` / ``frozen(node)``
  (cgroup v1 freezer), ``cut_link(node, link|"all")`` / ``heal_link(...)`` /
  ``cut_links(node)`` (the host end goes down: NO-CARRIER in the node; a cut
  survives reboots), ``kill_process(node, pid_in_node|exact_name,
  sig=SIGKILL)``, ``bmc_unreachable(node)`` / ``bmc_reachable(node)`` (the
  BMC address leaves the BMC network: requests time out), ``cut_power(node)``
  (the power fails at the source, not through the BMC), ``restore()``
  (undo all of them, wait until healthy).
* PDUs (``Lab(pdu=True)``): ``pdu(node) -> Bmc``, a second ipmi_sim on the BMC
  network switching the same power supply, for a second fencing level with the
  stock fence_ipmilan.
* Running things: ``exec(node, argv, *, check=True, timeout=60, input=None,
  env=None, text=True, capture=True) -> CompletedProcess`` (nsenter into all
  the node's namespaces and cgroups, cwd /, a clean environment; raises
  ``NodeDown``, ``NodeFrozen``, ``NodeCommandError``), ``client_exec(argv, ...)``,
  ``spawn(node, argv, *, name=None, env=None) -> Spawned`` (a daemon of the
  node: dies with it, not restarted at boot), ``stop_background()``,
  ``start_responder(node, ip="0.0.0.0", port=8080) -> Spawned`` (answers every
  TCP connection with the hostname; binds with IP_FREEBIND, so it can wait
  for a VIP), ``Lab.responder_argv(ip, port)`` (for an
  ``ocf:heartbeat:anything`` resource), ``ping(src|"client", dst, timeout=1)``.
* Observation: ``watch_vip(ip, port=8080, interval=0.05, timeout=0.2) ->
  VipWatch`` (client-side poller: ``samples``, ``since(t)``, ``changes()``,
  ``wait_for(hostname|"error"|predicate, timeout, after=t)``; ``Sample.mono``
  compares with ``time.monotonic()``), ``crm_mon(node) -> ClusterView``,
  ``wait_online(nodes=None, timeout=90)``, ``processes(node)`` (pid in the
  node and in the host; works on a frozen node), ``mounts(node)``,
  ``logs(node) -> {name: Path}`` (console, power, boot, and everything under
  the node's /var/log, e.g. ``cluster/corosync.log``,
  ``pacemaker/pacemaker.log``), ``power_log(node) -> [PowerEvent]``,
  ``boot_stages(node)``, ``status()``, ``collect_logs(dest)``.
* ``Bmc`` (frozen): node, address, port, username, password, password_file,
  interface="lanplus", cipher=3; ``ipmitool_argv(*cmd)``,
  ``fence_ipmilan_params()``.
* ``SharedDisk`` (frozen; the :class:`BlockDevice` protocol): ``device``
  (a /dev/loopN every node sees), ``fstype`` ("ext4"), ``label``,
  ``device_for(node)``. A DRBD pair can replace it behind the same protocol.

CLI: ``hapack lab up [--stack pacemaker|none] [--name N] [--boot-delay S]``,
``status``, ``exec [--name N] NODE|client -- CMD...``, ``power [--name N]
NODE on|off|reset|cycle|status [--wait]``, ``down [--name N]`` (no name: every
lab, leftovers included).

Things to know inside a node:

* The host's file system is the node's, except the private mounts above.
  /var/tmp is shared: the lab lives in ``/var/tmp/hapack-lab/<name>/`` and
  ``lab.shared_dir`` is visible at the same path in the host and every node.
  /tmp is private per node (a pytest ``tmp_path`` is invisible there): put
  files a node must run under ``lab.shared_dir``.
* A node sees no syslog: daemons must log to files (PCMK_logfile, corosync
  ``to_logfile``). Without systemd, start daemons with ``spawn`` (or
  ``services`` for ones that must come back after a reboot), not with
  ``exec(... "&")``: a process whose parent stays outside the node keeps a
  dead node's PID namespace around until the host reaps it.
* Everything the lab builds is recorded in ``lab.json`` first; ``down``
  removes it from that record, killing only recorded processes (and the
  members of the lab's own cgroups and client namespace), never by name.
"""

from .bmc import Bmc, BmcError
from .core import Lab, LabError, NodeCommandError, NodeDown, NodeFrozen, Spawned, missing_prerequisites
from .disk import BlockDevice, SharedDisk
from .observe import Mount, NodeProcess, PowerEvent, Sample, VipWatch
from .stack import ClusterView

__all__ = ["Bmc", "BmcError", "BlockDevice", "ClusterView", "Lab", "LabError", "Mount", "NodeCommandError",
           "NodeDown", "NodeFrozen", "NodeProcess", "PowerEvent", "Sample", "SharedDisk", "Spawned",
           "VipWatch", "missing_prerequisites"]
