package pcietest

import "encoding/binary"

// Config builds a config-space image, 4096 bytes (PCI Express) unless cut
// with Bytes(n). Capabilities are laid out one after another from 0x40
// (conventional) and 0x100 (extended) and linked in the order added.
type Config struct {
	b       []byte
	lastCap int // offset of the last conventional capability, 0 if none
	nextCap int
	lastExt int // offset of the last extended capability, 0 if none
	nextExt int
}

// NewConfig starts an image with a type 0 header (type 1 when class is a
// PCI-to-PCI bridge, 0x0604xx).
func NewConfig(vendor, device uint16, class uint32) *Config {
	c := &Config{b: make([]byte, 4096), nextCap: 0x40, nextExt: 0x100}
	binary.LittleEndian.PutUint16(c.b[0x00:], vendor)
	binary.LittleEndian.PutUint16(c.b[0x02:], device)
	binary.LittleEndian.PutUint32(c.b[0x08:], class<<8)
	if class>>8 == 0x0604 {
		c.b[0x0e] = 1
	}
	return c
}

// Revision sets the revision ID.
func (c *Config) Revision(r uint8) *Config { c.b[0x08] = r; return c }

// Subsystem sets the subsystem IDs of a type 0 header.
func (c *Config) Subsystem(vendor, device uint16) *Config {
	binary.LittleEndian.PutUint16(c.b[0x2c:], vendor)
	binary.LittleEndian.PutUint16(c.b[0x2e:], device)
	return c
}

// MultiFunction sets the multi-function bit of the header type.
func (c *Config) MultiFunction() *Config { c.b[0x0e] |= 0x80; return c }

// Buses sets a bridge's primary, secondary and subordinate bus numbers.
func (c *Config) Buses(primary, secondary, subordinate uint8) *Config {
	c.b[0x18], c.b[0x19], c.b[0x1a] = primary, secondary, subordinate
	return c
}

// Cap appends a conventional capability with the given body (the bytes
// after the ID and next pointer) and links it into the list.
func (c *Config) Cap(id uint8, body ...byte) *Config {
	off := c.nextCap
	if off+2+len(body) > 0x100 {
		panic("pcietest: conventional capabilities overflow 256 bytes") // a bug in the test, not in input
	}
	c.b[off] = id
	copy(c.b[off+2:], body)
	if c.lastCap == 0 {
		c.b[0x34] = byte(off)
		c.b[0x06] |= 0x10 // status: capability list
	} else {
		c.b[c.lastCap+1] = byte(off)
	}
	c.lastCap = off
	c.nextCap = (off + 2 + len(body) + 3) &^ 3
	return c
}

// ExtCap appends an extended capability with the given body (the bytes
// after the header dword).
func (c *Config) ExtCap(id uint16, version uint8, body ...byte) *Config {
	off := c.nextExt
	if off+4+len(body) > 0x1000 {
		panic("pcietest: extended capabilities overflow 4096 bytes")
	}
	binary.LittleEndian.PutUint32(c.b[off:], uint32(id)|uint32(version&0xf)<<16)
	copy(c.b[off+4:], body)
	if c.lastExt != 0 {
		hdr := binary.LittleEndian.Uint32(c.b[c.lastExt:])
		binary.LittleEndian.PutUint32(c.b[c.lastExt:], hdr&0xfffff|uint32(off)<<20)
	}
	c.lastExt = off
	c.nextExt = (off + 4 + len(body) + 3) &^ 3
	return c
}

// Link speeds as the Link Capabilities and Status registers encode them.
const (
	Gen1 = 1 // 2.5 GT/s
	Gen2 = 2 // 5.0 GT/s
	Gen3 = 3 // 8.0 GT/s
	Gen4 = 4 // 16.0 GT/s
	Gen5 = 5 // 32.0 GT/s
)

