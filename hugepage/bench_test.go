package hugepage

import (
	"math/rand/v2"
	"testing"
)

// benchPool is a pool of ordinary pages, so the benchmarks run on any
// host; the allocator does not care what backs the memory.
func benchPool(b *testing.B, size int) *Pool {
	b.Helper()
	p, err := New(Options{Size: size, PageSize: Page4K, NUMANode: AnyNode})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// BenchmarkAllocFree is the cost of one Alloc + Free pair of a 4 KiB
// buffer on an empty pool: split a block down, merge it back up.
func BenchmarkAllocFree(b *testing.B) {
	for _, c := range []struct {
		name        string
		size, align int
	}{{"512B", 512, 0}, {"4KiB", 4096, 4096}, {"1MiB", 1 << 20, 4096}} {
		b.Run(c.name, func(b *testing.B) {
			p := benchPool(b, 8<<20)
			b.ReportAllocs()
			for b.Loop() {
				buf, err := p.Alloc(c.size, c.align)
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Free(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkChurn keeps a working set of buffers of mixed sizes (512 B to
// 32 KiB) alive and replaces a random one per iteration: the steady
// state of a driver with many I/Os in flight.
func BenchmarkChurn(b *testing.B) {
	p := benchPool(b, 16<<20) // twice the worst case: 256 × 32 KiB
	const live = 256
	rng := rand.New(rand.NewPCG(1, 1))
	sizes := make([]int, 4096)
	for i := range sizes {
		sizes[i] = MinBlock << rng.IntN(7)
	}
	victims := make([]int, 4096)
	for i := range victims {
		victims[i] = rng.IntN(live)
	}
	bufs := make([]Buffer, live)
	for i := range bufs {
		var err error
		if bufs[i], err = p.Alloc(sizes[i], 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		v := victims[i%len(victims)]
		if err := p.Free(bufs[v]); err != nil {
			b.Fatal(err)
		}
		var err error
		if bufs[v], err = p.Alloc(sizes[i%len(sizes)], 0); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	for _, buf := range bufs {
		p.Free(buf)
	}
}

// BenchmarkBufferBytes is the cost of getting a buffer's slice.
func BenchmarkBufferBytes(b *testing.B) {
	p := benchPool(b, 1<<20)
	buf, err := p.Alloc(4096, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var sum byte
	for b.Loop() {
		sum += buf.Bytes()[0]
	}
	_ = sum
}

// BenchmarkNew is the cost of making and closing a small pool: the
// syscalls plus the allocator's bookkeeping.
func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		p, err := New(Options{Size: 1 << 20, PageSize: Page4K, NUMANode: AnyNode})
		if err != nil {
			b.Fatal(err)
		}
		p.Close()
	}
}
