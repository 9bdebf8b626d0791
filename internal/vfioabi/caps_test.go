package vfioabi

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

// chainBuilder lays out an INFO buffer the way the kernel does: a fixed
// struct, then capabilities appended at 8-byte-aligned offsets, each
// header's next pointing at the following one.
type chainBuilder struct {
	buf  []byte
	last int // offset of the last capability's header, or -1
}

func newChain(fixedSize int) *chainBuilder {
	return &chainBuilder{buf: make([]byte, fixedSize), last: -1}
}

func (b *chainBuilder) add(id, version uint16, body []byte) *chainBuilder {
	for len(b.buf)%8 != 0 {
		b.buf = append(b.buf, 0)
	}
	off := len(b.buf)
	if b.last >= 0 {
		binary.NativeEndian.PutUint32(b.buf[b.last+4:], uint32(off))
	}
	hdr := make([]byte, SizeofInfoCapHeader)
	binary.NativeEndian.PutUint16(hdr[0:], id)
	binary.NativeEndian.PutUint16(hdr[2:], version)
	b.buf = append(b.buf, hdr...)
	b.buf = append(b.buf, body...)
	b.last = off
	return b
}

func u32s(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.NativeEndian.AppendUint32(b, v)
	}
	return b
}

func u64s(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.NativeEndian.AppendUint64(b, v)
	}
	return b
}

func TestParseCapChainNone(t *testing.T) {
	caps, err := ParseCapChain(make([]byte, SizeofRegionInfo), SizeofRegionInfo, 0)
	if err != nil || caps != nil {
		t.Fatalf("ParseCapChain with first 0 = %v, %v; want no capabilities, no error", caps, err)
	}
}

func TestParseCapChainRegion(t *testing.T) {
	// A BAR with its MSI-X table carved out: two mmap-able areas, then the
	// body-less MSI-X mappable capability.
	sparse := append(u32s(2, 0), u64s(0, 0x2000, 0x3000, 0x1000)...)
	buf := newChain(SizeofRegionInfo).
		add(VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, sparse).
		add(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, nil).buf

	caps, err := ParseCapChain(buf, SizeofRegionInfo, SizeofRegionInfo)
	if err != nil {
		t.Fatal(err)
	}
	if len(caps) != 2 {
		t.Fatalf("got %d capabilities, want 2: %+v", len(caps), caps)
	}
	if caps[0].Offset != SizeofRegionInfo || caps[1].Offset != SizeofRegionInfo+8+uint32(len(sparse)) {
		t.Errorf("offsets %d, %d", caps[0].Offset, caps[1].Offset)
	}
	if len(caps[1].Data) != 0 {
		t.Errorf("MSI-X mappable capability has %d data bytes, want 0", len(caps[1].Data))
	}
	if _, ok := FindCap(caps, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE); !ok {
		t.Error("FindCap found no MSI-X mappable capability")
	}
	if _, ok := FindCap(caps, VFIO_REGION_INFO_CAP_TYPE); ok {
		t.Error("FindCap found a region type capability that is not there")
	}

	areas, err := ParseSparseMmap(caps[0])
	if err != nil {
		t.Fatal(err)
	}
	want := []RegionSparseMmapArea{{0, 0x2000}, {0x3000, 0x1000}}
	if !slices.Equal(areas, want) {
		t.Errorf("areas = %+v, want %+v", areas, want)
	}

	// Data is capped at its length: appending to it must not overwrite
	// the next capability.
	before := slices.Clone(buf)
	_ = append(caps[0].Data, 0xff)
	if !slices.Equal(buf, before) {
		t.Error("appending to a capability's Data changed the buffer")
	}
}

