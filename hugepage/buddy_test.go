package hugepage

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"testing"
)

func TestBitsetAgainstSlice(t *testing.T) {
	for _, n := range []int{1, 63, 64, 65, 4096, 4097, 300000} {
		b := newBitset(n)
		want := make([]bool, n)
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		for range 20000 {
			i := rng.IntN(n)
			want[i] = rng.IntN(2) == 0
			if want[i] {
				b.set(i)
			} else {
				b.clear(i)
			}
			if b.test(i) != want[i] {
				t.Fatalf("n=%d: test(%d) = %v, want %v", n, i, b.test(i), want[i])
			}
			lowest := -1
			for j, set := range want {
				if set {
					lowest = j
					break
				}
			}
			if got := b.first(); got != lowest {
				t.Fatalf("n=%d: first() = %d, want %d", n, got, lowest)
			}
		}
		if b.test(-1) || b.test(n) {
			t.Fatalf("n=%d: an index outside the set tests as set", n)
		}
	}
}

// checkBuddy verifies the allocator's invariants against the buffers the
// test believes are live (minimum-block index → order):
//   - every minimum block is in exactly one free block or live block;
//   - the counts of free blocks and blocks in use agree with the sets;
//   - no free block has a free buddy of the same order (frees coalesce).
func checkBuddy(t *testing.T, b *buddy, live map[int]int) {
	t.Helper()
	owner := make([]int8, b.n) // 0 unowned, 1 free, 2 live
	claim := func(i, k int, who int8) {
		if i&(1<<k-1) != 0 {
			t.Fatalf("block at %d of order %d is misaligned", i, k)
		}
		if i+1<<k > b.n {
			t.Fatalf("block at %d of order %d runs past the pool's %d blocks", i, k, b.n)
		}
		for j := i; j < i+1<<k; j++ {
			if owner[j] != 0 {
				t.Fatalf("minimum block %d is in two blocks (the second at %d, order %d, kind %d)", j, i, k, who)
			}
			owner[j] = who
		}
	}
	inUse := 0
	for i, k := range live {
		claim(i, k, 2)
		inUse += 1 << k
	}
	for k := range b.sets {
		count := 0
		for w, word := range b.sets[k].levels[0] {
			for word != 0 {
				bit := w*64 + bits.TrailingZeros64(word)
				word &= word - 1
				count++
				claim(bit<<k, k, 1)
				if k < len(b.sets)-1 && b.sets[k].test((bit<<k^1<<k)>>k) {
					t.Fatalf("free block at %d of order %d has a free buddy: not coalesced", bit<<k, k)
				}
			}
		}
		if count != b.nfree[k] {
			t.Fatalf("order %d: %d free blocks in the set, nfree says %d", k, count, b.nfree[k])
		}
	}
	for j, o := range owner {
		if o == 0 {
			t.Fatalf("minimum block %d is neither free nor allocated", j)
		}
	}
	if inUse != b.inUse || len(live) != b.blocks {
		t.Fatalf("allocator counts %d blocks in use in %d buffers, the test %d in %d", b.inUse, b.blocks, inUse, len(live))
	}
}

// liveBuffer is what a random test remembers of an allocation.
type liveBuffer struct {
	order int
	gen   uint8
}

