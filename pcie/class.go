package pcie

import "fmt"

// Class is a function's 24-bit class code: base class, subclass and
// programming interface, as in sysfs's "class" file (0x010802 is an NVM
// Express controller).
type Class uint32

// Some class codes umd cares about.
const (
	ClassNVMe            Class = 0x010802
	ClassHostBridge      Class = 0x060000
	ClassPCIBridge       Class = 0x060400 // PCI-to-PCI bridges, root and switch ports
	ClassPCIBridgeSubtr  Class = 0x060401 // subtractive-decode PCI-to-PCI bridge
	ClassEthernet        Class = 0x020000
	classBaseBridge            = 0x06
	classSubPCIBridge          = 0x04
	classSubHostBridge         = 0x00
	classBaseMassStorage       = 0x01
)

// Base returns the base class (0x01 mass storage, 0x02 network, ...).
func (c Class) Base() uint8 { return uint8(c >> 16) }

// Sub returns the subclass.
func (c Class) Sub() uint8 { return uint8(c >> 8) }

// ProgIF returns the programming interface.
func (c Class) ProgIF() uint8 { return uint8(c) }

// IsPCIBridge reports whether the class is a PCI-to-PCI bridge (any
// programming interface): root ports and switch ports are.
func (c Class) IsPCIBridge() bool { return c.Base() == classBaseBridge && c.Sub() == classSubPCIBridge }

// IsHostBridge reports whether the class is a host bridge.
func (c Class) IsHostBridge() bool {
	return c.Base() == classBaseBridge && c.Sub() == classSubHostBridge
}

func (c Class) String() string { return fmt.Sprintf("0x%06x", uint32(c)) }

// MarshalText writes "0x010802", as sysfs does.
func (c Class) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// The names of the base classes, and of the subclasses and programming
// interfaces a PCIe host commonly has, after the PCI Code and ID
// Assignment specification. A host's pci.ids, when there is one, names
// every class; these are the fallback.
var (
	baseClassNames = map[uint8]string{
		0x00: "Unclassified device",
		0x01: "Mass storage controller",
		0x02: "Network controller",
		0x03: "Display controller",
		0x04: "Multimedia controller",
		0x05: "Memory controller",
		0x06: "Bridge",
		0x07: "Communication controller",
		0x08: "Generic system peripheral",
		0x09: "Input device controller",
		0x0a: "Docking station",
		0x0b: "Processor",
		0x0c: "Serial bus controller",
		0x0d: "Wireless controller",
		0x0e: "Intelligent controller",
		0x0f: "Satellite communications controller",
		0x10: "Encryption controller",
		0x11: "Signal processing controller",
		0x12: "Processing accelerators",
		0x13: "Non-Essential Instrumentation",
		0x40: "Coprocessor",
		0xff: "Unassigned class",
	}
	subClassNames = map[uint16]string{ // key: base<<8 | sub
		0x0100: "SCSI storage controller",
		0x0101: "IDE interface",
		0x0104: "RAID bus controller",
		0x0105: "ATA controller",
		0x0106: "SATA controller",
		0x0107: "Serial Attached SCSI controller",
		0x0108: "Non-Volatile memory controller",
		0x0200: "Ethernet controller",
		0x0207: "Infiniband controller",
		0x0208: "Fabric controller",
		0x0300: "VGA compatible controller",
		0x0302: "3D controller",
		0x0403: "Audio device",
		0x0500: "RAM memory",
		0x0502: "CXL",
		0x0600: "Host bridge",
		0x0601: "ISA bridge",
		0x0604: "PCI bridge",
		0x0700: "Serial controller",
		0x0805: "SD Host controller",
		0x0806: "IOMMU",
		0x0c03: "USB controller",
		0x0c05: "SMBus",
	}
	progIFNames = map[Class]string{
		0x010802: "NVM Express",
		0x010601: "AHCI 1.0",
		0x060401: "Subtractive decode",
		0x0c0330: "XHCI",
	}
)

// builtinClassName names a class from the tables above with the most
// specific name known, such as "Non-Volatile memory controller (NVM
// Express)"; "" if the base class is unknown.
func builtinClassName(c Class) string {
	name, ok := baseClassNames[c.Base()]
	if !ok {
		return ""
	}
	if sub, ok := subClassNames[uint16(c>>8)]; ok {
		name = sub
	}
	if pi, ok := progIFNames[c]; ok {
		name += " (" + pi + ")"
	}
	return name
}
