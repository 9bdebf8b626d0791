//go:build guest

package dmabuf

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu/guest"
)

// TestNVMeDataSharedWithoutCopy is the zero-copy path end to end: this
// process reads data from an NVMe namespace by DMA into a buffer of the
// device's hugepage pool, exports that buffer as a dma-buf, and a second
// process maps the dma-buf and finds the same bytes in the same physical
// pages.
func TestNVMeDataSharedWithoutCopy(t *testing.T) {
	setup(t)
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()

	const size = 256 << 10
	src, err := dev.Alloc(size)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(src)
	for i := range src.Bytes {
		src.Bytes[i] = byte(i*13 + i>>10)
	}
	blocks := uint32(size / 512)
	w := nvmelike.WriteCommand(1, 0, blocks/2, src.Slice(0, size/2))
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}
	w = nvmelike.WriteCommand(1, uint64(blocks/2), blocks/2, src.Slice(size/2, size/2))
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}

	// The device writes into dst by DMA; nothing on the host copies it.
	dst, err := dev.Alloc(size)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(dst)
	for half := range 2 {
		r := nvmelike.ReadCommand(1, uint64(half)*uint64(blocks/2), blocks/2, dst.Slice(half*size/2, size/2))
		if _, err := q.Exec(ctx, &r); err != nil {
			t.Fatal(err)
		}
	}
	sum := sha256.Sum256(src.Bytes)
	if sha256.Sum256(dst.Bytes) != sum {
		t.Fatal("the data read back by DMA differs from what was written")
	}

	off, ok := dev.PoolOffset(dst)
	if !ok {
		t.Fatal("the buffer is not in the device's pool")
	}
	e, err := OpenExporter()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	b, err := e.ExportPool(dev.Pool(), off, size, ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	childPFNs, err := sendToChild(t, b, "check:"+hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := pfns(dst.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ours, childPFNs) {
		t.Fatalf("the child's mapping has other pages than the DMA buffer:\nours  %v\nchild %v", head(ours), head(childPFNs))
	}
	t.Logf("%d KiB read by DMA from %s, shared with a child process: same %d pages (PFN %#x..), same bytes", size>>10, bdf, len(ours), ours[0])

	// A kernel importer of the dma-buf gets the same pages and bytes.
	ins, err := Inspect(b.Fd())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ins.PFNs, ours) {
		t.Fatalf("the kernel importer's sg_table has other pages than the DMA buffer:\nours     %v\nsg_table %v", head(ours), head(ins.PFNs))
	}
	if want := fnv64a(dst.Bytes); ins.Checksum != want {
		t.Fatalf("the kernel importer's vmap checksum is %#x, the DMA buffer's bytes hash to %#x", ins.Checksum, want)
	}
}