// exercise runs random allocations and frees against b and checks every
// result and, every checkEvery operations, the invariants.
func exercise(t *testing.T, b *buddy, rng *rand.Rand, ops, checkEvery int) {
	t.Helper()
	live := map[int]liveBuffer{}
	var order []int // live buffers in allocation order, to pick victims
	orders := func() map[int]int {
		m := map[int]int{}
		for i, l := range live {
			m[i] = l.order
		}
		return m
	}
	size := b.n << minBlockShift
	for op := range ops {
		if len(order) > 0 && rng.IntN(5) < 2 {
			v := rng.IntN(len(order))
			i := order[v]
			order[v] = order[len(order)-1]
			order = order[:len(order)-1]
			l := live[i]
			if err := b.free(i, l.order, l.gen); err != nil {
				t.Fatalf("op %d: freeing block %d of order %d: %v", op, i, l.order, err)
			}
			delete(live, i)
			// A second free of the same block must be refused and
			// change nothing.
			if err := b.free(i, l.order, l.gen); err == nil {
				t.Fatalf("op %d: a double free of block %d was accepted", op, i)
			}
		} else {
			// Sizes spread over every order, most of them small.
			n := 1 + rng.IntN(1<<rng.IntN(bits.Len(uint(size))))
			align := 0
			if rng.IntN(3) == 0 {
				align = 1 << rng.IntN(22)
			}
			k, ok := b.orderFor(n, align)
			if !ok {
				if max(n, align, MinBlock) <= MinBlock<<(len(b.sets)-1) {
					t.Fatalf("op %d: orderFor(%d, %d) refused a block that fits", op, n, align)
				}
				continue
			}
			if MinBlock<<k < n || MinBlock<<k < align || (k > 0 && MinBlock<<(k-1) >= max(n, align)) {
				t.Fatalf("op %d: orderFor(%d, %d) = %d, not the smallest block that holds it", op, n, align, k)
			}
			i, gen, err := b.alloc(k)
			if err != nil {
				if b.largestFree() >= k {
					t.Fatalf("op %d: alloc(order %d) failed with a free block of order %d", op, k, b.largestFree())
				}
				continue
			}
			off := i << minBlockShift
			if off%max(align, MinBlock) != 0 || off%(MinBlock<<k) != 0 {
				t.Fatalf("op %d: offset %#x of a %d-byte block is not aligned to %d", op, off, MinBlock<<k, align)
			}
			if off+n > size {
				t.Fatalf("op %d: buffer [%#x, %#x) runs past the pool's %#x bytes", op, off, off+n, size)
			}
			if _, dup := live[i]; dup {
				t.Fatalf("op %d: block %d handed out twice", op, i)
			}
			live[i] = liveBuffer{k, gen}
			order = append(order, i)
		}
		if checkEvery > 0 && op%checkEvery == 0 {
			checkBuddy(t, b, orders())
		}
	}
	checkBuddy(t, b, orders())
	for _, i := range order {
		if err := b.free(i, live[i].order, live[i].gen); err != nil {
			t.Fatalf("freeing block %d at the end: %v", i, err)
		}
	}
	checkBuddy(t, b, nil)
}

// TestBuddyRandom runs random sequences on pools of many sizes, including
// sizes that are not powers of two, and checks that freeing everything
// gives back exactly the initial blocks.
func TestBuddyRandom(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 2))
		n := 1 + rng.IntN(1<<rng.IntN(14))
		b, err := newBuddy(n << minBlockShift)
		if err != nil {
			t.Fatal(err)
		}
		fresh, _ := newBuddy(n << minBlockShift)
		exercise(t, b, rng, 3000, 7)
		for k := range b.sets {
			if b.nfree[k] != fresh.nfree[k] {
				t.Fatalf("seed %d, %d blocks: after freeing everything order %d has %d free blocks, a fresh allocator %d", seed, n, k, b.nfree[k], fresh.nfree[k])
			}
		}
	}
}

