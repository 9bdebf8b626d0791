package iommu

import (
	"fmt"
	"slices"
	"sync"
)

// QEMUIntelRanges are the IOVA ranges VFIO reports for a device behind
// QEMU's intel-iommu with its default 39-bit address width: everything but
// the x86 interrupt window at 0xfee00000.
var QEMUIntelRanges = []Range{{0x0, 0xfedfffff}, {0xfef00000, 0x7fffffffff}}

// Default limits of an Identity mapper, those of the guest's VFIO type1.
const (
	DefaultIdentityPageSizes   = 1<<12 | 1<<21 | 1<<30 // 4 KiB, 2 MiB, 1 GiB
	DefaultIdentityMaxMappings = 65535                 // vfio_iommu_type1's default dma_entry_limit
)

// IdentityOptions configure an Identity mapper. The zero value behaves like
// VFIO type1 behind QEMU's intel-iommu.
type IdentityOptions struct {
	Ranges      []Range // default QEMUIntelRanges
	PageSizes   uint64  // default DefaultIdentityPageSizes
	MaxMappings int     // how many mappings it holds at most; default DefaultIdentityMaxMappings
}

// Identity is a Mapper without a kernel, for tests: an IOVA space in memory
// that records what is mapped where. It checks what the kernel checks
// (alignment, the IOVA ranges, overlaps, the mapping limit) and can be asked
// what an IOVA resolves to, so that tests of code that hands IOVAs to a
// device (PRP lists, queue addresses) can follow them back to the bytes,
// and a software device can do its "DMA" through Resolve.
//
// It is called identity because nothing translates: an IOVA resolves to
// exactly the bytes that were mapped at it. Its methods are safe for
// concurrent use.
type Identity struct {
	ranges    []Range
	pageSizes uint64
	pageSize  uint64
	limit     int

	mu       sync.RWMutex
	mappings []identityMapping // sorted by IOVA
}

type identityMapping struct {
	iova uint64
	mem  []byte
	perm Perm
}

func (m *identityMapping) contains(iova uint64) bool {
	return iova >= m.iova && iova-m.iova < uint64(len(m.mem))
}

// NewIdentity returns an empty Identity mapper.
func NewIdentity(o IdentityOptions) (*Identity, error) {
	m := &Identity{
		ranges:    slices.Clone(o.Ranges),
		pageSizes: o.PageSizes,
		limit:     o.MaxMappings,
	}
	if m.ranges == nil {
		m.ranges = slices.Clone(QEMUIntelRanges)
	}
	if m.pageSizes == 0 {
		m.pageSizes = DefaultIdentityPageSizes
	}
	if m.limit == 0 {
		m.limit = DefaultIdentityMaxMappings
	}
	m.pageSize = Limits{PageSizes: m.pageSizes}.PageSize()
	if m.limit < 0 {
		return nil, fmt.Errorf("making an identity mapper: MaxMappings %d is negative: %w", m.limit, ErrInvalid)
	}
	for _, r := range m.ranges {
		if r.Start > r.End {
			return nil, fmt.Errorf("making an identity mapper: range %s ends before it starts: %w", r, ErrInvalid)
		}
	}
	slices.SortFunc(m.ranges, func(a, b Range) int { return cmpUint64(a.Start, b.Start) })
	return m, nil
}

// Ranges returns the IOVA ranges the mapper accepts.
func (m *Identity) Ranges() []Range { return slices.Clone(m.ranges) }

// Limits returns the page sizes and how many more mappings the mapper
// accepts, like the kernel's dma_avail.
func (m *Identity) Limits() Limits {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return Limits{PageSizes: m.pageSizes, MaxMappings: m.limit - len(m.mappings)}
}

