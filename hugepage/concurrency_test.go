package hugepage

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestConcurrentAllocFree has goroutines allocate, write, check and free
// buffers at once (run it with -race): each buffer's bytes must stay its
// owner's until freed.
func TestConcurrentAllocFree(t *testing.T) {
	p := new4K(t, 4<<20)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				b, err := p.Alloc(512<<(i%6), 0)
				if err != nil {
					continue // another goroutine holds the space for now
				}
				mem := b.Bytes()
				for j := range mem {
					mem[j] = byte(g)
				}
				for j, v := range mem {
					if v != byte(g) {
						t.Errorf("goroutine %d: byte %d of its buffer at %#x became %d", g, j, b.Offset(), v)
						return
					}
				}
				if err := p.Free(b); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if s := p.Stats(); s.Buffers != 0 || s.Free != p.Size() {
		t.Errorf("after all goroutines freed their buffers: %+v", s)
	}
}

// TestLeakNet checks that a pool dropped without Close is released once
// the garbage collector finds it unreachable. Programs must not rely on
// this: the collector runs when it likes, and the memory stays locked
// until then.
func TestLeakNet(t *testing.T) {
	func() {
		p, err := New(Options{Size: 64 << 10, PageSize: Page4K, NUMANode: AnyNode, Name: defaultName + "-dropped"})
		if err != nil {
			t.Fatal(err)
		}
		p.Bytes()[0] = 1
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(poolLeaks()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a dropped pool was not released: %v", poolLeaks())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
