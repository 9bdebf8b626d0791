package nvmelike

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// SGLs (scatter gather lists) are the other way, besides PRPs, to describe
// a command's data to an NVMe controller. Where a PRP entry names a memory
// page, an SGL descriptor names a run of bytes of any length at any
// address, so a contiguous buffer takes one descriptor whatever its size
// and alignment, and several buffers take one descriptor each.
//
// A descriptor is 16 bytes: the address (bytes 0-7), the length (8-11)
// and, in byte 15, the SGL identifier: the descriptor type in bits 7:4 and
// its subtype in bits 3:0 (0: the address is a memory address). The engine
// writes three types:
//
//   - Data Block: Length bytes of data at Address.
//   - Last Segment: Address points to a list of Length/16 descriptors, all
//     Data Blocks (or Bit Buckets): the end of the SGL.
//   - Segment: the same, except that the list's last descriptor is a
//     Segment or Last Segment pointing to the next list.
//
// Bit Bucket descriptors (Length bytes of read data the host does not
// want) are understood by nvmelike/sim; the engine does not write them.
//
// The first descriptor sits in the command's data pointer (CDW6-9), and
// CDW0's PSDT field (bits 15:14) says it is an SGL. A single Buffer is one
// Data Block in the entry itself: no list memory at all. Several Buffers
// (Command.Buffers) are Data Blocks in the tracker's preallocated list
// pages, 256 to a 4 KiB page, reached through a Last Segment descriptor in
// the entry; when they do not fit in one page, each full page ends with a
// Segment (or Last Segment) descriptor pointing to the next.
//
// The controller says what it supports in Identify Controller SGLS: bits
// 1:0 01b for SGLs with byte-aligned Data Blocks, 10b for SGLs whose Data
// Blocks must be dword aligned in address and length. SGLs are never used
// for admin commands: NVMe over PCIe forbids them there (QEMU answers
// Invalid Field).

// DataPointer chooses how a queue pair describes command data to the
// controller (Options.DataPointer, QueuePair.SetDataPointer).
type DataPointer uint8

const (
	// DataPointerPRP uses PRPs for every command (the default). Data must
	// start dword aligned, and several Buffers must meet at page
	// boundaries.
	DataPointerPRP DataPointer = iota
	// DataPointerSGL uses an SGL for every I/O command with data. The
	// controller must support SGLs (Identify Controller SGLS).
	DataPointerSGL
	// DataPointerAuto uses an SGL where PRPs would need a PRP list or
	// cannot describe the data (an unaligned start, Buffers that do not
	// meet at page boundaries), and PRPs otherwise. On a controller
	// without SGLs it is DataPointerPRP.
	DataPointerAuto
)

func (d DataPointer) String() string {
	switch d {
	case DataPointerPRP:
		return "PRP"
	case DataPointerSGL:
		return "SGL"
	case DataPointerAuto:
		return "auto"
	}
	return fmt.Sprintf("DataPointer(%d)", uint8(d))
}

// SGL descriptor types (the SGL identifier's bits 7:4).
const (
	SGLTypeDataBlock   uint8 = 0x0
	SGLTypeBitBucket   uint8 = 0x1
	SGLTypeSegment     uint8 = 0x2
	SGLTypeLastSegment uint8 = 0x3
)

// SGLDescriptorSize is the size of one SGL descriptor.
const SGLDescriptorSize = 16

// PSDT values in Command.Flags (CDW0 bits 15:14 are the flags byte's bits
// 7:6). The engine sets PSDT itself for commands with data; for commands
// without (whose PRP1 and PRP2 it writes as they are) Flags is the caller's.
const (
	FlagsPSDTMask uint8 = 0xc0
	FlagsPSDTPRP  uint8 = 0x00 // PRPs
	FlagsPSDTSGL  uint8 = 0x40 // an SGL; MPTR is a contiguous metadata buffer
)

