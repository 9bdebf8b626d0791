package iommu

import (
	"fmt"
	"slices"
)

// Allocator hands out IOVA ranges from a set of usable ranges.
//
//   - Every range it hands out lies inside the ranges it was made with, is
//     a multiple of the page size long, and starts on the page size or the
//     larger power-of-two alignment asked for.
//   - The first page of the IOVA space is never handed out, so an IOVA of
//     0 is always a bug (an unset field) and never a real buffer.
//   - Freed ranges coalesce with their free neighbours: once everything is
//     freed the allocator is as it was made.
//   - It searches next-fit: from just past the last range it handed out,
//     wrapping around at the end. A freed IOVA is thus reused as late as
//     possible, so a device that still uses a stale IOVA hits an unmapped
//     page (a DMA fault the ledger can attribute) rather than somebody
//     else's new buffer.
//
// Alloc and Free cost O(log n + n) for n free extents (the search and the
// slice insert). An Allocator is not safe for concurrent use: Space holds
// its lock around it.
type Allocator struct {
	pageSize uint64
	ranges   []Range           // the usable ranges, normalised
	free     []Range           // free extents, sorted by Start, never adjacent
	used     map[uint64]uint64 // allocated ranges: start → size
	freeSize uint64            // bytes free
	total    uint64            // bytes managed
	cursor   uint64            // where the next search starts
}

// NewAllocator returns an allocator over ranges for an IOMMU whose smallest
// page is pageSize bytes (a power of two). The ranges are trimmed to whole
// pages, the first page of the IOVA space is left out, and overlapping or
// adjacent ranges are merged. It fails when nothing usable is left.
func NewAllocator(ranges []Range, pageSize uint64) (*Allocator, error) {
	if !isPow2(pageSize) {
		return nil, fmt.Errorf("making an IOVA allocator: page size 0x%x is not a power of two: %w", pageSize, ErrInvalid)
	}
	usable, err := normaliseRanges(ranges, pageSize)
	if err != nil {
		return nil, fmt.Errorf("making an IOVA allocator: %w", err)
	}
	if len(usable) == 0 {
		return nil, fmt.Errorf("making an IOVA allocator: the ranges %s hold no whole page of 0x%x bytes above IOVA 0: %w",
			formatRanges(ranges), pageSize, ErrIOVAExhausted)
	}
	a := &Allocator{
		pageSize: pageSize,
		ranges:   usable,
		free:     slices.Clone(usable),
		used:     make(map[uint64]uint64),
	}
	for _, r := range usable {
		a.total += r.Size()
	}
	a.freeSize = a.total
	return a, nil
}

// normaliseRanges trims each range to whole pages, removes the first page
// of the IOVA space, sorts the ranges and merges those that overlap or
// touch.
func normaliseRanges(ranges []Range, pageSize uint64) ([]Range, error) {
	mask := pageSize - 1
	var out []Range
	for _, r := range ranges {
		if r.Start > r.End {
			return nil, fmt.Errorf("range %s ends before it starts: %w", r, ErrInvalid)
		}
		start, ok := alignUp(max(r.Start, pageSize), pageSize)
		if !ok {
			continue
		}
		end := r.End
		if end&mask != mask {
			if end < pageSize {
				continue
			}
			end = end&^mask - 1
		}
		if start > end {
			continue
		}
		out = append(out, Range{start, end})
	}
	slices.SortFunc(out, func(a, b Range) int { return cmpUint64(a.Start, b.Start) })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && (merged[n-1].End == ^uint64(0) || r.Start <= merged[n-1].End+1) {
			merged[n-1].End = max(merged[n-1].End, r.End)
			continue
		}
		merged = append(merged, r)
	}
	return merged, nil
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// PageSize returns the allocation granule.
func (a *Allocator) PageSize() uint64 { return a.pageSize }

// Ranges returns the usable ranges: the ones given, trimmed to whole pages
// and without the first page.
func (a *Allocator) Ranges() []Range { return slices.Clone(a.ranges) }

// FreeBytes returns the number of bytes not allocated.
func (a *Allocator) FreeBytes() uint64 { return a.freeSize }

// TotalBytes returns the number of bytes the allocator manages.
func (a *Allocator) TotalBytes() uint64 { return a.total }

// Allocated returns the number of ranges handed out and not freed.
func (a *Allocator) Allocated() int { return len(a.used) }

// FreeExtents returns the free extents, sorted.
func (a *Allocator) FreeExtents() []Range { return slices.Clone(a.free) }

