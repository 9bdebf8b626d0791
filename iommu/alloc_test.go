package iommu

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

const (
	kiB = 1 << 10
	miB = 1 << 20
	giB = 1 << 30
)

func newAllocator(t testing.TB, ranges []Range, page uint64) *Allocator {
	t.Helper()
	a, err := NewAllocator(ranges, page)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestNormaliseRanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     []Range
		page   uint64
		want   []Range
		errHas string
	}{
		{"qemu intel-iommu", QEMUIntelRanges, 4 * kiB,
			[]Range{{0x1000, 0xfedfffff}, {0xfef00000, 0x7fffffffff}}, ""},
		{"first page reserved with 64 KiB pages", []Range{{0, 0xffffffff}}, 64 * kiB,
			[]Range{{0x10000, 0xffffffff}}, ""},
		{"trimmed to whole pages", []Range{{0x1800, 0x5fff}, {0x7000, 0x8ffe}}, 4 * kiB,
			[]Range{{0x2000, 0x5fff}, {0x7000, 0x7fff}}, ""},
		{"merged and sorted", []Range{{0x10000, 0x1ffff}, {0x2000, 0x4fff}, {0x5000, 0x6fff}, {0x18000, 0x2ffff}}, 4 * kiB,
			[]Range{{0x2000, 0x6fff}, {0x10000, 0x2ffff}}, ""},
		{"top of the 64-bit space", []Range{{0xfffffffffff00000, ^uint64(0)}, {0, 0x1fff}}, 4 * kiB,
			[]Range{{0x1000, 0x1fff}, {0xfffffffffff00000, ^uint64(0)}}, ""},
		{"the whole 64-bit space", []Range{{0, ^uint64(0)}}, 4 * kiB,
			[]Range{{0x1000, ^uint64(0)}}, ""},
		{"too small to hold a page", []Range{{0, 0xfff}, {0x1800, 0x27ff}, {^uint64(0) - 0x800, ^uint64(0) - 1}}, 4 * kiB,
			nil, "no whole page"},
		{"nothing", nil, 4 * kiB, nil, "no whole page"},
		{"backwards", []Range{{0x2000, 0x1000}}, 4 * kiB, nil, "ends before it starts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAllocator(tc.in, tc.page)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("got %v, want an error saying %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Ranges(); !slices.Equal(got, tc.want) {
				t.Errorf("ranges %s, want %s", formatRanges(got), formatRanges(tc.want))
			}
			checkAllocator(t, a)
		})
	}
	if _, err := NewAllocator(QEMUIntelRanges, 3000); !errors.Is(err, ErrInvalid) {
		t.Errorf("page size 3000: got %v, want ErrInvalid", err)
	}
}

func TestAllocNeverHandsOutZero(t *testing.T) {
	a := newAllocator(t, []Range{{0, 0x3fff}}, 4*kiB)
	var got []uint64
	for {
		iova, err := a.Alloc(4*kiB, 0)
		if err != nil {
			break
		}
		got = append(got, iova)
	}
	if !slices.Equal(got, []uint64{0x1000, 0x2000, 0x3000}) {
		t.Errorf("allocated %#x, want the three pages above the first", got)
	}
}

func TestAllocAlignment(t *testing.T) {
	a := newAllocator(t, QEMUIntelRanges, 4*kiB)
	for _, tc := range []struct{ size, align, wantSize, wantAlign uint64 }{
		{1, 0, 4 * kiB, 4 * kiB},
		{4*kiB + 1, 0, 8 * kiB, 4 * kiB},
		{512, 512, 4 * kiB, 4 * kiB}, // alignments below the page are raised
		{2 * miB, 2 * miB, 2 * miB, 2 * miB},
		{4 * kiB, 2 * miB, 4 * kiB, 2 * miB},
		{3 * giB, giB, 3 * giB, giB},
	} {
		iova, err := a.Alloc(tc.size, tc.align)
		if err != nil {
			t.Fatalf("Alloc(%#x, %#x): %v", tc.size, tc.align, err)
		}
		if iova%tc.wantAlign != 0 || iova == 0 {
			t.Errorf("Alloc(%#x, %#x) = %#x, not aligned to %#x", tc.size, tc.align, iova, tc.wantAlign)
		}
		if size, ok := a.Size(iova); !ok || size != tc.wantSize {
			t.Errorf("Alloc(%#x, %#x): size %#x, want %#x", tc.size, tc.align, size, tc.wantSize)
		}
		// Nothing may cross the interrupt window.
		if !slices.ContainsFunc(a.Ranges(), func(r Range) bool { return r.Covers(iova, tc.wantSize) }) {
			t.Errorf("Alloc(%#x, %#x) = %#x, outside %s", tc.size, tc.align, iova, formatRanges(a.Ranges()))
		}
	}
	checkAllocator(t, a)

	for _, tc := range []struct{ size, align uint64 }{{0, 0}, {4 * kiB, 3 * kiB}, {4 * kiB, 6 * miB}} {
		if _, err := a.Alloc(tc.size, tc.align); !errors.Is(err, ErrInvalid) {
			t.Errorf("Alloc(%#x, %#x): got %v, want ErrInvalid", tc.size, tc.align, err)
		}
	}
}