// Map records mem as mapped at iova with permission perm.
func (m *Identity) Map(iova uint64, mem []byte, perm Perm) error {
	size := uint64(len(mem))
	what := fmt.Sprintf("mapping iova 0x%x (0x%x bytes)", iova, size)
	switch {
	case size == 0:
		return fmt.Errorf("%s: no memory given: %w", what, ErrInvalid)
	case !perm.valid():
		return fmt.Errorf("%s: permission %s is not read, write or both: %w", what, perm, ErrInvalid)
	case iova%m.pageSize != 0 || size%m.pageSize != 0 || addressOf(mem)%uintptr(m.pageSize) != 0:
		return fmt.Errorf("%s at address 0x%x: page size 0x%x: %w", what, addressOf(mem), m.pageSize, ErrMisaligned)
	case !slices.ContainsFunc(m.ranges, func(r Range) bool { return r.Covers(iova, size) }):
		return fmt.Errorf("%s: %w %s", what, ErrOutOfRange, formatRanges(m.ranges))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.mappings) >= m.limit {
		return fmt.Errorf("%s: %w", what, &LimitError{Limit: m.limit, Kernel: true})
	}
	i := m.search(func(start uint64) bool { return start >= iova })
	last := iova + size - 1
	if (i > 0 && m.mappings[i-1].contains(iova)) || (i < len(m.mappings) && m.mappings[i].iova <= last) {
		return fmt.Errorf("%s: %w", what, ErrOverlap)
	}
	m.mappings = slices.Insert(m.mappings, i, identityMapping{iova: iova, mem: mem[:size:size], perm: perm})
	return nil
}

// Unmap removes the mapping made at iova with size bytes.
func (m *Identity) Unmap(iova, size uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := m.search(func(start uint64) bool { return start >= iova })
	switch {
	case i == len(m.mappings) || m.mappings[i].iova != iova:
		return fmt.Errorf("unmapping iova 0x%x (0x%x bytes): %w", iova, size, ErrNotMapped)
	case uint64(len(m.mappings[i].mem)) != size:
		return fmt.Errorf("unmapping iova 0x%x (0x%x bytes): the mapping there is 0x%x bytes, and mappings are removed whole: %w",
			iova, size, len(m.mappings[i].mem), ErrInvalid)
	}
	m.mappings = slices.Delete(m.mappings, i, i+1)
	return nil
}

// Resolve returns the size bytes mapped from iova, as a device doing DMA
// with the access in perm would reach them: the very memory that was
// mapped, not a copy. It fails with ErrNotMapped when any of them is not
// mapped (a range that runs from one mapping into the next is refused too,
// since the two are unrelated memory) and with ErrPermission when the
// mapping does not allow the access.
func (m *Identity) Resolve(iova, size uint64, perm Perm) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	i, ok := m.find(iova)
	if !ok {
		return nil, fmt.Errorf("DMA to iova 0x%x: %w", iova, ErrNotMapped)
	}
	e := &m.mappings[i]
	off := iova - e.iova
	if size > uint64(len(e.mem))-off {
		return nil, fmt.Errorf("DMA of 0x%x bytes to iova 0x%x: the mapping ends at iova 0x%x: %w",
			size, iova, e.iova+uint64(len(e.mem))-1, ErrNotMapped)
	}
	if perm&^e.perm != 0 {
		return nil, fmt.Errorf("DMA %s of iova 0x%x: the mapping allows %s: %w", perm, iova, e.perm, ErrPermission)
	}
	return e.mem[off : off+size : off+size], nil
}

// Mapped reports whether iova is mapped, and if so the range of the
// mapping that holds it and its permission.
func (m *Identity) Mapped(iova uint64) (Range, Perm, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	i, ok := m.find(iova)
	if !ok {
		return Range{}, 0, false
	}
	e := &m.mappings[i]
	return Range{e.iova, e.iova + uint64(len(e.mem)) - 1}, e.perm, true
}

// Len returns the number of mappings.
func (m *Identity) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.mappings)
}

// find returns the index of the mapping holding iova. m.mu must be held.
func (m *Identity) find(iova uint64) (int, bool) {
	i := m.search(func(start uint64) bool { return start > iova })
	if i > 0 && m.mappings[i-1].contains(iova) {
		return i - 1, true
	}
	return 0, false
}

// search returns the index of the first mapping whose start satisfies
// above, false for a prefix of the mappings and true for the rest. m.mu
// must be held.
func (m *Identity) search(above func(start uint64) bool) int {
	lo, hi := 0, len(m.mappings)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if above(m.mappings[mid].iova) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}
