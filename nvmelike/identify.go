package nvmelike

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// IdentifyDataSize is the size of every Identify data structure.
const IdentifyDataSize = 4096

// Identify Controller bits (struct nvme_id_ctrl in include/linux/nvme.h).
const (
	NVME_CTRL_OACS_DBBUF_SUPP   = 1 << 8 // Doorbell Buffer Config supported
	NVME_CTRL_ONCS_COMPARE      = 1 << 0
	NVME_CTRL_ONCS_DSM          = 1 << 2
	NVME_CTRL_ONCS_WRITE_ZEROES = 1 << 3
	NVME_CTRL_VWC_PRESENT       = 1 << 0
)

// IdentifyController is the part of the Identify Controller data structure
// (CNS 01h) the engine uses or tools show.
type IdentifyController struct {
	VID    uint16 // PCI vendor ID
	SSVID  uint16 // PCI subsystem vendor ID
	SN     string // serial number, trailing spaces trimmed
	MN     string // model number
	FR     string // firmware revision
	MDTS   uint8  // maximum data transfer size: 2^MDTS minimum pages; 0 = no limit
	CNTLID uint16
	VER    Version
	RTD3E  uint32 // RTD3 entry latency, µs: a shutdown's expected duration
	OACS   uint16 // optional admin command support
	AERL   uint8  // asynchronous event request limit, 0-based
	ELPE   uint8  // error log page entries, 0-based
	SQES   uint8  // SQ entry sizes: required (3:0) and maximum (7:4), log2 bytes
	CQES   uint8  // CQ entry sizes, as SQES
	MAXCMD uint16
	NN     uint32 // number of namespaces (the largest NSID)
	ONCS   uint16 // optional NVM command support
	VWC    uint8  // volatile write cache
	SGLS   uint32 // SGL support
	SUBNQN string
}

// DoorbellBufferConfig reports whether the controller supports shadow
// doorbells (OACS bit 8).
func (id *IdentifyController) DoorbellBufferConfig() bool {
	return id.OACS&NVME_CTRL_OACS_DBBUF_SUPP != 0
}

// VolatileWriteCache reports whether a volatile write cache is present, so
// Flush matters.
func (id *IdentifyController) VolatileWriteCache() bool { return id.VWC&NVME_CTRL_VWC_PRESENT != 0 }

// MaxTransfer returns MDTS in bytes for minimum page size pageSize, 0 for
// no limit.
func (id *IdentifyController) MaxTransfer(pageSize int) int {
	if id.MDTS == 0 {
		return 0
	}
	if id.MDTS > 20 { // beyond any sensible limit; treat as none
		return 0
	}
	return pageSize << id.MDTS
}

// ParseIdentifyController decodes an Identify Controller data structure.
func ParseIdentifyController(b []byte) (*IdentifyController, error) {
	if len(b) < IdentifyDataSize {
		return nil, fmt.Errorf("identify controller: %d bytes, want %d: %w", len(b), IdentifyDataSize, ErrMalformed)
	}
	le := binary.LittleEndian
	return &IdentifyController{
		VID:    le.Uint16(b[0:]),
		SSVID:  le.Uint16(b[2:]),
		SN:     idString(b[4:24]),
		MN:     idString(b[24:64]),
		FR:     idString(b[64:72]),
		MDTS:   b[77],
		CNTLID: le.Uint16(b[78:]),
		VER:    Version(le.Uint32(b[80:])),
		RTD3E:  le.Uint32(b[88:]),
		OACS:   le.Uint16(b[256:]),
		AERL:   b[259],
		ELPE:   b[262],
		SQES:   b[512],
		CQES:   b[513],
		MAXCMD: le.Uint16(b[514:]),
		NN:     le.Uint32(b[516:]),
		ONCS:   le.Uint16(b[520:]),
		VWC:    b[525],
		SGLS:   le.Uint32(b[536:]),
		SUBNQN: idString(b[768:1024]),
	}, nil
}

// idString decodes an ASCII identify field: space or NUL padded.
func idString(b []byte) string {
	return strings.TrimRight(string(b), " \x00")
}

// LBAFormat is one LBA format of a namespace.
type LBAFormat struct {
	MS    uint16 // metadata bytes per LBA
	LBADS uint8  // LBA data size, log2 bytes
	RP    uint8  // relative performance, 0 best
}

// IdentifyNamespace is the part of the Identify Namespace data structure
// (CNS 00h) the engine uses.
type IdentifyNamespace struct {
	NSID    uint32
	NSZE    uint64 // size in logical blocks
	NCAP    uint64 // capacity in logical blocks
	NUSE    uint64 // utilisation in logical blocks
	NSFEAT  uint8
	NLBAF   uint8 // number of LBA formats, 0-based
	FLBAS   uint8 // formatted LBA size: format index and metadata placement
	LBAF    []LBAFormat
	LBASize int // data bytes per logical block, from FLBAS and LBAF
}

