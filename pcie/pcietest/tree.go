package pcietest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// A Tree is a fake sysfs in a temporary directory, laid out as the kernel
// lays out the PCI parts of /sys:
//
//	devices/pci0000:00/0000:00:1c.0/0000:01:00.0/{vendor,config,...}
//	bus/pci/devices/0000:01:00.0 -> ../../../devices/pci0000:00/...
//	bus/pci/drivers/nvme/0000:01:00.0 -> ../../../../devices/...
//	bus/pci/slots/3/address
//	kernel/iommu_groups/12/devices/0000:01:00.0 -> ../../../../devices/...
//
// with the function directories' driver, iommu_group, physfn and virtfnN
// links pointing where the kernel's do.
type Tree struct {
	Root  string
	t     testing.TB
	paths map[string]string // BDF -> path relative to Root
	vfs   map[string][]string
}

// New makes an empty tree in a directory removed when the test ends.
func New(t testing.TB) *Tree {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"devices", "bus/pci/devices", "bus/pci/drivers", "bus/pci/slots", "kernel/iommu_groups"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &Tree{Root: root, t: t, paths: map[string]string{}, vfs: map[string][]string{}}
}

// A Func describes one PCI function to add to a Tree. Only BDF and the
// IDs are needed; everything else left zero is left out of the tree (as
// the kernel leaves out what does not apply).
type Func struct {
	BDF string // "0000:01:00.0"
	// Parent is the BDF of the bridge above, which must have been added
	// already; "" puts the function on a root bus, HostBridge ("" means
	// "pci<domain>:<bus>" of BDF). Both set put the function on a root
	// bus below its parent, as Intel VMD's are.
	Parent     string
	HostBridge string

	Vendor, Device       uint16
	SubVendor, SubDevice uint16
	Class                uint32
	Revision             uint8
	// Config is the config file's content; nil writes a 256-byte image
	// with just the header (NewConfig(Vendor, Device, Class)).
	Config []byte

	Driver         string // bound driver; "" for none
	DriverOverride string
	IOMMUGroup     string // group number; "" for no IOMMU
	NUMANode       string // "" writes -1
	Slot           string // physical slot name for bus/pci/slots

	// Link attributes, written only when set: "8.0 GT/s PCIe", "Unknown".
	Speed, MaxSpeed string
	Width, MaxWidth int

	// Resources are the lines of the resource file; unset lines are
	// written as zeros up to 17 lines, as a kernel with SR-IOV does.
	Resources []Resource

	// SR-IOV: TotalVFs > 0 writes sriov_totalvfs and sriov_numvfs on a
	// PF; PhysFn marks a VF (its PF must be added first).
	TotalVFs, NumVFs int
	PhysFn           string

	// Attrs are any other files to write, name to content.
	Attrs map[string]string
}

// A Resource is one line of the resource file.
type Resource struct {
	Index       int
	Start, Size uint64
	Flags       uint64 // IORESOURCE_* bits; see MemBAR
}

// IORESOURCE flags for Resource.Flags.
const (
	FlagIO       = 0x00000100
	FlagMem      = 0x00000200
	FlagPrefetch = 0x00002000
	FlagMem64    = 0x00100000
)

// MemBAR returns a memory BAR resource line; is64 and prefetch set the
// flags the kernel would show.
func MemBAR(index int, start, size uint64, is64, prefetch bool) Resource {
	flags := uint64(FlagMem | 0x40000) // IORESOURCE_SIZEALIGN, as the kernel shows
	if is64 {
		flags |= FlagMem64 | 0x4
	}
	if prefetch {
		flags |= FlagPrefetch | 0x8
	}
	return Resource{Index: index, Start: start, Size: size, Flags: flags}
}

