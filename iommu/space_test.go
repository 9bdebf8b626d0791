package iommu

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

func newSpace(t testing.TB, m Mapper, o Options) *Space {
	t.Helper()
	s, err := New(m, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// faultyMapper fails Map or Unmap on demand.
type faultyMapper struct {
	*Identity
	mapErr, unmapErr error
}

func (f *faultyMapper) Map(iova uint64, mem []byte, perm Perm) error {
	if f.mapErr != nil {
		return f.mapErr
	}
	return f.Identity.Map(iova, mem, perm)
}

func (f *faultyMapper) Unmap(iova, size uint64) error {
	if f.unmapErr != nil {
		return f.unmapErr
	}
	return f.Identity.Unmap(iova, size)
}

func TestSpaceMapPool(t *testing.T) {
	id := newIdentity(t, IdentityOptions{})
	s := newSpace(t, id, Options{})
	all := anonMemory(t, 8*miB)
	mem := all[: 4*miB : 4*miB]
	owner := Owner{Name: "io-pool", ID: 7, Tag: "queue 1"}
	m, err := s.MapPool(mem, owner, MapOptions{Align: 2 * miB})
	if err != nil {
		t.Fatal(err)
	}
	if m.IOVA() == 0 || m.IOVA()%(2*miB) != 0 || m.Size() != 4*miB || m.Owner() != owner || m.Perm() != PermReadWrite || !m.Mapped() {
		t.Errorf("mapping %v: iova %#x size %#x perm %s", m, m.IOVA(), m.Size(), m.Perm())
	}
	if &m.Bytes()[0] != &mem[0] || len(m.Bytes()) != len(mem) {
		t.Error("Bytes() is not the memory mapped")
	}

	// The mapper holds it, and the bytes at each IOVA are the pool's.
	for _, off := range []uint64{0, 1, 4095, 4096, 2*miB + 17, 4*miB - 1} {
		iova, ok := m.Translate(off)
		if !ok || iova != m.IOVA()+off {
			t.Fatalf("Translate(%#x) = %#x, %v", off, iova, ok)
		}
		b, err := id.Resolve(iova, 1, PermReadWrite)
		if err != nil || &b[0] != &mem[off] {
			t.Errorf("the IOVA of offset %#x resolves elsewhere: %v", off, err)
		}
		if sub, ok := m.IOVAOf(mem[off:]); !ok || sub != iova {
			t.Errorf("IOVAOf(mem[%#x:]) = %#x, %v; want %#x", off, sub, ok, iova)
		}
	}
	if _, ok := m.Translate(4 * miB); ok {
		t.Error("Translate past the end succeeded")
	}
	if iova, ok := m.IOVAOf(m.Bytes()[miB : 2*miB]); !ok || iova != m.IOVA()+miB {
		t.Errorf("IOVAOf of a middle piece = %#x, %v", iova, ok)
	}
	other := anonMemory(t, 4*kiB)
	for name, b := range map[string][]byte{
		"empty":            mem[:0],
		"empty at the end": mem[len(mem):],
		"other memory":     other,
		"running past":     all[4*miB-8 : 4*miB+8],
		"just after":       all[4*miB : 4*miB+8],
	} {
		if iova, ok := m.IOVAOf(b); ok {
			t.Errorf("IOVAOf(%s) = %#x", name, iova)
		}
	}

	// The ledger knows it.
	for _, iova := range []uint64{m.IOVA(), m.IOVA() + 3*miB, m.IOVA() + 4*miB - 1} {
		r, ok := s.Lookup(iova)
		if !ok || !r.Live() || r.Owner != owner || r.IOVA != m.IOVA() || r.Size != 4*miB || r.Mapped.IsZero() {
			t.Errorf("Lookup(%#x) = %v, %v", iova, r, ok)
		}
	}
	st := s.Stats()
	if st.Mappings != 1 || st.MappedBytes != 4*miB || st.MappingsLeft != 65534 || st.FreeIOVA != st.TotalIOVA-4*miB {
		t.Errorf("Stats() = %+v", st)
	}

	if err := m.Unmap(); err != nil {
		t.Fatal(err)
	}
	if m.Mapped() || id.Len() != 0 || s.Ledger().Len() != 0 {
		t.Errorf("after Unmap: Mapped %v, %d in the mapper, %d in the ledger", m.Mapped(), id.Len(), s.Ledger().Len())
	}
	if _, ok := m.Translate(0); ok {
		t.Error("Translate after Unmap succeeded")
	}
	if _, ok := m.IOVAOf(mem); ok {
		t.Error("IOVAOf after Unmap succeeded")
	}
	r, ok := s.Lookup(m.IOVA() + 5)
	if !ok || r.Live() || r.Owner != owner || r.Unmapped.Before(r.Mapped) {
		t.Errorf("Lookup after Unmap = %v, %v; want the unmapped record", r, ok)
	}
	if err := m.Unmap(); err != nil {
		t.Errorf("Unmap twice: %v", err)
	}
	if st := s.Stats(); st.Mappings != 0 || st.MappedBytes != 0 || st.FreeIOVA != st.TotalIOVA || st.MappingsLeft != 65535 {
		t.Errorf("Stats() after Unmap = %+v", st)
	}
}

func TestSpaceMapPoolChecks(t *testing.T) {
	s := newSpace(t, newIdentity(t, IdentityOptions{}), Options{})
	mem := anonMemory(t, 64*kiB)
	for _, tc := range []struct {
		name string
		mem  []byte
		o    MapOptions
		want error
	}{
		{"empty", mem[:0], MapOptions{}, ErrInvalid},
		{"bad permission", mem, MapOptions{Perm: 8}, ErrInvalid},
		{"bad alignment", mem, MapOptions{Align: 3 * miB}, ErrInvalid},
		{"odd length", mem[:5000], MapOptions{}, ErrMisaligned},
		{"odd address", mem[512 : 512+4096], MapOptions{}, ErrMisaligned},
	} {
		if _, err := s.MapPool(tc.mem, Owner{Name: tc.name}, tc.o); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	assertEmpty(t, s)

	m, err := s.MapPool(mem, Owner{Name: "ro"}, MapOptions{Perm: PermRead})
	if err != nil || m.Perm() != PermRead {
		t.Fatalf("a read-only mapping: %v", err)
	}
	if r, _ := s.Lookup(m.IOVA()); r.Perm != PermRead {
		t.Errorf("the ledger says %s", r.Perm)
	}
}

// assertEmpty checks that a Space and its mapper hold nothing.
func assertEmpty(t *testing.T, s *Space) {
	t.Helper()
	st := s.Stats()
	if st.Mappings != 0 || st.MappedBytes != 0 || st.FreeIOVA != st.TotalIOVA || s.Ledger().Len() != 0 || s.alloc.Allocated() != 0 {
		t.Errorf("the space is not empty: %+v, %d in the ledger, %d allocations", st, s.Ledger().Len(), s.alloc.Allocated())
	}
	if id, ok := s.mapper.(*Identity); ok && id.Len() != 0 {
		t.Errorf("the mapper holds %d mappings", id.Len())
	}
	if f, ok := s.mapper.(*faultyMapper); ok && f.Identity.Len() != 0 {
		t.Errorf("the mapper holds %d mappings", f.Identity.Len())
	}
}

func TestSpaceMapperFails(t *testing.T) {
	f := &faultyMapper{Identity: newIdentity(t, IdentityOptions{})}
	s := newSpace(t, f, Options{})
	mem := anonMemory(t, 64*kiB)

	f.mapErr = errors.New("the kernel said no")
	_, err := s.MapPool(mem, Owner{Name: "p"}, MapOptions{})
	if err == nil || !strings.Contains(err.Error(), "the kernel said no") || !strings.Contains(err.Error(), `mapping 0x10000 bytes of "p"`) {
		t.Errorf("MapPool with a failing mapper: got %v", err)
	}
	assertEmpty(t, s)
	f.mapErr = nil

	m, err := s.MapPool(mem, Owner{Name: "p"}, MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A failed unmap leaves the mapping in place, to be retried.
	f.unmapErr = errors.New("busy")
	if err := m.Unmap(); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("Unmap with a failing mapper: got %v", err)
	}
	if !m.Mapped() || s.Stats().Mappings != 1 {
		t.Error("a failed Unmap dropped the mapping from the books")
	}
	if r, ok := s.Lookup(m.IOVA()); !ok || !r.Live() {
		t.Errorf("a failed Unmap changed the ledger: %v, %v", r, ok)
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("Close with a failing mapper: got %v", err)
	}
	if _, err := s.MapPool(mem, Owner{}, MapOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("MapPool after Close: got %v", err)
	}
	f.unmapErr = nil
	if err := s.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	assertEmpty(t, s)

	// A mapper that finds nothing mapped (the kernel dropped the
	// container's mappings) counts as unmapped.
	s2 := newSpace(t, f, Options{})
	m2, err := s2.MapPool(mem, Owner{}, MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Identity.Unmap(m2.IOVA(), m2.Size()); err != nil {
		t.Fatal(err)
	}
	if err := m2.Unmap(); err != nil {
		t.Errorf("Unmap of a mapping the mapper no longer holds: %v", err)
	}
	assertEmpty(t, s2)
}

func TestSpaceMappingLimit(t *testing.T) {
	mem := anonMemory(t, 64*kiB)
	page := func(i int) []byte { return mem[i*4*kiB : (i+1)*4*kiB] }

	// The mapper's limit (dma_avail).
	s := newSpace(t, newIdentity(t, IdentityOptions{MaxMappings: 3}), Options{})
	var ms []*Mapping
	for i := range 3 {
		m, err := s.MapPool(page(i), Owner{}, MapOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	_, err := s.MapPool(page(3), Owner{Name: "one too many"}, MapOptions{})
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != 3 || le.Artificial || le.Kernel {
		t.Fatalf("a fourth mapping: got %v, want a *LimitError from the count", err)
	}
	if !strings.Contains(err.Error(), DMAEntryLimitParam) || !strings.Contains(err.Error(), "3 mappings in use") {
		t.Errorf("message %q does not name the limit and the module parameter", err)
	}
	t.Log(err)
	if err := ms[1].Unmap(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MapPool(page(3), Owner{}, MapOptions{}); err != nil {
		t.Errorf("mapping after an unmap freed a slot: %v", err)
	}

	// A lower artificial limit.
	s2 := newSpace(t, newIdentity(t, IdentityOptions{}), Options{MaxMappings: 2})
	if st := s2.Stats(); st.MappingsLeft != 2 {
		t.Errorf("MappingsLeft = %d, want 2", st.MappingsLeft)
	}
	for i := range 2 {
		if _, err := s2.MapPool(page(i), Owner{}, MapOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s2.MapPool(page(2), Owner{}, MapOptions{})
	if !errors.As(err, &le) || !le.Artificial || le.Limit != 2 || !strings.Contains(err.Error(), DMAEntryLimitParam) {
		t.Errorf("past the artificial limit: got %v", err)
	}
	// An artificial limit above the mapper's does not raise it.
	s3 := newSpace(t, newIdentity(t, IdentityOptions{MaxMappings: 5}), Options{MaxMappings: 10})
	if st := s3.Stats(); st.MappingsLeft != 5 {
		t.Errorf("MappingsLeft = %d, want the mapper's 5", st.MappingsLeft)
	}

	// The mapper refusing on its own (another user of the container took
	// the slots) is a *LimitError too, and leaves nothing behind.
	id := newIdentity(t, IdentityOptions{MaxMappings: 2})
	s4 := newSpace(t, id, Options{})
	if err := id.Map(0x7f00000000, page(10), PermRead); err != nil { // somebody else's
		t.Fatal(err)
	}
	if _, err := s4.MapPool(page(0), Owner{}, MapOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = s4.MapPool(page(1), Owner{}, MapOptions{})
	if !errors.As(err, &le) || !le.Kernel {
		t.Errorf("the mapper's own limit: got %v", err)
	}
	if st := s4.Stats(); st.Mappings != 1 || s4.alloc.Allocated() != 1 {
		t.Errorf("a refused map left %+v", st)
	}
	if err := id.Unmap(0x7f00000000, 4*kiB); err != nil {
		t.Fatal(err)
	}
	if _, err := NewIdentity(IdentityOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(id, Options{MaxMappings: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a negative MaxMappings: got %v", err)
	}
}

func TestSpaceWindow(t *testing.T) {
	id := newIdentity(t, IdentityOptions{})
	// 16 pages, straddling nothing, well inside the first range.
	s := newSpace(t, id, Options{Ranges: []Range{{0x100000, 0x10ffff}}})
	mem := anonMemory(t, 80*kiB)
	var ms []*Mapping
	for i := range 16 {
		m, err := s.MapPool(mem[i*4*kiB:(i+1)*4*kiB], Owner{ID: uint64(i)}, MapOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if m.IOVA() < 0x100000 || m.IOVA() > 0x10f000 {
			t.Errorf("mapping %d at %#x, outside the window", i, m.IOVA())
		}
		ms = append(ms, m)
	}
	_, err := s.MapPool(mem[64*kiB:], Owner{Name: "overflow"}, MapOptions{})
	var ee *ExhaustedError
	if !errors.As(err, &ee) || ee.Total != 64*kiB || ee.Free != 0 {
		t.Fatalf("past the window: got %v, want an *ExhaustedError", err)
	}
	t.Log(err)
	if id.Len() != 16 {
		t.Errorf("the exhausted MapPool left %d mappings in the mapper", id.Len())
	}
	// Free two neighbours: they coalesce, and an 8 KiB pool fits again.
	if err := errors.Join(ms[4].Unmap(), ms[5].Unmap()); err != nil {
		t.Fatal(err)
	}
	if m, err := s.MapPool(mem[64*kiB:72*kiB], Owner{}, MapOptions{}); err != nil || m.IOVA() != ms[4].IOVA() {
		t.Errorf("8 KiB into the two freed pages: %v", err)
	}

	// A window in the interrupt hole holds nothing.
	_, err = New(id, Options{Ranges: []Range{{0xfee00000, 0xfeefffff}}})
	if !errors.Is(err, ErrIOVAExhausted) || !strings.Contains(err.Error(), "0xfee00000-0xfeefffff") {
		t.Errorf("a Space in the interrupt window: got %v", err)
	}
	// A window across it loses the hole.
	s2 := newSpace(t, id, Options{Ranges: []Range{{0xfe000000, 0xffffffff}}})
	if got := s2.Ranges(); len(got) != 2 || got[0] != (Range{0xfe000000, 0xfedfffff}) || got[1] != (Range{0xfef00000, 0xffffffff}) {
		t.Errorf("Ranges() = %s", formatRanges(got))
	}
}

func TestSpaceClose(t *testing.T) {
	id := newIdentity(t, IdentityOptions{})
	s, err := New(id, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mem := anonMemory(t, 64*kiB)
	var ms []*Mapping
	for i := range 4 {
		m, err := s.MapPool(mem[i*16*kiB:(i+1)*16*kiB], Owner{ID: uint64(i)}, MapOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	if err := ms[2].Unmap(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close twice: %v", err)
	}
	if id.Len() != 0 {
		t.Errorf("Close left %d mappings in the mapper", id.Len())
	}
	for i, m := range ms {
		if m.Mapped() {
			t.Errorf("mapping %d still mapped after Close", i)
		}
		if err := m.Unmap(); err != nil {
			t.Errorf("Unmap after Close: %v", err)
		}
		if r, ok := s.Lookup(m.IOVA()); !ok || r.Live() || r.Owner.ID != uint64(i) {
			t.Errorf("the ledger after Close: %v, %v", r, ok)
		}
	}
	if n := len(s.Ledger().Recent()); n != 4 {
		t.Errorf("%d recently unmapped records, want 4", n)
	}
	if _, err := s.MapPool(mem, Owner{}, MapOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("MapPool after Close: got %v", err)
	}
}

// TestTranslateAllocs proves the I/O path's translation allocates nothing.
func TestTranslateAllocs(t *testing.T) {
	s := newSpace(t, newIdentity(t, IdentityOptions{}), Options{})
	mem := anonMemory(t, 2*miB)
	m, err := s.MapPool(mem, Owner{}, MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var sink uint64
	off := uint64(0)
	if n := testing.AllocsPerRun(1000, func() {
		off = (off + 4096 + 8) % (2 * miB)
		iova, _ := m.Translate(off)
		sink += iova
	}); n != 0 {
		t.Errorf("Translate: %v allocations per call", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		off = (off + 4096 + 8) % (2*miB - 512)
		iova, _ := m.IOVAOf(mem[off : off+512])
		sink += iova
	}); n != 0 {
		t.Errorf("IOVAOf: %v allocations per call", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		r, _ := s.Lookup(m.IOVA() + off)
		sink += r.IOVA
	}); n != 0 {
		t.Errorf("Lookup: %v allocations per call", n)
	}
	_ = sink
}

// TestSpaceConcurrent maps and unmaps from several goroutines while others
// translate and look up; run it with -race.
func TestSpaceConcurrent(t *testing.T) {
	id := newIdentity(t, IdentityOptions{})
	s := newSpace(t, id, Options{RecentUnmaps: 32})
	mem := anonMemory(t, 8*64*kiB)
	stable, err := s.MapPool(mem[:64*kiB], Owner{Name: "stable"}, MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var readers, writers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for off := uint64(0); off < 64*kiB; off += 512 {
				iova, ok := stable.Translate(off)
				if !ok {
					t.Error("Translate of a stable mapping failed")
					return
				}
				if r, ok := s.Lookup(iova); !ok || r.Owner.Name != "stable" {
					t.Errorf("Lookup(%#x) = %v, %v", iova, r, ok)
					return
				}
			}
		}
	})
	for w := 1; w < 8; w++ {
		writers.Go(func() {
			chunk := mem[w*64*kiB : (w+1)*64*kiB]
			for i := range 300 {
				m, err := s.MapPool(chunk[:(1+i%16)*4*kiB], Owner{ID: uint64(w)}, MapOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				if b, err := id.Resolve(m.IOVA(), m.Size(), PermReadWrite); err != nil || &b[0] != &chunk[0] {
					t.Errorf("the mapping resolves to other memory: %v", err)
				}
				if err := m.Unmap(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	if st := s.Stats(); st.Mappings != 1 || id.Len() != 1 {
		t.Errorf("after the writers: %+v, %d in the mapper", st, id.Len())
	}
}

func BenchmarkTranslate(b *testing.B) {
	s := newSpace(b, newIdentity(b, IdentityOptions{}), Options{})
	m, err := s.MapPool(anonMemory(b, 2*miB), Owner{}, MapOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var off, sink uint64
	for b.Loop() {
		off = (off + 4096 + 64) & (2*miB - 1)
		iova, _ := m.Translate(off)
		sink += iova
	}
	_ = sink
}

func BenchmarkIOVAOf(b *testing.B) {
	s := newSpace(b, newIdentity(b, IdentityOptions{}), Options{})
	mem := anonMemory(b, 2*miB)
	m, err := s.MapPool(mem, Owner{}, MapOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var off, sink uint64
	for b.Loop() {
		off = (off + 4096 + 64) & (2*miB - 1 - 4095)
		iova, _ := m.IOVAOf(mem[off : off+4096])
		sink += iova
	}
	_ = sink
}

func BenchmarkMapUnmapIdentity(b *testing.B) {
	s := newSpace(b, newIdentity(b, IdentityOptions{}), Options{})
	mem := anonMemory(b, 2*miB)
	b.ReportAllocs()
	for b.Loop() {
		m, err := s.MapPool(mem, Owner{Name: "bench"}, MapOptions{Align: 2 * miB})
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Unmap(); err != nil {
			b.Fatal(err)
		}
	}
}
