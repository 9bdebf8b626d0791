package nvmelike

import "encoding/binary"

// Format is the layout of a queue pair's entries. The engine (rings, phase
// tags, doorbells, trackers, PRPs) is the same for every format; a device
// with its own entry layout supplies a new Format, not a fork of the
// engine. NVMe is the NVMe layout: 64-byte SQ entries, 16-byte CQ entries.
//
// Encode and Decode are called on the I/O path: they must not allocate.
type Format interface {
	// SQESize and CQESize return the entry sizes in bytes: powers of two,
	// at least 4.
	SQESize() int
	CQESize() int
	// EncodeSQE writes cmd into the SQ slot sqe (len(sqe) == SQESize()),
	// with command identifier cid and data pointer prp1/prp2. It must
	// write every byte of the slot: slots are reused without clearing.
	EncodeSQE(sqe []byte, cmd *Command, cid uint16, prp1, prp2 uint64)
	// CQEPhase returns the phase tag of the CQ slot cqe
	// (len(cqe) == CQESize()). It must load the word holding it with
	// AcquireLoad32: the device may be writing the slot, and the engine
	// reads the rest of the entry only after the phase tag matched.
	CQEPhase(cqe []byte) bool
	// DecodeCQE reads the rest of a CQ slot whose phase tag matched.
	DecodeCQE(cqe []byte) Completion
}

// Completion is a decoded completion entry.
type Completion struct {
	DW0    uint32 // command specific result
	DW1    uint32
	SQHead uint16 // SQ head pointer as the controller saw it
	SQID   uint16
	CID    uint16
	Status uint16 // status field (SC, SCT, CRD, More, DNR), 0 for success
	Phase  bool
}

// Err returns the completion's status as a *StatusError, nil for success.
func (c *Completion) Err() error {
	if c.Status == 0 {
		return nil
	}
	e := statusFromField(c.Status)
	e.CID = c.CID
	e.QID = c.SQID
	return &e
}

// NVMe is the NVMe entry format.
var NVMe Format = nvmeFormat{}

type nvmeFormat struct{}

func (nvmeFormat) SQESize() int { return 64 }
func (nvmeFormat) CQESize() int { return 16 }

func (nvmeFormat) EncodeSQE(b []byte, cmd *Command, cid uint16, prp1, prp2 uint64) {
	putSQE((*[64]byte)(b), uint64(cmd.Opcode)|uint64(cmd.Flags)<<8|uint64(cid)<<16|uint64(cmd.NSID)<<32,
		uint64(cmd.CDW2)|uint64(cmd.CDW3)<<32, cmd.MPTR, prp1, prp2,
		uint64(cmd.CDW10)|uint64(cmd.CDW11)<<32, uint64(cmd.CDW12)|uint64(cmd.CDW13)<<32, uint64(cmd.CDW14)|uint64(cmd.CDW15)<<32)
}

// putSQE writes a 64-byte NVMe entry as its eight little-endian quadwords
// (an array pointer: one length check, none per store): CDW0 with NSID,
// CDW2-3, MPTR, PRP1, PRP2, CDW10-11, CDW12-13, CDW14-15. The slot is
// written whole. EncodeSQE composes the words from a Command, SubmitIO
// from its arguments.
func putSQE(e *[64]byte, dw01, dw23, mptr, prp1, prp2, dw1011, dw1213, dw1415 uint64) {
	le := binary.LittleEndian
	le.PutUint64(e[0:8], dw01)
	le.PutUint64(e[8:16], dw23)
	le.PutUint64(e[16:24], mptr)
	le.PutUint64(e[24:32], prp1)
	le.PutUint64(e[32:40], prp2)
	le.PutUint64(e[40:48], dw1011)
	le.PutUint64(e[48:56], dw1213)
	le.PutUint64(e[56:64], dw1415)
}

func (nvmeFormat) CQEPhase(b []byte) bool {
	return AcquireLoad32(b[12:16])>>16&1 == 1
}

func (nvmeFormat) DecodeCQE(b []byte) Completion {
	return decodeNVMeCQE((*[16]byte)(b), binary.LittleEndian.Uint32(b[12:16]))
}