func TestAllocExhausted(t *testing.T) {
	a := newAllocator(t, []Range{{0, 64*kiB - 1}}, 4*kiB) // 15 usable pages
	for range 15 {
		if _, err := a.Alloc(4*kiB, 0); err != nil {
			t.Fatal(err)
		}
	}
	_, err := a.Alloc(4*kiB, 0)
	var ee *ExhaustedError
	if !errors.Is(err, ErrIOVAExhausted) || !errors.As(err, &ee) {
		t.Fatalf("allocating past the end: got %v, want an *ExhaustedError", err)
	}
	if ee.Free != 0 || ee.Total != 15*4*kiB || ee.Size != 4*kiB {
		t.Errorf("error fields %+v", ee)
	}
	t.Log(err)

	// Free space, but not enough of it in one piece or at the alignment.
	if err := a.Free(0x3000); err != nil {
		t.Fatal(err)
	}
	if err := a.Free(0x5000); err != nil {
		t.Fatal(err)
	}
	_, err = a.Alloc(8*kiB, 0)
	if !errors.As(err, &ee) || ee.Free != 8*kiB || ee.Largest != 4*kiB {
		t.Errorf("8 KiB from two separate free pages: got %v", err)
	}
	if !strings.Contains(err.Error(), "largest free extent is 0x1000 bytes") {
		t.Errorf("message %q does not name the largest free extent", err)
	}
	if _, err := a.Alloc(4*kiB, 64*kiB); !errors.Is(err, ErrIOVAExhausted) {
		t.Errorf("64 KiB alignment in a 64 KiB window without its first page: got %v", err)
	}
	if _, err := a.Alloc(^uint64(0), 0); !errors.Is(err, ErrIOVAExhausted) {
		t.Errorf("a size that overflows when rounded: got %v", err)
	}
	checkAllocator(t, a)
}

func TestFreeCoalesces(t *testing.T) {
	a := newAllocator(t, []Range{{0, 0x10fff}}, 4*kiB) // pages 0x1000-0x10000
	var iovas []uint64
	for range 16 {
		iova, err := a.Alloc(4*kiB, 0)
		if err != nil {
			t.Fatal(err)
		}
		iovas = append(iovas, iova)
	}
	// Free every other page, then the rest: each free merges with one or
	// two neighbours.
	for _, step := range [][]int{{0, 2, 4, 6, 8, 10, 12, 14}, {1, 3, 5, 7, 9, 11, 13, 15}} {
		for _, i := range step {
			if err := a.Free(iovas[i]); err != nil {
				t.Fatal(err)
			}
			checkAllocator(t, a)
		}
	}
	if got := a.FreeExtents(); !slices.Equal(got, a.Ranges()) {
		t.Errorf("after freeing everything the free extents are %s, want %s", formatRanges(got), formatRanges(a.Ranges()))
	}
	if iova, err := a.Alloc(64*kiB, 0); err != nil || iova != 0x1000 {
		t.Errorf("the whole range again: %#x, %v", iova, err)
	}
}

