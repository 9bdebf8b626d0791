package nvmelike

import (
	"encoding/binary"
	"errors"
	"testing"
)

// walkSGL follows an SGL the way a controller does (data blocks only, as
// the engine writes them) and returns the (IOVA, length) of each Data
// Block and the descriptor types it met on the way.
func walkSGL(t *testing.T, dp1, dp2 uint64, list Buffer) (blocks [][2]uint64, types []uint8) {
	t.Helper()
	typ := uint8(dp2 >> 60)
	addr, length := dp1, uint32(dp2)
	types = append(types, typ)
	if typ == SGLTypeDataBlock {
		return [][2]uint64{{addr, uint64(length)}}, types
	}
	for {
		if length == 0 || length%16 != 0 {
			t.Fatalf("segment of %d bytes", length)
		}
		off := addr - list.IOVA
		if off+uint64(length) > uint64(len(list.Bytes)) {
			t.Fatalf("segment at 0x%x+%d outside the list", addr, length)
		}
		seg := list.Bytes[off : off+uint64(length)]
		segType := typ
		chained := false
		for i := 0; i < len(seg); i += 16 {
			a := binary.LittleEndian.Uint64(seg[i:])
			l := binary.LittleEndian.Uint32(seg[i+8:])
			ty := seg[i+15] >> 4
			if seg[i+15]&0xf != 0 || seg[i+12] != 0 || seg[i+13] != 0 || seg[i+14] != 0 {
				t.Fatalf("descriptor %x: subtype or reserved bytes set", seg[i:i+16])
			}
			switch ty {
			case SGLTypeDataBlock:
				blocks = append(blocks, [2]uint64{a, uint64(l)})
			case SGLTypeSegment, SGLTypeLastSegment:
				if i != len(seg)-16 || segType == SGLTypeLastSegment {
					t.Fatalf("segment descriptor at %d of a %d-byte segment of type %d", i, len(seg), segType)
				}
				types = append(types, ty)
				addr, length, typ, chained = a, l, ty, true
			default:
				t.Fatalf("descriptor type %d", ty)
			}
		}
		if !chained {
			if segType != SGLTypeLastSegment {
				t.Errorf("the SGL ends in a segment of type %d", segType)
			}
			return blocks, types
		}
	}
}

func TestBuildSGL(t *testing.T) {
	const ps = 4096
	list := Buffer{Bytes: make([]byte, 3*ps), IOVA: 0x7700_0000}
	for _, tc := range []struct {
		n     int
		types []uint8
	}{
		{1, []uint8{SGLTypeDataBlock}},
		{3, []uint8{SGLTypeLastSegment}},
		{256, []uint8{SGLTypeLastSegment}},
		{257, []uint8{SGLTypeSegment, SGLTypeLastSegment}},
		{300, []uint8{SGLTypeSegment, SGLTypeLastSegment}},
		{255 + 256, []uint8{SGLTypeSegment, SGLTypeLastSegment}},
		{255 + 256 + 1, []uint8{SGLTypeSegment, SGLTypeSegment, SGLTypeLastSegment}},
		{255*2 + 256, []uint8{SGLTypeSegment, SGLTypeSegment, SGLTypeLastSegment}},
	} {
		bufs := make([]Buffer, tc.n)
		for i := range bufs {
			bufs[i] = Buffer{Bytes: make([]byte, 1+i%7), IOVA: 0x1_0000_0000 + uint64(i)*1001}
		}
		dp1, dp2, err := buildSGL(bufs, ps, list, false)
		if err != nil {
			t.Fatalf("%d buffers: %v", tc.n, err)
		}
		blocks, types := walkSGL(t, dp1, dp2, list)
		if len(blocks) != tc.n {
			t.Fatalf("%d buffers: %d data blocks", tc.n, len(blocks))
		}
		for i, b := range blocks {
			if b[0] != bufs[i].IOVA || b[1] != uint64(len(bufs[i].Bytes)) {
				t.Fatalf("%d buffers: block %d is 0x%x+%d, want 0x%x+%d", tc.n, i, b[0], b[1], bufs[i].IOVA, len(bufs[i].Bytes))
			}
		}
		if len(types) != len(tc.types) {
			t.Fatalf("%d buffers: descriptor chain %v, want %v", tc.n, types, tc.types)
		}
		for i := range types {
			if types[i] != tc.types[i] {
				t.Fatalf("%d buffers: descriptor chain %v, want %v", tc.n, types, tc.types)
			}
		}
	}
	// More descriptors than the list pages hold.
	bufs := make([]Buffer, 255*3+2)
	for i := range bufs {
		bufs[i] = Buffer{Bytes: make([]byte, 4), IOVA: uint64(i) * 8}
	}
	if _, _, err := buildSGL(bufs, ps, list, false); !errors.Is(err, ErrTransferTooLarge) {
		t.Errorf("%d buffers in 3 list pages: %v, want ErrTransferTooLarge", len(bufs), err)
	}
	// Dword alignment, when the controller requires it.
	odd := []Buffer{{Bytes: make([]byte, 8), IOVA: 0x1000}, {Bytes: make([]byte, 6), IOVA: 0x2000}}
	if _, _, err := buildSGL(odd, ps, list, true); !errors.Is(err, ErrUnalignedBuffer) {
		t.Errorf("a 6-byte data block with dword alignment required: %v", err)
	}
	if _, _, err := buildSGL(odd, ps, list, false); err != nil {
		t.Errorf("a 6-byte data block, byte aligned: %v", err)
	}
	empty := []Buffer{{Bytes: make([]byte, 8), IOVA: 0x1000}, {}}
	if _, _, err := buildSGL(empty, ps, list, false); !errors.Is(err, ErrBadBuffers) {
		t.Errorf("an empty buffer: %v, want ErrBadBuffers", err)
	}
}