// decodeNVMeCQE decodes entry e whose last dword, dw3 (CID, phase,
// status), the caller has already loaded: Poll reads it once, with
// acquire ordering, for the phase tag.
func decodeNVMeCQE(e *[16]byte, dw3 uint32) Completion {
	lo := binary.LittleEndian.Uint64(e[0:8])
	dw2 := binary.LittleEndian.Uint32(e[8:12])
	return Completion{
		DW0:    uint32(lo),
		DW1:    uint32(lo >> 32),
		SQHead: uint16(dw2),
		SQID:   uint16(dw2 >> 16),
		CID:    uint16(dw3),
		Phase:  dw3>>16&1 == 1,
		Status: uint16(dw3 >> 17),
	}
}

// SQE is a 64-byte NVMe submission queue entry, written in place: each
// setter is one little-endian store into the slot.
type SQE []byte

// SetCDW0 sets the opcode, the flags byte (FUSE, PSDT) and the CID.
func (e SQE) SetCDW0(opcode, flags uint8, cid uint16) {
	binary.LittleEndian.PutUint32(e[0:4], uint32(opcode)|uint32(flags)<<8|uint32(cid)<<16)
}

// SetNSID sets the namespace identifier (CDW1).
func (e SQE) SetNSID(nsid uint32) { binary.LittleEndian.PutUint32(e[4:8], nsid) }

// SetCDW sets command dword i (0-15).
func (e SQE) SetCDW(i int, v uint32) { binary.LittleEndian.PutUint32(e[4*i:4*i+4], v) }

// SetMPTR sets the metadata pointer (CDW4-5).
func (e SQE) SetMPTR(p uint64) { binary.LittleEndian.PutUint64(e[16:24], p) }

// SetPRP sets the data pointer (CDW6-9) to PRP entries 1 and 2.
func (e SQE) SetPRP(prp1, prp2 uint64) {
	binary.LittleEndian.PutUint64(e[24:32], prp1)
	binary.LittleEndian.PutUint64(e[32:40], prp2)
}

// MPTR returns the metadata pointer (command dwords 4-5).
func (e SQE) MPTR() uint64 { return binary.LittleEndian.Uint64(e[16:24]) }

// Opcode returns the opcode.
func (e SQE) Opcode() uint8 { return e[0] }

// Flags returns CDW0 bits 15:8 (FUSE, PSDT).
func (e SQE) Flags() uint8 { return e[1] }

// CID returns the command identifier.
func (e SQE) CID() uint16 { return binary.LittleEndian.Uint16(e[2:4]) }

// NSID returns the namespace identifier.
func (e SQE) NSID() uint32 { return binary.LittleEndian.Uint32(e[4:8]) }

// CDW returns command dword i (0-15).
func (e SQE) CDW(i int) uint32 { return binary.LittleEndian.Uint32(e[4*i : 4*i+4]) }

// PRP returns PRP entries 1 and 2.
func (e SQE) PRP() (prp1, prp2 uint64) {
	return binary.LittleEndian.Uint64(e[24:32]), binary.LittleEndian.Uint64(e[32:40])
}

// PutCQE writes an NVMe completion entry into slot b (16 bytes), the
// phase-tag word last with a release store, as a device would. It is for
// software controllers and tests.
func PutCQE(b []byte, c Completion) {
	_ = b[15]
	binary.LittleEndian.PutUint32(b[0:4], c.DW0)
	binary.LittleEndian.PutUint32(b[4:8], c.DW1)
	binary.LittleEndian.PutUint32(b[8:12], uint32(c.SQHead)|uint32(c.SQID)<<16)
	dw3 := uint32(c.CID) | uint32(c.Status&0x7fff)<<17
	if c.Phase {
		dw3 |= 1 << 16
	}
	ReleaseStore32(b[12:16], dw3)
}

// StatusField builds a completion status field from its parts.
func StatusField(sct, sc uint8, dnr bool) uint16 {
	s := uint16(sc) | uint16(sct&7)<<8
	if dnr {
		s |= 1 << 14
	}
	return s
}
