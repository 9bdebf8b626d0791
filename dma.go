package umd

import (
	"fmt"
	"sync"

	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
)

// PoolDMA is the engine's DMA memory (an nvmelike.DMA): buffers carved
// from one hugepage pool that is mapped whole into the IOMMU, so a
// buffer's IOVA is the mapping's IOVA plus the buffer's offset in the
// pool. A device's own pools are mapped by this process; NewPoolDMA makes
// one over a pool another process mapped.
type PoolDMA struct {
	pool    *hugepage.Pool
	mapping *iommu.Mapping // nil for a pool mapped elsewhere, at base
	base    uint64
	node    int // the NUMA node the pool was made for; hugepage.AnyNode for none

	mu   sync.Mutex
	live map[uint64]hugepage.Buffer // by IOVA, to find the pool's buffer on Free
}

// Alloc implements nvmelike.DMA. It is a control-path call (queue
// creation, buffer set-up before a run): it takes a lock and may allocate.
func (p *PoolDMA) Alloc(size, align int) (nvmelike.Buffer, error) {
	b, err := p.pool.Alloc(size, align)
	if err != nil {
		return nvmelike.Buffer{}, err
	}
	iova, ok := p.base+uint64(b.Offset()), true
	if p.mapping != nil {
		iova, ok = p.mapping.Translate(uint64(b.Offset()))
	}
	if !ok {
		p.pool.Free(b)
		return nvmelike.Buffer{}, fmt.Errorf("allocating DMA memory: offset 0x%x of the pool has no IOVA: %w", b.Offset(), iommu.ErrNotMapped)
	}
	mem := b.Bytes()
	clear(mem)
	p.mu.Lock()
	p.live[iova] = b
	p.mu.Unlock()
	return nvmelike.Buffer{Bytes: mem, IOVA: iova}, nil
}

// Free implements nvmelike.DMA.
func (p *PoolDMA) Free(b nvmelike.Buffer) error {
	p.mu.Lock()
	hb, ok := p.live[b.IOVA]
	if ok {
		delete(p.live, b.IOVA)
	}
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("freeing DMA memory at IOVA 0x%x: not allocated from this pool", b.IOVA)
	}
	return p.pool.Free(hb)
}

// NewPoolDMA returns DMA memory carved from pool, which another process
// (a broker) mapped whole into a device's IOMMU domain at IOVA base: a
// buffer's IOVA is base plus its offset in the pool.
func NewPoolDMA(pool *hugepage.Pool, base uint64) *PoolDMA {
	return &PoolDMA{pool: pool, base: base, node: hugepage.AnyNode, live: map[uint64]hugepage.Buffer{}}
}

// contains reports whether iova lies in the pool's mapping.
func (p *PoolDMA) contains(iova uint64) bool {
	base := p.mapping.IOVA()
	return iova >= base && iova-base < p.mapping.Size()
}

// allocAligned allocates size bytes aligned to 4 KiB, or to the next power
// of two of size (at least 512) for smaller sizes.
func allocAligned(p *PoolDMA, size int) (nvmelike.Buffer, error) {
	align := 4096
	if size < align {
		align = 512
		for align < size {
			align <<= 1
		}
	}
	return p.Alloc(size, align)
}
