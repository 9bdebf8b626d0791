package pcie

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Config-space layout (PCI Local Bus 3.0 chapter 6, PCI Express Base 6.0
// chapter 7). Offsets are from the start of the function's config space.
const (
	cfgVendorID       = 0x00
	cfgDeviceID       = 0x02
	cfgStatus         = 0x06
	cfgRevision       = 0x08
	cfgClass          = 0x09 // three bytes: prog-if, subclass, base class
	cfgHeaderType     = 0x0e
	cfgPrimaryBus     = 0x18 // type 1 (bridge) header
	cfgSecondaryBus   = 0x19
	cfgSubordinateBus = 0x1a
	cfgSubsysVendor   = 0x2c // type 0 header
	cfgSubsysID       = 0x2e
	cfgCapPointer     = 0x34
	cfgCardbusCapPtr  = 0x14 // type 2 (CardBus bridge) header

	statusCapList = 1 << 4

	headerSize    = 0x40  // the part every reader may see
	legacySize    = 0x100 // conventional PCI config space
	extendedSize  = 0x1000
	extendedStart = 0x100
)

// ErrShortConfig means a config-space image is smaller than the 64-byte
// header every function has.
var ErrShortConfig = errors.New("config space shorter than its 64-byte header")

// Config is what ParseConfig decodes from a config-space image.
type Config struct {
	// Size is how many bytes of config space were given: 64 for
	// unprivileged readers of sysfs, 256 for conventional PCI, 4096 for
	// PCI Express.
	Size int `json:"size"`

	VendorID        ID    `json:"vendor_id"`
	DeviceID        ID    `json:"device_id"`
	Revision        uint8 `json:"revision"`
	Class           Class `json:"class"`
	HeaderType      uint8 `json:"header_type"` // 0 function, 1 bridge, 2 CardBus bridge
	MultiFunction   bool  `json:"multi_function"`
	SubsystemVendor ID    `json:"subsystem_vendor"`
	SubsystemDevice ID    `json:"subsystem_device"`

	// Bus numbers of a bridge (header type 1).
	PrimaryBus     uint8 `json:"primary_bus,omitempty"`
	SecondaryBus   uint8 `json:"secondary_bus,omitempty"`
	SubordinateBus uint8 `json:"subordinate_bus,omitempty"`

	// Capabilities lists every capability found, in list order: the
	// conventional ones first, then the PCI Express extended ones.
	Capabilities []Capability `json:"capabilities"`

	// Decoded capabilities; nil when absent (or when Size was too small
	// to see them).
	PCIe  *PCIeCap  `json:"pcie,omitempty"`
	MSI   *MSICap   `json:"msi,omitempty"`
	MSIX  *MSIXCap  `json:"msix,omitempty"`
	AER   *AERCap   `json:"aer,omitempty"`
	ACS   *ACSCap   `json:"acs,omitempty"`
	SRIOV *SRIOVCap `json:"sriov,omitempty"`
	ATS   *ATSCap   `json:"ats,omitempty"`
	PRI   *PRICap   `json:"pri,omitempty"`
	PASID *PASIDCap `json:"pasid,omitempty"`

	// Problems lists what looked wrong in the image (a capability list
	// that loops or points outside config space, a capability cut short),
	// one sentence each. Parsing goes on past every problem it can.
	Problems []string `json:"problems,omitempty"`
}

// IsBridge reports whether the header is a PCI-to-PCI bridge's (type 1).
func (c *Config) IsBridge() bool { return c.HeaderType == 1 }

// Has reports whether the capability list holds id. Conventional and
// extended capability IDs overlap, so extended says which list to look in.
func (c *Config) Has(id uint16, extended bool) bool {
	for _, cp := range c.Capabilities {
		if cp.ID == id && cp.Extended == extended {
			return true
		}
	}
	return false
}

// A Capability is one entry of a capability list.
type Capability struct {
	ID       uint16 `json:"id"`
	Extended bool   `json:"extended"`          // from the PCI Express extended list (at 0x100 and up)
	Offset   uint16 `json:"offset"`            // where it starts in config space
	Version  uint8  `json:"version,omitempty"` // extended capabilities carry a version
	Name     string `json:"name"`
}

func (c Capability) String() string {
	return fmt.Sprintf("%s@%#x", c.Name, c.Offset)
}

// Conventional capability IDs (PCI Code and ID Assignment, 1.x).
const (
	CapPowerManagement = 0x01
	CapMSI             = 0x05
	CapVendor          = 0x09
	CapSubsystemID     = 0x0d // bridges keep their subsystem IDs here
	CapPCIe            = 0x10
	CapMSIX            = 0x11
)

// Extended capability IDs.
const (
	ExtCapAER    = 0x0001
	ExtCapDSN    = 0x0003
	ExtCapACS    = 0x000d
	ExtCapARI    = 0x000e
	ExtCapATS    = 0x000f
	ExtCapSRIOV  = 0x0010
	ExtCapPRI    = 0x0013
	ExtCapResBAR = 0x0015
	ExtCapPASID  = 0x001b
	ExtCapDVSEC  = 0x0023
)

var capNames = map[uint16]string{
	0x01: "Power Management",
	0x02: "AGP",
	0x03: "VPD",
	0x04: "Slot ID",
	0x05: "MSI",
	0x06: "CompactPCI Hot Swap",
	0x07: "PCI-X",
	0x08: "HyperTransport",
	0x09: "Vendor Specific",
	0x0a: "Debug Port",
	0x0b: "CompactPCI Central Resource Control",
	0x0c: "PCI Hot-Plug",
	0x0d: "Bridge Subsystem ID",
	0x0e: "AGP 8x",
	0x0f: "Secure Device",
	0x10: "PCI Express",
	0x11: "MSI-X",
	0x12: "SATA",
	0x13: "Advanced Features",
	0x14: "Enhanced Allocation",
	0x15: "Flattening Portal Bridge",
}

var extCapNames = map[uint16]string{
	0x0001: "AER",
	0x0002: "Virtual Channel",
	0x0003: "Device Serial Number",
	0x0004: "Power Budgeting",
	0x0005: "Root Complex Link Declaration",
	0x0006: "Root Complex Internal Link Control",
	0x0007: "Root Complex Event Collector Endpoint Association",
	0x0008: "Multi-Function Virtual Channel",
	0x0009: "Virtual Channel (MFVC)",
	0x000a: "RCRB Header",
	0x000b: "Vendor Specific Extended",
	0x000c: "Configuration Access Correlation",
	0x000d: "ACS",
	0x000e: "ARI",
	0x000f: "ATS",
	0x0010: "SR-IOV",
	0x0011: "MR-IOV",
	0x0012: "Multicast",
	0x0013: "PRI",
	0x0015: "Resizable BAR",
	0x0016: "Dynamic Power Allocation",
	0x0017: "TPH Requester",
	0x0018: "Latency Tolerance Reporting",
	0x0019: "Secondary PCI Express",
	0x001a: "PMUX",
	0x001b: "PASID",
	0x001c: "LN Requester",
	0x001d: "DPC",
	0x001e: "L1 PM Substates",
	0x001f: "Precision Time Measurement",
	0x0020: "PCI Express over M-PHY",
	0x0021: "FRS Queueing",
	0x0022: "Readiness Time Reporting",
	0x0023: "Designated Vendor-Specific",
	0x0024: "VF Resizable BAR",
	0x0025: "Data Link Feature",
	0x0026: "Physical Layer 16.0 GT/s",
	0x0027: "Lane Margining at the Receiver",
	0x0028: "Hierarchy ID",
	0x0029: "Native PCIe Enclosure Management",
	0x002a: "Physical Layer 32.0 GT/s",
	0x002b: "Alternate Protocol",
	0x002c: "System Firmware Intermediary",
	0x002d: "Shadow Functions",
	0x002e: "Data Object Exchange",
	0x002f: "Device 3",
	0x0030: "IDE",
	0x0031: "Physical Layer 64.0 GT/s",
	0x0032: "Flit Logging",
	0x0033: "Flit Performance Measurement",
	0x0034: "Flit Error Injection",
}

// CapabilityName returns the name of a capability ID, or "Unknown 0x..".
func CapabilityName(id uint16, extended bool) string {
	names := capNames
	if extended {
		names = extCapNames
	}
	if n, ok := names[id]; ok {
		return n
	}
	if extended {
		return fmt.Sprintf("Unknown %#04x", id)
	}
	return fmt.Sprintf("Unknown %#02x", id)
}

// PortType is the device/port type field of the PCI Express capability.
type PortType uint8

// Device/port types (PCI Express Base 6.0, 7.5.3.2).
const (
	PortEndpoint           PortType = 0x0
	PortLegacyEndpoint     PortType = 0x1
	PortRootPort           PortType = 0x4
	PortUpstream           PortType = 0x5 // upstream port of a switch
	PortDownstream         PortType = 0x6 // downstream port of a switch
	PortPCIeToPCIBridge    PortType = 0x7
	PortPCIToPCIeBridge    PortType = 0x8
	PortIntegratedEndpoint PortType = 0x9 // root complex integrated endpoint
	PortEventCollector     PortType = 0xa // root complex event collector
)

func (p PortType) String() string {
	switch p {
	case PortEndpoint:
		return "endpoint"
	case PortLegacyEndpoint:
		return "legacy endpoint"
	case PortRootPort:
		return "root port"
	case PortUpstream:
		return "switch upstream port"
	case PortDownstream:
		return "switch downstream port"
	case PortPCIeToPCIBridge:
		return "PCIe-to-PCI bridge"
	case PortPCIToPCIeBridge:
		return "PCI-to-PCIe bridge"
	case PortIntegratedEndpoint:
		return "root complex integrated endpoint"
	case PortEventCollector:
		return "root complex event collector"
	}
	return fmt.Sprintf("port type %#x", uint8(p))
}

// MarshalText writes the name, so port types read well in JSON.
func (p PortType) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// PCIeCap is the PCI Express capability (ID 0x10).
type PCIeCap struct {
	Offset        uint16    `json:"offset"`
	Version       uint8     `json:"version"`
	PortType      PortType  `json:"port_type"`
	SlotImpl      bool      `json:"slot_implemented"`
	MaxPayload    int       `json:"max_payload"` // supported, in bytes
	MaxLinkSpeed  LinkSpeed `json:"max_link_speed"`
	MaxLinkWidth  int       `json:"max_link_width"`
	LinkSpeed     LinkSpeed `json:"link_speed"` // negotiated
	LinkWidth     int       `json:"link_width"`
	PhysicalSlot  uint16    `json:"physical_slot,omitempty"` // when SlotImpl
	PortNumber    uint8     `json:"port_number,omitempty"`
	HasLinkFields bool      `json:"-"`
}

// MSICap is the MSI capability (ID 0x05).
type MSICap struct {
	Offset      uint16 `json:"offset"`
	Enabled     bool   `json:"enabled"`
	Vectors     int    `json:"vectors"` // how many the function can ask for: 1 to 32
	Address64   bool   `json:"address_64"`
	PerVectMask bool   `json:"per_vector_mask"`
}

// MSIXCap is the MSI-X capability (ID 0x11): where the vector table and
// pending-bit array live in the function's BARs.
type MSIXCap struct {
	Offset      uint16 `json:"offset"`
	Enabled     bool   `json:"enabled"`
	FunctionMsk bool   `json:"function_mask"`
	TableSize   int    `json:"table_size"` // vectors: 1 to 2048
	TableBIR    int    `json:"table_bir"`  // BAR index of the table
	TableOffset uint32 `json:"table_offset"`
	PBABIR      int    `json:"pba_bir"`
	PBAOffset   uint32 `json:"pba_offset"`
}

// AERCap is the Advanced Error Reporting capability (extended 0x0001);
// the status registers say which errors were logged and not yet cleared.
type AERCap struct {
	Offset              uint16 `json:"offset"`
	UncorrectableStatus uint32 `json:"uncorrectable_status"`
	UncorrectableMask   uint32 `json:"uncorrectable_mask"`
	UncorrectableSev    uint32 `json:"uncorrectable_severity"`
	CorrectableStatus   uint32 `json:"correctable_status"`
	CorrectableMask     uint32 `json:"correctable_mask"`
}

// ACS capability and control bits (PCI Express Base 6.0, 7.7.11.2).
const (
	ACSSourceValidation   = 1 << 0
	ACSTranslationBlock   = 1 << 1
	ACSRequestRedirect    = 1 << 2
	ACSCompletionRedirect = 1 << 3
	ACSUpstreamForwarding = 1 << 4
	ACSEgressControl      = 1 << 5
	ACSDirectTranslated   = 1 << 6
)

// ACSCap is the Access Control Services capability (extended 0x000d). ACS
// on the ports above a device decides whether the IOMMU can isolate it.
type ACSCap struct {
	Offset     uint16 `json:"offset"`
	Capability uint16 `json:"capability"` // ACS... bits the port supports
	Control    uint16 `json:"control"`    // ACS... bits enabled
}

// SRIOVCap is the Single Root I/O Virtualization capability (extended
// 0x0010) of a physical function.
type SRIOVCap struct {
	Offset     uint16 `json:"offset"`
	Enabled    bool   `json:"vf_enable"`
	InitialVFs int    `json:"initial_vfs"`
	TotalVFs   int    `json:"total_vfs"`
	NumVFs     int    `json:"num_vfs"`
	VFOffset   int    `json:"vf_offset"` // routing ID of VF 1 relative to the PF
	VFStride   int    `json:"vf_stride"`
	VFDeviceID ID     `json:"vf_device_id"`
}

// ATSCap is the Address Translation Services capability (extended 0x000f).
type ATSCap struct {
	Offset           uint16 `json:"offset"`
	Enabled          bool   `json:"enabled"`
	InvalidateQDepth int    `json:"invalidate_queue_depth"`
	PageAligned      bool   `json:"page_aligned_request"`
}

// PRICap is the Page Request Interface capability (extended 0x0013).
type PRICap struct {
	Offset      uint16 `json:"offset"`
	Enabled     bool   `json:"enabled"`
	Outstanding uint32 `json:"outstanding_capacity"`
}

// PASIDCap is the Process Address Space ID capability (extended 0x001b).
type PASIDCap struct {
	Offset     uint16 `json:"offset"`
	Enabled    bool   `json:"enabled"`
	Width      int    `json:"width"` // PASID bits supported
	Execute    bool   `json:"execute"`
	Privileged bool   `json:"privileged"`
}

// configBytes reads little-endian fields with bounds checks: a read past
// the end returns ok=false instead of panicking, so no field access below
// can fault on a truncated or hostile image.
type configBytes []byte

func (c configBytes) u8(off int) (uint8, bool) {
	if off < 0 || off >= len(c) {
		return 0, false
	}
	return c[off], true
}

func (c configBytes) u16(off int) (uint16, bool) {
	if off < 0 || off+2 > len(c) {
		return 0, false
	}
	return binary.LittleEndian.Uint16(c[off:]), true
}

// id reads a 16-bit ID; 0 past the end.
func (c configBytes) id(off int) ID {
	v, _ := c.u16(off)
	return ID(v)
}

func (c configBytes) u32(off int) (uint32, bool) {
	if off < 0 || off+4 > len(c) {
		return 0, false
	}
	return binary.LittleEndian.Uint32(c[off:]), true
}

// ParseConfig decodes a config-space image as sysfs's "config" file holds
// it. It never panics, whatever the bytes: every read is bounds-checked and
// both capability lists are walked with a visited set, so a list that
// loops ends. Only an image shorter than the 64-byte header is an error
// (ErrShortConfig); anything odd beyond that lands in Config.Problems.
func ParseConfig(b []byte) (*Config, error) {
	if len(b) < headerSize {
		return nil, fmt.Errorf("parsing %d bytes of config space: %w", len(b), ErrShortConfig)
	}
	c := configBytes(b)
	cfg := &Config{Size: len(b)}
	cfg.VendorID = c.id(cfgVendorID)
	cfg.DeviceID = c.id(cfgDeviceID)
	cfg.Revision, _ = c.u8(cfgRevision)
	classWord, _ := c.u32(cfgRevision)
	cfg.Class = Class(classWord >> 8)
	ht, _ := c.u8(cfgHeaderType)
	cfg.HeaderType = ht & 0x7f
	cfg.MultiFunction = ht&0x80 != 0
	if cfg.VendorID == 0xffff {
		cfg.Problems = append(cfg.Problems, "vendor ID reads 0xffff: the function is gone, powered off or in reset")
		return cfg, nil
	}
	switch cfg.HeaderType {
	case 0:
		cfg.SubsystemVendor = c.id(cfgSubsysVendor)
		cfg.SubsystemDevice = c.id(cfgSubsysID)
	case 1:
		cfg.PrimaryBus, _ = c.u8(cfgPrimaryBus)
		cfg.SecondaryBus, _ = c.u8(cfgSecondaryBus)
		cfg.SubordinateBus, _ = c.u8(cfgSubordinateBus)
	}

	status, _ := c.u16(cfgStatus)
	if status&statusCapList != 0 {
		ptrOff := cfgCapPointer
		if cfg.HeaderType == 2 {
			ptrOff = cfgCardbusCapPtr
		}
		first, _ := c.u8(ptrOff)
		cfg.walkCapabilities(c, int(first))
	}
	// The extended list exists only past 256 bytes, and only for PCI
	// Express functions; a conventional function reads zeros or ones there.
	if len(b) > legacySize && cfg.PCIe != nil {
		cfg.walkExtended(c)
	}
	return cfg, nil
}

func (cfg *Config) problemf(format string, args ...any) {
	cfg.Problems = append(cfg.Problems, fmt.Sprintf(format, args...))
}

// walkCapabilities follows the conventional capability list. Each entry
// is [ID, next pointer, body...]; the bottom two bits of a pointer are
// reserved and masked off, and a pointer of 0 ends the list.
func (cfg *Config) walkCapabilities(c configBytes, ptr int) {
	var seen [legacySize / 4]bool
	ptr &^= 3
	for ptr != 0 {
		if ptr < headerSize || ptr >= legacySize {
			cfg.problemf("capability pointer %#x is outside 0x40-0xff", ptr)
			return
		}
		if ptr+2 > len(c) {
			// Unprivileged readers see only 64 bytes: not a problem of
			// the device, just of what we were allowed to read.
			if len(c) > headerSize {
				cfg.problemf("capability at %#x lies past the %d bytes read", ptr, len(c))
			}
			return
		}
		if seen[ptr/4] {
			cfg.problemf("capability list loops back to %#x", ptr)
			return
		}
		seen[ptr/4] = true
		id, _ := c.u8(ptr)
		next, _ := c.u8(ptr + 1)
		cp := Capability{ID: uint16(id), Offset: uint16(ptr), Name: CapabilityName(uint16(id), false)}
		cfg.Capabilities = append(cfg.Capabilities, cp)
		cfg.decodeCapability(c, cp)
		ptr = int(next) &^ 3
	}
}

// walkExtended follows the PCI Express extended capability list at 0x100.
// Each header is one dword: ID in bits 15:0, version in 19:16, next
// pointer in 31:20 (bottom two bits reserved); a header of 0 (or all ones)
// means there are none.
func (cfg *Config) walkExtended(c configBytes) {
	var seen [extendedSize / 4]bool
	ptr := extendedStart
	for ptr != 0 {
		if ptr < extendedStart || ptr+4 > extendedSize {
			cfg.problemf("extended capability pointer %#x is outside 0x100-0xffc", ptr)
			return
		}
		hdr, ok := c.u32(ptr)
		if !ok {
			cfg.problemf("extended capability at %#x lies past the %d bytes read", ptr, len(c))
			return
		}
		if seen[ptr/4] {
			cfg.problemf("extended capability list loops back to %#x", ptr)
			return
		}
		seen[ptr/4] = true
		if hdr == 0 || hdr == 0xffffffff {
			if ptr != extendedStart {
				cfg.problemf("extended capability at %#x reads %#x", ptr, hdr)
			}
			return
		}
		id := uint16(hdr)
		cp := Capability{
			ID:       id,
			Extended: true,
			Offset:   uint16(ptr),
			Version:  uint8(hdr>>16) & 0xf,
			Name:     CapabilityName(id, true),
		}
		cfg.Capabilities = append(cfg.Capabilities, cp)
		cfg.decodeExtended(c, cp)
		ptr = int(hdr>>20) &^ 3
	}
}

// need checks that a capability's registers up to off+n lie in the image
// and records a problem when they do not.
func (cfg *Config) need(c configBytes, cp Capability, n int) bool {
	if int(cp.Offset)+n > len(c) {
		cfg.problemf("%s capability at %#x is cut short: needs %d bytes, %d read", cp.Name, cp.Offset, n, len(c)-int(cp.Offset))
		return false
	}
	return true
}

func (cfg *Config) decodeCapability(c configBytes, cp Capability) {
	o := int(cp.Offset)
	switch cp.ID {
	case CapPCIe:
		if cfg.PCIe != nil || !cfg.need(c, cp, 0x14) {
			return
		}
		flags, _ := c.u16(o + 2)
		devCap, _ := c.u32(o + 4)
		p := &PCIeCap{
			Offset:     cp.Offset,
			Version:    uint8(flags & 0xf),
			PortType:   PortType(flags >> 4 & 0xf),
			SlotImpl:   flags&(1<<8) != 0,
			MaxPayload: 128 << min(devCap&7, 5),
		}
		// Every PCI Express function has the link registers, but they
		// mean something only where there is a link: not on root
		// complex integrated endpoints or event collectors.
		if p.PortType != PortIntegratedEndpoint && p.PortType != PortEventCollector {
			linkCap, _ := c.u32(o + 0xc)
			linkSta, _ := c.u16(o + 0x12)
			p.HasLinkFields = true
			p.MaxLinkSpeed = linkSpeedFromCode(linkCap & 0xf)
			p.MaxLinkWidth = int(linkCap >> 4 & 0x3f)
			p.PortNumber = uint8(linkCap >> 24)
			p.LinkSpeed = linkSpeedFromCode(uint32(linkSta & 0xf))
			p.LinkWidth = int(linkSta >> 4 & 0x3f)
		}
		if p.SlotImpl {
			if slotCap, ok := c.u32(o + 0x14); ok {
				p.PhysicalSlot = uint16(slotCap >> 19)
			}
		}
		cfg.PCIe = p
	case CapMSI:
		if cfg.MSI != nil || !cfg.need(c, cp, 4) {
			return
		}
		ctl, _ := c.u16(o + 2)
		cfg.MSI = &MSICap{
			Offset:      cp.Offset,
			Enabled:     ctl&1 != 0,
			Vectors:     1 << min(ctl>>1&7, 5),
			Address64:   ctl&(1<<7) != 0,
			PerVectMask: ctl&(1<<8) != 0,
		}
	case CapMSIX:
		if cfg.MSIX != nil || !cfg.need(c, cp, 12) {
			return
		}
		ctl, _ := c.u16(o + 2)
		table, _ := c.u32(o + 4)
		pba, _ := c.u32(o + 8)
		cfg.MSIX = &MSIXCap{
			Offset:      cp.Offset,
			Enabled:     ctl&(1<<15) != 0,
			FunctionMsk: ctl&(1<<14) != 0,
			TableSize:   int(ctl&0x7ff) + 1,
			TableBIR:    int(table & 7),
			TableOffset: table &^ 7,
			PBABIR:      int(pba & 7),
			PBAOffset:   pba &^ 7,
		}
	case CapSubsystemID:
		if cfg.HeaderType != 1 || !cfg.need(c, cp, 8) {
			return
		}
		cfg.SubsystemVendor = c.id(o + 4)
		cfg.SubsystemDevice = c.id(o + 6)
	}
}

func (cfg *Config) decodeExtended(c configBytes, cp Capability) {
	o := int(cp.Offset)
	switch cp.ID {
	case ExtCapAER:
		if cfg.AER != nil || !cfg.need(c, cp, 0x18) {
			return
		}
		a := &AERCap{Offset: cp.Offset}
		a.UncorrectableStatus, _ = c.u32(o + 4)
		a.UncorrectableMask, _ = c.u32(o + 8)
		a.UncorrectableSev, _ = c.u32(o + 0xc)
		a.CorrectableStatus, _ = c.u32(o + 0x10)
		a.CorrectableMask, _ = c.u32(o + 0x14)
		cfg.AER = a
	case ExtCapACS:
		if cfg.ACS != nil || !cfg.need(c, cp, 8) {
			return
		}
		a := &ACSCap{Offset: cp.Offset}
		a.Capability, _ = c.u16(o + 4)
		a.Control, _ = c.u16(o + 6)
		cfg.ACS = a
	case ExtCapSRIOV:
		if cfg.SRIOV != nil || !cfg.need(c, cp, 0x1c) {
			return
		}
		ctl, _ := c.u16(o + 8)
		initial, _ := c.u16(o + 0xc)
		total, _ := c.u16(o + 0xe)
		num, _ := c.u16(o + 0x10)
		off, _ := c.u16(o + 0x14)
		stride, _ := c.u16(o + 0x16)
		vfDev := c.id(o + 0x1a)
		cfg.SRIOV = &SRIOVCap{
			Offset:     cp.Offset,
			Enabled:    ctl&1 != 0,
			InitialVFs: int(initial),
			TotalVFs:   int(total),
			NumVFs:     int(num),
			VFOffset:   int(off),
			VFStride:   int(stride),
			VFDeviceID: vfDev,
		}
	case ExtCapATS:
		if cfg.ATS != nil || !cfg.need(c, cp, 8) {
			return
		}
		capReg, _ := c.u16(o + 4)
		ctl, _ := c.u16(o + 6)
		depth := int(capReg & 0x1f)
		if depth == 0 {
			depth = 32 // the field encodes 32 as 0
		}
		cfg.ATS = &ATSCap{
			Offset:           cp.Offset,
			Enabled:          ctl&(1<<15) != 0,
			InvalidateQDepth: depth,
			PageAligned:      capReg&(1<<5) != 0,
		}
	case ExtCapPRI:
		if cfg.PRI != nil || !cfg.need(c, cp, 0x10) {
			return
		}
		ctl, _ := c.u16(o + 4)
		capacity, _ := c.u32(o + 8)
		cfg.PRI = &PRICap{Offset: cp.Offset, Enabled: ctl&1 != 0, Outstanding: capacity}
	case ExtCapPASID:
		if cfg.PASID != nil || !cfg.need(c, cp, 8) {
			return
		}
		capReg, _ := c.u16(o + 4)
		ctl, _ := c.u16(o + 6)
		cfg.PASID = &PASIDCap{
			Offset:     cp.Offset,
			Enabled:    ctl&1 != 0,
			Width:      int(capReg >> 8 & 0x1f),
			Execute:    capReg&(1<<1) != 0,
			Privileged: capReg&(1<<2) != 0,
		}
	}
}
