//go:build guest

package dmabuf

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/hugepage"
)

// Sharing pool memory through a dma-buf against copying it. What a
// consumer pays to get at size bytes the owner has:
//   - dma-buf: export the range, map it, fault every page in, unmap and
//     close (no byte is moved);
//   - dma-buf mapped once: only DMA_BUF_IOCTL_SYNC around each look
//     at new bytes (the steady state when a mapping is reused);
//   - memcpy: copy the bytes into memory of its own (the least any
//     copying scheme costs);
//   - socket: the bytes travel through a unix socket (write + read).

var benchSizes = []int{64 << 10, 2 << 20}

func benchPool(b *testing.B) *hugepage.Pool {
	b.Helper()
	p, err := hugepage.New(hugepage.Options{Size: 4 << 20, NUMANode: hugepage.AnyNode})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

func benchShare(b *testing.B, open func() (*Exporter, error), size int) {
	e, err := open()
	if err != nil {
		b.Fatalf("%v (load the module with `modprobe umd_dmabuf`)", err)
	}
	defer e.Close()
	p := benchPool(b)
	page := os.Getpagesize()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var sum byte
	for b.Loop() {
		buf, err := e.ExportPool(p, 0, size, ReadWrite)
		if err != nil {
			b.Fatal(err)
		}
		m, err := Import(buf.Fd())
		if err != nil {
			b.Fatal(err)
		}
		mem := m.Bytes()
		for i := 0; i < size; i += page {
			sum += mem[i]
		}
		m.Close()
		buf.Close()
	}
	sink += sum
}

// benchMapped is the steady state of sharing: the consumer mapped the
// dma-buf once and only brackets each look at new data with Sync.
func benchMapped(b *testing.B, size int) {
	e, err := OpenExporter()
	if err != nil {
		b.Fatalf("%v (load the module with `modprobe umd_dmabuf`)", err)
	}
	defer e.Close()
	p := benchPool(b)
	buf, err := e.ExportPool(p, 0, size, ReadWrite)
	if err != nil {
		b.Fatal(err)
	}
	defer buf.Close()
	m, err := Import(buf.Fd())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Sync(SyncStart | SyncRead); err != nil {
			b.Fatal(err)
		}
		if err := m.Sync(SyncEnd | SyncRead); err != nil {
			b.Fatal(err)
		}
	}
}

func benchMemcpy(b *testing.B, size int) {
	p := benchPool(b)
	dst := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		copy(dst, p.Bytes()[:size])
	}
}

func benchSocket(b *testing.B, size int) {
	p := benchPool(b)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	dst := make([]byte, size)
	src := p.Bytes()[:size]
	errs := make(chan error, 1)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		go func() {
			for off := 0; off < size; {
				n, err := unix.Write(fds[0], src[off:])
				if err != nil {
					errs <- err
					return
				}
				off += n
			}
			errs <- nil
		}()
		for off := 0; off < size; {
			n, err := unix.Read(fds[1], dst[off:])
			if err != nil || n == 0 {
				b.Fatalf("reading the socket: %d, %v", n, err)
			}
			off += n
		}
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkShareUmdDmabuf(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) { benchShare(b, OpenExporter, size) })
	}
}

func BenchmarkShareUdmabuf(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) { benchShare(b, OpenUdmabuf, size) })
	}
}

func BenchmarkShareMapped(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) { benchMapped(b, size) })
	}
}

func BenchmarkCopyMemcpy(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) { benchMemcpy(b, size) })
	}
}

func BenchmarkCopySocket(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) { benchSocket(b, size) })
	}
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// TestShareVersusCopyFigures runs the benchmarks above in the guest (whose
// harness runs tests only) and logs their figures as a table for
// docs/zero-copy.md. It asserts nothing about speed.
func TestShareVersusCopyFigures(t *testing.T) {
	setup(t)
	type row struct {
		name string
		run  func(*testing.B, int)
	}
	rows := []row{
		{"dma-buf (umd_dmabuf): export+mmap+fault+close", func(b *testing.B, n int) { benchShare(b, OpenExporter, n) }},
		{"dma-buf mapped once: Sync start+end per share", benchMapped},
		{"memcpy", benchMemcpy},
		{"unix socket write+read", benchSocket},
	}
	if _, err := os.Stat(UdmabufDevice); err == nil {
		rows = append(rows[:1], append([]row{{"dma-buf (udmabuf): export+mmap+fault+close", func(b *testing.B, n int) { benchShare(b, OpenUdmabuf, n) }}}, rows[1:]...)...)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\n| method | size | ns/op | MB/s | allocs/op |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		for _, size := range benchSizes {
			res := testing.Benchmark(func(b *testing.B) { r.run(b, size) })
			if res.N == 0 {
				t.Fatalf("benchmark %s/%s failed", r.name, sizeName(size))
			}
			mbs := float64(size) * float64(res.N) / res.T.Seconds() / 1e6
			fmt.Fprintf(&out, "| %s | %s | %d | %.0f | %d |\n", r.name, sizeName(size), res.NsPerOp(), mbs, res.AllocsPerOp())
		}
	}
	t.Log(out.String())
}