// SGLDescriptor returns the two little-endian quadwords of an SGL
// descriptor of type typ (subtype 0: a memory address), as they are
// written into a data pointer (Command.PRP1 and PRP2, SQE.SetPRP) or a
// segment (PutSGLDescriptor).
func SGLDescriptor(typ uint8, addr uint64, length uint32) (lo, hi uint64) {
	return addr, uint64(length) | uint64(typ<<4)<<56
}

// PutSGLDescriptor writes an SGL descriptor into b[0:16].
func PutSGLDescriptor(b []byte, typ uint8, addr uint64, length uint32) {
	lo, hi := SGLDescriptor(typ, addr, length)
	binary.LittleEndian.PutUint64(b[0:8], lo)
	binary.LittleEndian.PutUint64(b[8:16], hi)
}

// Identify Controller SGLS bits (the spec's names; nvme.h has the first
// two as NVME_CTRL_SGLS_BYTE_ALIGNED and NVME_CTRL_SGLS_DWORD_ALIGNED).
const (
	NVME_CTRL_SGLS_MASK          = 0x3     // bits 1:0: SGL support
	NVME_CTRL_SGLS_BYTE_ALIGNED  = 0x1     // SGLs, Data Blocks byte aligned
	NVME_CTRL_SGLS_DWORD_ALIGNED = 0x2     // SGLs, Data Blocks dword aligned and sized
	NVME_CTRL_SGLS_BIT_BUCKET    = 1 << 16 // Bit Bucket descriptors
	NVME_CTRL_SGLS_EXCESS_LENGTH = 1 << 18 // SGLs may describe more data than the command moves
)

// SGLSupported reports whether the controller supports SGLs for I/O
// commands (SGLS bits 1:0), and whether their Data Blocks must then be
// dword aligned in address and length.
func (id *IdentifyController) SGLSupported() (ok, dwordAligned bool) {
	switch id.SGLS & NVME_CTRL_SGLS_MASK {
	case NVME_CTRL_SGLS_BYTE_ALIGNED:
		return true, false
	case NVME_CTRL_SGLS_DWORD_ALIGNED:
		return true, true
	}
	return false, false
}

// Errors of the data pointer.
var (
	// ErrSGLNotSupported: SGLs were asked for on a controller whose
	// Identify Controller SGLS says it has none, or on the admin queue.
	ErrSGLNotSupported = errors.New("SGLs not supported")
	// ErrPRPBoundary: a command's Buffers do not meet at memory page
	// boundaries, so PRPs cannot describe them (use SGLs).
	ErrPRPBoundary = errors.New("buffers do not meet at page boundaries, as PRPs require")
	// ErrBadBuffers: Command.Buffers holds an empty buffer, one larger
	// than an SGL descriptor can describe, or is used together with Data.
	ErrBadBuffers = errors.New("bad data buffer list")
)

// SGL-related NVMe statuses, for errors.Is.
var (
	ErrInvalidSGLSegment = &StatusError{SCT: SCTGeneric, SC: 0x0d} // invalid SGL segment descriptor
	ErrInvalidSGLCount   = &StatusError{SCT: SCTGeneric, SC: 0x0e} // invalid number of SGL descriptors
	ErrDataSGLLength     = &StatusError{SCT: SCTGeneric, SC: 0x0f} // data SGL length invalid
	ErrSGLDescriptorType = &StatusError{SCT: SCTGeneric, SC: 0x11} // SGL descriptor type invalid
)

var errUnknownDataPointer = errors.New("unknown data pointer mode")

// setSGLSupport records the controller's SGLS for an I/O queue pair and
// selects its data pointer mode.
func (q *QueuePair) setSGLSupport(sgls uint32, d DataPointer) error {
	q.sgls = sgls
	return q.SetDataPointer(d)
}

