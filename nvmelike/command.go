package nvmelike

import (
	"encoding/binary"
	"fmt"
)

// Opcodes of the admin and NVM command sets (nvme_admin_opcode and
// nvme_opcode in include/linux/nvme.h) and Identify CNS values.
const (
	AdminDeleteSQ    uint8 = 0x00
	AdminCreateSQ    uint8 = 0x01
	AdminGetLogPage  uint8 = 0x02
	AdminDeleteCQ    uint8 = 0x04
	AdminCreateCQ    uint8 = 0x05
	AdminIdentify    uint8 = 0x06
	AdminAbort       uint8 = 0x08
	AdminSetFeatures uint8 = 0x09
	AdminGetFeatures uint8 = 0x0a
	AdminAsyncEvent  uint8 = 0x0c
	AdminDBBufConfig uint8 = 0x7c

	CmdFlush       uint8 = 0x00
	CmdWrite       uint8 = 0x01
	CmdRead        uint8 = 0x02
	CmdWriteUncor  uint8 = 0x04
	CmdCompare     uint8 = 0x05
	CmdWriteZeroes uint8 = 0x08
	CmdDatasetMgmt uint8 = 0x09

	IdentifyCNSNamespace     uint8 = 0x00
	IdentifyCNSController    uint8 = 0x01
	IdentifyCNSActiveNSList  uint8 = 0x02
	IdentifyCNSNSDescriptors uint8 = 0x03
)

// Command is one command as the caller describes it: the opcode, the
// command dwords the caller owns and the data buffer(s). The engine fills
// in the CID and the data pointer (PRPs or an SGL, with CDW0's PSDT) when
// it writes the entry into the SQ slot; the rest is copied there as is.
// Vendor and computational opcodes are Commands like any other (see Op).
//
// A Command is a plain value: build it on the stack, reuse it, copy it.
type Command struct {
	Opcode uint8
	// Flags is CDW0 bits 15:8: FUSE (bits 1:0 here) and PSDT (bits 7:6).
	// For a command with data the engine sets PSDT to the data pointer it
	// built (see DataPointer); otherwise Flags is written as it is.
	Flags uint8
	NSID  uint32
	CDW2  uint32
	CDW3  uint32
	MPTR  uint64 // metadata pointer (CDW4-5), written as is
	CDW10 uint32
	CDW11 uint32
	CDW12 uint32
	CDW13 uint32
	CDW14 uint32
	CDW15 uint32
	// Data is the command's data buffer; the zero Buffer for none. The
	// engine builds PRPs or an SGL for it; the device reads or writes it.
	Data Buffer
	// Buffers, when not empty, is the command's data as several buffers,
	// moved in order as if they were one (scatter/gather); Data must then
	// be empty. The slice is the caller's: the engine keeps a reference
	// until the command completes and never copies it, so the caller
	// must not change it meanwhile. With an SGL each buffer is one Data
	// Block descriptor; with PRPs the buffers must meet at memory page
	// boundaries (ErrPRPBoundary). A command with Buffers is never split
	// at the transfer limit: above it, it fails with ErrTransferTooLarge.
	Buffers []Buffer
	// PRP1 and PRP2 are written to the data pointer as they are when Data
	// is empty: for commands that pass an address rather than data, such
	// as Create I/O SQ/CQ with a queue's base address.
	PRP1, PRP2 uint64
	// Ext is format-specific: bytes a Format with larger entries than
	// NVMe's copies into the rest of the entry (the NVMe format ignores
	// it). The engine only carries it.
	Ext []byte
	// Tag is the caller's: the engine hands it back in callbacks untouched.
	Tag uint64
}

// ReadCommand reads nlb logical blocks (1 to 65536) starting at slba of
// namespace nsid into buf, which must hold exactly nlb blocks.
func ReadCommand(nsid uint32, slba uint64, nlb uint32, buf Buffer) Command {
	return Command{Opcode: CmdRead, NSID: nsid, CDW10: uint32(slba), CDW11: uint32(slba >> 32), CDW12: (nlb - 1) & 0xffff, Data: buf}
}

// WriteCommand writes nlb logical blocks (1 to 65536) starting at slba of
// namespace nsid from buf, which must hold exactly nlb blocks.
func WriteCommand(nsid uint32, slba uint64, nlb uint32, buf Buffer) Command {
	return Command{Opcode: CmdWrite, NSID: nsid, CDW10: uint32(slba), CDW11: uint32(slba >> 32), CDW12: (nlb - 1) & 0xffff, Data: buf}
}

