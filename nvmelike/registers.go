package nvmelike

import "fmt"

// Registers is access to a controller's register file: BAR0 of an NVMe
// controller, addressed by byte offset from its start.
//
// Go has no volatile. An implementation over mapped device memory must make
// every call a real load or store of exactly the width asked for, never
// cached, merged, split or elided: use small non-inlined functions or one
// assembly MOV per width, not plain slice or pointer accesses that the
// compiler may combine, and not sync/atomic stores (a locked XCHG on amd64,
// which is a bus lock on hardware and a stop-the-world under TCG).
//
// Ordering: the engine writes a submission queue entry to DMA memory and
// then calls Write32 for the doorbell. Write32 must make the earlier stores
// to ordinary memory visible to the device before the doorbell store
// reaches it. On amd64 a plain MOV to an uncached mapping already does that;
// on weaker architectures the implementation issues the store barrier
// (arm64: DMB OSHST) before the store.
//
// Write64 and Read64 are used only for CAP, ASQ and ACQ; an implementation
// may split them into two 32-bit accesses, low dword first, which every
// controller accepts.
//
// A device that has gone away (surprise removal) reads as all ones; the
// engine recognises that and returns ErrDeviceGone.
//
// If the implementation has a Len() int method (internal/mmio.Region does),
// the engine uses no doorbell beyond it: I/O queues are capped to the ones
// whose doorbells fit.
//
// Registers need not be safe for concurrent use by the engine's callers:
// the engine reads and writes controller registers (CC, CSTS, AQA, …) only
// under the controller's lock, while each queue pair writes only its own
// doorbells. An implementation must tolerate concurrent calls on different
// offsets.
type Registers interface {
	Read32(off uint64) uint32
	Write32(off uint64, v uint32)
	Read64(off uint64) uint64
	Write64(off uint64, v uint64)
}

// Controller register offsets in BAR0, with the Linux kernel's spellings
// (include/linux/nvme.h).
const (
	NVME_REG_CAP   = 0x0000 // Controller Capabilities, 64 bits
	NVME_REG_VS    = 0x0008 // Version
	NVME_REG_INTMS = 0x000c // Interrupt Mask Set
	NVME_REG_INTMC = 0x0010 // Interrupt Mask Clear
	NVME_REG_CC    = 0x0014 // Controller Configuration
	NVME_REG_CSTS  = 0x001c // Controller Status
	NVME_REG_NSSR  = 0x0020 // NVM Subsystem Reset
	NVME_REG_AQA   = 0x0024 // Admin Queue Attributes
	NVME_REG_ASQ   = 0x0028 // Admin SQ Base Address, 64 bits
	NVME_REG_ACQ   = 0x0030 // Admin CQ Base Address, 64 bits
	NVME_REG_DBS   = 0x1000 // first doorbell: SQ 0 tail
)

// CC (Controller Configuration) fields.
const (
	NVME_CC_ENABLE       = 1 << 0
	NVME_CC_CSS_SHIFT    = 4
	NVME_CC_CSS_NVM      = 0 << NVME_CC_CSS_SHIFT
	NVME_CC_MPS_SHIFT    = 7
	NVME_CC_AMS_SHIFT    = 11
	NVME_CC_SHN_SHIFT    = 14
	NVME_CC_SHN_NONE     = 0 << NVME_CC_SHN_SHIFT
	NVME_CC_SHN_NORMAL   = 1 << NVME_CC_SHN_SHIFT
	NVME_CC_SHN_ABRUPT   = 2 << NVME_CC_SHN_SHIFT
	NVME_CC_SHN_MASK     = 3 << NVME_CC_SHN_SHIFT
	NVME_CC_IOSQES_SHIFT = 16
	NVME_CC_IOCQES_SHIFT = 20
	NVME_CC_IOSQES       = 6 << NVME_CC_IOSQES_SHIFT // 64-byte SQ entries
	NVME_CC_IOCQES       = 4 << NVME_CC_IOCQES_SHIFT // 16-byte CQ entries
)

// CSTS (Controller Status) fields.
const (
	NVME_CSTS_RDY         = 1 << 0
	NVME_CSTS_CFS         = 1 << 1
	NVME_CSTS_SHST_NORMAL = 0 << 2
	NVME_CSTS_SHST_OCCUR  = 1 << 2
	NVME_CSTS_SHST_CMPLT  = 2 << 2
	NVME_CSTS_SHST_MASK   = 3 << 2
	NVME_CSTS_NSSRO       = 1 << 4
	NVME_CSTS_PP          = 1 << 5
)

// CAP is the value of the Controller Capabilities register.
type CAP uint64

// MQES returns the largest queue size the controller supports, in entries
// (the register holds it 0-based).
func (c CAP) MQES() int { return int(c&0xffff) + 1 }

// CQR reports whether queues must be physically contiguous.
func (c CAP) CQR() bool { return c>>16&1 == 1 }

// TO returns the worst-case time to wait for CSTS.RDY to change, in 500 ms
// units.
func (c CAP) TO() uint8 { return uint8(c >> 24) }

// DSTRD returns the doorbell stride exponent: doorbells are 4<<DSTRD bytes
// apart.
func (c CAP) DSTRD() uint8 { return uint8(c>>32) & 0xf }

// NSSRS reports whether NVM subsystem reset is supported.
func (c CAP) NSSRS() bool { return c>>36&1 == 1 }

// CSS returns the Command Sets Supported bits; bit 0 is the NVM command set.
func (c CAP) CSS() uint8 { return uint8(c >> 37) }

// MPSMIN returns the smallest memory page size the controller supports, in
// bytes.
func (c CAP) MPSMIN() int { return 1 << (12 + (c>>48)&0xf) }

// MPSMAX returns the largest memory page size the controller supports, in
// bytes.
func (c CAP) MPSMAX() int { return 1 << (12 + (c>>52)&0xf) }

// Version is the value of the VS register.
type Version uint32

// Major returns the major version number.
func (v Version) Major() int { return int(v >> 16) }

// Minor returns the minor version number.
func (v Version) Minor() int { return int(v>>8) & 0xff }

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major(), v.Minor(), v&0xff)
}

// SQTailDoorbell returns the BAR0 offset of queue qid's SQ tail doorbell
// for doorbell stride exponent dstrd.
func SQTailDoorbell(qid uint16, dstrd uint8) uint64 {
	return NVME_REG_DBS + (2*uint64(qid))*(4<<dstrd)
}

// CQHeadDoorbell returns the BAR0 offset of queue qid's CQ head doorbell
// for doorbell stride exponent dstrd.
func CQHeadDoorbell(qid uint16, dstrd uint8) uint64 {
	return NVME_REG_DBS + (2*uint64(qid)+1)*(4<<dstrd)
}
