package hugepage

import "fmt"

// A Buffer is a piece of a pool handed out by Pool.Alloc. It is a small
// value: copy it freely, but free it once, with the pool it came from.
// Its memory does not move and stays the pool's until freed; the
// allocator does not clear it between owners.
//
// The zero Buffer is not a buffer: Bytes returns nil and Free rejects it.
type Buffer struct {
	pool  *Pool
	off   int   // from the start of the pool
	n     int   // bytes asked for
	order uint8 // the allocator's block: MinBlock<<order bytes
	gen   uint8 // the allocator's generation of the block, to catch stale copies
}

// Bytes returns the buffer's memory, len(b.Bytes()) == b.Len(), without
// allocating; nil for the zero Buffer or after the pool was closed. Its
// capacity is its length, so an append never spills into a neighbour.
func (b Buffer) Bytes() []byte {
	if b.pool == nil || b.pool.closed.Load() {
		return nil
	}
	return b.pool.mem[b.off : b.off+b.n : b.off+b.n]
}

// Offset returns where the buffer starts, in bytes from the start of its
// pool: a device address for it is the pool's base address plus Offset.
func (b Buffer) Offset() int { return b.off }

// Len returns the buffer's length, as asked of Alloc.
func (b Buffer) Len() int { return b.n }

// Cap returns the size of the block the allocator reserved for the
// buffer: Len rounded up to a power of two, at least MinBlock and at
// least the alignment asked for.
func (b Buffer) Cap() int { return MinBlock << b.order }

// Pool returns the pool the buffer came from, nil for the zero Buffer.
func (b Buffer) Pool() *Pool { return b.pool }

// Alloc carves a buffer of size bytes out of the pool, at an offset that
// is a multiple of align: a power of two no larger than the pool's page
// size, or 0 for MinBlock (512). Every buffer is at least 512-aligned, and
// takes a block of the next power of two of max(size, align).
//
// Alloc does not allocate on the Go heap. A pool that has no free block
// large enough returns ErrPoolFull.
func (p *Pool) Alloc(size, align int) (Buffer, error) {
	if size <= 0 || size > p.info.Size {
		return Buffer{}, fmt.Errorf("allocating %d bytes: the size must be between 1 and the pool's %s", size, formatSize(p.info.Size))
	}
	if align < 0 || align&(align-1) != 0 || align > p.info.PageSize {
		return Buffer{}, fmt.Errorf("allocating %d bytes aligned to %d: the alignment must be a power of two no larger than the pool's %s pages", size, align, formatSize(p.info.PageSize))
	}
	k, ok := p.buddy.orderFor(size, align)
	if !ok {
		return Buffer{}, fmt.Errorf("allocating %d bytes: %w: the allocator needs a %s block for it, larger than the pool's largest possible block", size, ErrPoolFull, formatSize(MinBlock<<k))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return Buffer{}, ErrClosed
	}
	i, gen, err := p.buddy.alloc(k)
	if err != nil {
		return Buffer{}, ErrPoolFull
	}
	return Buffer{pool: p, off: i << minBlockShift, n: size, order: uint8(k), gen: gen}, nil
}

// Free gives a buffer back to its pool. Freeing a buffer twice (through
// any copy of it) returns ErrDoubleFree, a buffer of another pool
// ErrForeignBuffer; neither changes the pool. Free does not allocate.
func (p *Pool) Free(b Buffer) error {
	if b.pool != p {
		return ErrForeignBuffer
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return ErrClosed
	}
	if p.buddy.free(b.off>>minBlockShift, int(b.order), b.gen) != nil {
		return ErrDoubleFree
	}
	return nil
}

// Stats is a snapshot of a pool's allocator.
type Stats struct {
	Size    int // the pool's size
	Free    int // bytes in free blocks
	Buffers int // buffers allocated
	// LargestFree is the largest buffer Alloc can return now (with an
	// alignment up to its size).
	LargestFree int
}

// Stats returns the allocator's state.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{
		Size:    p.info.Size,
		Free:    (p.buddy.n - p.buddy.inUse) << minBlockShift,
		Buffers: p.buddy.blocks,
	}
	if k := p.buddy.largestFree(); k >= 0 {
		s.LargestFree = MinBlock << k
	}
	return s
}
