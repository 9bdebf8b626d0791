package pcie

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	upci "github.com/u-root/u-root/pkg/pci"
)

// Why not u-root's pci.NewBusReader, bus.Read and pci.OnePCI: the reader
// globs the fixed path /sys/bus/pci/devices, so tests cannot point it at a
// fake tree; Read and PCI.ReadConfig index the config bytes without
// checking their length (a config file shorter than 64 bytes makes them
// panic, and unprivileged readers get exactly 64); and OnePCI gives up on
// the whole function when any one attribute (irq, resource, ...) is
// missing, where umd wants everything else it can read plus a note. So
// this file reads sysfs itself and uses u-root only for resource lines.

// ID is a 16-bit PCI vendor, device or subsystem ID. It reads as four hex
// digits ("1b36") in text and JSON.
type ID uint16

func (id ID) String() string { return fmt.Sprintf("%04x", uint16(id)) }

// MarshalText writes four hex digits.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// Role is what a function is in the PCIe hierarchy.
type Role string

// Roles. A function's role comes from the device/port type of its PCI
// Express capability when that could be read, and otherwise from where it
// sits: a bridge on a root bus is a root port, a bridge under a root or
// downstream port is a switch upstream port, a bridge under an upstream
// port is a downstream port.
const (
	RoleHostBridge         Role = "host bridge"
	RoleRootPort           Role = "root port"
	RoleUpstreamPort       Role = "switch upstream port"
	RoleDownstreamPort     Role = "switch downstream port"
	RoleBridge             Role = "bridge" // PCI-to-PCI bridges of other kinds
	RoleEndpoint           Role = "endpoint"
	RoleIntegratedEndpoint Role = "integrated endpoint" // on a root bus, no link
	RoleEventCollector     Role = "event collector"
)

// IsPort reports whether the role is a root or switch port.
func (r Role) IsPort() bool {
	return r == RoleRootPort || r == RoleUpstreamPort || r == RoleDownstreamPort
}

// IsEndpoint reports whether the role is an endpoint, on a link or
// integrated in the root complex.
func (r Role) IsEndpoint() bool { return r == RoleEndpoint || r == RoleIntegratedEndpoint }

// NoIOMMUGroup and NoNUMANode are the values of Function.IOMMUGroup and
// Function.NUMANode when there is none (the IOMMU is off; the machine has
// one node or the firmware does not say).
const (
	NoIOMMUGroup = -1
	NoNUMANode   = -1
)

// A Function is one PCI function as sysfs shows it.
type Function struct {
	BDF BDF `json:"bdf"`
	// SysfsPath is the function's directory relative to the sysfs root,
	// such as "devices/pci0000:00/0000:00:1c.0/0000:01:00.0"; the BDFs
	// in it are the way down from the host bridge.
	SysfsPath string `json:"sysfs_path"`

	VendorID        ID     `json:"vendor_id"`
	DeviceID        ID     `json:"device_id"`
	SubsystemVendor ID     `json:"subsystem_vendor"`
	SubsystemDevice ID     `json:"subsystem_device"`
	Class           Class  `json:"class"`
	Revision        uint8  `json:"revision"`
	VendorName      string `json:"vendor_name"` // from pci.ids; hex when unknown
	DeviceName      string `json:"device_name"`
	SubsystemName   string `json:"subsystem_name,omitempty"`
	ClassName       string `json:"class_name"`

	Driver         string `json:"driver"`                    // bound driver; "" if none
	DriverOverride string `json:"driver_override,omitempty"` // what the next probe will bind
	IOMMUGroup     int    `json:"iommu_group"`               // NoIOMMUGroup if none
	NUMANode       int    `json:"numa_node"`                 // NoNUMANode if none
	Slot           string `json:"slot,omitempty"`            // physical slot name, when the platform names one

	Bridge         bool  `json:"bridge"` // a PCI-to-PCI bridge header (ports are bridges)
	SecondaryBus   uint8 `json:"secondary_bus,omitempty"`
	SubordinateBus uint8 `json:"subordinate_bus,omitempty"`

	BARs   []BAR  `json:"bars"`
	VFBARs []BAR  `json:"vf_bars,omitempty"` // SR-IOV: the BARs of each VF
	Link   *Link  `json:"link,omitempty"`    // nil when the function has no PCI Express link attributes
	SRIOV  *SRIOV `json:"sriov,omitempty"`   // set on a physical function that can have VFs
	PhysFn *BDF   `json:"physfn,omitempty"`  // set on a virtual function: its PF

	// Config is the decoded config space; nil if it could not be read.
	Config *Config `json:"config,omitempty"`

	// Filled in by Scan from the topology.
	Role          Role      `json:"role"`
	Parent        *BDF      `json:"parent,omitempty"` // the bridge above; nil on a root bus
	HostBridge    string    `json:"host_bridge"`      // "pci0000:00"
	Card          string    `json:"card,omitempty"`   // Card.ID, "" if on no card
	IOMMUPeers    []BDF     `json:"iommu_peers"`      // the other functions of its IOMMU group
	UpstreamLinks []LinkHop `json:"upstream_links,omitempty"`
	NarrowestLink *LinkHop  `json:"narrowest_link,omitempty"`

	// Problems lists what could not be read or made sense of, one
	// sentence each; the rest of the function is still filled in.
	Problems []string `json:"problems,omitempty"`
}

