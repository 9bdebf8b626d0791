package pcietest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// IOMMU adds class/iommu/NAME, as a kernel with an IOMMU enabled shows
// it ("dmar0" for Intel VT-d, "ivhd0" for AMD-Vi).
func (tr *Tree) IOMMU(name string) {
	tr.t.Helper()
	tr.mkdir(filepath.Join(tr.Root, "class", "iommu", name))
}

// A Namespace describes an NVMe namespace (a disk) for NVMeNamespace.
type Namespace struct {
	Disk string // "nvme0n1"
	Dev  string // "259:0"
	// Partitions maps partition names ("nvme0n1p1") to their dev.
	Partitions map[string]string
	// Holders are block devices stacked on the disk ("dm-0").
	Holders []string
	// Multipath puts the disk where a kernel with native NVMe multipath
	// does: in devices/virtual/nvme-subsystem/nvme-subsysN/, linking to
	// the controller.
	Multipath bool
}

// NVMeNamespace gives the function bdf an NVMe controller ctrl ("nvme0",
// with character device ctrlDev, "241:0") if it has none yet, and the
// namespace ns, with block/NAME links as /sys/block has them.
func (tr *Tree) NVMeNamespace(bdf, ctrl, ctrlDev string, ns Namespace) {
	tr.t.Helper()
	ctrlDir := filepath.Join(tr.Path(bdf), "nvme", ctrl)
	if _, err := os.Stat(ctrlDir); err != nil {
		tr.mkdir(ctrlDir)
		tr.write(ctrlDir, "dev", ctrlDev+"\n")
		tr.symlink(filepath.Join(ctrlDir, "device"), tr.Path(bdf))
	}
	diskDir := filepath.Join(ctrlDir, ns.Disk)
	if ns.Multipath {
		subsys := filepath.Join(tr.Root, "devices", "virtual", "nvme-subsystem", "nvme-subsys"+strings.TrimPrefix(ctrl, "nvme"))
		tr.mkdir(subsys)
		if _, err := os.Lstat(filepath.Join(subsys, ctrl)); err != nil {
			tr.symlink(filepath.Join(subsys, ctrl), ctrlDir)
		}
		diskDir = filepath.Join(subsys, ns.Disk)
	}
	tr.mkdir(filepath.Join(diskDir, "holders"))
	tr.write(diskDir, "dev", ns.Dev+"\n")
	for _, h := range ns.Holders {
		tr.mkdir(filepath.Join(diskDir, "holders", h))
	}
	for name, dev := range ns.Partitions {
		p := filepath.Join(diskDir, name)
		tr.mkdir(filepath.Join(p, "holders"))
		tr.write(p, "dev", dev+"\n")
		tr.write(p, "partition", "1\n")
	}
	tr.mkdir(filepath.Join(tr.Root, "block"))
	tr.symlink(filepath.Join(tr.Root, "block", ns.Disk), diskDir)
}

// A Proc is a fake /proc for the parts binding reads: self/mountinfo,
// swaps, and PID/fd/N links with PID/comm.
type Proc struct {
	Root string
	tr   *Tree
	nm   int
}

// NewProc makes a fake /proc with nothing mounted from a PCI device,
// no swap and no processes.
func (tr *Tree) NewProc() *Proc {
	tr.t.Helper()
	root := tr.t.TempDir()
	tr.mkdir(filepath.Join(root, "self"))
	tr.write(filepath.Join(root, "self"), "mountinfo", "22 1 0:21 / /proc rw,nosuid - proc proc rw\n")
	tr.write(root, "swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
	return &Proc{Root: root, tr: tr}
}

// Mount adds a line to self/mountinfo mounting the device dev
// ("259:1") on point.
func (p *Proc) Mount(dev, point string) {
	p.tr.t.Helper()
	p.nm++
	p.append(filepath.Join(p.Root, "self", "mountinfo"),
		fmt.Sprintf("%d 1 %s / %s rw,relatime - ext4 /dev/x rw\n", 100+p.nm, dev, strings.ReplaceAll(point, " ", `\040`)))
}

// Swap adds a swap device line to swaps.
func (p *Proc) Swap(devPath string) {
	p.tr.t.Helper()
	p.append(filepath.Join(p.Root, "swaps"), devPath+"\tpartition\t1048572\t0\t-2\n")
}

// Open makes process pid (named comm) hold target open as fd.
func (p *Proc) Open(pid int, comm string, fd int, target string) {
	p.tr.t.Helper()
	dir := filepath.Join(p.Root, fmt.Sprint(pid))
	p.tr.mkdir(filepath.Join(dir, "fd"))
	p.tr.write(dir, "comm", comm+"\n")
	if err := os.Symlink(target, filepath.Join(dir, "fd", fmt.Sprint(fd))); err != nil {
		p.tr.t.Fatal(err)
	}
}

func (p *Proc) append(file, line string) {
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		p.tr.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line); err != nil {
		p.tr.t.Fatal(err)
	}
}
