package umd

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/iommu"
)

// testPool builds the DMA adapter over a small pool of 4 KiB pages (the
// host has no hugepages reserved) mapped through the identity mapper,
// which resolves IOVAs back to memory as a device would see it.
func testPool(t *testing.T) (*PoolDMA, *iommu.Identity) {
	t.Helper()
	pool, err := hugepage.New(hugepage.Options{Size: 1 << 20, PageSize: os.Getpagesize(), NUMANode: hugepage.AnyNode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	mapper, err := iommu.NewIdentity(iommu.IdentityOptions{})
	if err != nil {
		t.Fatal(err)
	}
	space, err := iommu.New(mapper, iommu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { space.Close() })
	m, err := space.MapPool(pool.Bytes(), iommu.Owner{Name: "test pool"}, iommu.MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &PoolDMA{pool: pool, mapping: m, live: map[uint64]hugepage.Buffer{}}, mapper
}

func TestDMAPoolBuffersAreWhereTheirIOVASays(t *testing.T) {
	p, mapper := testPool(t)
	a, err := p.Alloc(8192, 4096)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Alloc(512, 512)
	if err != nil {
		t.Fatal(err)
	}
	if a.IOVA%4096 != 0 || b.IOVA%512 != 0 || a.IOVA == 0 {
		t.Errorf("IOVAs 0x%x and 0x%x break the alignment asked for", a.IOVA, b.IOVA)
	}
	copy(a.Bytes, "written by the host")
	seen, err := mapper.Resolve(a.IOVA, uint64(len(a.Bytes)), iommu.PermRead)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(seen, []byte("written by the host")) {
		t.Error("the device's view of the buffer's IOVA is not the buffer")
	}
	if err := p.Free(a); err != nil {
		t.Fatal(err)
	}
	if err := p.Free(a); err == nil {
		t.Error("freeing a buffer twice succeeded")
	}
	// Reused memory comes back zeroed, as nvmelike.DMA promises.
	c, err := p.Alloc(8192, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Bytes, make([]byte, 8192)) {
		t.Error("a reused buffer is not zeroed")
	}
	if err := p.Free(b); err != nil {
		t.Fatal(err)
	}
	if err := p.Free(c); err != nil {
		t.Fatal(err)
	}
}

func TestNUMANodeFromSysfs(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "bus", "pci", "devices")
	for bdf, node := range map[string]string{"0000:01:00.0": "1\n", "0000:02:00.0": "-1\n", "0000:03:00.0": "x\n"} {
		os.MkdirAll(filepath.Join(dev, bdf), 0o755)
		os.WriteFile(filepath.Join(dev, bdf, "numa_node"), []byte(node), 0o644)
	}
	for bdf, want := range map[string]struct {
		n  int
		ok bool
	}{"0000:01:00.0": {1, true}, "0000:02:00.0": {0, false}, "0000:03:00.0": {0, false}, "0000:04:00.0": {0, false}} {
		n, ok := numaNode(root, bdf)
		if n != want.n || ok != want.ok {
			t.Errorf("numaNode(%s) = %d, %v; want %d, %v", bdf, n, ok, want.n, want.ok)
		}
	}
}

func TestOpenNonexistentDevice(t *testing.T) {
	_, err := Open(t.Context(), "0000:ff:1f.7", nil)
	if err == nil {
		t.Fatal("opening a device that does not exist succeeded")
	}
	if !bytes.Contains([]byte(err.Error()), []byte("0000:ff:1f.7")) {
		t.Errorf("the error does not name the device: %v", err)
	}
}
