package iommu

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Space. The zero value takes everything from the
// Mapper.
type Options struct {
	// Ranges, when not nil, restricts the Space to these IOVAs (intersected
	// with the mapper's ranges): to share one container's address space
	// between several Spaces, or to test exhaustion with a small window.
	Ranges []Range
	// MaxMappings, when positive and below the mapper's limit, caps the
	// number of live mappings: to leave some of the kernel's
	// dma_entry_limit to another user of the container, or to test the
	// limit without making 65535 mappings.
	MaxMappings int
	// RecentUnmaps is how many unmapped records the ledger keeps:
	// 0 means DefaultRecent, a negative number none.
	RecentUnmaps int
}

// MapOptions configure one MapPool. The zero value maps read-write at an
// IOVA aligned to the IOMMU page size.
type MapOptions struct {
	// Perm is what the device may do with the memory; 0 means
	// PermReadWrite.
	Perm Perm
	// Align is the IOVA alignment, a power of two; 0 (or anything below
	// the IOMMU page size) means the page size. A pool of 2 MiB hugepages
	// asks for 2 MiB so that the IOMMU can map it with 2 MiB pages.
	Align uint64
}

// Space is one DMA address space: a Mapper, the IOVA allocator over its
// ranges, the count of DMA mappings against the mapper's limit, and the
// ledger of what is mapped where.
//
// MapPool, Mapping.Unmap and Close are serialised by a mutex: they are
// control-path operations (the kernel pins or unpins pages under them).
// The I/O path only translates through a Mapping it already holds, which
// takes no lock. Ledger lookups take the ledger's read lock only. All
// methods are safe for concurrent use.
type Space struct {
	mapper   Mapper
	pageSize uint64
	ledger   *Ledger

	mu         sync.Mutex
	closed     bool
	alloc      *Allocator
	mappings   map[uint64]*Mapping // live mappings by IOVA
	limit      int                 // mappings allowed; 0 means no limit known
	artificial bool                // limit comes from Options.MaxMappings
	bytes      uint64              // bytes mapped
}

// openMappings counts the live mappings of every Space in the process, so
// that tests can fail when one leaks.
var openMappings atomic.Int64

// New returns an empty Space over m. It does not own m: closing the Space
// unmaps what it mapped and leaves m as it was.
func New(m Mapper, o Options) (*Space, error) {
	const what = "making a DMA address space"
	limits := m.Limits()
	page := limits.PageSize()
	if page == 0 {
		return nil, fmt.Errorf("%s: the mapper reports no IOMMU page size: %w", what, ErrInvalid)
	}
	if o.MaxMappings < 0 {
		return nil, fmt.Errorf("%s: MaxMappings %d is negative: %w", what, o.MaxMappings, ErrInvalid)
	}
	ranges := m.Ranges()
	if o.Ranges != nil {
		ranges = intersect(ranges, o.Ranges)
	}
	alloc, err := NewAllocator(ranges, page)
	if err != nil {
		if o.Ranges != nil {
			return nil, fmt.Errorf("%s in %s of the mapper's %s: %w", what, formatRanges(o.Ranges), formatRanges(m.Ranges()), err)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	recent := o.RecentUnmaps
	if recent == 0 {
		recent = DefaultRecent
	}
	s := &Space{
		mapper:   m,
		pageSize: page,
		ledger:   newLedger(recent),
		alloc:    alloc,
		mappings: make(map[uint64]*Mapping),
		limit:    limits.MaxMappings,
	}
	if o.MaxMappings > 0 && (s.limit <= 0 || o.MaxMappings < s.limit) {
		s.limit, s.artificial = o.MaxMappings, true
	}
	return s, nil
}

// intersect returns the IOVAs that lie in both a and b.
func intersect(a, b []Range) []Range {
	var out []Range
	for _, x := range a {
		for _, y := range b {
			if lo, hi := max(x.Start, y.Start), min(x.End, y.End); lo <= hi {
				out = append(out, Range{lo, hi})
			}
		}
	}
	return out
}

// PageSize returns the IOMMU page size the Space maps in.
func (s *Space) PageSize() uint64 { return s.pageSize }

// Ranges returns the IOVA ranges the Space allocates from: the mapper's
// (within Options.Ranges), in whole pages, without the first page.
func (s *Space) Ranges() []Range {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alloc.Ranges()
}

// Ledger returns the Space's ledger. It stays valid after Close, with every
// mapping among the recently unmapped.
func (s *Space) Ledger() *Ledger { return s.ledger }

// Lookup is Ledger().Lookup.
func (s *Space) Lookup(iova uint64) (Record, bool) { return s.ledger.Lookup(iova) }

// Stats are a Space's counts.
type Stats struct {
	Mappings     int    // live mappings
	MappedBytes  uint64 // bytes they map
	MappingsLeft int    // mappings that may still be made; -1 when no limit is known
	FreeIOVA     uint64 // bytes of IOVA space not allocated
	TotalIOVA    uint64 // bytes of IOVA space the Space allocates from
}

// Stats returns the Space's counts.
func (s *Space) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Mappings:     len(s.mappings),
		MappedBytes:  s.bytes,
		MappingsLeft: -1,
		FreeIOVA:     s.alloc.FreeBytes(),
		TotalIOVA:    s.alloc.TotalBytes(),
	}
	if s.limit > 0 {
		st.MappingsLeft = s.limit - len(s.mappings)
	}
	return st
}

