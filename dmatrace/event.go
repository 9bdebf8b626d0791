package dmatrace

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// Source is a bit set of where events come from.
type Source uint8

// Sources of events. SourceKmsg is not eBPF.
const (
	// SourceDMAR is a kprobe on the Intel VT-d fault interrupt handler
	// dmar_fault: at its entry it reads the IOMMU's fault recording
	// registers (source id, fault reason, address, read or write) before
	// the handler clears them.
	SourceDMAR Source = 1 << iota
	// SourceFaultTracepoint is the iommu:io_page_fault tracepoint (as a
	// raw tracepoint), where the AMD and Arm SMMU drivers report faults.
	// Intel VT-d does not report DMA-remapping faults there.
	SourceFaultTracepoint
	// SourceMapUnmap is the iommu:map and iommu:unmap tracepoints (as
	// raw tracepoints), filtered by Options.PID and Options.IOVA.
	SourceMapUnmap
	// SourceKmsg is NOT eBPF: a fallback that parses the DMAR fault lines
	// the kernel logs, read from /dev/kmsg. The kernel rate-limits those
	// lines, so it can miss faults under a storm.
	SourceKmsg
)

// DefaultSources are the sources Open attaches when Options.Sources is 0.
const DefaultSources = SourceDMAR | SourceFaultTracepoint | SourceMapUnmap

var sourceNames = []string{"kprobe dmar_fault", "tracepoint iommu:io_page_fault", "tracepoints iommu:map/unmap", "kmsg (not eBPF)"}

func (s Source) String() string {
	if s == 0 {
		return "no source"
	}
	var parts []string
	for i, name := range sourceNames {
		if s&(1<<i) != 0 {
			parts = append(parts, name)
		}
	}
	if rest := s &^ (1<<len(sourceNames) - 1); rest != 0 {
		parts = append(parts, fmt.Sprintf("source(%#x)", uint8(rest)))
	}
	return strings.Join(parts, ", ")
}

// Event is one of *Fault, *Map and *Unmap.
type Event interface {
	// When returns when the kernel saw the event.
	When() time.Time
	event()
}

// Fault is a DMA (or interrupt-remapping) fault the IOMMU reported.
type Fault struct {
	Source Source    // where it was seen
	Time   time.Time // when the kernel saw it (the fault interrupt, or the log line)
	// BDF is the requester, as domain:bus:device.function. VT-d reports
	// the PCI segment through the IOMMU that faulted; the kmsg fallback
	// has no segment and says 0000.
	BDF string
	// IOVA is the faulting address. VT-d records it page-aligned (4 KiB).
	// For an interrupt-remapping fault it is the interrupt-remapping table
	// index instead.
	IOVA  uint64
	Write bool // the device wrote (false: it read)
	// Reason is the VT-d fault reason (0x05: the PTE does not allow
	// writes; 0x06: nor reads); 0 from the io_page_fault tracepoint.
	Reason uint8
	// IRQRemap is true for an interrupt-remapping fault (VT-d reasons
	// 0x20-0x2f).
	IRQRemap bool
	PASID    uint32 // the PASID, when HasPASID
	HasPASID bool
	// Flags are the io_page_fault tracepoint's flags (IOMMU_FAULT_WRITE
	// is 0x1); 0 from the other sources.
	Flags uint32
}

// Map is an iommu:map event: size bytes of physical memory at Paddr were
// mapped at IOVA. One VFIO_IOMMU_MAP_DMA makes one event per physically
// contiguous chunk.
type Map struct {
	Time  time.Time
	PID   uint32 // the thread group that mapped
	IOVA  uint64
	Size  uint64
	Paddr uint64
}

// Unmap is an iommu:unmap event: Size bytes at IOVA were asked to be
// unmapped and Unmapped were.
type Unmap struct {
	Time     time.Time
	PID      uint32
	IOVA     uint64
	Size     uint64
	Unmapped uint64
}

func (f *Fault) When() time.Time { return f.Time }
func (m *Map) When() time.Time   { return m.Time }
func (u *Unmap) When() time.Time { return u.Time }
func (*Fault) event()            {}
func (*Map) event()              {}
func (*Unmap) event()            {}

// Direction returns "write" or "read".
func (f *Fault) Direction() string {
	if f.Write {
		return "write"
	}
	return "read"
}

func (f *Fault) String() string {
	if f.IRQRemap {
		return fmt.Sprintf("interrupt-remapping fault by %s at index 0x%x (reason 0x%02x %s) [%s]", f.BDF, f.IOVA, f.Reason, ReasonText(f.Reason), f.Source)
	}
	s := fmt.Sprintf("DMA %s fault by %s at IOVA 0x%x", f.Direction(), f.BDF, f.IOVA)
	if f.Reason != 0 {
		s += fmt.Sprintf(" (reason 0x%02x %s)", f.Reason, ReasonText(f.Reason))
	}
	if f.HasPASID {
		s += fmt.Sprintf(" PASID 0x%x", f.PASID)
	}
	return s + " [" + f.Source.String() + "]"
}

func (m *Map) String() string {
	return fmt.Sprintf("map IOVA 0x%x-0x%x (0x%x bytes) -> phys 0x%x by pid %d", m.IOVA, m.IOVA+m.Size-1, m.Size, m.Paddr, m.PID)
}

func (u *Unmap) String() string {
	return fmt.Sprintf("unmap IOVA 0x%x-0x%x (0x%x bytes, 0x%x unmapped) by pid %d", u.IOVA, u.IOVA+u.Size-1, u.Size, u.Unmapped, u.PID)
}

// reasons are the VT-d DMA-remapping fault reasons, in this package's own
// words after the VT-d specification's table of fault reasons.
var reasons = map[uint8]string{
	0x01: "root entry not present",
	0x02: "context entry not present",
	0x03: "context entry invalid",
	0x04: "address beyond the domain's address width",
	0x05: "page table entry does not allow writes",
	0x06: "page table entry does not allow reads",
	0x07: "page table pointer invalid",
	0x08: "root table address invalid",
	0x09: "context table pointer invalid",
	0x0a: "reserved bits set in the root entry",
	0x0b: "reserved bits set in the context entry",
	0x0c: "reserved bits set in a page table entry",
	0x0d: "translation type blocked by the context entry",
}

// ReasonText describes a VT-d fault reason.
func ReasonText(r uint8) string {
	if s, ok := reasons[r]; ok {
		return s
	}
	switch {
	case r >= 0x20 && r < 0x30:
		return "interrupt-remapping fault"
	case r >= 0x30:
		return "scalable-mode fault"
	}
	return "unknown reason"
}

// The record the BPF programs put in the ring buffer, little-endian:
//
//	off size
//	0   4    kind
//	4   4    aux: DMAR PCI segment | tracepoint flags | map/unmap tgid
//	8   8    kernel time, CLOCK_MONOTONIC ns (bpf_ktime_get_ns)
//	16  8    a: DMAR fault record bits 63:0 | IOVA
//	24  8    b: DMAR fault record bits 127:64 | paddr (map) | size (unmap)
//	32  8    c: DMAR record index | size (map) | unmapped size (unmap)
//	40  32   device name (io_page_fault), NUL-terminated
const (
	recordSize = 72

	kindDMAR   = 1
	kindIOPF   = 2
	kindMap    = 3
	kindUnmap  = 4
	offKind    = 0
	offAux     = 4
	offTime    = 8
	offA       = 16
	offB       = 24
	offC       = 32
	offDev     = 40
	devNameLen = 32
)

// clock turns the kernel's CLOCK_MONOTONIC nanoseconds into a time.Time
// that carries Go's monotonic reading, so that it subtracts correctly
// from the ledger's time.Now() stamps.
type clock struct {
	wall time.Time // time.Now() taken at...
	mono int64     // ...this CLOCK_MONOTONIC reading, ns
}

func (c clock) at(ns uint64) time.Time {
	if c.wall.IsZero() {
		return time.Unix(0, int64(ns))
	}
	return c.wall.Add(time.Duration(int64(ns) - c.mono))
}

// decode turns one ring-buffer record into an event.
func decode(raw []byte, c clock) (Event, error) {
	if len(raw) < recordSize {
		return nil, fmt.Errorf("decoding a %d-byte record (want %d): %w", len(raw), recordSize, ErrMalformed)
	}
	le := binary.LittleEndian
	kind := le.Uint32(raw[offKind:])
	aux := le.Uint32(raw[offAux:])
	t := c.at(le.Uint64(raw[offTime:]))
	a, b, cc := le.Uint64(raw[offA:]), le.Uint64(raw[offB:]), le.Uint64(raw[offC:])
	switch kind {
	case kindDMAR:
		f := decodeFaultRecord(a, b, uint16(aux))
		f.Time = t
		return f, nil
	case kindIOPF:
		dev := raw[offDev : offDev+devNameLen]
		if i := bytes.IndexByte(dev, 0); i >= 0 {
			dev = dev[:i]
		}
		const iommuFaultWrite = 0x1
		return &Fault{
			Source: SourceFaultTracepoint,
			Time:   t,
			BDF:    string(dev),
			IOVA:   a,
			Write:  aux&iommuFaultWrite != 0,
			Flags:  aux,
		}, nil
	case kindMap:
		return &Map{Time: t, PID: aux, IOVA: a, Paddr: b, Size: cc}, nil
	case kindUnmap:
		return &Unmap{Time: t, PID: aux, IOVA: a, Size: b, Unmapped: cc}, nil
	}
	return nil, fmt.Errorf("decoding a record of kind %d: %w", kind, ErrMalformed)
}

// decodeFaultRecord decodes a VT-d fault recording register (128 bits, lo
// then hi) of the IOMMU of PCI segment seg:
//
//	bits 63:12   FI   the faulting page address (or, 63:48, the interrupt index)
//	bits 79:64   SID  the requester's source id (bus << 8 | devfn)
//	bit  95      PP   a PASID is present
//	bits 103:96  FR   the fault reason
//	bits 123:104 PV   the PASID
//	bit  126     T    0 write, 1 read
//	bit  127     F    the record holds a fault
func decodeFaultRecord(lo, hi uint64, seg uint16) *Fault {
	sid := uint16(hi)
	reason := uint8(hi >> 32)
	f := &Fault{
		Source:   SourceDMAR,
		BDF:      fmt.Sprintf("%04x:%02x:%02x.%d", seg, sid>>8, sid>>3&0x1f, sid&7),
		Reason:   reason,
		Write:    hi>>62&1 == 0,
		IRQRemap: reason >= 0x20 && reason < 0x30,
	}
	if hi>>31&1 != 0 {
		f.HasPASID, f.PASID = true, uint32(hi>>40&0xfffff)
	}
	if f.IRQRemap {
		f.IOVA = lo >> 48
	} else {
		f.IOVA = lo &^ 0xfff
	}
	return f
}