func TestParseCapChainIOMMU(t *testing.T) {
	// What QEMU's intel-iommu gives a 6.x guest: two IOVA ranges around
	// the MSI window, then the DMA mapping limit.
	ranges := append(u32s(2, 0), u64s(0, 0xfedfffff, 0xfef00000, 1<<39-1)...)
	buf := newChain(SizeofIOMMUType1Info).
		add(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, ranges).
		add(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 1, u32s(65535)).buf

	caps, err := ParseCapChain(buf, SizeofIOMMUType1Info, SizeofIOMMUType1Info)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := FindCap(caps, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE)
	if !ok {
		t.Fatal("no IOVA range capability")
	}
	got, err := ParseIOVARanges(c)
	if err != nil {
		t.Fatal(err)
	}
	want := []IOVARange{{0, 0xfedfffff}, {0xfef00000, 1<<39 - 1}}
	if !slices.Equal(got, want) {
		t.Errorf("ranges = %#x, want %#x", got, want)
	}
	c, ok = FindCap(caps, VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL)
	if !ok {
		t.Fatal("no DMA avail capability")
	}
	if avail, err := ParseDMAAvail(c); err != nil || avail != 65535 {
		t.Errorf("ParseDMAAvail = %d, %v; want 65535", avail, err)
	}
}

func TestParseRegionType(t *testing.T) {
	buf := newChain(SizeofRegionInfo).add(VFIO_REGION_INFO_CAP_TYPE, 1, u32s(1<<31|0x8086, 1)).buf
	caps, err := ParseCapChain(buf, SizeofRegionInfo, SizeofRegionInfo)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := ParseRegionType(caps[0])
	if err != nil {
		t.Fatal(err)
	}
	if rt.Type != 1<<31|0x8086 || rt.Subtype != 1 {
		t.Errorf("region type = %#x/%d", rt.Type, rt.Subtype)
	}
}

func TestParseCapChainMalformed(t *testing.T) {
	const fixed = 16
	// twoCaps returns a two-capability chain whose second header's next
	// field is next.
	twoCaps := func(next uint32) []byte {
		b := newChain(fixed).add(1, 1, u32s(0, 0)).add(2, 1, u32s(0, 0)).buf
		binary.NativeEndian.PutUint32(b[fixed+16+4:], next)
		return b
	}
	tests := []struct {
		name  string
		buf   []byte
		first uint32
	}{
		{"first inside the fixed struct", twoCaps(0), 8},
		{"first past the buffer", twoCaps(0), 1 << 20},
		{"first at the last byte", twoCaps(0), uint32(len(twoCaps(0)) - 1)},
		{"first at max uint32", twoCaps(0), ^uint32(0)},
		{"header cut short", newChain(fixed).add(1, 1, nil).buf[:fixed+5], fixed},
		{"loop to itself", twoCaps(fixed + 16), fixed},
		{"loop to the first capability", twoCaps(fixed), fixed},
		{"next into its own header", twoCaps(fixed + 16 + 4), fixed},
		{"next into the fixed struct", twoCaps(4), fixed},
		{"next past the buffer", twoCaps(1000), fixed},
		{"next at max uint32", twoCaps(^uint32(0)), fixed},
		{"empty buffer", nil, fixed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caps, err := ParseCapChain(tt.buf, fixed, tt.first)
			if !errors.Is(err, ErrBadCapChain) {
				t.Fatalf("ParseCapChain = %+v, %v; want an error wrapping ErrBadCapChain", caps, err)
			}
			if caps != nil {
				t.Errorf("got capabilities with an error: %+v", caps)
			}
		})
	}
}

