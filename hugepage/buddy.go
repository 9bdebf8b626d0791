package hugepage

import (
	"errors"
	"math/bits"
)

// The allocator that carves a pool into buffers is a binary buddy
// allocator over 512-byte minimum blocks. A block of order k is 512<<k
// bytes long and starts at an offset that is a multiple of its length,
// which gives every power-of-two alignment up to the block's size for
// free. Freeing a block merges it with its buddy (the other half of the
// block of order k+1 they were split from) whenever the buddy is free too,
// so freeing everything always restores the pool's initial blocks.
//
// All bookkeeping lives in arrays sized when the pool is created: a bitset
// of free blocks per order and a 16-bit tag per minimum block. alloc and
// free touch only those, so carving never allocates on the Go heap. The
// cost is about 2 bits of bitset plus 2 bytes of tag per 512 bytes of
// pool: 0.44% of its size, 4.5 MiB for a 1 GiB pool.
//
// No bookkeeping is kept inside the pool's memory itself: a device that
// DMAs outside its buffer, or another process sharing the pool, cannot
// corrupt the allocator.

const (
	minBlockShift = 9
	// MinBlock is the smallest block the allocator hands out, and the
	// smallest alignment every buffer has.
	MinBlock = 1 << minBlockShift
)

// A tag describes the block that starts at a minimum block:
//
//	bit 15     the block is allocated (it is a buffer's first block)
//	bits 8-14  its order, while allocated
//	bits 0-7   a generation, bumped on every allocation at this offset
//
// The generation survives frees, so a stale copy of a Buffer whose block
// was freed and handed out again is told apart from the new owner's.
type tag uint16

const (
	tagAllocated  tag = 1 << 15
	tagOrderShift     = 8
	tagOrderMask  tag = 0x7f << tagOrderShift
	tagGenMask    tag = 0xff
)

var (
	// errFull is returned by alloc when no free block is large enough.
	errFull = errors.New("no free block large enough")
	// errNotAllocated is returned by free for a block that is not
	// currently allocated with that order and generation.
	errNotAllocated = errors.New("block not allocated")
)

type buddy struct {
	n      int      // number of minimum blocks in the pool
	sets   []bitset // sets[k] has bit i>>k set when the order-k block at minimum block i is free
	nfree  []int    // nfree[k] counts the set bits of sets[k]
	tags   []tag    // one per minimum block
	inUse  int      // minimum blocks in allocated blocks
	blocks int      // allocated blocks
}

// newBuddy prepares an allocator for size bytes, which must be a positive
// multiple of MinBlock, with everything free.
func newBuddy(size int) (*buddy, error) {
	if size <= 0 || size%MinBlock != 0 {
		return nil, errors.New("allocator size must be a positive multiple of 512 bytes")
	}
	n := size >> minBlockShift
	orders := bits.Len(uint(n)) // the largest order that fits is orders-1
	if orders > int(tagOrderMask>>tagOrderShift)+1 {
		return nil, errors.New("pool too large for the allocator")
	}
	b := &buddy{
		n:     n,
		sets:  make([]bitset, orders),
		nfree: make([]int, orders),
		tags:  make([]tag, n),
	}
	for k := range b.sets {
		b.sets[k] = newBitset((n + 1<<k - 1) >> k)
	}
	b.reset()
	return b, nil
}

// reset marks the whole pool free: it covers [0, n) with the largest
// aligned blocks that fit, from the start. A pool whose size is not a
// power of two ends in a run of smaller blocks.
func (b *buddy) reset() {
	for k := range b.sets {
		clear(b.sets[k].levels[0])
		for _, l := range b.sets[k].levels[1:] {
			clear(l)
		}
		b.nfree[k] = 0
	}
	for i := range b.tags {
		b.tags[i] &= tagGenMask
	}
	b.inUse, b.blocks = 0, 0
	for i := 0; i < b.n; {
		k := len(b.sets) - 1
		for i&(1<<k-1) != 0 || i+1<<k > b.n {
			k--
		}
		b.sets[k].set(i >> k)
		b.nfree[k]++
		i += 1 << k
	}
}

// orderFor returns the order of the smallest block that holds size bytes
// at the given alignment (a power of two, or 0 for MinBlock).
func (b *buddy) orderFor(size, align int) (int, bool) {
	need := max(size, align, MinBlock)
	k := bits.Len(uint(need-1)) - minBlockShift // ceil(log2(need)) - 9
	return k, k < len(b.sets)
}

// alloc takes a free block of order k, splitting a larger one when none
// of that order is free, and returns its first minimum block and its
// generation. It takes the lowest-addressed candidate of the smallest
// order that has one, which keeps large blocks whole as long as possible.
func (b *buddy) alloc(k int) (int, uint8, error) {
	if k < 0 || k >= len(b.sets) {
		return 0, 0, errFull
	}
	j := k
	for j < len(b.sets) && b.nfree[j] == 0 {
		j++
	}
	if j == len(b.sets) {
		return 0, 0, errFull
	}
	i := b.sets[j].first() << j
	b.sets[j].clear(i >> j)
	b.nfree[j]--
	for j > k { // split: keep the lower half, free the upper half
		j--
		b.sets[j].set((i + 1<<j) >> j)
		b.nfree[j]++
	}
	gen := uint8(b.tags[i]&tagGenMask) + 1
	b.tags[i] = tagAllocated | tag(k)<<tagOrderShift | tag(gen)
	b.inUse += 1 << k
	b.blocks++
	return i, gen, nil
}

// free returns the order-k block at minimum block i, allocated with
// generation gen, and merges it with its buddies. A block that is not
// allocated with exactly that order and generation is left alone and
// reported: a double free must not corrupt the free sets.
func (b *buddy) free(i, k int, gen uint8) error {
	if i < 0 || i >= b.n || k < 0 || k >= len(b.sets) {
		return errNotAllocated
	}
	if b.tags[i] != tagAllocated|tag(k)<<tagOrderShift|tag(gen) {
		return errNotAllocated
	}
	b.tags[i] &= tagGenMask
	b.inUse -= 1 << k
	b.blocks--
	for k < len(b.sets)-1 {
		buddy := i ^ 1<<k
		if !b.sets[k].test(buddy >> k) {
			break
		}
		b.sets[k].clear(buddy >> k)
		b.nfree[k]--
		i &^= 1 << k
		k++
	}
	b.sets[k].set(i >> k)
	b.nfree[k]++
	return nil
}

// largestFree returns the order of the largest free block, or -1.
func (b *buddy) largestFree() int {
	for k := len(b.sets) - 1; k >= 0; k-- {
		if b.nfree[k] > 0 {
			return k
		}
	}
	return -1
}