func TestFreeUnknown(t *testing.T) {
	a := newAllocator(t, QEMUIntelRanges, 4*kiB)
	iova, err := a.Alloc(8*kiB, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []uint64{0, iova + 4*kiB, iova + 8*kiB} {
		if err := a.Free(bad); !errors.Is(err, ErrNotMapped) {
			t.Errorf("Free(%#x): got %v, want ErrNotMapped", bad, err)
		}
	}
	if err := a.Free(iova); err != nil {
		t.Fatal(err)
	}
	if err := a.Free(iova); !errors.Is(err, ErrNotMapped) {
		t.Errorf("freeing twice: got %v, want ErrNotMapped", err)
	}
	checkAllocator(t, a)
}

// TestAllocNextFit checks that a freed range is not handed out again while
// space above the last allocation is free.
func TestAllocNextFit(t *testing.T) {
	a := newAllocator(t, []Range{{0, 0x8fff}}, 4*kiB) // 8 pages: 0x1000-0x8000
	first, _ := a.Alloc(4*kiB, 0)
	second, _ := a.Alloc(4*kiB, 0)
	if err := a.Free(first); err != nil {
		t.Fatal(err)
	}
	third, _ := a.Alloc(4*kiB, 0)
	if third == first {
		t.Errorf("the freed IOVA %#x was handed out again at once", first)
	}
	if third != second+4*kiB {
		t.Errorf("third allocation at %#x, want %#x just above the second", third, second+4*kiB)
	}
	// Fill the rest, then wrap around to the freed page.
	var last uint64
	for range 5 {
		var err error
		if last, err = a.Alloc(4*kiB, 0); err != nil {
			t.Fatal(err)
		}
	}
	if last != 0x8000 {
		t.Errorf("the top page went to %#x", last)
	}
	if iova, err := a.Alloc(4*kiB, 0); err != nil || iova != first {
		t.Errorf("after wrapping: %#x, %v; want the freed %#x", iova, err, first)
	}
	// A range that only fits when the search starts over in the extent
	// the cursor lies in is found on the second visit of that extent.
	b := newAllocator(t, []Range{{0, 0x8fff}}, 4*kiB)
	x, _ := b.Alloc(4*kiB, 0) // 0x1000
	y, _ := b.Alloc(4*kiB, 0) // 0x2000; the cursor is at 0x3000
	if err := errors.Join(b.Free(x), b.Free(y)); err != nil {
		t.Fatal(err)
	}
	if iova, err := b.Alloc(32*kiB, 0); err != nil || iova != 0x1000 {
		t.Errorf("all 32 KiB with the cursor inside the one free extent: %#x, %v", iova, err)
	}
	checkAllocator(t, b)
}

// checkAllocator checks the allocator's invariants: free extents sorted,
// apart and inside the ranges; allocations page-aligned, inside the ranges
// and apart from each other and from free space; the byte counts add up.
func checkAllocator(t testing.TB, a *Allocator) {
	t.Helper()
	inRanges := func(r Range) bool {
		return slices.ContainsFunc(a.ranges, func(u Range) bool { return u.Start <= r.Start && r.End <= u.End })
	}
	var freeSum uint64
	for i, r := range a.free {
		if r.Start > r.End || !inRanges(r) || r.Start%a.pageSize != 0 || (r.End+1)%a.pageSize != 0 {
			t.Fatalf("free extent %s is bad (ranges %s)", r, formatRanges(a.ranges))
		}
		if i > 0 && a.free[i-1].End+1 >= r.Start {
			t.Fatalf("free extents %s and %s touch or overlap", a.free[i-1], r)
		}
		freeSum += r.Size()
	}
	if freeSum != a.freeSize {
		t.Fatalf("free extents hold 0x%x bytes, the count says 0x%x", freeSum, a.freeSize)
	}
	used := make([]Range, 0, len(a.used))
	var usedSum uint64
	for start, size := range a.used {
		r := Range{start, start + size - 1}
		if start == 0 || size == 0 || start%a.pageSize != 0 || size%a.pageSize != 0 || !inRanges(r) {
			t.Fatalf("allocation %s is bad (ranges %s)", r, formatRanges(a.ranges))
		}
		used = append(used, r)
		usedSum += size
	}
	slices.SortFunc(used, func(x, y Range) int { return cmpUint64(x.Start, y.Start) })
	all := append(slices.Clone(used), a.free...)
	slices.SortFunc(all, func(x, y Range) int { return cmpUint64(x.Start, y.Start) })
	for i := 1; i < len(all); i++ {
		if all[i-1].End >= all[i].Start {
			t.Fatalf("%s and %s overlap", all[i-1], all[i])
		}
	}
	if usedSum+a.freeSize != a.total {
		t.Fatalf("0x%x bytes allocated + 0x%x free != 0x%x in all", usedSum, a.freeSize, a.total)
	}
}

// allocModel drives an allocator with random operations and checks it
// after each one.
type allocModel struct {
	a    *Allocator
	live []uint64
}

func (m *allocModel) alloc(t testing.TB, size, align uint64) {
	iova, err := m.a.Alloc(size, align)
	if err != nil {
		if !errors.Is(err, ErrIOVAExhausted) {
			t.Fatalf("Alloc(%#x, %#x): %v", size, align, err)
		}
		return
	}
	if iova%max(align, m.a.pageSize) != 0 {
		t.Fatalf("Alloc(%#x, %#x) = %#x: misaligned", size, align, iova)
	}
	if got, _ := m.a.Size(iova); got < size {
		t.Fatalf("Alloc(%#x, %#x) = %#x of only %#x bytes", size, align, iova, got)
	}
	m.live = append(m.live, iova)
}

func (m *allocModel) free(t testing.TB, i int) {
	if len(m.live) == 0 {
		return
	}
	i %= len(m.live)
	if err := m.a.Free(m.live[i]); err != nil {
		t.Fatal(err)
	}
	m.live = slices.Delete(m.live, i, i+1)
}

// drain frees everything, then checks that the space coalesced back into
// its ranges and can be allocated again whole, largest range first.
func (m *allocModel) drain(t testing.TB) {
	for len(m.live) > 0 {
		m.free(t, 0)
	}
	checkAllocator(t, m.a)
	if got := m.a.FreeExtents(); !slices.Equal(got, m.a.ranges) {
		t.Fatalf("after freeing everything the free extents are %s, want %s", formatRanges(got), formatRanges(m.a.ranges))
	}
	ranges := m.a.Ranges()
	slices.SortFunc(ranges, func(x, y Range) int { return cmpUint64(y.Size(), x.Size()) })
	for _, r := range ranges {
		if _, err := m.a.Alloc(r.Size(), 0); err != nil {
			t.Fatalf("allocating the whole of %s again: %v", r, err)
		}
	}
	if m.a.FreeBytes() != 0 {
		t.Fatalf("0x%x bytes still free after allocating every range whole", m.a.FreeBytes())
	}
}

func TestAllocRandom(t *testing.T) {
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		page := uint64(4*kiB) << rng.IntN(3)
		// A few ranges, some small enough to run out.
		var ranges []Range
		base := uint64(0)
		for range 1 + rng.IntN(4) {
			start := base + uint64(rng.IntN(64))*4*kiB
			end := start + uint64(1+rng.IntN(256))*4*kiB - 1
			ranges = append(ranges, Range{start, end})
			base = end + 1 + uint64(rng.IntN(4))*page
		}
		a, err := NewAllocator(ranges, page)
		if err != nil {
			continue // all of it smaller than a page
		}
		m := &allocModel{a: a}
		for range 1000 {
			if rng.IntN(3) > 0 {
				m.alloc(t, uint64(1+rng.IntN(32*kiB)), uint64(1)<<rng.IntN(18))
			} else {
				m.free(t, rng.IntN(1<<20))
			}
			checkAllocator(t, a)
		}
		m.drain(t)
	}
}

