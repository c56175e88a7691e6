#!/bin/sh
# PID 1 of a VM-tier guest after switch_root (the host's /bin/sh on the host's
# root, read-only under a tmpfs overlay), copied into the job folder as run.sh.
# Sets the node up from the job folder (env: HAPACK_NODE, HAPACK_ADDR,
# HAPACK_PYTHON, HAPACK_AGENT; drbd.conf) and runs the mailbox agent
# (hapack.lab.vmguest), which answers the host (hapack.lab.vmnode).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
J=/hapack-vm/job
. "$J/env"
echo "$HAPACK_NODE" > /proc/sys/kernel/hostname
ip link set lo up
ip link set eth0 up
ip addr add "$HAPACK_ADDR" dev eth0
# eth1: QEMU user networking, only to reach the BMCs (hapack.lab.vmnode.BMC_HOST); its net only
ip link set eth1 up
ip addr add "$HAPACK_BMC_ADDR" dev eth1
cp "$J/drbd.conf" /etc/drbd.conf
# drbdmeta locks in /var/lock (-> /run/lock); drbdadm keeps state in /var/lib/drbd
mkdir -p /var/lib/drbd /run/drbd /run/lock /run/resource-agents
echo "HAPACK-VM agent $HAPACK_NODE"
"$HAPACK_PYTHON" -I "$HAPACK_AGENT" "$J"
echo "HAPACK-VM agent exited $?"
echo o > /proc/sysrq-trigger
sleep 10