// FlushCommand commits namespace nsid's volatile write cache to media.
func FlushCommand(nsid uint32) Command {
	return Command{Opcode: CmdFlush, NSID: nsid}
}

// IdentifyCommand returns Identify data structure cns for nsid into buf
// (4096 bytes).
func IdentifyCommand(cns uint8, nsid uint32, buf Buffer) Command {
	return Command{Opcode: AdminIdentify, NSID: nsid, CDW10: uint32(cns), Data: buf}
}

// Direction is which way a command's data moves.
type Direction uint8

const (
	DirNone          Direction = 0 // no data
	DirToDevice      Direction = 1 // host to controller (a write)
	DirFromDevice    Direction = 2 // controller to host (a read)
	DirBidirectional Direction = 3
)

func (d Direction) String() string {
	switch d {
	case DirNone:
		return "none"
	case DirToDevice:
		return "to device"
	case DirFromDevice:
		return "from device"
	default:
		return "bidirectional"
	}
}

// OpcodeInfo describes an opcode.
type OpcodeInfo struct {
	Name string
	Dir  Direction
	// LBAData says the command moves NLB logical blocks of data (CDW12
	// bits 15:0, 0-based, as Read and Write) starting at the LBA in
	// CDW10-11: the engine then checks the data buffer's length against
	// the namespace's LBA size, and splits a command larger than the
	// transfer limit into several over consecutive LBA ranges (see
	// QueuePair.Submit).
	LBAData bool
}

// Registry describes the admin and I/O opcodes a controller knows: their
// names (for errors and tools) and data direction (checked on submission).
// Vendor and computational opcodes are registered the same way as the
// standard ones. Lookups are array indexing, with no map and no lock.
//
// A Registry is read concurrently by queue pairs; register opcodes before
// handing it to a controller.
type Registry struct {
	admin [256]OpcodeInfo
	io    [256]OpcodeInfo
}

// NewRegistry returns a registry with the standard admin and NVM command
// set opcodes. Unnamed opcodes take the direction their two low bits give
// by the NVMe convention.
func NewRegistry() *Registry {
	r := new(Registry)
	for i := range 256 {
		r.admin[i] = OpcodeInfo{Dir: Direction(i & 3)}
		r.io[i] = OpcodeInfo{Dir: Direction(i & 3)}
	}
	for _, o := range []struct {
		op   uint8
		name string
	}{
		{AdminDeleteSQ, "delete I/O SQ"}, {AdminCreateSQ, "create I/O SQ"},
		{AdminGetLogPage, "get log page"}, {AdminDeleteCQ, "delete I/O CQ"},
		{AdminCreateCQ, "create I/O CQ"}, {AdminIdentify, "identify"},
		{AdminAbort, "abort"}, {AdminSetFeatures, "set features"},
		{AdminGetFeatures, "get features"}, {AdminAsyncEvent, "asynchronous event request"},
		{AdminDBBufConfig, "doorbell buffer config"},
	} {
		r.admin[o.op].Name = o.name
	}
	for _, o := range []struct {
		op   uint8
		name string
	}{
		{CmdFlush, "flush"}, {CmdWrite, "write"}, {CmdRead, "read"},
		{CmdWriteUncor, "write uncorrectable"}, {CmdCompare, "compare"},
		{CmdWriteZeroes, "write zeroes"}, {CmdDatasetMgmt, "dataset management"},
	} {
		r.io[o.op].Name = o.name
	}
	for _, op := range []uint8{CmdRead, CmdWrite, CmdCompare} {
		r.io[op].LBAData = true
	}
	// Create SQ/CQ and Doorbell Buffer Config carry a queue or buffer
	// address in PRP1 that the engine treats as data.
	return r
}

// RegisterIO describes a vendor-specific I/O opcode (0x80-0xff).
func (r *Registry) RegisterIO(op uint8, info OpcodeInfo) error {
	if op < 0x80 {
		return fmt.Errorf("registering I/O opcode 0x%02x: not in the vendor-specific range 0x80-0xff", op)
	}
	r.io[op] = info
	return nil
}

