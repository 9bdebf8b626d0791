# make demo: what the guest sees, booted with the `cards` topology.
# (Runs in the guest's busybox sh as root; see docs/testing.md.)

echo "== kernel"
uname -r
echo
echo "== PCIe functions (BDF  vendor:device  class  driver  IOMMU group  NUMA node)"
for d in /sys/bus/pci/devices/*; do
	bdf=${d##*/}
	drv=-
	[ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
	grp=-
	[ -e "$d/iommu_group" ] && grp=$(basename "$(readlink "$d/iommu_group")")
	printf '%s  %s:%s  %s  %-9s group %-3s node %s\n' "$bdf" \
		"$(cut -c3- "$d/vendor")" "$(cut -c3- "$d/device")" "$(cut -c3- "$d/class")" \
		"$drv" "$grp" "$(cat "$d/numa_node")"
done
echo
echo "== PCIe paths of the NVMe functions (root port -> switch -> endpoint)"
for d in /sys/bus/pci/devices/*; do
	[ "$(cat "$d/class")" = 0x010802 ] || continue
	path=$(readlink -f "$d")
	echo "${path#/sys/devices/}"
done
echo
echo "== IOMMU groups"
for g in /sys/kernel/iommu_groups/*; do
	printf 'group %-3s %s\n' "${g##*/}" "$(ls "$g/devices" | tr '\n' ' ')"
done
echo
echo "== /dev/vfio"
ls -l /dev/vfio
echo
echo "== umdprobe tree"
umdprobe tree
echo
echo "== umdprobe doctor"
umdprobe doctor
first=$(ls /sys/bus/pci/drivers/vfio-pci | grep -m1 ':')
if umdprobe identify --help > /dev/null 2>&1; then
	echo
	echo "== umdprobe identify $first"
	umdprobe identify "$first"
fi
echo
echo "== umdbench: 4 KiB random reads, queue depth 32, polled, 3 s, on $first"
umdbench --rw randread --bs 4k --iodepth 32 --runtime 3s "$first"
echo
echo "== umdbench: verified random read/write mix on every NVMe, interrupts, 3 s"
umdbench --rw randrw --bs 4k --iodepth 8 --verify --completion irq --runtime 3s class=nvme