func TestSGLPages(t *testing.T) {
	for _, tc := range []struct{ nd, want int }{
		{1, 1}, {256, 1}, {257, 2}, {511, 2}, {512, 3}, {255 + 255 + 256, 3}, {255 + 255 + 257, 4},
	} {
		if got := sglPages(tc.nd, 256); got != tc.want {
			t.Errorf("sglPages(%d) = %d, want %d", tc.nd, got, tc.want)
		}
	}
}

func TestBuildPRPVector(t *testing.T) {
	const ps = 4096
	list := Buffer{Bytes: make([]byte, 2*ps), IOVA: 0x7700_0000}
	base := uint64(0x1_0000_0000)
	page := func(k int) uint64 { return base + uint64(k)*0x10_0000 } // far apart
	for _, tc := range []struct {
		name string
		bufs []Buffer
	}{
		{"in-page then one page", []Buffer{{Bytes: make([]byte, 512), IOVA: page(0) + 3584}, {Bytes: make([]byte, 512), IOVA: page(1)}}},
		{"three", []Buffer{{Bytes: make([]byte, 3584+4096), IOVA: page(0) + 512}, {Bytes: make([]byte, 8192), IOVA: page(1)}, {Bytes: make([]byte, 1000), IOVA: page(2)}}},
		{"past one list page", []Buffer{{Bytes: make([]byte, 4096), IOVA: page(0)}, {Bytes: make([]byte, 600*4096), IOVA: page(1)}}},
	} {
		prp1, prp2, err := buildPRPVector(tc.bufs, ps, list)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		n := 0
		var want [][2]uint64 // page runs, as walkPRP reports them
		for i, b := range tc.bufs {
			n += len(b.Bytes)
			for off := 0; off < len(b.Bytes); {
				chunk := min(len(b.Bytes)-off, ps-int((b.IOVA+uint64(off))%ps))
				if i > 0 || off > 0 {
					chunk = min(len(b.Bytes)-off, ps)
				}
				want = append(want, [2]uint64{b.IOVA + uint64(off), uint64(chunk)})
				off += chunk
			}
		}
		got := walkPRP(t, prp1, prp2, n, ps, list)
		if len(got) != len(want) {
			t.Fatalf("%s: %d page runs, want %d", tc.name, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: run %d is %x, want %x", tc.name, i, got[i], want[i])
			}
		}
	}
	for _, tc := range []struct {
		name string
		bufs []Buffer
		want error
	}{
		{"first ends mid-page", []Buffer{{Bytes: make([]byte, 100), IOVA: base}, {Bytes: make([]byte, 100), IOVA: page(1)}}, ErrPRPBoundary},
		{"second starts mid-page", []Buffer{{Bytes: make([]byte, 4096), IOVA: base}, {Bytes: make([]byte, 100), IOVA: page(1) + 8}}, ErrPRPBoundary},
		{"unaligned start", []Buffer{{Bytes: make([]byte, 4094), IOVA: base + 2}, {Bytes: make([]byte, 100), IOVA: page(1)}}, ErrUnalignedBuffer},
		{"empty", []Buffer{{Bytes: make([]byte, 4096), IOVA: base}, {}}, ErrBadBuffers},
	} {
		if _, _, err := buildPRPVector(tc.bufs, ps, list); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
