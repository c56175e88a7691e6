#!/bin/busybox sh
# /init of the VM tier's initramfs (hapack.lab.vmkernel builds it).
# Loads the modules listed in /modules.order, mounts the host's root read-only
# over 9p under a tmpfs overlay, mounts the guest's job and share folders and
# hands over to /hapack-vm/job/run.sh on the new root. No udev, no systemd.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "HAPACK-VM $* uptime=$(cut -d' ' -f1 /proc/uptime)"; }
fail() { say "FAIL $*"; echo o > /proc/sysrq-trigger; sleep 10; }
say initramfs
# insmod ignores name.param= on the kernel command line: pass them explicitly
params() { for a in $(cat /proc/cmdline); do case $a in "$1".*=*) echo "${a#"$1".}";; esac; done; }
for m in $(cat /modules.order); do
    n=${m%.ko}
    # shellcheck disable=SC2046  # one word per parameter
    insmod "/lib/modules/$m" $(params "$n") || say "INSMOD-FAIL $m"
done
say modules
grep -qw hapack.shell=1 /proc/cmdline && exec sh
P9=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$P9,ro,cache=loose" hostroot /mnt/lower || fail 9p
mount -t tmpfs -o size=128m tmpfs /mnt/rw || fail tmpfs
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work /newroot \
    || fail overlay
mkdir -p /newroot/hapack-vm/job /newroot/hapack-vm/share
mount -t 9p -o "$P9" job /newroot/hapack-vm/job || fail job
mount -t 9p -o "$P9,ro" share /newroot/hapack-vm/share || fail share
for d in proc sys dev run tmp; do mkdir -p "/newroot/$d"; done
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mount -t tmpfs -o mode=755 tmpfs /newroot/run
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
say root
exec switch_root /newroot /bin/sh /hapack-vm/job/run.sh