// FuzzAllocator runs the operations the input spells against an allocator
// over ranges it also spells, checking the invariants after each.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Add([]byte{2, 0xff, 0xff, 0x10, 0x80, 0x00, 0x01, 0xff, 0x13, 0x40, 0x02, 0x00, 0x07})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 5 {
			return
		}
		page := uint64(4*kiB) << (data[0] % 3)
		// Up to three ranges, each from two bytes: a gap and a length in
		// 4 KiB units.
		nranges := 1 + int(data[1]%3)
		data = data[2:]
		var ranges []Range
		base := uint64(0)
		for range nranges {
			if len(data) < 2 {
				return
			}
			start := base + uint64(data[0])*4*kiB
			end := start + (uint64(data[1])+1)*4*kiB - 1
			ranges = append(ranges, Range{start, end})
			base = end + 1
			data = data[2:]
		}
		a, err := NewAllocator(ranges, page)
		if err != nil {
			if !errors.Is(err, ErrIOVAExhausted) {
				t.Fatal(err)
			}
			return
		}
		m := &allocModel{a: a}
		for len(data) >= 2 {
			op, arg := data[0], data[1]
			data = data[2:]
			if op&1 == 0 {
				// Sizes up to 256 pages and alignments up to 2^19.
				m.alloc(t, uint64(arg)*uint64(op>>1&7+1)*kiB+1, uint64(1)<<(op>>4))
			} else {
				m.free(t, int(arg))
			}
			checkAllocator(t, a)
		}
		m.drain(t)
	})
}

func BenchmarkAllocFree(b *testing.B) {
	a := newAllocator(b, QEMUIntelRanges, 4*kiB)
	// Some fragmentation for the search to go through.
	for i := range 64 {
		iova, _ := a.Alloc(uint64(1+i%5)*4*kiB, 0)
		if i%2 == 0 {
			a.Free(iova)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		iova, err := a.Alloc(2*miB, 2*miB)
		if err != nil {
			b.Fatal(err)
		}
		a.Free(iova)
	}
}
