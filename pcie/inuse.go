package pcie

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/mountinfo"
	"github.com/umdkit/umd/internal/procfd"
)

// A Use is one reason a function's device is busy.
type Use struct {
	// Device is the kernel's name of the block or character device:
	// "nvme0n1", "nvme0n1p2", "nvme0".
	Device string `json:"device"`
	// What says how it is used: "mounted on /mnt", "held by dm-0",
	// "used as swap", "open by process 123 (fio)".
	What string `json:"what"`
	PID  int    `json:"pid,omitempty"` // for "open by process"
}

func (u Use) String() string { return u.Device + " is " + u.What }

// An InUseError says why a function may not be taken from its driver.
type InUseError struct {
	BDF    BDF
	Driver string
	Uses   []Use
}

func (e *InUseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is in use through %s: ", e.BDF, e.Driver)
	const most = 3
	for i, u := range e.Uses {
		if i == most {
			fmt.Fprintf(&b, " and %d more", len(e.Uses)-most)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(u.String())
	}
	b.WriteString(" (unmount, stop or close them first)")
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Unwrap() error { return ErrInUse }

// devNode is one block or character device of a function.
type devNode struct {
	name   string
	dir    string // its sysfs directory
	block  bool
	major  uint32
	minor  uint32
	isPart bool
}

// FunctionUses reports what keeps the function b busy under its current
// driver: its block devices (NVMe namespaces and their partitions, also
// through NVMe multipath heads) mounted, used as swap, held by other
// block devices (device-mapper, md), or open by a process; and its NVMe
// character devices open by a process. Processes whose file descriptors
// the caller may not read are not seen (root sees all).
func FunctionUses(sysfsRoot, procRoot string, b BDF) ([]Use, error) {
	if sysfsRoot == "" {
		sysfsRoot = DefaultSysfsRoot
	}
	if procRoot == "" {
		procRoot = DefaultProcRoot
	}
	return findUses(sysfsRoot, procRoot, b)
}

func findUses(sysfsRoot, procRoot string, b BDF) ([]Use, error) {
	nodes, err := functionDevices(sysfsRoot, b)
	if err != nil || len(nodes) == 0 {
		return nil, err
	}
	var uses []Use
	byNum := map[[3]uint64]string{}
	for _, n := range nodes {
		byNum[[3]uint64{boolU(n.block), uint64(n.major), uint64(n.minor)}] = n.name
		if !n.block {
			continue
		}
		holders, _ := os.ReadDir(filepath.Join(n.dir, "holders"))
		for _, h := range holders {
			uses = append(uses, Use{Device: n.name, What: "held by " + h.Name()})
		}
	}

	// A missing mountinfo is no mounts.
	mounts, err := mountinfo.Read(filepath.Join(procRoot, "self", "mountinfo"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	for _, m := range mounts {
		maj, min, ok := parseMajMin(m.Dev)
		if name, found := byNum[[3]uint64{1, uint64(maj), uint64(min)}]; ok && found {
			uses = append(uses, Use{Device: name, What: "mounted on " + m.Point})
		}
	}
	if swaps, err := os.ReadFile(filepath.Join(procRoot, "swaps")); err == nil {
		for i, line := range strings.Split(string(swaps), "\n") {
			fields := strings.Fields(line)
			if i == 0 || len(fields) == 0 {
				continue
			}
			for _, n := range nodes {
				if n.block && filepath.Base(fields[0]) == n.name {
					uses = append(uses, Use{Device: n.name, What: "used as swap"})
				}
			}
		}
	}
	uses = append(uses, openBy(procRoot, byNum)...)
	return uses, nil
}

func boolU(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// functionDevices finds the block devices (disks and partitions) and
// NVMe character devices that belong to the function: every entry of
// block/ whose sysfs directory lies below the function's, or whose parent
// directory links to something below it (an NVMe multipath head lives in
// devices/virtual/nvme-subsystem/nvme-subsysN/, which links to its
// controllers).
func functionDevices(sysfsRoot string, b BDF) ([]devNode, error) {
	fnDir, err := filepath.EvalSymlinks(filepath.Join(sysfsRoot, "bus", "pci", "devices", b.String()))
	if err != nil {
		return nil, fmt.Errorf("finding %s in sysfs: %w", b, err)
	}
	below := func(p string) bool { return strings.HasPrefix(p, fnDir+string(filepath.Separator)) }
	var nodes []devNode

	// NVMe controllers' character devices: <fn>/nvme/nvmeN/dev.
	ctrls, _ := os.ReadDir(filepath.Join(fnDir, "nvme"))
	for _, c := range ctrls {
		if n, ok := readDevNode(filepath.Join(fnDir, "nvme", c.Name()), c.Name(), false); ok {
			nodes = append(nodes, n)
		}
	}

	// VFIO: the group's character device (/dev/vfio/N, class/vfio/N)
	// and the device's own (/dev/vfio/devices/vfioX, <fn>/vfio-dev/vfioX).
	// A process holding one open keeps vfio-pci from letting go: the
	// kernel's unbind then blocks until it closes.
	if g, err := os.Readlink(filepath.Join(fnDir, "iommu_group")); err == nil {
		name := filepath.Base(g)
		if n, ok := readDevNode(filepath.Join(sysfsRoot, "class", "vfio", name), "vfio/"+name, false); ok {
			nodes = append(nodes, n)
		}
	}
	vdevs, _ := os.ReadDir(filepath.Join(fnDir, "vfio-dev"))
	for _, v := range vdevs {
		if n, ok := readDevNode(filepath.Join(fnDir, "vfio-dev", v.Name()), "vfio/devices/"+v.Name(), false); ok {
			nodes = append(nodes, n)
		}
	}

	disks, err := os.ReadDir(filepath.Join(sysfsRoot, "block"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listing block devices: %w", err)
	}
	for _, d := range disks {
		dir, err := filepath.EvalSymlinks(filepath.Join(sysfsRoot, "block", d.Name()))
		if err != nil {
			continue
		}
		if !below(dir) && !linksBelow(filepath.Dir(dir), below) {
			continue
		}
		n, ok := readDevNode(dir, d.Name(), true)
		if !ok {
			continue
		}
		nodes = append(nodes, n)
		parts, _ := os.ReadDir(dir)
		for _, p := range parts {
			pdir := filepath.Join(dir, p.Name())
			if _, err := os.Stat(filepath.Join(pdir, "partition")); err != nil {
				continue
			}
			if pn, ok := readDevNode(pdir, p.Name(), true); ok {
				pn.isPart = true
				nodes = append(nodes, pn)
			}
		}
	}
	return nodes, nil
}

// linksBelow reports whether a directory holds a symlink to somewhere
// below returns true for.
func linksBelow(dir string, below func(string) bool) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		if t, err := filepath.EvalSymlinks(filepath.Join(dir, e.Name())); err == nil && below(t) {
			return true
		}
	}
	return false
}

// readDevNode reads the "MAJOR:MINOR" dev attribute of a device directory.
func readDevNode(dir, name string, block bool) (devNode, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "dev"))
	if err != nil {
		return devNode{}, false
	}
	maj, min, ok := parseMajMin(strings.TrimSpace(string(b)))
	if !ok {
		return devNode{}, false
	}
	return devNode{name: name, dir: dir, block: block, major: maj, minor: min}, true
}

func parseMajMin(s string) (uint32, uint32, bool) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, false
	}
	maj, err1 := strconv.ParseUint(a, 10, 32)
	min, err2 := strconv.ParseUint(b, 10, 32)
	return uint32(maj), uint32(min), err1 == nil && err2 == nil
}

// openBy lists the processes holding one of the devices open.
func openBy(procRoot string, byNum map[[3]uint64]string) []Use {
	key := func(block bool, rdev uint64) [3]uint64 {
		return [3]uint64{boolU(block), uint64(unix.Major(rdev)), uint64(unix.Minor(rdev))}
	}
	var uses []Use
	for _, h := range procfd.Holders(procRoot, func(block bool, rdev uint64) bool {
		_, ok := byNum[key(block, rdev)]
		return ok
	}) {
		what := fmt.Sprintf("open by process %d", h.PID)
		if h.Comm != "" {
			what += " (" + h.Comm + ")"
		}
		uses = append(uses, Use{Device: byNum[key(h.Block, h.Rdev)], What: what, PID: h.PID})
	}
	return uses
}