// Format returns the index of the namespace's LBA format (FLBAS bits 3:0,
// and bits 6:5 as the high bits when there are more than 16 formats).
func (ns *IdentifyNamespace) Format() int {
	i := int(ns.FLBAS & 0xf)
	if ns.NLBAF >= 16 {
		i |= int(ns.FLBAS>>5&3) << 4
	}
	return i
}

// MetadataSize returns the metadata bytes per logical block of the
// namespace's format, 0 for none. With metadata, a read or write moves it
// too: after each block's data (ExtendedLBA) or to the buffer the
// command's metadata pointer (MPTR) names.
func (ns *IdentifyNamespace) MetadataSize() int {
	if f := ns.Format(); f < len(ns.LBAF) {
		return int(ns.LBAF[f].MS)
	}
	return 0
}

// BlockFormat is how a namespace's logical blocks travel in a Read or
// Write: LBASize data bytes each, and Metadata bytes of metadata either
// after each block's data in the data buffer (Extended) or in a buffer
// of their own that the command's metadata pointer (MPTR) names.
type BlockFormat struct {
	LBASize  int
	Metadata int
	Extended bool
}

// BlockFormat returns the namespace's block format.
func (ns *IdentifyNamespace) BlockFormat() BlockFormat {
	return BlockFormat{LBASize: ns.LBASize, Metadata: ns.MetadataSize(), Extended: ns.ExtendedLBA()}
}

// dataBytes returns the bytes nlb blocks take in the data buffer.
func (f BlockFormat) dataBytes(nlb int) int {
	if f.Extended {
		return nlb * (f.LBASize + f.Metadata)
	}
	return nlb * f.LBASize
}

// ExtendedLBA reports whether the namespace's metadata travels with the
// data, at the end of each block (FLBAS bit 4), rather than in a separate
// buffer.
func (ns *IdentifyNamespace) ExtendedLBA() bool { return ns.FLBAS&0x10 != 0 }

// ParseIdentifyNamespace decodes an Identify Namespace data structure.
func ParseIdentifyNamespace(nsid uint32, b []byte) (*IdentifyNamespace, error) {
	if len(b) < IdentifyDataSize {
		return nil, fmt.Errorf("identify namespace %d: %d bytes, want %d: %w", nsid, len(b), IdentifyDataSize, ErrMalformed)
	}
	le := binary.LittleEndian
	ns := &IdentifyNamespace{
		NSID:   nsid,
		NSZE:   le.Uint64(b[0:]),
		NCAP:   le.Uint64(b[8:]),
		NUSE:   le.Uint64(b[16:]),
		NSFEAT: b[24],
		NLBAF:  b[25],
		FLBAS:  b[26],
	}
	n := int(ns.NLBAF) + 1
	if n > 64 {
		return nil, fmt.Errorf("identify namespace %d: NLBAF %d: %w", nsid, ns.NLBAF, ErrMalformed)
	}
	ns.LBAF = make([]LBAFormat, n)
	for i := range ns.LBAF {
		d := le.Uint32(b[128+4*i:])
		ns.LBAF[i] = LBAFormat{MS: uint16(d), LBADS: uint8(d >> 16), RP: uint8(d>>24) & 3}
	}
	f := ns.Format()
	if f >= n {
		return nil, fmt.Errorf("identify namespace %d: FLBAS names format %d of %d: %w", nsid, f, n, ErrMalformed)
	}
	if ds := ns.LBAF[f].LBADS; ds < 9 || ds > 30 {
		return nil, fmt.Errorf("identify namespace %d: LBA data size 2^%d: %w", nsid, ds, ErrMalformed)
	}
	ns.LBASize = 1 << ns.LBAF[f].LBADS
	return ns, nil
}

// Command Set Identifiers (CSI): which I/O command set a namespace
// speaks, from its Namespace Identification Descriptor list.
const (
	CSINVM      uint8 = 0x00 // NVM: reads and writes anywhere
	CSIKeyValue uint8 = 0x01 // Key Value
	CSIZoned    uint8 = 0x02 // Zoned Namespace: writes at each zone's write pointer
)

// CSIName names a Command Set Identifier.
func CSIName(csi uint8) string {
	switch csi {
	case CSINVM:
		return "NVM"
	case CSIKeyValue:
		return "key value"
	case CSIZoned:
		return "zoned (ZNS)"
	}
	return fmt.Sprintf("command set 0x%02x", csi)
}

// NamespaceIDs are a namespace's identifiers from its Namespace
// Identification Descriptor list (Identify CNS 03h). A field the list
// does not hold is zero; CSI is CSINVM unless HasCSI (controllers before
// NVMe 2.0 report no CSI, and have only the NVM command set).
type NamespaceIDs struct {
	EUI64  [8]byte
	NGUID  [16]byte
	UUID   [16]byte
	CSI    uint8
	HasCSI bool
}