// SetDataPointer chooses how the queue pair describes the data of the
// commands submitted from now on. DataPointerSGL fails with
// ErrSGLNotSupported when the controller has no SGLs, and on the admin
// queue; DataPointerAuto falls back to PRPs there. Commands already
// submitted keep theirs. Like every QueuePair method it belongs to the
// queue pair's goroutine.
func (q *QueuePair) SetDataPointer(d DataPointer) error {
	id := IdentifyController{SGLS: q.sgls}
	ok, dword := id.SGLSupported()
	if q.id == 0 {
		ok = false // SGLs shall not be used for admin commands over PCIe
	}
	switch d {
	case DataPointerPRP:
	case DataPointerSGL:
		if !ok {
			return fmt.Errorf("queue %d: data pointer SGL (controller SGLS 0x%08x): %w", q.id, q.sgls, ErrSGLNotSupported)
		}
	case DataPointerAuto:
		if !ok {
			d = DataPointerPRP
		}
	default:
		return fmt.Errorf("queue %d: data pointer %v: %w", q.id, d, errUnknownDataPointer)
	}
	q.dptr = d
	q.sglDword = dword
	q.updateIOPath()
	return nil
}

// DataPointer returns the queue pair's data pointer mode in effect:
// DataPointerAuto on a controller without SGLs reads DataPointerPRP.
func (q *QueuePair) DataPointer() DataPointer { return q.dptr }

// DataLen returns the number of bytes of data the command moves: the
// length of Data, or the total of Buffers.
func (c *Command) DataLen() int {
	if len(c.Buffers) == 0 {
		return len(c.Data.Bytes)
	}
	n := 0
	for i := range c.Buffers {
		n += len(c.Buffers[i].Bytes)
	}
	return n
}

// prpError adds context to a buildPRP error.
func prpError(b Buffer, err error) error {
	return fmt.Errorf("building PRPs for %d bytes at IOVA 0x%x: %w", len(b.Bytes), b.IOVA, err)
}

// dataPointer builds the data pointer of cmd, which moves n > 0 bytes,
// using list (the tracker's list pages) for a PRP list or SGL segments. It
// returns the two quadwords of the data pointer and the flags byte with
// PSDT set. It does not allocate, except for an error. (submit calls
// buildPRP itself for the default case, PRPs for one buffer.)
func (q *QueuePair) dataPointer(cmd *Command, n int, list Buffer) (dp1, dp2 uint64, flags uint8, err error) {
	flags = cmd.Flags &^ FlagsPSDTMask
	if len(cmd.Buffers) == 0 {
		dp1, dp2, psdt, err := q.bufferPointer(cmd.Data, list)
		return dp1, dp2, flags | psdt, err
	}
	if len(cmd.Data.Bytes) != 0 {
		return 0, 0, 0, fmt.Errorf("a command with both Data and %d Buffers: %w", len(cmd.Buffers), ErrBadBuffers)
	}
	if q.dptr == DataPointerPRP || (q.dptr == DataPointerAuto && prpVectorOK(cmd.Buffers, q.pageSize)) {
		if dp1, dp2, err = buildPRPVector(cmd.Buffers, q.pageSize, list); err != nil {
			return 0, 0, 0, fmt.Errorf("building PRPs for %d bytes in %d buffers: %w", n, len(cmd.Buffers), err)
		}
		return dp1, dp2, flags, nil
	}
	if dp1, dp2, err = buildSGL(cmd.Buffers, q.pageSize, list, q.sglDword); err != nil {
		return 0, 0, 0, fmt.Errorf("building an SGL for %d bytes in %d buffers: %w", n, len(cmd.Buffers), err)
	}
	return dp1, dp2, flags | FlagsPSDTSGL, nil
}

// bufferPointer builds the data pointer of one non-empty contiguous
// buffer: PRPs, or one SGL Data Block in the entry itself.
func (q *QueuePair) bufferPointer(b Buffer, list Buffer) (dp1, dp2 uint64, psdt uint8, err error) {
	if q.dptr == DataPointerPRP || (q.dptr == DataPointerAuto && !q.sglBetter(b)) {
		if dp1, dp2, err = buildPRP(b, q.pageSize, list); err != nil {
			return 0, 0, 0, prpError(b, err)
		}
		return dp1, dp2, FlagsPSDTPRP, nil
	}
	if err = checkDataBlock(b, q.sglDword); err != nil {
		return 0, 0, 0, fmt.Errorf("building an SGL for %d bytes at IOVA 0x%x: %w", len(b.Bytes), b.IOVA, err)
	}
	dp1, dp2 = SGLDescriptor(SGLTypeDataBlock, b.IOVA, uint32(len(b.Bytes)))
	return dp1, dp2, FlagsPSDTSGL, nil
}

