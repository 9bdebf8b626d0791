package sim

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/umdkit/umd/nvmelike"
)

// ErrBadIOVA is returned by Memory.Free for an IOVA it did not hand out.
var ErrBadIOVA = errors.New("no DMA region at that IOVA")

// Memory is nvmelike.DMA backed by ordinary Go memory with made-up IOVAs.
// Regions are laid out in IOVA space with an unmapped guard page between
// them, so a device access past a region's end fails like an IOMMU fault
// would. It is safe for concurrent use.
type Memory struct {
	mu      sync.RWMutex
	regions []region // sorted by IOVA
	next    uint64
}

type region struct {
	iova uint64
	b    []byte
}

const memoryBase = 0x1000_0000 // first IOVA: 256 MiB, away from 0

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{next: memoryBase} }

// Alloc returns size zeroed bytes whose IOVA and virtual address are
// multiples of align (a power of two; 0 means 4096).
func (m *Memory) Alloc(size, align int) (nvmelike.Buffer, error) {
	if align == 0 {
		align = 4096
	}
	if size <= 0 || align < 0 || align&(align-1) != 0 {
		return nvmelike.Buffer{}, fmt.Errorf("allocating %d bytes aligned to %d: bad size or alignment", size, align)
	}
	b := alignedBytes(size, align)
	m.mu.Lock()
	defer m.mu.Unlock()
	a := uint64(max(align, 4096))
	iova := (m.next + a - 1) &^ (a - 1)
	m.next = iova + (uint64(size)+4095)&^4095 + 4096 // + guard page
	m.regions = append(m.regions, region{iova: iova, b: b})
	return nvmelike.Buffer{Bytes: b, IOVA: iova}, nil
}

// Free forgets a region returned by Alloc.
func (m *Memory) Free(b nvmelike.Buffer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := slices.BinarySearchFunc(m.regions, b.IOVA, func(r region, iova uint64) int {
		return cmpUint64(r.iova, iova)
	})
	if !ok {
		return fmt.Errorf("freeing IOVA 0x%x: %w", b.IOVA, ErrBadIOVA)
	}
	m.regions = slices.Delete(m.regions, i, i+1)
	return nil
}

// Regions returns the number of live regions (for leak checks in tests).
func (m *Memory) Regions() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.regions)
}

// Translate returns the host memory of the device access [iova, iova+n),
// or false if that range is not inside one region: what an IOMMU would
// fault on.
func (m *Memory) Translate(iova uint64, n int) ([]byte, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	// Last region starting at or below iova.
	i, found := slices.BinarySearchFunc(m.regions, iova, func(r region, iova uint64) int {
		return cmpUint64(r.iova, iova)
	})
	if !found {
		if i == 0 {
			return nil, false
		}
		i--
	}
	r := m.regions[i]
	off := iova - r.iova
	if n < 0 || off > uint64(len(r.b)) || uint64(n) > uint64(len(r.b))-off {
		return nil, false
	}
	return r.b[off : off+uint64(n)], true
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
