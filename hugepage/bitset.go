package hugepage

import "math/bits"

// A bitset is a fixed-size set of bit indexes that can find its lowest set
// bit in O(log64 n) time. The buddy allocator keeps one per block order to
// find a free block of that order quickly.
//
// levels[0] holds the bits themselves; bit j of levels[i+1] is set exactly
// when word j of levels[i] is non-zero; the last level is a single word.
// All words are allocated by newBitset, so set, clear, test and first never
// allocate.
type bitset struct {
	levels [][]uint64
	n      int // number of valid bit indexes
}

func newBitset(n int) bitset {
	words := (n + 63) / 64
	if words == 0 {
		words = 1
	}
	b := bitset{n: n}
	for {
		b.levels = append(b.levels, make([]uint64, words))
		if words == 1 {
			return b
		}
		words = (words + 63) / 64
	}
}

// test reports whether bit i is set. An index outside the set is never set,
// which lets the allocator ask about a buddy past the end of the pool.
func (b *bitset) test(i int) bool {
	if i < 0 || i >= b.n {
		return false
	}
	return b.levels[0][i>>6]&(1<<(i&63)) != 0
}

// set sets bit i, which must be in range.
func (b *bitset) set(i int) {
	for l := range b.levels {
		w := &b.levels[l][i>>6]
		wasZero := *w == 0
		*w |= 1 << (i & 63)
		if !wasZero {
			return // the levels above already know this word is non-zero
		}
		i >>= 6
	}
}

// clear clears bit i, which must be in range.
func (b *bitset) clear(i int) {
	for l := range b.levels {
		w := &b.levels[l][i>>6]
		*w &^= 1 << (i & 63)
		if *w != 0 {
			return // the word still has bits: the levels above stay set
		}
		i >>= 6
	}
}

// first returns the lowest set bit, or -1 when none is set.
func (b *bitset) first() int {
	top := len(b.levels) - 1
	if b.levels[top][0] == 0 {
		return -1
	}
	i := 0
	for l := top; l >= 0; l-- {
		i = i<<6 | bits.TrailingZeros64(b.levels[l][i])
	}
	return i
}