// IsVF reports whether the function is an SR-IOV virtual function.
func (f *Function) IsVF() bool { return f.PhysFn != nil }

// HasFullConfig reports whether all of config space was readable, so the
// capability fields of Config mean what they say.
func (f *Function) HasFullConfig() bool { return f.Config != nil && f.Config.Size > headerSize }

func (f *Function) problemf(format string, args ...any) {
	f.Problems = append(f.Problems, fmt.Sprintf(format, args...))
}

// A BAR is one memory or I/O region of a function, from sysfs's resource
// file.
type BAR struct {
	Index        int    `json:"index"` // 0 to 5; 6 is the expansion ROM
	Start        uint64 `json:"start"` // bus address; 0 when unassigned
	Size         uint64 `json:"size"`  // bytes
	IO           bool   `json:"io"`    // an I/O-port BAR rather than memory
	Is64         bool   `json:"is_64"`
	Prefetchable bool   `json:"prefetchable"`
	Unassigned   bool   `json:"unassigned,omitempty"` // sized but given no address
}

// ROMIndex is the BAR index of the expansion ROM.
const ROMIndex = 6

// SRIOV is what sysfs says about a physical function's virtual functions.
type SRIOV struct {
	TotalVFs int   `json:"total_vfs"`
	NumVFs   int   `json:"num_vfs"` // enabled now
	VFs      []BDF `json:"vfs"`
}

// Resource flags of include/linux/ioport.h, as the third column of the
// resource file shows them.
const (
	ioresourceIO       = 0x00000100
	ioresourceMem      = 0x00000200
	ioresourcePrefetch = 0x00002000
	ioresourceMem64    = 0x00100000
	ioresourceUnset    = 0x20000000
)

// Lines of the resource file: the six BARs, the ROM, then (on kernels
// with SR-IOV support, which have 17 lines or more) six VF BARs, then the
// bridge windows.
const (
	resourceVFBARFirst = 7
	resourceVFBARLast  = 12
	resourceLinesIOV   = 17
)

// parseResource parses sysfs's resource file: one "start end flags" line
// of 0x-prefixed hex per resource.
func parseResource(text string) (bars, vfBARs []BAR, err error) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for i, line := range lines {
		if i > ROMIndex && (len(lines) < resourceLinesIOV || i > resourceVFBARLast) {
			break // bridge windows, or a kernel without SR-IOV
		}
		start, end, flags, err := upci.BaseLimType(line)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if flags&(ioresourceIO|ioresourceMem) == 0 || (start == 0 && end == 0) {
			continue // not implemented
		}
		if end < start {
			return nil, nil, fmt.Errorf("line %d: end %#x below start %#x", i+1, end, start)
		}
		b := BAR{
			Index:        i,
			Start:        start,
			Size:         end - start + 1,
			IO:           flags&ioresourceIO != 0,
			Is64:         flags&ioresourceMem64 != 0,
			Prefetchable: flags&ioresourcePrefetch != 0,
			Unassigned:   flags&ioresourceUnset != 0,
		}
		if b.Unassigned {
			b.Start = 0
		}
		if i >= resourceVFBARFirst {
			b.Index = i - resourceVFBARFirst
			vfBARs = append(vfBARs, b)
		} else {
			bars = append(bars, b)
		}
	}
	return bars, vfBARs, nil
}

