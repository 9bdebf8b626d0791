package dmabuf

import (
	"fmt"
	"os"
	"sync"

	"github.com/umdkit/umd/hugepage"
)

// A Region is a buffer of a hugepage pool that can be exported as a
// dma-buf and that cannot be freed while any of its dma-bufs is alive.
//
// hugepage.Buffer is a plain value with no hook for holders, so the
// count lives here: a Region owns its hugepage.Buffer and never hands it
// out, so Region.Free, which refuses while exports are alive, is the only
// way to give the memory back to the pool's allocator. The kernel's pins
// keep the pages themselves allocated in any case; the count is what
// stops the allocator from reusing them for another owner while a peer
// still reads or a device still writes them.
type Region struct {
	pool *hugepage.Pool
	buf  hugepage.Buffer

	mu      sync.Mutex
	exports int
	freed   bool
}

// NewRegion allocates a region of size bytes from p, page-aligned so
// that it can be exported (align is raised to the page size when
// smaller).
func NewRegion(p *hugepage.Pool, size, align int) (*Region, error) {
	page := os.Getpagesize()
	align = max(align, page)
	if align > p.PageSize() {
		return nil, fmt.Errorf("allocating a region of %d bytes: alignment %d is larger than the pool's pages: %w", size, align, ErrInvalid)
	}
	b, err := p.Alloc(size, align)
	if err != nil {
		return nil, fmt.Errorf("allocating a region: %w", err)
	}
	return &Region{pool: p, buf: b}, nil
}

// Bytes returns the region's memory (nil once freed).
func (r *Region) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.freed {
		return nil
	}
	return r.buf.Bytes()
}

// Offset returns where the region starts in its pool.
func (r *Region) Offset() int { return r.buf.Offset() }

// Len returns the region's length.
func (r *Region) Len() int { return r.buf.Len() }

// Pool returns the pool the region belongs to.
func (r *Region) Pool() *hugepage.Pool { return r.pool }

// Exports returns how many dma-bufs of the region are alive.
func (r *Region) Exports() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.exports
}

// exportLen is the region's length rounded up to the page size; the
// allocator's block (a power of two at least the page size) holds it.
func (r *Region) exportLen() int {
	page := os.Getpagesize()
	return (r.buf.Len() + page - 1) / page * page
}

func (r *Region) acquire() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.freed {
		return ErrClosed
	}
	r.exports++
	return nil
}

func (r *Region) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exports--
}

// Free gives the region back to its pool. While a dma-buf of it is alive
// it returns an error wrapping ErrExported and changes nothing. Freeing
// twice returns hugepage.ErrDoubleFree.
func (r *Region) Free() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.exports > 0 {
		return fmt.Errorf("freeing a region of %d bytes at offset %d: %w (%d dma-bufs alive)", r.buf.Len(), r.buf.Offset(), ErrExported, r.exports)
	}
	if r.freed {
		return fmt.Errorf("freeing a region: %w", hugepage.ErrDoubleFree)
	}
	if err := r.pool.Free(r.buf); err != nil {
		return fmt.Errorf("freeing a region: %w", err)
	}
	r.freed = true
	return nil
}