// Alloc returns the start of a free IOVA range of size bytes (rounded up to
// the page size) aligned to align: 0 means the page size, and alignments
// below it are raised to it; other values must be powers of two. When no
// free range fits it returns an *ExhaustedError.
func (a *Allocator) Alloc(size, align uint64) (uint64, error) {
	size, align, err := a.check(size, align)
	if err != nil {
		return 0, err
	}
	n := len(a.free)
	if n == 0 {
		return 0, a.exhausted(size, align)
	}
	// The first free extent that reaches the cursor; past the last one,
	// start over at the bottom.
	first, _ := slices.BinarySearchFunc(a.free, a.cursor, func(r Range, c uint64) int {
		if r.End < c {
			return -1
		}
		return 1
	})
	if first == n {
		first, a.cursor = 0, 0
	}
	// n+1 steps: the first extent is visited again from its start after
	// wrapping, for the part below the cursor.
	for k := 0; k <= n; k++ {
		i := (first + k) % n
		ext := a.free[i]
		lo := ext.Start
		if k == 0 {
			lo = max(lo, a.cursor)
		}
		if start, ok := fit(lo, ext.End, size, align); ok {
			a.take(i, start, size)
			a.cursor = start + size // 0 at the very top: the next search starts over
			return start, nil
		}
	}
	return 0, a.exhausted(size, align)
}

// check validates and normalises Alloc's arguments.
func (a *Allocator) check(size, align uint64) (uint64, uint64, error) {
	if size == 0 {
		return 0, 0, fmt.Errorf("allocating IOVA: size 0: %w", ErrInvalid)
	}
	if align == 0 {
		align = a.pageSize
	}
	if !isPow2(align) {
		return 0, 0, fmt.Errorf("allocating IOVA: alignment 0x%x is not a power of two: %w", align, ErrInvalid)
	}
	align = max(align, a.pageSize)
	rounded, ok := alignUp(size, a.pageSize)
	if !ok {
		return 0, 0, a.exhausted(size, align)
	}
	return rounded, align, nil
}

// fit returns the lowest start ≥ lo aligned to align such that size bytes
// from it end at or before end.
func fit(lo, end, size, align uint64) (uint64, bool) {
	start, ok := alignUp(lo, align)
	if !ok || start > end {
		return 0, false
	}
	return start, end-start >= size-1
}

// take removes [start, start+size) from free extent i, which holds it.
func (a *Allocator) take(i int, start, size uint64) {
	ext := a.free[i]
	last := start + size - 1
	var pieces [2]Range
	k := 0
	if start > ext.Start {
		pieces[k] = Range{ext.Start, start - 1}
		k++
	}
	if last < ext.End {
		pieces[k] = Range{last + 1, ext.End}
		k++
	}
	a.free = slices.Replace(a.free, i, i+1, pieces[:k]...)
	a.used[start] = size
	a.freeSize -= size
}

// exhausted builds the error for a failed allocation.
func (a *Allocator) exhausted(size, align uint64) *ExhaustedError {
	e := &ExhaustedError{Size: size, Align: align, Free: a.freeSize, Total: a.total}
	for _, r := range a.free {
		e.Largest = max(e.Largest, r.Size())
	}
	return e
}

// Size returns the size of the allocated range that starts at iova.
func (a *Allocator) Size(iova uint64) (uint64, bool) {
	size, ok := a.used[iova]
	return size, ok
}

// Free returns the range allocated at iova to the free space, merging it
// with its free neighbours. iova must be a start Alloc returned; any other
// value fails with ErrNotMapped and changes nothing.
func (a *Allocator) Free(iova uint64) error {
	size, ok := a.used[iova]
	if !ok {
		return fmt.Errorf("freeing IOVA 0x%x: no allocation starts there: %w", iova, ErrNotMapped)
	}
	r := Range{iova, iova + size - 1}
	i, _ := slices.BinarySearchFunc(a.free, iova, func(e Range, v uint64) int { return cmpUint64(e.Start, v) })
	// The neighbours are free extents, so they cannot overlap an
	// allocation; checking keeps a corrupted state from spreading.
	if (i > 0 && a.free[i-1].End >= r.Start) || (i < len(a.free) && a.free[i].Start <= r.End) {
		return fmt.Errorf("freeing IOVA range %s: it overlaps free space: %w", r, ErrOverlap)
	}
	delete(a.used, iova)
	a.freeSize += size
	mergePrev := i > 0 && a.free[i-1].End+1 == r.Start
	mergeNext := i < len(a.free) && r.End+1 == a.free[i].Start
	switch {
	case mergePrev && mergeNext:
		a.free[i-1].End = a.free[i].End
		a.free = slices.Delete(a.free, i, i+1)
	case mergePrev:
		a.free[i-1].End = r.End
	case mergeNext:
		a.free[i].Start = r.Start
	default:
		a.free = slices.Insert(a.free, i, r)
	}
	return nil
}