// Add writes one function into the tree.
func (tr *Tree) Add(f Func) {
	tr.t.Helper()
	if _, dup := tr.paths[f.BDF]; dup {
		tr.t.Fatalf("pcietest: %s added twice", f.BDF)
	}
	var rel string
	switch {
	case f.Parent != "":
		p, ok := tr.paths[f.Parent]
		if !ok {
			tr.t.Fatalf("pcietest: parent %s of %s not added yet", f.Parent, f.BDF)
		}
		rel = p + "/" + f.BDF
		if f.HostBridge != "" {
			// A root bus below a function, as Intel VMD makes.
			rel = p + "/" + f.HostBridge + "/" + f.BDF
		}
	default:
		hb := f.HostBridge
		if hb == "" {
			// "0000:00:1c.0" -> "pci0000:00"
			i := strings.LastIndexByte(f.BDF, ':')
			if i < 0 {
				tr.t.Fatalf("pcietest: %q is not a BDF", f.BDF)
			}
			hb = "pci" + f.BDF[:i]
		}
		rel = "devices/" + hb + "/" + f.BDF
	}
	tr.paths[f.BDF] = rel
	dir := filepath.Join(tr.Root, rel)
	tr.mkdir(dir)

	cfg := f.Config
	if cfg == nil {
		cfg = NewConfig(f.Vendor, f.Device, f.Class).Revision(f.Revision).Subsystem(f.SubVendor, f.SubDevice).Bytes(256)
	}
	tr.write(dir, "config", string(cfg))
	tr.write(dir, "vendor", fmt.Sprintf("0x%04x\n", f.Vendor))
	tr.write(dir, "device", fmt.Sprintf("0x%04x\n", f.Device))
	tr.write(dir, "subsystem_vendor", fmt.Sprintf("0x%04x\n", f.SubVendor))
	tr.write(dir, "subsystem_device", fmt.Sprintf("0x%04x\n", f.SubDevice))
	tr.write(dir, "class", fmt.Sprintf("0x%06x\n", f.Class))
	tr.write(dir, "revision", fmt.Sprintf("0x%02x\n", f.Revision))
	tr.write(dir, "irq", "0\n")
	numa := f.NUMANode
	if numa == "" {
		numa = "-1"
	}
	tr.write(dir, "numa_node", numa+"\n")
	override := f.DriverOverride
	if override == "" {
		override = "(null)"
	}
	tr.write(dir, "driver_override", override+"\n")
	tr.write(dir, "resource", resourceFile(f.Resources))
	if f.Speed != "" || f.MaxSpeed != "" {
		tr.write(dir, "current_link_speed", f.Speed+"\n")
		tr.write(dir, "max_link_speed", f.MaxSpeed+"\n")
		tr.write(dir, "current_link_width", fmt.Sprintf("%d\n", f.Width))
		tr.write(dir, "max_link_width", fmt.Sprintf("%d\n", f.MaxWidth))
	}
	if f.TotalVFs > 0 {
		tr.write(dir, "sriov_totalvfs", fmt.Sprintf("%d\n", f.TotalVFs))
		tr.write(dir, "sriov_numvfs", fmt.Sprintf("%d\n", f.NumVFs))
	}
	for name, content := range f.Attrs {
		tr.write(dir, name, content)
	}

	// bus/pci/devices/<bdf> -> ../../../devices/...
	tr.symlink(filepath.Join(tr.Root, "bus/pci/devices", f.BDF), dir)
	if f.Driver != "" {
		drv := filepath.Join(tr.Root, "bus/pci/drivers", f.Driver)
		tr.mkdir(drv)
		tr.symlink(filepath.Join(dir, "driver"), drv)
		tr.symlink(filepath.Join(drv, f.BDF), dir)
	}
	if f.IOMMUGroup != "" {
		g := filepath.Join(tr.Root, "kernel/iommu_groups", f.IOMMUGroup)
		tr.mkdir(filepath.Join(g, "devices"))
		tr.symlink(filepath.Join(dir, "iommu_group"), g)
		tr.symlink(filepath.Join(g, "devices", f.BDF), dir)
	}
	if f.Slot != "" {
		s := filepath.Join(tr.Root, "bus/pci/slots", f.Slot)
		tr.mkdir(s)
		tr.write(s, "address", f.BDF[:strings.LastIndexByte(f.BDF, '.')]+"\n")
	}
	if f.PhysFn != "" {
		pf, ok := tr.paths[f.PhysFn]
		if !ok {
			tr.t.Fatalf("pcietest: PF %s of %s not added yet", f.PhysFn, f.BDF)
		}
		pfDir := filepath.Join(tr.Root, pf)
		tr.symlink(filepath.Join(dir, "physfn"), pfDir)
		n := len(tr.vfs[f.PhysFn])
		tr.vfs[f.PhysFn] = append(tr.vfs[f.PhysFn], f.BDF)
		tr.symlink(filepath.Join(pfDir, fmt.Sprintf("virtfn%d", n)), dir)
	}
}

// resourceFile writes 17 lines, as a kernel with SR-IOV support does: the
// six BARs, the ROM, six VF BARs and four bridge windows.
func resourceFile(rs []Resource) string {
	lines := make([]string, 17)
	for i := range lines {
		lines[i] = "0x0000000000000000 0x0000000000000000 0x0000000000000000"
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Index < rs[j].Index })
	for _, r := range rs {
		end := r.Start + r.Size - 1
		lines[r.Index] = fmt.Sprintf("0x%016x 0x%016x 0x%016x", r.Start, end, r.Flags)
	}
	return strings.Join(lines, "\n") + "\n"
}

// Path returns the directory of a function added to the tree.
func (tr *Tree) Path(bdf string) string { return filepath.Join(tr.Root, tr.paths[bdf]) }

// Write writes (or overwrites) one file of a function added to the tree,
// for edge cases such as garbage in an attribute.
func (tr *Tree) Write(bdf, name, content string) {
	tr.t.Helper()
	tr.write(tr.Path(bdf), name, content)
}

// Remove deletes one file of a function added to the tree.
func (tr *Tree) Remove(bdf, name string) {
	tr.t.Helper()
	if err := os.Remove(filepath.Join(tr.Path(bdf), name)); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *Tree) mkdir(dir string) {
	tr.t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *Tree) write(dir, name, content string) {
	tr.t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

// symlink makes a relative link at link to target, as sysfs's are.
func (tr *Tree) symlink(link, target string) {
	tr.t.Helper()
	rel, err := filepath.Rel(filepath.Dir(link), target)
	if err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Symlink(rel, link); err != nil {
		tr.t.Fatal(err)
	}
}
