package iommu

import (
	"fmt"
	"math/bits"
	"strings"
)

// Mapper is one IOMMU address space as the kernel (or a fake) sees it: it
// maps memory at IOVAs the caller chooses and unmaps it again. It has no
// policy; Space chooses the IOVAs and keeps the books.
//
// Implementations: VFIO (a VFIO type1 container) and Identity (no kernel,
// for tests). iommufd is the next one.
type Mapper interface {
	// Map makes mem reachable by DMA at iova with permission perm. iova,
	// len(mem) and mem's address are aligned to the smallest IOMMU page
	// size; the range lies in Ranges. mem must stay mapped in the process
	// (and must not be Go heap memory for a real IOMMU) until Unmap.
	// Map is atomic: on error nothing is mapped.
	Map(iova uint64, mem []byte, perm Perm) error
	// Unmap removes the mapping made by Map at iova with size bytes: the
	// whole mapping, exactly. An error wrapping ErrNotMapped means there
	// was none.
	Unmap(iova, size uint64) error
	// Ranges returns the IOVA ranges the mapper accepts, sorted and not
	// overlapping. The caller may keep and change the slice.
	Ranges() []Range
	// Limits returns the page sizes and the mapping limit.
	Limits() Limits
}

// Limits are what an IOMMU allows besides its IOVA ranges.
type Limits struct {
	// PageSizes is a bitmap of the IOMMU page sizes: bit n set means 2^n
	// bytes. Mappings are aligned to the smallest.
	PageSizes uint64
	// MaxMappings is how many more mappings the mapper accepts (the
	// kernel's dma_avail), or 0 when it does not say.
	MaxMappings int
}

// PageSize returns the smallest IOMMU page size, or 0 when PageSizes is
// empty.
func (l Limits) PageSize() uint64 {
	if l.PageSizes == 0 {
		return 0
	}
	return 1 << bits.TrailingZeros64(l.PageSizes)
}

// Perm says what a device may do with DMA-mapped memory.
type Perm uint8

// DMA permissions.
const (
	PermRead      Perm = 1 << iota // the device may read the memory
	PermWrite                      // the device may write the memory
	PermReadWrite = PermRead | PermWrite
)

func (p Perm) valid() bool { return p != 0 && p&^PermReadWrite == 0 }

func (p Perm) String() string {
	switch p {
	case PermRead:
		return "read"
	case PermWrite:
		return "write"
	case PermReadWrite:
		return "read-write"
	}
	return fmt.Sprintf("perm(%#x)", uint8(p))
}

// Range is a range of IOVAs. End is inclusive, as the kernel reports
// ranges, so that a range can reach the top of the 64-bit space.
type Range struct {
	Start, End uint64
}

// Size returns the number of bytes in r, or 0 for the whole 64-bit space
// (which does not fit).
func (r Range) Size() uint64 { return r.End - r.Start + 1 }

// Contains reports whether iova lies in r.
func (r Range) Contains(iova uint64) bool { return iova >= r.Start && iova <= r.End }

// Covers reports whether the size bytes from iova lie in r.
func (r Range) Covers(iova, size uint64) bool {
	if size == 0 {
		return false
	}
	last := iova + size - 1
	return last >= iova && iova >= r.Start && last <= r.End
}

func (r Range) String() string { return fmt.Sprintf("0x%x-0x%x", r.Start, r.End) }

// formatRanges spells ranges the way the kernel's messages do:
// [0x0-0xfedfffff 0xfef00000-0x7fffffffff].
func formatRanges(ranges []Range) string {
	parts := make([]string, len(ranges))
	for i, r := range ranges {
		parts[i] = r.String()
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// isPow2 reports whether x is a power of two (and not 0).
func isPow2(x uint64) bool { return x != 0 && x&(x-1) == 0 }

// alignUp rounds x up to a multiple of align (a power of two); ok is false
// when that overflows.
func alignUp(x, align uint64) (uint64, bool) {
	y := (x + align - 1) &^ (align - 1)
	return y, y >= x
}