// ParseNamespaceDescriptors decodes a Namespace Identification
// Descriptor list: descriptors of a type (NIDT), a length (NIDL), two
// reserved bytes and NIDL bytes of identifier, up to one of type 0.
// Types it does not know are skipped; a known type of the wrong length,
// or one that runs past the list, is ErrMalformed.
func ParseNamespaceDescriptors(nsid uint32, b []byte) (*NamespaceIDs, error) {
	if len(b) < IdentifyDataSize {
		return nil, fmt.Errorf("namespace %d identification descriptors: %d bytes, want %d: %w", nsid, len(b), IdentifyDataSize, ErrMalformed)
	}
	ids := &NamespaceIDs{}
	for off := 0; off+4 <= IdentifyDataSize; {
		typ, n := b[off], int(b[off+1])
		if typ == 0 {
			break
		}
		id := b[off+4:]
		if off+4+n > IdentifyDataSize {
			return nil, fmt.Errorf("namespace %d identification descriptor type %d at byte %d: %d bytes run past the list: %w", nsid, typ, off, n, ErrMalformed)
		}
		// The lengths of the types it knows: EUI-64, NGUID, UUID, CSI.
		if want := [...]int{0, 8, 16, 16, 1}; int(typ) < len(want) && n != want[typ] {
			return nil, fmt.Errorf("namespace %d identification descriptor type %d: length %d, want %d: %w", nsid, typ, n, want[typ], ErrMalformed)
		}
		switch typ {
		case 1:
			copy(ids.EUI64[:], id)
		case 2:
			copy(ids.NGUID[:], id)
		case 3:
			copy(ids.UUID[:], id)
		case 4:
			ids.CSI, ids.HasCSI = id[0], true
		}
		off += 4 + n
	}
	return ids, nil
}

// ParseActiveNamespaces decodes an active namespace ID list (CNS 02h): up
// to 1024 increasing NSIDs, ended by a zero.
func ParseActiveNamespaces(b []byte) ([]uint32, error) {
	if len(b) < IdentifyDataSize {
		return nil, fmt.Errorf("active namespace list: %d bytes, want %d: %w", len(b), IdentifyDataSize, ErrMalformed)
	}
	var ids []uint32
	var last uint32
	for i := 0; i < IdentifyDataSize; i += 4 {
		id := binary.LittleEndian.Uint32(b[i:])
		if id == 0 {
			break
		}
		if id <= last || id == 0xffffffff {
			return nil, fmt.Errorf("active namespace list: NSID %d after %d: %w", id, last, ErrMalformed)
		}
		ids = append(ids, id)
		last = id
	}
	return ids, nil
}

// SMARTLog is the part of the SMART / Health Information log page (02h)
// tools show. The 128-bit counters are reduced to their low 64 bits.
type SMARTLog struct {
	CriticalWarning      uint8
	Temperature          uint16 // composite temperature, kelvin
	AvailableSpare       uint8  // percent
	AvailableSpareThresh uint8
	PercentUsed          uint8
	DataUnitsRead        uint64 // thousands of 512-byte units
	DataUnitsWritten     uint64
	HostReads            uint64 // read commands completed
	HostWrites           uint64
	PowerCycles          uint64
	PowerOnHours         uint64
	UnsafeShutdowns      uint64
	MediaErrors          uint64
	ErrorLogEntries      uint64
}

// SMARTLogSize is the size of the SMART / Health Information log page.
const SMARTLogSize = 512

// ParseSMARTLog decodes a SMART / Health Information log page.
func ParseSMARTLog(b []byte) (*SMARTLog, error) {
	if len(b) < SMARTLogSize {
		return nil, fmt.Errorf("smart log: %d bytes, want %d: %w", len(b), SMARTLogSize, ErrMalformed)
	}
	le := binary.LittleEndian
	return &SMARTLog{
		CriticalWarning:      b[0],
		Temperature:          le.Uint16(b[1:]),
		AvailableSpare:       b[3],
		AvailableSpareThresh: b[4],
		PercentUsed:          b[5],
		DataUnitsRead:        le.Uint64(b[32:]),
		DataUnitsWritten:     le.Uint64(b[48:]),
		HostReads:            le.Uint64(b[64:]),
		HostWrites:           le.Uint64(b[80:]),
		PowerCycles:          le.Uint64(b[112:]),
		PowerOnHours:         le.Uint64(b[128:]),
		UnsafeShutdowns:      le.Uint64(b[144:]),
		MediaErrors:          le.Uint64(b[160:]),
		ErrorLogEntries:      le.Uint64(b[176:]),
	}, nil
}