// MapPool maps the whole of mem at a newly allocated IOVA and records it in
// the ledger under owner. mem's address and length must be multiples of the
// IOMMU page size. mem must be memory the process mapped itself (an mmap, a
// hugetlb memfd), never Go heap memory, and must stay mapped until the
// Mapping is unmapped: the device reads and writes it behind the Go
// runtime's back.
//
// On error nothing is left mapped, allocated or recorded. Errors match
// ErrIOVAExhausted (*ExhaustedError) when no IOVA range fits,
// ErrMappingLimit (*LimitError) when the Space holds as many mappings as it
// may, ErrMisaligned, ErrInvalid, ErrClosed, or carry the mapper's error.
func (s *Space) MapPool(mem []byte, owner Owner, o MapOptions) (*Mapping, error) {
	size := uint64(len(mem))
	what := fmt.Sprintf("mapping 0x%x bytes of %s", size, owner)
	perm := o.Perm
	if perm == 0 {
		perm = PermReadWrite
	}
	switch {
	case size == 0:
		return nil, fmt.Errorf("%s: no memory given: %w", what, ErrInvalid)
	case !perm.valid():
		return nil, fmt.Errorf("%s: permission %s is not read, write or both: %w", what, perm, ErrInvalid)
	case size%s.pageSize != 0:
		return nil, fmt.Errorf("%s: the length is not a multiple of the IOMMU page size 0x%x: %w", what, s.pageSize, ErrMisaligned)
	case addressOf(mem)%uintptr(s.pageSize) != 0:
		return nil, fmt.Errorf("%s: the memory at 0x%x does not start on an IOMMU page (0x%x bytes): %w", what, addressOf(mem), s.pageSize, ErrMisaligned)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("%s: %w", what, ErrClosed)
	}
	if s.limit > 0 && len(s.mappings) >= s.limit {
		return nil, fmt.Errorf("%s: %w", what, &LimitError{Limit: s.limit, Artificial: s.artificial})
	}
	iova, err := s.alloc.Alloc(size, o.Align)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := s.mapper.Map(iova, mem, perm); err != nil {
		s.alloc.Free(iova) // cannot fail: iova was just allocated
		return nil, fmt.Errorf("%s at iova 0x%x: %w", what, iova, err)
	}
	m := &Mapping{
		space: s,
		mem:   mem[:size:size],
		base:  addressOf(mem),
		iova:  iova,
		size:  size,
		owner: owner,
		perm:  perm,
	}
	rec := Record{IOVA: iova, Size: size, Owner: owner, Perm: perm, Mapped: time.Now()}
	if err := s.ledger.add(rec); err != nil {
		// The allocator and the ledger disagree: a bug, but not one to
		// leave a mapping behind for.
		uerr := s.mapper.Unmap(iova, size)
		if uerr == nil {
			s.alloc.Free(iova) // else the IOVA stays allocated: it is still mapped
		}
		return nil, fmt.Errorf("%s at iova 0x%x: %w", what, iova, errors.Join(err, uerr))
	}
	s.mappings[iova] = m
	s.bytes += size
	openMappings.Add(1)
	return m, nil
}

