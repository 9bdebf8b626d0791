package mmio

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// page maps one anonymous page: device memory is page-aligned, and Go
// heap memory is never device memory.
func page(t testing.TB) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

func TestReadWrite(t *testing.T) {
	mem := page(t)
	r := New(mem)
	r.Write32(0x14, 0x460001)
	if got := binary.LittleEndian.Uint32(mem[0x14:]); got != 0x460001 {
		t.Errorf("Write32 stored 0x%x", got)
	}
	r.Write64(0x28, 0x1122334455667788)
	if got := binary.LittleEndian.Uint64(mem[0x28:]); got != 0x1122334455667788 {
		t.Errorf("Write64 stored 0x%x", got)
	}
	if mem[0x27] != 0 || mem[0x30] != 0 || mem[0x13] != 0 || mem[0x18] != 0 {
		t.Error("a write touched a neighbouring byte")
	}
	// Every read goes to memory: a change made behind the accessor's
	// back is seen by the next read.
	for i := uint32(0); i < 100; i++ {
		binary.LittleEndian.PutUint32(mem[0x1c:], i)
		if got := r.Read32(0x1c); got != i {
			t.Fatalf("Read32 = %d after the memory became %d", got, i)
		}
	}
	binary.LittleEndian.PutUint64(mem[0x30:], 0xdeadbeefcafef00d)
	if got := r.Read64(0x30); got != 0xdeadbeefcafef00d {
		t.Errorf("Read64 = 0x%x", got)
	}
}

func TestCheck(t *testing.T) {
	r := New(make([]byte, 0x1000))
	for _, c := range []struct {
		off   uint64
		width int
		ok    bool
	}{
		{0, 4, true}, {0xffc, 4, true}, {0xff8, 8, true},
		{0x1000, 4, false}, {0xffc, 8, false}, {2, 4, false}, {4, 8, false},
		{1 << 63, 4, false}, {^uint64(0) - 3, 4, false}, {0, 2, false},
	} {
		err := r.Check(c.off, c.width)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrOutOfRange)) {
			t.Errorf("Check(0x%x, %d) = %v, want ok=%v", c.off, c.width, err, c.ok)
		}
	}
}

func TestAccessOutsideRegionPanicsLikeSliceIndexing(t *testing.T) {
	r := New(make([]byte, 8))
	defer func() {
		if recover() == nil {
			t.Error("Read32 past the end did not fault")
		}
	}()
	r.Read32(8)
}

func TestAccessorsDoNotAllocate(t *testing.T) {
	r := New(page(t))
	if n := testing.AllocsPerRun(1000, func() {
		r.Write32(0, r.Read32(4)+1)
		r.Write64(8, r.Read64(16))
	}); n != 0 {
		t.Errorf("%v allocations per access", n)
	}
}

func BenchmarkWrite32(b *testing.B) {
	r := New(page(b))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.Write32(0x1000-4, uint32(i))
	}
}

func BenchmarkRead32(b *testing.B) {
	r := New(page(b))
	b.ReportAllocs()
	var sum uint32
	for b.Loop() {
		sum += r.Read32(0x1c)
	}
	_ = sum
}
