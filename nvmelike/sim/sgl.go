package sim

import (
	"encoding/binary"

	"github.com/umdkit/umd/nvmelike"
)

// The controller's SGL walker. It follows NVMe's rules as QEMU's nvme
// device applies them: the data pointer holds a Data Block, a Segment or a
// Last Segment descriptor; a segment is a list of 16-byte descriptors, of
// which only the last may be a (Last) Segment descriptor pointing to the
// next list; a Last Segment's list holds Data Blocks and Bit Buckets only;
// the descriptors must describe exactly the command's data length. Bit
// Buckets (when Config.SGLS offers them) discard read data, and are
// ignored for data the host sends. It walks descriptor by descriptor
// through Memory.Translate, allocating nothing.

// More status fields, for SGLs.
var (
	statusInvalidSGLSegment = nvmelike.StatusField(nvmelike.SCTGeneric, 0x0d, true)
	statusInvalidSGLCount   = nvmelike.StatusField(nvmelike.SCTGeneric, 0x0e, true)
	statusDataSGLLength     = nvmelike.StatusField(nvmelike.SCTGeneric, 0x0f, true)
	statusSGLDescriptorType = nvmelike.StatusField(nvmelike.SCTGeneric, 0x11, true)
)

// maxSGLDescriptors bounds the descriptors the walker reads for one
// command: a segment pointing to itself must end in an error, soon, not
// hold the controller.
const maxSGLDescriptors = 1 << 16

// sglDescriptor is a decoded SGL descriptor.
type sglDescriptor struct {
	addr    uint64
	length  uint32
	typ     uint8 // SGL identifier bits 7:4
	subtype uint8 // bits 3:0
}

func decodeSGL(b []byte) sglDescriptor {
	return sglDescriptor{
		addr:    binary.LittleEndian.Uint64(b[0:8]),
		length:  binary.LittleEndian.Uint32(b[8:12]),
		typ:     b[15] >> 4,
		subtype: b[15] & 0xf,
	}
}

// transferData moves data between the namespace slice data and the host
// memory e's data pointer describes (PRPs or an SGL, as PSDT says), in the
// direction toHost says. It returns an NVMe status field, 0 for success.
func (c *Controller) transferData(e nvmelike.SQE, data []byte, toHost bool) uint16 {
	if e.Flags()&nvmelike.FlagsPSDTMask == nvmelike.FlagsPSDTPRP {
		prp1, prp2 := e.PRP()
		return c.transfer(prp1, prp2, data, toHost)
	}
	return c.transferSGLData(e, data, toHost)
}

// transferSGLData is transferData for a data pointer that is not PRPs.
func (c *Controller) transferSGLData(e nvmelike.SQE, data []byte, toHost bool) uint16 {
	psdt := e.Flags() & nvmelike.FlagsPSDTMask
	if c.cfg.SGLS&nvmelike.NVME_CTRL_SGLS_MASK == 0 || psdt == nvmelike.FlagsPSDTMask {
		return statusInvalidField // no SGLs, or PSDT 11b (reserved)
	}
	if len(data) == 0 {
		return 0
	}
	if c.faults.sgl > 0 {
		c.faults.sgl--
		return c.faults.sglStatus
	}
	return c.transferSGL(decodeSGL(e[24:40]), data, toHost)
}

// transferSGL walks the SGL whose first descriptor is d.
func (c *Controller) transferSGL(d sglDescriptor, data []byte, toHost bool) uint16 {
	w := sglWalk{c: c, data: data, toHost: toHost}
	switch d.typ {
	case nvmelike.SGLTypeDataBlock:
		if st := w.data1(d); st != 0 {
			return st
		}
		return w.finish()
	case nvmelike.SGLTypeSegment, nvmelike.SGLTypeLastSegment:
	default:
		return statusSGLDescriptorType
	}
	walked := 0
	for {
		if d.subtype != 0 {
			return statusSGLDescriptorType
		}
		if d.length == 0 || d.length%nvmelike.SGLDescriptorSize != 0 {
			return statusInvalidSGLSegment
		}
		n := int(d.length / nvmelike.SGLDescriptorSize)
		if walked += n; walked > maxSGLDescriptors {
			return statusInvalidSGLCount
		}
		var next sglDescriptor
		chained := false
		for i := 0; i < n; i++ {
			raw, ok := c.mem.Translate(d.addr+uint64(i*nvmelike.SGLDescriptorSize), nvmelike.SGLDescriptorSize)
			if !ok {
				return statusDataTransfer
			}
			e := decodeSGL(raw)
			switch e.typ {
			case nvmelike.SGLTypeDataBlock, nvmelike.SGLTypeBitBucket:
				if st := w.data1(e); st != 0 {
					return st
				}
			case nvmelike.SGLTypeSegment, nvmelike.SGLTypeLastSegment:
				if i != n-1 {
					return statusInvalidSGLCount // a segment descriptor before the list's end
				}
				if d.typ == nvmelike.SGLTypeLastSegment {
					return statusInvalidSGLSegment // a Last Segment does not chain
				}
				next, chained = e, true
			default:
				return statusSGLDescriptorType
			}
		}
		if !chained {
			return w.finish() // the list ended with data: the end of the SGL
		}
		d = next
	}
}

// sglWalk is the state of one SGL transfer.
type sglWalk struct {
	c      *Controller
	data   []byte // what is left to move
	toHost bool
}

// data1 moves the data of one Data Block or Bit Bucket descriptor.
func (w *sglWalk) data1(d sglDescriptor) uint16 {
	if d.subtype != 0 {
		return statusSGLDescriptorType // only memory addresses, no offsets
	}
	if d.length == 0 {
		return 0
	}
	if d.typ == nvmelike.SGLTypeBitBucket {
		if w.c.cfg.SGLS&nvmelike.NVME_CTRL_SGLS_BIT_BUCKET == 0 {
			return statusSGLDescriptorType
		}
		if !w.toHost {
			return 0 // nothing to discard in data the host sends
		}
	}
	if uint64(d.length) > uint64(len(w.data)) {
		return statusDataSGLLength // more than the command moves
	}
	if d.typ == nvmelike.SGLTypeBitBucket {
		w.data = w.data[d.length:] // read data the host does not want
		return 0
	}
	if w.c.cfg.SGLS&nvmelike.NVME_CTRL_SGLS_MASK == nvmelike.NVME_CTRL_SGLS_DWORD_ALIGNED && (d.addr|uint64(d.length))&3 != 0 {
		return statusDataSGLLength
	}
	host, ok := w.c.mem.Translate(d.addr, int(d.length))
	if !ok {
		return statusDataTransfer
	}
	if w.toHost {
		copy(host, w.data)
	} else {
		copy(w.data, host)
	}
	w.data = w.data[d.length:]
	return 0
}

// finish checks that the SGL described all the data.
func (w *sglWalk) finish() uint16 {
	if len(w.data) != 0 {
		return statusDataSGLLength
	}
	return 0
}
