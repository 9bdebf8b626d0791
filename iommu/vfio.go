package iommu

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/vfio"
)

// defaultRanges are the IOVAs assumed when the kernel reports no ranges
// (Linux before 5.4): the 39 bits every x86 IOMMU translates, without the
// interrupt window at 0xfee00000.
var defaultRanges = []Range{{0x0, 0xfedfffff}, {0xfef00000, 1<<39 - 1}}

// VFIO is a Mapper over a VFIO type1 container: Map and Unmap are
// VFIO_IOMMU_MAP_DMA and VFIO_IOMMU_UNMAP_DMA. It does not own the
// container. Its methods are safe for concurrent use.
type VFIO struct {
	c      *vfio.Container
	info   vfio.IOMMUInfo
	ranges []Range
	limits Limits
}

// NewVFIO returns a Mapper over c, whose IOMMU type must be set. It takes
// the IOVA ranges, the IOMMU page sizes and the number of DMA mappings
// still available (dma_avail) from VFIO_IOMMU_GET_INFO, now: set every
// group to the container first, since a group that joins later can take
// IOVA ranges away (then make a new mapper).
func NewVFIO(c *vfio.Container) (*VFIO, error) {
	info, err := c.IOMMUInfo()
	if err != nil {
		return nil, fmt.Errorf("making a vfio DMA mapper: %w", err)
	}
	v := &VFIO{c: c, info: info}
	for _, r := range info.IOVARanges {
		v.ranges = append(v.ranges, Range{r.Start, r.End})
	}
	if len(v.ranges) == 0 {
		v.ranges = append(v.ranges, defaultRanges...)
	}
	v.limits.PageSizes = info.PageSizes
	if v.limits.PageSizes == 0 {
		v.limits.PageSizes = 1 << 12
	}
	if info.HasDMAAvail {
		v.limits.MaxMappings = int(info.DMAAvail)
	}
	return v, nil
}

// Container returns the container the mapper maps in.
func (v *VFIO) Container() *vfio.Container { return v.c }

// Info returns what VFIO_IOMMU_GET_INFO said when the mapper was made.
func (v *VFIO) Info() vfio.IOMMUInfo { return v.info }

// Ranges returns the container's IOVA ranges as the kernel reported them
// when the mapper was made.
func (v *VFIO) Ranges() []Range { return append([]Range(nil), v.ranges...) }

// Limits returns the IOMMU page sizes and dma_avail as the kernel reported
// them when the mapper was made; DMAAvail asks again.
func (v *VFIO) Limits() Limits { return v.limits }

// DMAAvail asks the kernel how many more DMA mappings the container may
// hold now. ok is false when the kernel does not say (before Linux 5.10).
func (v *VFIO) DMAAvail() (n int, ok bool, err error) {
	info, err := v.c.IOMMUInfo()
	if err != nil {
		return 0, false, err
	}
	return int(info.DMAAvail), info.HasDMAAvail, nil
}

// Map maps mem at iova (VFIO_IOMMU_MAP_DMA). Besides the kernel's errno,
// the error matches ErrOverlap (EEXIST), ErrMappingLimit (ENOSPC, as a
// *LimitError) or ErrOutOfRange.
func (v *VFIO) Map(iova uint64, mem []byte, perm Perm) error {
	var p vfio.DMAPerm
	if perm&PermRead != 0 {
		p |= vfio.DMARead
	}
	if perm&PermWrite != 0 {
		p |= vfio.DMAWrite
	}
	if !perm.valid() {
		return fmt.Errorf("mapping iova 0x%x (0x%x bytes): permission %s is not read, write or both: %w", iova, len(mem), perm, ErrInvalid)
	}
	err := v.c.MapDMA(mem, iova, p)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return &kernelError{err: err, kind: ErrOverlap}
	case errors.Is(err, unix.ENOSPC):
		return &kernelError{err: err, kind: &LimitError{Limit: v.limits.MaxMappings, Kernel: true},
			note: "raise the module parameter " + DMAEntryLimitParam + " (65535 by default) or map fewer, larger regions"}
	case errors.Is(err, vfio.ErrIOVAOutOfRange):
		return &kernelError{err: err, kind: ErrOutOfRange}
	}
	return err
}

// Unmap removes the mapping at iova of size bytes (VFIO_IOMMU_UNMAP_DMA).
// When the container has lost its IOMMU (its last group left, or it was
// closed) the kernel has dropped every mapping, so there is nothing left to
// do and Unmap returns nil. When the kernel finds nothing mapped there the
// error matches ErrNotMapped.
func (v *VFIO) Unmap(iova, size uint64) error {
	if v.c.IOMMU() == 0 {
		return nil
	}
	n, err := v.c.UnmapDMA(iova, size)
	switch {
	case err != nil:
		return err
	case n == 0:
		return fmt.Errorf("unmapping iova 0x%x (0x%x bytes): the kernel has no mapping there: %w", iova, size, ErrNotMapped)
	case n != size:
		return fmt.Errorf("unmapping iova 0x%x (0x%x bytes): the kernel unmapped 0x%x bytes, so the range held other mappings", iova, size, n)
	}
	return nil
}

// kernelError is an error of the kernel's that also matches one of this
// package's sentinels or typed errors, without saying so twice.
type kernelError struct {
	err  error
	kind error
	note string // a remedy to add to err's message
}

func (e *kernelError) Error() string {
	if e.note == "" {
		return e.err.Error()
	}
	return e.err.Error() + "; " + e.note
}

func (e *kernelError) Unwrap() []error { return []error{e.err, e.kind} }
