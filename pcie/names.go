package pcie

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	upci "github.com/u-root/u-root/pkg/pci"
)

// IDs is a database of PCI names: vendors, devices, subsystems and
// classes, in the shape of the pci.ids file that lspci uses. A nil *IDs is
// valid and knows no names.
type IDs struct {
	// Source says where the names came from: a file path, or
	// BuiltinIDsSource.
	Source  string
	vendors map[ID]*idVendor
	classes map[uint8]*idClass
}

type idVendor struct {
	name    string
	devices map[ID]*idDevice
}

type idDevice struct {
	name       string
	subsystems map[uint32]string // subvendor<<16 | subdevice
}

type idClass struct {
	name string
	subs map[uint8]*idSubclass
}

type idSubclass struct {
	name    string
	progIFs map[uint8]string
}

// HostIDsPaths are where distributions put pci.ids, in the order
// DefaultIDs tries them.
var HostIDsPaths = []string{
	"/usr/share/misc/pci.ids",    // Debian, Ubuntu (package pci.ids)
	"/usr/share/hwdata/pci.ids",  // Fedora, RHEL, Arch (package hwdata)
	"/usr/share/pci.ids",         // older layouts
	"/usr/share/misc/pci.ids.gz", // some minimal images
}

// BuiltinIDsSource is the Source of BuiltinIDs.
const BuiltinIDsSource = "built-in (u-root pkg/pci)"

// DefaultIDs returns the names of the first of HostIDsPaths that loads,
// or BuiltinIDs if none does. It reads the file once per process.
func DefaultIDs() *IDs { return defaultIDs() }

var defaultIDs = sync.OnceValue(func() *IDs {
	for _, p := range HostIDsPaths {
		if ids, err := LoadIDs(p); err == nil {
			return ids
		}
	}
	return BuiltinIDs()
})

// BuiltinIDs returns the vendor and device names compiled into u-root's
// pkg/pci. That copy of pci.ids has no subsystem or class names (u-root's
// generator drops them, and its ClassNames table uses identifiers such as
// "StorageNVMHCI" rather than names), so classes then come from this
// package's own short table. It is built once per process.
func BuiltinIDs() *IDs { return builtinIDs() }

var builtinIDs = sync.OnceValue(func() *IDs {
	ids := &IDs{Source: BuiltinIDsSource, vendors: make(map[ID]*idVendor, len(upci.IDs))}
	for _, v := range upci.IDs {
		iv := &idVendor{name: v.Name, devices: make(map[ID]*idDevice, len(v.Devices))}
		for _, d := range v.Devices {
			iv.devices[ID(d.ID)] = &idDevice{name: d.Name}
		}
		ids.vendors[ID(v.ID)] = iv
	}
	return ids
})