// Device/port types of the PCI Express capability.
const (
	Endpoint           = 0x0
	RootPort           = 0x4
	UpstreamPort       = 0x5
	DownstreamPort     = 0x6
	IntegratedEndpoint = 0x9
)

// PCIe appends a version 2 PCI Express capability with the given
// device/port type and link: maximum and negotiated speed (Gen1...) and
// width.
func (c *Config) PCIe(portType int, maxSpeed, maxWidth, speed, width int) *Config {
	body := make([]byte, 0x3c-2)
	le16(body[0:], uint16(2|portType<<4)) // at +2: capabilities register
	le32(body[2:], 1)                     // at +4: device capabilities, 256-byte max payload
	le32(body[10:], uint32(maxSpeed|maxWidth<<4))
	le16(body[16:], uint16(speed|width<<4)) // at +0x12: link status
	return c.Cap(0x10, body...)
}

// MSI appends an MSI capability with 2^log2Vectors vectors, 64-bit.
func (c *Config) MSI(log2Vectors int) *Config {
	body := make([]byte, 12)
	le16(body[0:], uint16(log2Vectors<<1|1<<7))
	return c.Cap(0x05, body...)
}

// MSIX appends an MSI-X capability.
func (c *Config) MSIX(tableSize int, tableBIR int, tableOffset uint32, pbaBIR int, pbaOffset uint32) *Config {
	body := make([]byte, 10)
	le16(body[0:], uint16(tableSize-1))
	le32(body[2:], tableOffset|uint32(tableBIR))
	le32(body[6:], pbaOffset|uint32(pbaBIR))
	return c.Cap(0x11, body...)
}

// PowerManagement appends a power management capability.
func (c *Config) PowerManagement() *Config { return c.Cap(0x01, make([]byte, 6)...) }

// AER appends an AER capability with the given status registers.
func (c *Config) AER(uncorrectable, correctable uint32) *Config {
	body := make([]byte, 0x48-4)
	le32(body[0:], uncorrectable)
	le32(body[12:], correctable)
	return c.ExtCap(0x0001, 2, body...)
}

// ACS appends an ACS capability.
func (c *Config) ACS(capability, control uint16) *Config {
	body := make([]byte, 4)
	le16(body[0:], capability)
	le16(body[2:], control)
	return c.ExtCap(0x000d, 1, body...)
}

// SRIOV appends an SR-IOV capability.
func (c *Config) SRIOV(total, num, offset, stride int, vfDevice uint16) *Config {
	body := make([]byte, 0x40-4)
	if num > 0 {
		le16(body[4:], 1) // +8: control, VF enable
	}
	le16(body[8:], uint16(total)) // +0xc: initial VFs
	le16(body[10:], uint16(total))
	le16(body[12:], uint16(num))
	le16(body[16:], uint16(offset))
	le16(body[18:], uint16(stride))
	le16(body[22:], vfDevice)
	return c.ExtCap(0x0010, 1, body...)
}

// ATS appends an ATS capability.
func (c *Config) ATS() *Config { return c.ExtCap(0x000f, 1, make([]byte, 4)...) }

// PRI appends a PRI capability.
func (c *Config) PRI(outstanding uint32) *Config {
	body := make([]byte, 12)
	le32(body[4:], outstanding)
	return c.ExtCap(0x0013, 1, body...)
}

// PASID appends a PASID capability of the given width.
func (c *Config) PASID(width int) *Config {
	body := make([]byte, 4)
	le16(body[0:], uint16(width<<8))
	return c.ExtCap(0x001b, 1, body...)
}

// Bytes returns the image, cut to n bytes if n is given (64 is what an
// unprivileged reader of sysfs sees).
func (c *Config) Bytes(n ...int) []byte {
	out := append([]byte(nil), c.b...)
	if len(n) > 0 && n[0] < len(out) {
		out = out[:n[0]]
	}
	return out
}

func le16(b []byte, v uint16) { binary.LittleEndian.PutUint16(b, v) }
func le32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }
