package dmatrace

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// record builds a ring-buffer record as the BPF programs do.
func record(kind, aux uint32, ns, a, b, c uint64, dev string) []byte {
	raw := make([]byte, recordSize)
	le := binary.LittleEndian
	le.PutUint32(raw[offKind:], kind)
	le.PutUint32(raw[offAux:], aux)
	le.PutUint64(raw[offTime:], ns)
	le.PutUint64(raw[offA:], a)
	le.PutUint64(raw[offB:], b)
	le.PutUint64(raw[offC:], c)
	copy(raw[offDev:offDev+devNameLen-1], dev)
	return raw
}

// frcdHi builds the upper quadword of a VT-d fault record.
func frcdHi(sid uint16, reason uint8, read bool, pasid uint32, hasPASID bool) uint64 {
	hi := uint64(1)<<63 | uint64(sid) | uint64(reason)<<32
	if read {
		hi |= 1 << 62
	}
	if hasPASID {
		hi |= 1<<31 | uint64(pasid)<<40
	}
	return hi
}

func TestDecodeDMAR(t *testing.T) {
	c := clock{wall: time.Unix(1000, 0), mono: 5e9}
	// The fault the guest tests provoke: NVMe at 00:03.0 writing Identify
	// data to IOVA 0x900000, which is not mapped (reason 0x05).
	raw := record(kindDMAR, 0, 5e9+1234, 0x900000|0x123, frcdHi(0x0018, 0x05, false, 0, false), 0, "")
	ev, err := decode(raw, c)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := ev.(*Fault)
	if !ok {
		t.Fatalf("decoded %T", ev)
	}
	want := Fault{Source: SourceDMAR, Time: time.Unix(1000, 1234), BDF: "0000:00:03.0", IOVA: 0x900000, Write: true, Reason: 5}
	if *f != want {
		t.Errorf("decoded %+v\nwant    %+v", *f, want)
	}
	const line = "DMA write fault by 0000:00:03.0 at IOVA 0x900000 (reason 0x05 page table entry does not allow writes) [kprobe dmar_fault]"
	if f.String() != line {
		t.Errorf("String() = %q\nwant       %q", f, line)
	}

	// A read by 0001:82:1f.7 with a PASID.
	raw = record(kindDMAR, 1, 0, 0xfffff000, frcdHi(0x82<<8|0x1f<<3|7, 0x06, true, 0x12345, true), 0, "")
	ev, _ = decode(raw, c)
	f = ev.(*Fault)
	if f.BDF != "0001:82:1f.7" || f.Write || f.Reason != 6 || !f.HasPASID || f.PASID != 0x12345 || f.IOVA != 0xfffff000 {
		t.Errorf("decoded %+v", *f)
	}

	// An interrupt-remapping fault carries the IRTE index in bits 63:48.
	raw = record(kindDMAR, 0, 0, 0x2a<<48, frcdHi(0x0018, 0x22, true, 0, false), 0, "")
	ev, _ = decode(raw, c)
	f = ev.(*Fault)
	if !f.IRQRemap || f.IOVA != 0x2a || ReasonText(f.Reason) != "interrupt-remapping fault" {
		t.Errorf("decoded %+v", *f)
	}
}

func TestDecodeTracepoints(t *testing.T) {
	c := clock{wall: time.Unix(1000, 0), mono: 0}
	ev, err := decode(record(kindIOPF, 0x1, 10, 0x4000, 0, 0, "0000:00:03.0"), c)
	if err != nil {
		t.Fatal(err)
	}
	if f := ev.(*Fault); f.Source != SourceFaultTracepoint || f.BDF != "0000:00:03.0" || f.IOVA != 0x4000 || !f.Write || f.Flags != 1 {
		t.Errorf("io_page_fault decoded as %+v", *f)
	}
	ev, _ = decode(record(kindIOPF, 0, 10, 0x4000, 0, 0, "0000:00:03.0"), c)
	if f := ev.(*Fault); f.Write {
		t.Errorf("io_page_fault with flags 0 decoded as a write: %+v", *f)
	}

	ev, _ = decode(record(kindMap, 219, 20, 0x1000, 0x167a8000, 0x10000, ""), c)
	if m, ok := ev.(*Map); !ok || *m != (Map{Time: time.Unix(1000, 20), PID: 219, IOVA: 0x1000, Size: 0x10000, Paddr: 0x167a8000}) {
		t.Errorf("map decoded as %+v", ev)
	}
	ev, _ = decode(record(kindUnmap, 219, 30, 0x1000, 0x10000, 0x10000, ""), c)
	if u, ok := ev.(*Unmap); !ok || *u != (Unmap{Time: time.Unix(1000, 30), PID: 219, IOVA: 0x1000, Size: 0x10000, Unmapped: 0x10000}) {
		t.Errorf("unmap decoded as %+v", ev)
	}
	if got := ev.When(); !got.Equal(time.Unix(1000, 30)) {
		t.Errorf("When() = %v", got)
	}
}

func TestDecodeMalformed(t *testing.T) {
	for name, raw := range map[string][]byte{
		"short":        make([]byte, recordSize-1),
		"unknown kind": record(99, 0, 0, 0, 0, 0, ""),
		"zero kind":    make([]byte, recordSize),
	} {
		if ev, err := decode(raw, clock{}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: decode = %v, %v; want ErrMalformed", name, ev, err)
		}
	}
}

func TestParseKmsg(t *testing.T) {
	for _, c := range []struct {
		line string
		want Fault
	}{
		{
			// 6.1 and 6.12, as the guest tests log it.
			"DMAR: [DMA Write NO_PASID] Request device [00:03.0] fault addr 0x900000 [fault reason 0x05] PTE Write access is not set",
			Fault{Source: SourceKmsg, BDF: "0000:00:03.0", IOVA: 0x900000, Write: true, Reason: 5},
		},
		{
			"DMAR: [DMA Read PASID 0x1f] Request device [82:1f.7] fault addr 0xfffff000 [fault reason 0x06] PTE Read access is not set",
			Fault{Source: SourceKmsg, BDF: "0000:82:1f.7", IOVA: 0xfffff000, Reason: 6, PASID: 0x1f, HasPASID: true},
		},
		{
			"DMAR: [INTR-REMAP] Request device [00:03.0] fault index 0x2a [fault reason 0x22] Present field in the IRTE entry is clear",
			Fault{Source: SourceKmsg, BDF: "0000:00:03.0", IOVA: 0x2a, Reason: 0x22, IRQRemap: true},
		},
		{
			// Before 5.13: the PASID after the device, no 0x, a decimal reason.
			"DMAR: [DMA Write] Request device [03:00.0] PASID ffffffff fault addr 3000 [fault reason 05] PTE Write access is not set",
			Fault{Source: SourceKmsg, BDF: "0000:03:00.0", IOVA: 0x3000, Write: true, Reason: 5},
		},
		{
			"DMAR: [DMA Read] Request device [82:1f.7] PASID 1f fault addr fffff000 [fault reason 12] Some reason",
			Fault{Source: SourceKmsg, BDF: "0000:82:1f.7", IOVA: 0xfffff000, Reason: 12, PASID: 0x1f, HasPASID: true},
		},
		{
			"DMAR: [INTR-REMAP] Request device [00:03.0] fault index 2a [fault reason 34] Present field in the IRTE entry is clear",
			Fault{Source: SourceKmsg, BDF: "0000:00:03.0", IOVA: 0x2a, Reason: 0x22, IRQRemap: true},
		},
		{
			// Bus and device with 0x, as some kernels between wrote them.
			"DMAR: [DMA Write NO_PASID] Request device [0x03:0x00.0] fault addr 0x3000 [fault reason 0x05] PTE Write access is not set",
			Fault{Source: SourceKmsg, BDF: "0000:03:00.0", IOVA: 0x3000, Write: true, Reason: 5},
		},
	} {
		got, ok := ParseKmsg(c.line)
		if !ok || got != c.want {
			t.Errorf("ParseKmsg(%q) = %+v, %t\nwant %+v", c.line, got, ok, c.want)
		}
	}
	for _, line := range []string{
		"",
		"DMAR: DRHD: handling fault status reg 2",
		"DMAR: [DMA Write NO_PASID] Request device [00:20.0] fault addr 0x900000 [fault reason 0x05] x",  // device 0x20 > 0x1f
		"DMAR: [DMA Write] Request device [03:00.0] PASID ffffffff fault addr 3000 [fault reason 5a] x",  // a decimal reason of hex digits
		"DMAR: [DMA Write] Request device [03:00.0] PASID ffffffff fault addr 3000 [fault reason 300] x", // above 255
		"nvme nvme0: I/O 12 QID 0 timeout",
	} {
		if f, ok := ParseKmsg(line); ok {
			t.Errorf("ParseKmsg(%q) = %+v; want no fault", line, f)
		}
	}
}

func TestSourceString(t *testing.T) {
	for s, want := range map[Source]string{
		0:                             "no source",
		SourceDMAR:                    "kprobe dmar_fault",
		SourceDMAR | SourceKmsg:       "kprobe dmar_fault, kmsg (not eBPF)",
		DefaultSources:                "kprobe dmar_fault, tracepoint iommu:io_page_fault, tracepoints iommu:map/unmap",
		SourceMapUnmap | Source(1<<7): "tracepoints iommu:map/unmap, source(0x80)",
	} {
		if got := s.String(); got != want {
			t.Errorf("Source(%#x).String() = %q; want %q", uint8(s), got, want)
		}
	}
}

func TestClock(t *testing.T) {
	now := time.Now()
	c := clock{wall: now, mono: 1e9}
	if d := c.at(1e9 + 5e6).Sub(now); d != 5*time.Millisecond {
		t.Errorf("5 ms after the clock's reading is %v after", d)
	}
	if d := c.at(1e9 - 5e6).Sub(now); d != -5*time.Millisecond {
		t.Errorf("5 ms before the clock's reading is %v", d)
	}
	if c := newClock(); c.wall.IsZero() || c.mono <= 0 {
		t.Errorf("newClock() = %+v", c)
	}
}
