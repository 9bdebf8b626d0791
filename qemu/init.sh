#!/bin/sh
# PID 1 of the umd QEMU guest (built into the initramfs by qemu/initramfs.go).
#
# Serial ports, as the host harness wires them:
#   ttyS0  kernel console: kept in console.log on the host
#   ttyS1  the output (stdout and stderr) of the command being run
#   ttyS2  status lines for the harness: "stage NAME UPTIME",
#          "mark TEXT" (written by benchmark scripts, see TraceCounter),
#          "ready UPTIME", "exit CODE",
#          "setup-failed"
# /umd/config (from the per-run archive) sets UMD_* variables;
# /umd/run.sh is the command to run.

export PATH=/umd/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/hugepages
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t hugetlbfs hugetlbfs /dev/hugepages

stty -F /dev/ttyS1 raw -echo
stty -F /dev/ttyS2 raw -echo

# stage reports how far setup got (umdvm shows it with UMD_STAGES=1).
stage() { read -r up _ < /proc/uptime; echo "stage $* $up" > /dev/ttyS2; }
status() { echo "$*" > /dev/ttyS2; }
fail() {
	echo "umd guest setup: $*" > /dev/ttyS1
	status setup-failed
	poweroff -f
}

[ -f /umd/config ] || fail "no /umd/config in the initramfs"
. /umd/config
export UMD_GUEST=1 UMD_TOPOLOGY UMD_KERNEL UMD_DRIVER

stage hugepages
# The kernel command line reserved them (faster than at run time); top up.
[ "$(cat /proc/sys/vm/nr_hugepages)" -ge "$UMD_HUGEPAGES" ] || echo "$UMD_HUGEPAGES" > /proc/sys/vm/nr_hugepages
got=$(cat /proc/sys/vm/nr_hugepages)
[ "$got" -ge "$UMD_HUGEPAGES" ] || fail "reserved $got of $UMD_HUGEPAGES hugepages"

stage modules
# The project's own modules (kmod/) arrive with the run; index them.
if [ -d "/lib/modules/$(uname -r)/extra" ]; then
	depmod || fail "depmod for the modules in /lib/modules/$(uname -r)/extra"
fi
modprobe vfio_iommu_type1 || fail "modprobe vfio_iommu_type1"
modprobe vfio-pci || fail "modprobe vfio-pci"

# Bind every NVMe function (class 01:08:02) to the driver asked for.
nvme_functions() {
	for d in /sys/bus/pci/devices/*; do
		[ "$(cat "$d/class")" = 0x010802 ] && echo "${d##*/}"
	done
}
stage bind
if [ "$UMD_DRIVER" = nvme ]; then
	modprobe nvme || fail "modprobe nvme"
else
	for bdf in $(nvme_functions); do
		echo vfio-pci > "/sys/bus/pci/devices/$bdf/driver_override"
		echo "$bdf" > /sys/bus/pci/drivers_probe
	done
fi
stage wait-bound
for bdf in $(nvme_functions); do
	i=0
	while [ ! -e "/sys/bus/pci/devices/$bdf/driver" ] && [ $i -lt 100 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	drv=$(readlink "/sys/bus/pci/devices/$bdf/driver")
	[ "${drv##*/}" = "$UMD_DRIVER" ] || fail "$bdf is bound to '${drv##*/}', not $UMD_DRIVER"
done
if [ "$UMD_DRIVER" = nvme ]; then
	# Namespaces appear asynchronously after the driver binds.
	i=0
	while [ "$(ls -d /sys/block/nvme*n* 2>/dev/null | wc -l)" -lt "$UMD_NAMESPACES" ] && [ $i -lt 200 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	[ "$(ls -d /sys/block/nvme*n* 2>/dev/null | wc -l)" -ge "$UMD_NAMESPACES" ] ||
		fail "only $(ls -d /sys/block/nvme*n* 2>/dev/null | wc -l) of $UMD_NAMESPACES NVMe namespaces appeared"
fi

cd /umd/work 2>/dev/null || cd /root
read -r up _ < /proc/uptime
status "ready $up"
# Through a pipe, so the command's output is not a terminal.
{ sh /umd/run.sh < /dev/null; echo $? > /tmp/.umd-exit; } 2>&1 | cat > /dev/ttyS1
status "exit $(cat /tmp/.umd-exit)"
sync
poweroff -f
