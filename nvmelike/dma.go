package nvmelike

// DMA is the source of memory the controller can reach: queue rings, PRP
// list pages and identify buffers. The hugepage and iommu packages will
// provide the real one (a pool carved into buffers, mapped into the
// device's IOMMU domain); nvmelike/sim provides one backed by Go memory
// with made-up IOVAs.
type DMA interface {
	// Alloc returns size bytes of zeroed memory, contiguous in IOVA
	// space, whose IOVA and virtual address are both multiples of align
	// (a power of two, at most the memory page size the engine uses).
	Alloc(size, align int) (Buffer, error)
	// Free returns memory obtained from Alloc. The engine frees only
	// memory the device can no longer touch.
	Free(Buffer) error
}

// Buffer is DMA-able memory: Bytes as the host sees it, and the IOVA the
// device uses for Bytes[0]. The memory behind Bytes is contiguous in IOVA
// space, so the IOVA of Bytes[i] is IOVA+i. A Buffer is a small value:
// slicing it with Slice keeps the two in step without any lookup.
//
// Callers hand the engine Buffers for command data; the engine builds PRPs
// from the IOVA and never copies the data.
type Buffer struct {
	Bytes []byte
	IOVA  uint64
}

// Len returns the length of the buffer in bytes.
func (b Buffer) Len() int { return len(b.Bytes) }

// Slice returns the n bytes of b starting at off, with their IOVA. It
// returns the zero Buffer if the range is not inside b.
func (b Buffer) Slice(off, n int) Buffer {
	if off < 0 || n < 0 || off > len(b.Bytes) || n > len(b.Bytes)-off {
		return Buffer{}
	}
	return Buffer{Bytes: b.Bytes[off : off+n : off+n], IOVA: b.IOVA + uint64(off)}
}

// Interrupts is a source of completion interrupts (MSI-X vectors signalled
// through eventfds, with VFIO). The engine does not use it yet: I/O queues
// are created with interrupts disabled and completed by polling. It is
// here so the shape of the seam is settled: the vfio package will satisfy
// it.
type Interrupts interface {
	// Vectors returns how many interrupt vectors are available.
	Vectors() int
	// EventFD returns the file descriptor signalled when vector fires.
	EventFD(vector int) (int, error)
}
