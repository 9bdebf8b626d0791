package iommu

import (
	"errors"
	"fmt"
	"os"
)

// DMAEntryLimitParam is the kernel module parameter that caps how many DMA
// mappings one VFIO type1 container may hold (65535 by default). Raise it
// with `modprobe vfio_iommu_type1 dma_entry_limit=N`, or on the kernel
// command line as vfio_iommu_type1.dma_entry_limit=N.
const DMAEntryLimitParam = "vfio_iommu_type1.dma_entry_limit"

var (
	// ErrIOVAExhausted means no free IOVA range is large enough (with the
	// alignment asked for). Errors that wrap it are *ExhaustedError.
	ErrIOVAExhausted = errors.New("IOVA space exhausted")

	// ErrMappingLimit means the DMA-mapping limit is reached: the kernel
	// counts mappings, not bytes (dma_avail). Errors that wrap it are
	// *LimitError.
	ErrMappingLimit = errors.New("DMA mapping limit reached")

	// ErrNotMapped means an IOVA is not (or no longer) mapped.
	ErrNotMapped = errors.New("IOVA not mapped")

	// ErrOverlap means an IOVA range overlaps one that is already mapped
	// or allocated.
	ErrOverlap = errors.New("IOVA range overlaps an existing mapping")

	// ErrOutOfRange means an IOVA range lies outside every range the
	// IOMMU accepts.
	ErrOutOfRange = errors.New("IOVA range outside the IOMMU's IOVA ranges")

	// ErrMisaligned means an IOVA, a size or a memory address is not
	// aligned to the IOMMU page size (or to the alignment asked for).
	ErrMisaligned = errors.New("not aligned to the IOMMU page size")

	// ErrPermission means a DMA access is not allowed by the mapping's
	// permission (a device write to memory mapped read-only).
	ErrPermission = errors.New("DMA access not allowed by the mapping's permission")

	// ErrInvalid means an argument makes no sense: an empty buffer, a
	// permission that is neither read nor write, an alignment that is not
	// a power of two.
	ErrInvalid = errors.New("invalid argument")

	// ErrClosed is returned by a closed Space. It is os.ErrClosed, so
	// either can be tested for.
	ErrClosed = os.ErrClosed
)

// ExhaustedError says why an IOVA allocation failed. It matches
// ErrIOVAExhausted with errors.Is.
type ExhaustedError struct {
	Size    uint64 // bytes asked for, rounded up to the IOMMU page size
	Align   uint64 // alignment asked for
	Free    uint64 // bytes of IOVA space still free, in all
	Largest uint64 // the largest free extent, before alignment
	Total   uint64 // bytes of IOVA space the allocator manages
}

func (e *ExhaustedError) Error() string {
	if e.Free == 0 {
		return fmt.Sprintf("%s: no free range of 0x%x bytes: all 0x%x bytes are in use", ErrIOVAExhausted, e.Size, e.Total)
	}
	return fmt.Sprintf("%s: no free range of 0x%x bytes aligned to 0x%x (0x%x of 0x%x bytes free, the largest free extent is 0x%x bytes)",
		ErrIOVAExhausted, e.Size, e.Align, e.Free, e.Total, e.Largest)
}

// Is makes errors.Is(err, ErrIOVAExhausted) true.
func (e *ExhaustedError) Is(target error) bool { return target == ErrIOVAExhausted }

// LimitError says that a Space holds as many DMA mappings as it may. It
// matches ErrMappingLimit with errors.Is.
type LimitError struct {
	// Limit is how many mappings the Space may hold: the kernel's
	// dma_avail when the Space was made, or Options.MaxMappings when
	// that is lower.
	Limit int
	// Artificial is true when Limit comes from Options.MaxMappings.
	Artificial bool
	// Kernel is true when the kernel itself refused the mapping (ENOSPC
	// from VFIO_IOMMU_MAP_DMA), whatever this package's count said: other
	// users of the same container hold mappings too.
	Kernel bool
}

func (e *LimitError) Error() string {
	switch {
	case e.Kernel:
		return fmt.Sprintf("%s: the container holds as many DMA mappings as the kernel allows; raise the module parameter %s (65535 by default) or map fewer, larger regions", ErrMappingLimit, DMAEntryLimitParam)
	case e.Artificial:
		return fmt.Sprintf("%s: %d mappings in use, the limit set by Options.MaxMappings (below the kernel's, which is the module parameter %s)", ErrMappingLimit, e.Limit, DMAEntryLimitParam)
	}
	return fmt.Sprintf("%s: %d mappings in use, all the kernel allows (dma_avail); raise the module parameter %s or map fewer, larger regions", ErrMappingLimit, e.Limit, DMAEntryLimitParam)
}

// Is makes errors.Is(err, ErrMappingLimit) true.
func (e *LimitError) Is(target error) bool { return target == ErrMappingLimit }