// RegisterAdmin describes a vendor-specific admin opcode (0xc0-0xff).
func (r *Registry) RegisterAdmin(op uint8, info OpcodeInfo) error {
	if op < 0xc0 {
		return fmt.Errorf("registering admin opcode 0x%02x: not in the vendor-specific range 0xc0-0xff", op)
	}
	r.admin[op] = info
	return nil
}

// IO returns what the registry knows of I/O opcode op.
func (r *Registry) IO(op uint8) OpcodeInfo { return r.io[op] }

// Admin returns what the registry knows of admin opcode op.
func (r *Registry) Admin(op uint8) OpcodeInfo { return r.admin[op] }

// WriteZeroesCommand sets nlb logical blocks (1 to 65536) from slba of
// namespace nsid to zero, with no data transfer.
func WriteZeroesCommand(nsid uint32, slba uint64, nlb uint32) Command {
	return Command{Opcode: CmdWriteZeroes, NSID: nsid, CDW10: uint32(slba), CDW11: uint32(slba >> 32), CDW12: (nlb - 1) & 0xffff}
}

// CompareCommand compares nlb logical blocks (1 to 65536) from slba of
// namespace nsid with buf; a mismatch completes with ErrCompareFailure.
func CompareCommand(nsid uint32, slba uint64, nlb uint32, buf Buffer) Command {
	return Command{Opcode: CmdCompare, NSID: nsid, CDW10: uint32(slba), CDW11: uint32(slba >> 32), CDW12: (nlb - 1) & 0xffff, Data: buf}
}

// DSMRangeSize is the size of one Dataset Management range.
const DSMRangeSize = 16

// PutDSMRange writes range i of a Dataset Management range list into b:
// nlb blocks from slba, with context attributes attr.
func PutDSMRange(b []byte, i int, attr, nlb uint32, slba uint64) {
	r := b[i*DSMRangeSize : (i+1)*DSMRangeSize]
	binary.LittleEndian.PutUint32(r[0:], attr)
	binary.LittleEndian.PutUint32(r[4:], nlb)
	binary.LittleEndian.PutUint64(r[8:], slba)
}

// DSM attributes (CDW11).
const (
	NVME_DSMGMT_IDR = 1 << 0 // integral dataset for read
	NVME_DSMGMT_IDW = 1 << 1 // integral dataset for write
	NVME_DSMGMT_AD  = 1 << 2 // deallocate
)

// DeallocateCommand deallocates (trims) the n ranges (1 to 256) written
// into buf with PutDSMRange.
func DeallocateCommand(nsid uint32, n int, buf Buffer) Command {
	return Command{Opcode: CmdDatasetMgmt, NSID: nsid, CDW10: uint32(n-1) & 0xff, CDW11: NVME_DSMGMT_AD, Data: buf}
}

// Log page and feature identifiers, and the broadcast NSID.
const (
	NVME_LOG_ERROR        = 0x01
	NVME_LOG_SMART        = 0x02
	NVME_LOG_FW_SLOT      = 0x03
	NVME_NSID_ALL         = 0xffffffff
	NVME_FEAT_VOLATILE_WC = 0x06
	NVME_FEAT_NUM_QUEUES  = 0x07
)

// GetLogPageCommand reads len(buf.Bytes) bytes (a multiple of 4) of log
// page lid for nsid (NVME_NSID_ALL for the controller) into buf.
func GetLogPageCommand(lid uint8, nsid uint32, buf Buffer) Command {
	numd := uint32(buf.Len()/4) - 1
	return Command{Opcode: AdminGetLogPage, NSID: nsid, CDW10: uint32(lid) | (numd&0xffff)<<16, CDW11: numd >> 16, Data: buf}
}

// GetFeaturesCommand reads feature fid (current value); the value comes
// back in completion DW0.
func GetFeaturesCommand(fid uint8) Command {
	return Command{Opcode: AdminGetFeatures, CDW10: uint32(fid)}
}

// SetFeaturesCommand sets feature fid to the value in CDW11.
func SetFeaturesCommand(fid uint8, cdw11 uint32) Command {
	return Command{Opcode: AdminSetFeatures, CDW10: uint32(fid), CDW11: cdw11}
}

// AbortCommand asks the controller to abort command cid on SQ sqid.
// Completion DW0 bit 0 is 0 if the command was aborted, 1 if not.
func AbortCommand(sqid, cid uint16) Command {
	return Command{Opcode: AdminAbort, CDW10: uint32(sqid) | uint32(cid)<<16}
}