// TestBuddyFullAfterChurn: on a power-of-two pool, after any history,
// freeing everything lets one buffer take the whole pool.
func TestBuddyFullAfterChurn(t *testing.T) {
	const size = 64 << 20
	b, err := newBuddy(size)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range 5 {
		exercise(t, b, rng, 20000, 0)
		k, ok := b.orderFor(size, 0)
		if !ok {
			t.Fatal("orderFor refuses the whole pool")
		}
		i, gen, err := b.alloc(k)
		if err != nil || i != 0 {
			t.Fatalf("round %d: allocating the whole pool after freeing everything: block %d, %v", round, i, err)
		}
		if _, _, err := b.alloc(0); err != errFull {
			t.Fatalf("round %d: a full pool gave out another block (%v)", round, err)
		}
		if err := b.free(i, k, gen); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBuddyOddSize(t *testing.T) {
	// 6 MiB + 512 B: blocks of 4 MiB, 2 MiB and 512 B.
	b, err := newBuddy(6<<20 + 512)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]int{13: 1, 12: 1, 0: 1}
	for k := range b.sets {
		if b.nfree[k] != want[k] {
			t.Errorf("order %d: %d free blocks, want %d", k, b.nfree[k], want[k])
		}
	}
	if k, _ := b.orderFor(5<<20, 0); k < len(b.sets) {
		t.Errorf("a 5 MiB buffer (an 8 MiB block) fits a 6 MiB pool: order %d of %d", k, len(b.sets))
	}
	checkBuddy(t, b, nil)
	for _, size := range []int{0, -512, 1000} {
		if _, err := newBuddy(size); err == nil {
			t.Errorf("newBuddy(%d) accepted a size that is not a positive multiple of 512", size)
		}
	}
}

func TestBuddyStaleGeneration(t *testing.T) {
	b, _ := newBuddy(1 << 20)
	i, gen, _ := b.alloc(3)
	if err := b.free(i, 3, gen); err != nil {
		t.Fatal(err)
	}
	j, gen2, _ := b.alloc(3)
	if j != i || gen2 == gen {
		t.Fatalf("expected the same block with a new generation, got block %d gen %d after %d gen %d", j, gen2, i, gen)
	}
	if err := b.free(i, 3, gen); err == nil {
		t.Fatal("a stale copy freed the block's new owner")
	}
	if err := b.free(i, 2, gen2); err == nil {
		t.Fatal("a free with the wrong order was accepted")
	}
	if err := b.free(i+1, 0, gen2); err == nil {
		t.Fatal("a free of the middle of a block was accepted")
	}
	for _, bad := range [][2]int{{-1, 0}, {b.n, 0}, {0, 99}, {0, -1}} {
		if err := b.free(bad[0], bad[1], 1); err == nil {
			t.Fatalf("free(%d, %d) accepted", bad[0], bad[1])
		}
	}
	checkBuddy(t, b, map[int]int{i: 3})
}

// FuzzBuddy drives an allocator of a fuzzed size with fuzzed operations
// and checks every invariant after each one: no overlap, alignment,
// coalescing, and refused double frees.
func FuzzBuddy(f *testing.F) {
	f.Add([]byte{0, 16, 1, 2, 3, 4, 5, 6, 7, 8, 200, 201, 202})
	f.Add([]byte{3, 0, 0, 0, 0, 0, 128, 129, 130, 131, 132})
	f.Add([]byte{255, 255, 9, 9, 9, 9, 250, 250, 250})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		n := 1 + int(binary.LittleEndian.Uint16(data))%2048
		b, err := newBuddy(n << minBlockShift)
		if err != nil {
			t.Fatal(err)
		}
		type held struct{ i, k int }
		var live []held
		gens := map[int]uint8{}
		for _, op := range data[2:] {
			if op >= 128 && len(live) > 0 { // free one, then try again
				v := int(op-128) % len(live)
				h := live[v]
				live = append(live[:v], live[v+1:]...)
				if err := b.free(h.i, h.k, gens[h.i]); err != nil {
					t.Fatalf("freeing %v: %v", h, err)
				}
				if err := b.free(h.i, h.k, gens[h.i]); err == nil {
					t.Fatalf("double free of %v accepted", h)
				}
			} else {
				k := int(op) % 16
				i, gen, err := b.alloc(k)
				if err != nil {
					if b.largestFree() >= k {
						t.Fatalf("alloc(%d) failed with a free block of order %d", k, b.largestFree())
					}
					continue
				}
				gens[i] = gen
				live = append(live, held{i, k})
			}
			m := map[int]int{}
			for _, h := range live {
				m[h.i] = h.k
			}
			checkBuddy(t, b, m)
		}
	})
}