// attrs reads the attribute files of one function's sysfs directory.
// Errors other than "not there" become problems of the function.
type attrs struct {
	dir string
	f   *Function
}

// read returns the trimmed content of an attribute; ok is false when it
// is missing or unreadable (the latter noted as a problem).
func (a attrs) read(name string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(a.dir, name))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.f.problemf("reading %s: %v", name, unwrapPath(err))
		}
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// hex reads an attribute holding "0x..." with at most bits bits.
func (a attrs) hex(name string, bits int) (uint64, bool) {
	s, ok := a.read(name)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, bits)
	if err != nil {
		a.f.problemf("%s holds %q, not a %d-bit hex number", name, s, bits)
		return 0, false
	}
	return v, true
}

// int reads a decimal attribute.
func (a attrs) int(name string) (int, bool) {
	s, ok := a.read(name)
	if !ok {
		return 0, false
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		a.f.problemf("%s holds %q, not a number", name, s)
		return 0, false
	}
	return v, true
}

// link returns the last element of a symlink's target ("vfio-pci" for
// driver -> ../../../bus/pci/drivers/vfio-pci).
func (a attrs) link(name string) (string, bool) {
	t, err := os.Readlink(filepath.Join(a.dir, name))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.f.problemf("reading link %s: %v", name, unwrapPath(err))
		}
		return "", false
	}
	return path.Base(t), true
}

// unwrapPath drops the path from a *fs.PathError: problems name the
// attribute already, and the full path only repeats the sysfs root.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readFunction reads everything sysfs says about the function b, from
// root/bus/pci/devices/<b>. It fails only when the function cannot be
// identified at all (no vendor ID from either the vendor attribute or
// config space).
func readFunction(root string, b BDF, ids *IDs) (*Function, error) {
	f := &Function{BDF: b, IOMMUGroup: NoIOMMUGroup, NUMANode: NoNUMANode}
	dir := filepath.Join(root, "bus", "pci", "devices", b.String())
	a := attrs{dir: dir, f: f}

	// The entry is a symlink into the devices hierarchy; its target is
	// the function's place in the topology.
	if t, err := os.Readlink(dir); err == nil {
		f.SysfsPath = path.Clean(path.Join("bus/pci/devices", filepath.ToSlash(t)))
	} else {
		f.SysfsPath = path.Join("bus/pci/devices", b.String())
		f.problemf("%s is not a symlink into devices/, so its place in the topology is unknown", f.SysfsPath)
	}

	if raw, err := os.ReadFile(filepath.Join(dir, "config")); err != nil {
		f.problemf("reading config: %v", unwrapPath(err))
	} else if cfg, err := ParseConfig(raw); err != nil {
		f.problemf("config: %v", err)
	} else {
		f.Config = cfg
		for _, p := range cfg.Problems {
			f.problemf("config: %s", p)
		}
	}

	// IDs: prefer the attributes (the kernel's view, readable by anyone,
	// and with quirks applied), else config space.
	cfg := f.Config
	if v, ok := a.hex("vendor", 16); ok {
		f.VendorID = ID(v)
	} else if cfg != nil {
		f.VendorID = cfg.VendorID
	} else {
		return nil, fmt.Errorf("reading PCI function %s: no vendor attribute and no config space", b)
	}
	if v, ok := a.hex("device", 16); ok {
		f.DeviceID = ID(v)
	} else if cfg != nil {
		f.DeviceID = cfg.DeviceID
	}
	if v, ok := a.hex("subsystem_vendor", 16); ok {
		f.SubsystemVendor = ID(v)
	} else if cfg != nil {
		f.SubsystemVendor = cfg.SubsystemVendor
	}
	if v, ok := a.hex("subsystem_device", 16); ok {
		f.SubsystemDevice = ID(v)
	} else if cfg != nil {
		f.SubsystemDevice = cfg.SubsystemDevice
	}
	if v, ok := a.hex("class", 24); ok {
		f.Class = Class(v)
	} else if cfg != nil {
		f.Class = cfg.Class
	}
	if v, ok := a.hex("revision", 8); ok {
		f.Revision = uint8(v)
	} else if cfg != nil {
		f.Revision = cfg.Revision
	}
	ids.names(f)

	if cfg != nil {
		f.Bridge = cfg.IsBridge()
		f.SecondaryBus, f.SubordinateBus = cfg.SecondaryBus, cfg.SubordinateBus
	} else {
		f.Bridge = f.Class.IsPCIBridge()
	}
	if f.Bridge && cfg == nil {
		if v, ok := a.int("secondary_bus_number"); ok {
			f.SecondaryBus = uint8(v)
		}
		if v, ok := a.int("subordinate_bus_number"); ok {
			f.SubordinateBus = uint8(v)
		}
	}

	if d, ok := a.link("driver"); ok {
		f.Driver = d
	}
	if s, ok := a.read("driver_override"); ok && s != "(null)" {
		f.DriverOverride = s
	}
	if g, ok := a.link("iommu_group"); ok {
		if n, err := strconv.Atoi(g); err == nil && n >= 0 {
			f.IOMMUGroup = n
		} else {
			f.problemf("iommu_group links to %q, not a group number", g)
		}
	}
	if n, ok := a.int("numa_node"); ok && n >= 0 {
		f.NUMANode = n
	}

	if s, ok := a.read("resource"); ok {
		bars, vfBARs, err := parseResource(s)
		if err != nil {
			f.problemf("resource: %v", err)
		}
		f.BARs, f.VFBARs = bars, vfBARs
	}

	f.Link = readLink(a)
	readSRIOV(a)
	return f, nil
}

