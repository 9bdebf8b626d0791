package sim

import (
	"encoding/binary"
	"testing"

	"github.com/umdkit/umd/nvmelike"
)

func TestMemoryTranslate(t *testing.T) {
	m := NewMemory()
	a, err := m.Alloc(5000, 4096)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Alloc(100, 64)
	if err != nil {
		t.Fatal(err)
	}
	if a.IOVA%4096 != 0 || b.IOVA%4096 != 0 || b.IOVA < a.IOVA+5000+4096 {
		t.Errorf("IOVAs 0x%x 0x%x: not aligned or no guard page", a.IOVA, b.IOVA)
	}
	if p, ok := m.Translate(a.IOVA+10, 20); !ok || &p[0] != &a.Bytes[10] {
		t.Error("translate inside a region")
	}
	if _, ok := m.Translate(a.IOVA+4990, 20); ok {
		t.Error("translate across a region's end succeeded")
	}
	if _, ok := m.Translate(a.IOVA-1, 1); ok {
		t.Error("translate below the first region succeeded")
	}
	if err := m.Free(a); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(a); err == nil {
		t.Error("double free succeeded")
	}
	if _, ok := m.Translate(a.IOVA, 1); ok {
		t.Error("translate of freed memory succeeded")
	}
}

// TestTransferPRPChecks drives the controller's PRP walker directly.
func TestTransferPRPChecks(t *testing.T) {
	m := NewMemory()
	c := New(m, Config{})
	c.ps = 4096
	buf, _ := m.Alloc(3*4096, 4096)
	list, _ := m.Alloc(4096, 4096)
	data := make([]byte, 3*4096)
	for i := range data {
		data[i] = byte(i)
	}
	// Three pages through a list.
	binary.LittleEndian.PutUint64(list.Bytes[0:], buf.IOVA+4096)
	binary.LittleEndian.PutUint64(list.Bytes[8:], buf.IOVA+8192)
	if st := c.transfer(buf.IOVA, list.IOVA, data, true); st != 0 {
		t.Fatalf("status 0x%x", st)
	}
	if string(buf.Bytes) != string(data) {
		t.Error("data differs")
	}
	// A list entry with an offset.
	binary.LittleEndian.PutUint64(list.Bytes[8:], buf.IOVA+8192+4)
	if st := c.transfer(buf.IOVA, list.IOVA, data, true); st != statusInvalidPRPOffset {
		t.Errorf("status 0x%x, want PRP offset invalid", st)
	}
	// PRP1 not dword aligned.
	if st := c.transfer(buf.IOVA+2, 0, data[:8], true); st != statusInvalidPRPOffset {
		t.Errorf("status 0x%x, want PRP offset invalid", st)
	}
	// Unmapped memory.
	if st := c.transfer(0x1000, 0, data[:8], true); st != statusDataTransfer {
		t.Errorf("status 0x%x, want data transfer error", st)
	}
}

func TestInvalidDoorbells(t *testing.T) {
	c := New(NewMemory(), Config{})
	c.Write32(nvmelike.SQTailDoorbell(5, 0), 1) // no such queue
	c.Write32(nvmelike.NVME_REG_DBS+2, 1)       // not on the stride
	if got := c.Stats().InvalidDoorbells; got != 2 {
		t.Errorf("%d invalid doorbells counted", got)
	}
	c.Remove()
	if c.Read32(nvmelike.NVME_REG_CSTS) != 0xffffffff || c.Read64(nvmelike.NVME_REG_CAP) != ^uint64(0) {
		t.Error("a removed controller's registers are not all ones")
	}
}