// sglBetter reports whether, in DataPointerAuto mode, an SGL describes b
// better than PRPs: PRPs cannot (b does not start dword aligned) or would
// need a list page (b reaches past the page after its first).
func (q *QueuePair) sglBetter(b Buffer) bool {
	if b.IOVA&3 != 0 {
		return true
	}
	ps := uint64(q.pageSize)
	return uint64(len(b.Bytes)) > ps-b.IOVA&(ps-1)+ps
}

// unalignedOK reports whether a buffer that does not start dword aligned
// can be described: by an SGL without the dword requirement.
func (q *QueuePair) unalignedOK() bool {
	return q.dptr != DataPointerPRP && !q.sglDword
}

// checkDataBlock checks that b can be an SGL Data Block.
func checkDataBlock(b Buffer, dword bool) error {
	n := uint64(len(b.Bytes))
	switch {
	case n == 0 || n > 0xffffffff:
		return fmt.Errorf("a %d-byte buffer: %w", n, ErrBadBuffers)
	case dword && (b.IOVA|n)&3 != 0:
		return ErrUnalignedBuffer
	}
	return nil
}

// sglPages returns how many list pages an SGL of nd Data Blocks takes,
// with per descriptors to a page: every page but the last holds per-1
// Data Blocks and the descriptor of the next page.
func sglPages(nd, per int) int {
	if nd <= per {
		return 1
	}
	return 1 + (nd-per+per-2)/(per-1)
}

// buildSGL writes the SGL of bufs (at least one) into list and returns the
// descriptor for the command's data pointer: a Data Block for one buffer,
// else a Last Segment (or Segment, when the descriptors need more than one
// list page) pointing to list. It does not allocate.
func buildSGL(bufs []Buffer, pageSize int, list Buffer, dword bool) (dp1, dp2 uint64, err error) {
	for i := range bufs {
		if err := checkDataBlock(bufs[i], dword); err != nil {
			return 0, 0, fmt.Errorf("buffer %d: %w", i, err)
		}
	}
	nd := len(bufs)
	if nd == 1 {
		dp1, dp2 = SGLDescriptor(SGLTypeDataBlock, bufs[0].IOVA, uint32(len(bufs[0].Bytes)))
		return dp1, dp2, nil
	}
	per := pageSize / SGLDescriptorSize
	pages := sglPages(nd, per)
	if capacity := len(list.Bytes) / pageSize; pages > capacity {
		return 0, 0, fmt.Errorf("%d descriptors need %d list pages, a tracker has %d: %w", nd, pages, capacity, ErrTransferTooLarge)
	}
	// inPage returns the number of descriptors in list page p.
	inPage := func(p int) int {
		if p < pages-1 {
			return per
		}
		return nd - (pages-1)*(per-1)
	}
	segType := func(p int) uint8 { // the type of the descriptor pointing to page p
		if p == pages-1 {
			return SGLTypeLastSegment
		}
		return SGLTypeSegment
	}
	i := 0
	for p := 0; p < pages; p++ {
		page := list.Bytes[p*pageSize : (p+1)*pageSize]
		data := inPage(p)
		if p < pages-1 {
			data-- // the last slot points to the next page
			PutSGLDescriptor(page[data*SGLDescriptorSize:], segType(p+1), list.IOVA+uint64((p+1)*pageSize), uint32(inPage(p+1)*SGLDescriptorSize))
		}
		for k := 0; k < data; k++ {
			b := &bufs[i]
			PutSGLDescriptor(page[k*SGLDescriptorSize:], SGLTypeDataBlock, b.IOVA, uint32(len(b.Bytes)))
			i++
		}
	}
	dp1, dp2 = SGLDescriptor(segType(0), list.IOVA, uint32(inPage(0)*SGLDescriptorSize))
	return dp1, dp2, nil
}