// readLink reads the four link attributes; nil if there are none (not a
// PCI Express function, or a kernel that does not show them).
func readLink(a attrs) *Link {
	var l Link
	found := false
	for _, s := range []struct {
		name  string
		speed *LinkSpeed
	}{{"current_link_speed", &l.Speed}, {"max_link_speed", &l.MaxSpeed}} {
		v, ok := a.read(s.name)
		if !ok {
			continue
		}
		found = true
		sp, err := ParseLinkSpeed(v)
		if err != nil {
			a.f.problemf("%s: %v", s.name, err)
		}
		*s.speed = sp
	}
	for _, w := range []struct {
		name  string
		width *int
	}{{"current_link_width", &l.Width}, {"max_link_width", &l.MaxWidth}} {
		if v, ok := a.int(w.name); ok {
			found = true
			*w.width = v
		}
	}
	if !found {
		return nil
	}
	l.Degraded = l.degradedAgainst(0, 0)
	return &l
}

// readSRIOV reads the SR-IOV attributes of a PF (sriov_totalvfs,
// sriov_numvfs, virtfnN links) and the physfn link of a VF.
func readSRIOV(a attrs) {
	f := a.f
	if t, ok := a.link("physfn"); ok {
		if pf, err := ParseBDF(t); err == nil {
			f.PhysFn = &pf
		} else {
			f.problemf("physfn: %v", err)
		}
	}
	total, hasTotal := a.int("sriov_totalvfs")
	if !hasTotal {
		return
	}
	s := &SRIOV{TotalVFs: total}
	s.NumVFs, _ = a.int("sriov_numvfs")
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		f.problemf("listing virtual functions: %v", unwrapPath(err))
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "virtfn") {
			continue
		}
		t, ok := a.link(e.Name())
		if !ok {
			continue
		}
		vf, err := ParseBDF(t)
		if err != nil {
			f.problemf("%s: %v", e.Name(), err)
			continue
		}
		s.VFs = append(s.VFs, vf)
	}
	sort.Slice(s.VFs, func(i, j int) bool { return s.VFs[i].Compare(s.VFs[j]) < 0 })
	f.SRIOV = s
}