// unmap removes m from the mapper, the allocator and the live ledger.
// s.mu must be held. When the mapper fails, m stays mapped and recorded,
// and a later Unmap or Close tries again. A mapper that finds nothing
// mapped (the kernel dropped the container's mappings when its last group
// left) counts as done.
func (s *Space) unmap(m *Mapping) error {
	if m.gone.Load() {
		return nil
	}
	if err := s.mapper.Unmap(m.iova, m.size); err != nil && !errors.Is(err, ErrNotMapped) {
		return fmt.Errorf("unmapping %s at iova 0x%x: %w", m.owner, m.iova, err)
	}
	m.gone.Store(true)
	delete(s.mappings, m.iova)
	s.bytes -= m.size
	openMappings.Add(-1)
	aerr := s.alloc.Free(m.iova)
	_, lerr := s.ledger.remove(m.iova, time.Now())
	if err := errors.Join(aerr, lerr); err != nil {
		return fmt.Errorf("unmapping %s at iova 0x%x: %w", m.owner, m.iova, err)
	}
	return nil
}

// Close unmaps every mapping still live and refuses new ones. It does not
// close the mapper (the container). Mappings the mapper fails to unmap stay
// live, and the error names them; Close may be called again to retry, and
// returns nil once nothing is left.
func (s *Space) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for _, iova := range slices.Sorted(maps.Keys(s.mappings)) {
		if err := s.unmap(s.mappings[iova]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing the DMA address space: %w", err)
	}
	return nil
}

// Mapping is a region of memory mapped for DMA by Space.MapPool. Its
// accessors never lock or allocate, so that building a command's PRP list
// can translate through it on the I/O path.
type Mapping struct {
	space *Space
	mem   []byte
	base  uintptr // address of mem[0]
	iova  uint64
	size  uint64
	owner Owner
	perm  Perm
	gone  atomic.Bool // set once unmapped
}

// IOVA returns the IOVA of the first byte.
func (m *Mapping) IOVA() uint64 { return m.iova }

// Size returns the number of bytes mapped.
func (m *Mapping) Size() uint64 { return m.size }

// Bytes returns the mapped memory.
func (m *Mapping) Bytes() []byte { return m.mem }

// Owner returns the owner the mapping was recorded under.
func (m *Mapping) Owner() Owner { return m.owner }

// Perm returns what the device may do with the memory.
func (m *Mapping) Perm() Perm { return m.perm }

// Mapped reports whether the mapping is still in place.
func (m *Mapping) Mapped() bool { return !m.gone.Load() }

// Translate returns the IOVA of the byte at offset off. ok is false when
// off lies outside the mapping or the mapping is gone.
func (m *Mapping) Translate(off uint64) (iova uint64, ok bool) {
	if off >= m.size || m.gone.Load() {
		return 0, false
	}
	return m.iova + off, true
}

// IOVAOf returns the IOVA of b's first byte. b must be a non-empty
// sub-slice of the mapped memory (of Bytes, or of the memory given to
// MapPool); ok is false otherwise, or when the mapping is gone.
func (m *Mapping) IOVAOf(b []byte) (iova uint64, ok bool) {
	off := uint64(addressOf(b) - m.base) // below base wraps to a huge offset
	n := uint64(len(b))
	if n == 0 || off >= m.size || n > m.size-off || m.gone.Load() {
		return 0, false
	}
	return m.iova + off, true
}

// Unmap removes the mapping: from the IOMMU, then its IOVA range goes back
// to the allocator and its record to the ledger's recently unmapped ones.
// The device must be done with the memory. Unmap after Unmap (or after the
// Space closed) returns nil. When the mapper fails, the mapping stays in
// place and Unmap may be called again.
func (m *Mapping) Unmap() error {
	s := m.space
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unmap(m)
}

func (m *Mapping) String() string {
	return fmt.Sprintf("%s at iova 0x%x-0x%x", m.owner, m.iova, m.iova+m.size-1)
}