func TestParseCapsMalformed(t *testing.T) {
	tests := []struct {
		name  string
		parse func(Cap) error
		cap   Cap
	}{
		{"sparse mmap, wrong id", parseSparse, Cap{ID: 9, Version: 1, Data: u32s(0, 0)}},
		{"sparse mmap, version 0", parseSparse, Cap{ID: VFIO_REGION_INFO_CAP_SPARSE_MMAP, Data: u32s(0, 0)}},
		{"sparse mmap, no body", parseSparse, Cap{ID: VFIO_REGION_INFO_CAP_SPARSE_MMAP, Version: 1, Data: u32s(0)}},
		{"sparse mmap, one area claimed, none there", parseSparse, Cap{ID: VFIO_REGION_INFO_CAP_SPARSE_MMAP, Version: 1, Data: u32s(1, 0)}},
		{"sparse mmap, 2^32-1 areas claimed", parseSparse, Cap{ID: VFIO_REGION_INFO_CAP_SPARSE_MMAP, Version: 1, Data: append(u32s(^uint32(0), 0), u64s(0, 1)...)}},
		{"IOVA ranges, wrong id", parseRanges, Cap{ID: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, Version: 1, Data: u32s(0, 0)}},
		{"IOVA ranges, half a range", parseRanges, Cap{ID: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, Version: 1, Data: append(u32s(1, 0), u64s(0)...)}},
		{"IOVA ranges, 2^32-1 ranges claimed", parseRanges, Cap{ID: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, Version: 1, Data: u32s(^uint32(0), 0)}},
		{"DMA avail, no body", parseAvail, Cap{ID: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, Version: 1}},
		{"region type, short body", parseType, Cap{ID: VFIO_REGION_INFO_CAP_TYPE, Version: 1, Data: u32s(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.parse(tt.cap); !errors.Is(err, ErrBadCapChain) {
				t.Fatalf("got %v, want an error wrapping ErrBadCapChain", err)
			}
		})
	}
}

func parseSparse(c Cap) error { _, err := ParseSparseMmap(c); return err }
func parseRanges(c Cap) error { _, err := ParseIOVARanges(c); return err }
func parseAvail(c Cap) error  { _, err := ParseDMAAvail(c); return err }
func parseType(c Cap) error   { _, err := ParseRegionType(c); return err }

// FuzzParseCapChain feeds arbitrary buffers to the chain walker and every
// capability decoder: none may panic, and a chain accepted must satisfy the
// walker's documented invariants.
func FuzzParseCapChain(f *testing.F) {
	sparse := append(u32s(2, 0), u64s(0, 0x2000, 0x3000, 0x1000)...)
	f.Add(newChain(SizeofRegionInfo).add(VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, sparse).add(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, nil).buf, uint8(SizeofRegionInfo), uint32(SizeofRegionInfo))
	ranges := append(u32s(2, 0), u64s(0, 0xfedfffff, 0xfef00000, 1<<39-1)...)
	f.Add(newChain(SizeofIOMMUType1Info).add(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, ranges).add(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 1, u32s(65535)).buf, uint8(SizeofIOMMUType1Info), uint32(SizeofIOMMUType1Info))
	f.Add([]byte{}, uint8(0), uint32(0))
	f.Add(make([]byte, 64), uint8(8), uint32(8))

	f.Fuzz(func(t *testing.T, buf []byte, fixed uint8, first uint32) {
		caps, err := ParseCapChain(buf, int(fixed), first)
		if err != nil {
			if !errors.Is(err, ErrBadCapChain) {
				t.Fatalf("error %v does not wrap ErrBadCapChain", err)
			}
			return
		}
		if len(caps) > len(buf)/SizeofInfoCapHeader {
			t.Fatalf("%d capabilities in %d bytes", len(caps), len(buf))
		}
		lowest := uint64(fixed)
		for _, c := range caps {
			if uint64(c.Offset) < lowest {
				t.Fatalf("capability at %d, before %d", c.Offset, lowest)
			}
			end := uint64(c.Offset) + SizeofInfoCapHeader + uint64(len(c.Data))
			if end > uint64(len(buf)) {
				t.Fatalf("capability at %d with %d data bytes runs past %d", c.Offset, len(c.Data), len(buf))
			}
			lowest = uint64(c.Offset) + SizeofInfoCapHeader
			// The decoders must not panic on whatever the chain holds; give
			// each one the capability under the id it expects.
			for _, id := range []uint16{1, 2, 3} {
				c.ID = id
				_, _ = ParseSparseMmap(c)
				_, _ = ParseRegionType(c)
				_, _ = ParseIOVARanges(c)
				_, _ = ParseDMAAvail(c)
			}
		}
	})
}