// LoadIDs reads a pci.ids file; a name ending in ".gz" is decompressed.
func LoadIDs(path string) (*IDs, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loading PCI names: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("loading PCI names from %s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	ids, err := ParseIDs(r)
	if err != nil {
		return nil, fmt.Errorf("loading PCI names from %s: %w", path, err)
	}
	ids.Source = path
	return ids, nil
}

// ParseIDs parses the pci.ids format:
//
//	vvvv  Vendor name
//	<tab>dddd  Device name
//	<tab><tab>ssss ssss  Subsystem name
//	C cc  Class name
//	<tab>ss  Subclass name
//	<tab><tab>pp  Programming interface name
//
// Comments (#) and blank lines are skipped, and so is any line it does not
// understand: a damaged file loses names, never the whole database. The
// only errors are read errors.
func ParseIDs(r io.Reader) (*IDs, error) {
	ids := &IDs{vendors: map[ID]*idVendor{}, classes: map[uint8]*idClass{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var (
		vendor *idVendor
		device *idDevice
		class  *idClass
		sub    *idSubclass
	)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \r")
		if line == "" || line[0] == '#' {
			continue
		}
		depth := 0
		for depth < len(line) && line[depth] == '\t' {
			depth++
		}
		line = line[depth:]
		switch depth {
		case 0:
			vendor, device, class, sub = nil, nil, nil, nil
			if rest, ok := strings.CutPrefix(line, "C "); ok {
				id, name, ok := idAndName(rest, 2)
				if ok {
					class = &idClass{name: name, subs: map[uint8]*idSubclass{}}
					ids.classes[uint8(id)] = class
				}
				continue
			}
			if id, name, ok := idAndName(line, 4); ok {
				vendor = &idVendor{name: name, devices: map[ID]*idDevice{}}
				ids.vendors[ID(id)] = vendor
			}
			// Anything else (a section of another kind) leaves all
			// four nil, so its indented lines are skipped.
		case 1:
			device, sub = nil, nil
			switch {
			case vendor != nil:
				if id, name, ok := idAndName(line, 4); ok {
					device = &idDevice{name: name}
					vendor.devices[ID(id)] = device
				}
			case class != nil:
				if id, name, ok := idAndName(line, 2); ok {
					sub = &idSubclass{name: name, progIFs: map[uint8]string{}}
					class.subs[uint8(id)] = sub
				}
			}
		case 2:
			switch {
			case device != nil:
				sv, rest, ok := strings.Cut(line, " ")
				if !ok || len(sv) != 4 || !isHex(sv) {
					continue
				}
				sd, name, ok := idAndName(rest, 4)
				if !ok {
					continue
				}
				svv, _ := strconv.ParseUint(sv, 16, 16)
				if device.subsystems == nil {
					device.subsystems = map[uint32]string{}
				}
				device.subsystems[uint32(svv)<<16|sd] = name
			case sub != nil:
				if id, name, ok := idAndName(line, 2); ok {
					sub.progIFs[uint8(id)] = name
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ids, nil
}

// idAndName splits "1b36  Red Hat, Inc." into 0x1b36 and the name; the ID
// must have exactly digits hex digits and the name must not be empty.
func idAndName(s string, digits int) (uint32, string, bool) {
	if len(s) < digits+2 || s[digits] != ' ' || !isHex(s[:digits]) {
		return 0, "", false
	}
	name := strings.TrimSpace(s[digits:])
	if name == "" {
		return 0, "", false
	}
	v, _ := strconv.ParseUint(s[:digits], 16, 32)
	return uint32(v), name, true
}

// Vendor returns the vendor's name.
func (ids *IDs) Vendor(vendor ID) (string, bool) {
	if ids == nil {
		return "", false
	}
	v, ok := ids.vendors[vendor]
	if !ok {
		return "", false
	}
	return v.name, true
}

// Device returns the device's name.
func (ids *IDs) Device(vendor, device ID) (string, bool) {
	if ids == nil {
		return "", false
	}
	v, ok := ids.vendors[vendor]
	if !ok {
		return "", false
	}
	d, ok := v.devices[device]
	if !ok {
		return "", false
	}
	return d.name, true
}

// Subsystem returns the name pci.ids gives a subsystem of a device.
func (ids *IDs) Subsystem(vendor, device, subVendor, subDevice ID) (string, bool) {
	if ids == nil {
		return "", false
	}
	v, ok := ids.vendors[vendor]
	if !ok {
		return "", false
	}
	d, ok := v.devices[device]
	if !ok {
		return "", false
	}
	n, ok := d.subsystems[uint32(subVendor)<<16|uint32(subDevice)]
	return n, ok
}

// Class returns the most specific name of a class code, such as
// "Non-Volatile memory controller (NVM Express)", from the database and
// else from this package's short table.
func (ids *IDs) Class(c Class) (string, bool) {
	if ids != nil {
		if bc, ok := ids.classes[c.Base()]; ok {
			name := bc.name
			if sc, ok := bc.subs[c.Sub()]; ok {
				name = sc.name
				if pi, ok := sc.progIFs[c.ProgIF()]; ok {
					name += " (" + pi + ")"
				}
			}
			return name, true
		}
	}
	n := builtinClassName(c)
	return n, n != ""
}

// names fills in the name fields of f, using hex where a name is unknown.
func (ids *IDs) names(f *Function) {
	if n, ok := ids.Vendor(f.VendorID); ok {
		f.VendorName = n
	} else {
		f.VendorName = f.VendorID.String()
	}
	if n, ok := ids.Device(f.VendorID, f.DeviceID); ok {
		f.DeviceName = n
	} else {
		f.DeviceName = f.DeviceID.String()
	}
	switch {
	case f.SubsystemVendor == 0 && f.SubsystemDevice == 0:
		f.SubsystemName = ""
	default:
		if n, ok := ids.Subsystem(f.VendorID, f.DeviceID, f.SubsystemVendor, f.SubsystemDevice); ok {
			f.SubsystemName = n
		} else if v, ok := ids.Vendor(f.SubsystemVendor); ok {
			f.SubsystemName = fmt.Sprintf("%s device %v", v, f.SubsystemDevice)
		} else {
			f.SubsystemName = fmt.Sprintf("%v:%v", f.SubsystemVendor, f.SubsystemDevice)
		}
	}
	if n, ok := ids.Class(f.Class); ok {
		f.ClassName = n
	} else {
		f.ClassName = f.Class.String()
	}
}
