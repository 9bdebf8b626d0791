//go:build guest

package iommu

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/vfio"
)

// These tests run as root in the umd QEMU guest (q35 + intel-iommu), where
// every QEMU NVMe controller is bound to vfio-pci. They need no device
// open: DMA mappings belong to the container.

const dmaEntryLimitPath = "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit"

// openContainer opens a container with the group of every vfio-pci function
// set to it and its IOMMU set to type1v2, and closes it all at the end
// (groups, then the container).
func openContainer(t *testing.T) *vfio.Container {
	t.Helper()
	if d := guest.Driver(); d != "" && d != "vfio-pci" {
		t.Skipf("the guest bound its NVMe functions to %s, not vfio-pci", d)
	}
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	if len(bdfs) == 0 {
		t.Fatal("no PCI function is bound to vfio-pci in the guest")
	}
	var numbers []int
	for _, bdf := range bdfs {
		n, err := vfio.GroupOf(bdf)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(numbers, n) {
			numbers = append(numbers, n)
		}
	}
	c, err := vfio.OpenContainer()
	if err != nil {
		t.Fatal(err)
	}
	var groups []*vfio.Group
	t.Cleanup(func() {
		for _, g := range groups {
			if err := g.Close(); err != nil {
				t.Error(err)
			}
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	for _, n := range numbers {
		g, err := vfio.OpenGroup(n)
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g)
		if err := g.SetContainer(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetIOMMU(vfio.Type1v2IOMMU); err != nil {
		t.Fatal(err)
	}
	return c
}

// newVFIOSpace makes a VFIO mapper over c and a Space over it, closed at
// the end of the test (before the container, whose cleanup runs later).
func newVFIOSpace(t *testing.T, c *vfio.Container, o Options) (*VFIO, *Space) {
	t.Helper()
	v, err := NewVFIO(c)
	if err != nil {
		t.Fatal(err)
	}
	return v, newSpace(t, v, o)
}

// dmaAvail asks the kernel how many more DMA mappings the container takes.
func dmaAvail(t *testing.T, v *VFIO) int {
	t.Helper()
	n, ok, err := v.DMAAvail()
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("kernel %s reports no dma_avail; every kernel since 5.10 does", guest.Kernel())
	}
	return n
}

// sharedMemory is an anonymous MAP_SHARED|MAP_POPULATE mapping, unmapped at
// the end of the test.
func sharedMemory(t *testing.T, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Munmap(mem); err != nil {
			t.Error(err)
		}
	})
	return mem
}

func TestGuestVFIOMapper(t *testing.T) {
	guest.Require(t)
	c := openContainer(t)
	info, err := c.IOMMUInfo()
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVFIO(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s: IOVA ranges %s, page sizes %#x, dma_avail %d", guest.Kernel(), formatRanges(v.Ranges()), v.Limits().PageSizes, v.Limits().MaxMappings)

	// The ranges are the kernel's, and the ones the identity mapper
	// imitates.
	var want []Range
	for _, r := range info.IOVARanges {
		want = append(want, Range{r.Start, r.End})
	}
	if got := v.Ranges(); !slices.Equal(got, want) || !slices.Equal(got, QEMUIntelRanges) {
		t.Errorf("Ranges() = %s; the kernel says %s, QEMUIntelRanges %s", formatRanges(got), formatRanges(want), formatRanges(QEMUIntelRanges))
	}
	l := v.Limits()
	if l.PageSizes != info.PageSizes || l.PageSize() != 4096 || l.PageSizes != DefaultIdentityPageSizes {
		t.Errorf("Limits() = %+v (page size %#x); the kernel says page sizes %#x", l, l.PageSize(), info.PageSizes)
	}
	if !info.HasDMAAvail || l.MaxMappings != int(info.DMAAvail) || l.MaxMappings != DefaultIdentityMaxMappings {
		t.Errorf("MaxMappings %d; the kernel says dma_avail %d (reported %v), want the default %d", l.MaxMappings, info.DMAAvail, info.HasDMAAvail, DefaultIdentityMaxMappings)
	}

	// The mapper on its own: what the kernel refuses matches this
	// package's errors as well as the errno.
	mem := sharedMemory(t, 2<<20)
	if err := v.Map(0xfee00000, mem[:4096], PermReadWrite); !errors.Is(err, ErrOutOfRange) || !errors.Is(err, unix.EINVAL) {
		t.Errorf("mapping in the interrupt window: got %v, want ErrOutOfRange and EINVAL", err)
	}
	if err := v.Map(0x40000000, mem, PermRead); err != nil {
		t.Fatal(err)
	}
	if err := v.Map(0x40100000, mem[:4096], PermRead); !errors.Is(err, ErrOverlap) || !errors.Is(err, unix.EEXIST) {
		t.Errorf("mapping over a mapping: got %v, want ErrOverlap and EEXIST", err)
	}
	if err := v.Unmap(0x40000000, 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := v.Unmap(0x40000000, 2<<20); !errors.Is(err, ErrNotMapped) {
		t.Errorf("unmapping twice: got %v, want ErrNotMapped", err)
	}
	if err := v.Map(0x40000000, mem[:4096], 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("no permission: got %v", err)
	}
}

func TestGuestMapPool(t *testing.T) {
	guest.Require(t)
	const size = 8 << 20
	mem := sharedMemory(t, size) // made first, so unmapped after the Space closes
	c := openContainer(t)
	v, s := newVFIOSpace(t, c, Options{})
	before := dmaAvail(t, v)
	if st := s.Stats(); st.MappingsLeft != before {
		t.Errorf("the Space counts %d mappings left, the kernel %d", st.MappingsLeft, before)
	}
	for i := range mem {
		mem[i] = byte(i >> 12)
	}
	owner := Owner{Name: "guest-pool", ID: 42, Tag: "TestGuestMapPool"}
	m, err := s.MapPool(mem, owner, MapOptions{Align: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mapped %v", m)
	if m.IOVA() == 0 || m.IOVA()%(2<<20) != 0 || m.Size() != size {
		t.Errorf("mapping at %#x of %#x bytes, want a 2 MiB-aligned IOVA", m.IOVA(), m.Size())
	}
	if got := dmaAvail(t, v); got != before-1 {
		t.Errorf("dma_avail %d after one MapPool of 8 MiB, want %d: one mapping, whatever its size", got, before-1)
	}
	// The kernel holds the range: mapping anything at its last page is
	// refused as an overlap.
	last, _ := m.Translate(size - 1)
	if err := c.MapDMA(mem[:4096], last&^4095, vfio.DMARead); !errors.Is(err, unix.EEXIST) {
		t.Errorf("mapping over the pool's last page: got %v, want EEXIST", err)
	}
	if r, ok := s.Lookup(last); !ok || !r.Live() || r.Owner != owner || r.IOVA != m.IOVA() || r.Size != size {
		t.Errorf("Lookup(%#x) = %v, %v", last, r, ok)
	}
	if sub, ok := m.IOVAOf(mem[3<<20 : 3<<20+4096]); !ok || sub != m.IOVA()+3<<20 {
		t.Errorf("IOVAOf a buffer 3 MiB in = %#x, %v", sub, ok)
	}
	// The same memory may be mapped twice, at two IOVAs.
	m2, err := s.MapPool(mem[:2<<20], Owner{Name: "alias"}, MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m2.IOVA() < m.IOVA()+size {
		t.Errorf("the second pool went to %#x, below the first's end %#x", m2.IOVA(), m.IOVA()+size)
	}
	if got := dmaAvail(t, v); got != before-2 || s.Stats().MappingsLeft != got {
		t.Errorf("dma_avail %d after two maps (the Space counts %d left), want %d", got, s.Stats().MappingsLeft, before-2)
	}

	if err := m.Unmap(); err != nil {
		t.Fatal(err)
	}
	if got := dmaAvail(t, v); got != before-1 {
		t.Errorf("dma_avail %d after unmapping one, want %d", got, before-1)
	}
	if n, err := c.UnmapDMA(m.IOVA(), size); err != nil || n != 0 {
		t.Errorf("the kernel still had 0x%x bytes mapped at %#x (%v)", n, m.IOVA(), err)
	}
	r, ok := s.Lookup(last)
	if !ok || r.Live() || r.Owner != owner || r.Unmapped.IsZero() {
		t.Errorf("Lookup after Unmap = %v, %v; want the recently unmapped record", r, ok)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := dmaAvail(t, v); got != before {
		t.Errorf("dma_avail %d after Close, want %d", got, before)
	}
	if m2.Mapped() {
		t.Error("Close left a mapping")
	}
}

func TestGuestHugepagePool(t *testing.T) {
	guest.Require(t)
	c := openContainer(t)
	v, s := newVFIOSpace(t, c, Options{})
	before := dmaAvail(t, v)

	const size = 32 << 20 // 16 hugepages of the 128 the guest reserves
	fd, err := unix.MemfdCreate("umd-iommu-test", unix.MFD_CLOEXEC|unix.MFD_HUGETLB)
	if err != nil {
		t.Fatalf("memfd_create with MFD_HUGETLB: %v", err)
	}
	f := os.NewFile(uintptr(fd), "umd-iommu-test")
	if err := unix.Ftruncate(fd, size); err != nil {
		f.Close()
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	f.Close() // the mapping keeps the pages
	if err != nil {
		t.Fatalf("mapping 16 hugepages: %v", err)
	}
	defer func() {
		if err := unix.Munmap(mem); err != nil {
			t.Error(err)
		}
	}()
	if addressOf(mem)%(2<<20) != 0 {
		t.Fatalf("hugetlb memory at %#x is not 2 MiB-aligned", addressOf(mem))
	}

	m, err := s.MapPool(mem, Owner{Name: "hugepages"}, MapOptions{Align: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmap()
	t.Logf("mapped %v", m)
	if m.IOVA()%(2<<20) != 0 {
		t.Errorf("a hugepage pool at IOVA %#x, want 2 MiB alignment", m.IOVA())
	}
	if got := dmaAvail(t, v); got != before-1 {
		t.Errorf("dma_avail %d, want %d", got, before-1)
	}
	for _, off := range []uint64{0, 2 << 20, size - 1} {
		iova, ok := m.Translate(off)
		if r, found := s.Lookup(iova); !ok || !found || r.Owner.Name != "hugepages" {
			t.Errorf("offset %#x: iova %#x (%v), ledger %v", off, iova, ok, r)
		}
	}
	if err := m.Unmap(); err != nil {
		t.Fatal(err)
	}
	if got := dmaAvail(t, v); got != before {
		t.Errorf("dma_avail %d after Unmap, want %d", got, before)
	}
}

// TestGuestMappingLimit hits an artificial mapping limit, then the kernel's
// own, lowered through the module parameter so that it takes 16 mappings
// rather than 65535 to reach.
func TestGuestMappingLimit(t *testing.T) {
	guest.Require(t)
	mem := sharedMemory(t, 32*4096)
	page := func(i int) []byte { return mem[i*4096 : (i+1)*4096] }

	t.Run("artificial", func(t *testing.T) {
		c := openContainer(t)
		v, s := newVFIOSpace(t, c, Options{MaxMappings: 8})
		before := dmaAvail(t, v)
		for i := range 8 {
			if _, err := s.MapPool(page(i), Owner{ID: uint64(i)}, MapOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		_, err := s.MapPool(page(8), Owner{Name: "ninth"}, MapOptions{})
		var le *LimitError
		if !errors.As(err, &le) || !le.Artificial || le.Limit != 8 || !strings.Contains(err.Error(), DMAEntryLimitParam) {
			t.Fatalf("a ninth mapping: got %v, want a *LimitError naming %s", err, DMAEntryLimitParam)
		}
		t.Log(err)
		if got := dmaAvail(t, v); got != before-8 {
			t.Errorf("dma_avail %d, want %d: eight mappings, the refused one not among them", got, before-8)
		}
		if st := s.Stats(); st.Mappings != 8 || st.MappingsLeft != 0 || s.alloc.Allocated() != 8 {
			t.Errorf("Stats() = %+v, %d allocations", st, s.alloc.Allocated())
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if got := dmaAvail(t, v); got != before {
			t.Errorf("dma_avail %d after Close, want %d", got, before)
		}
	})

	t.Run("kernel", func(t *testing.T) {
		old, err := os.ReadFile(dmaEntryLimitPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dmaEntryLimitPath, []byte("16"), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := os.WriteFile(dmaEntryLimitPath, old, 0); err != nil {
				t.Error(err)
			}
		})
		// The kernel takes dma_avail from the parameter when the IOMMU
		// type is set.
		c := openContainer(t)
		v, s := newVFIOSpace(t, c, Options{})
		if l := v.Limits().MaxMappings; l != 16 {
			t.Fatalf("with %s=16 the mapper reports %d mappings available", DMAEntryLimitParam, l)
		}
		var ms []*Mapping
		for i := range 16 {
			m, err := s.MapPool(page(i), Owner{ID: uint64(i)}, MapOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ms = append(ms, m)
		}
		if got := dmaAvail(t, v); got != 0 {
			t.Errorf("dma_avail %d after 16 mappings, want 0", got)
		}
		_, err = s.MapPool(page(16), Owner{}, MapOptions{})
		var le *LimitError
		if !errors.As(err, &le) || le.Kernel || le.Artificial || le.Limit != 16 {
			t.Fatalf("a 17th mapping: got %v, want the Space's own *LimitError", err)
		}
		t.Log(err)

		// Somebody else takes the slot a MapPool frees: the Space counts
		// one left, the kernel none, and the kernel's ENOSPC comes back as
		// a *LimitError that leaves nothing behind.
		if err := ms[0].Unmap(); err != nil {
			t.Fatal(err)
		}
		const foreign = 0x7000000000
		if err := c.MapDMA(page(20), foreign, vfio.DMARead); err != nil {
			t.Fatal(err)
		}
		defer c.UnmapDMA(foreign, 4096)
		_, err = s.MapPool(page(17), Owner{Name: "refused"}, MapOptions{})
		if !errors.As(err, &le) || !le.Kernel || !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), DMAEntryLimitParam) {
			t.Fatalf("mapping with the kernel's slots all taken: got %v, want a *LimitError wrapping ENOSPC", err)
		}
		t.Log(err)
		if st := s.Stats(); st.Mappings != 15 || s.alloc.Allocated() != 15 || s.Ledger().Len() != 15 {
			t.Errorf("the refused map left %+v, %d allocations", st, s.alloc.Allocated())
		}
		if n, err := c.UnmapDMA(foreign, 4096); err != nil || n != 4096 {
			t.Fatalf("unmapping the foreign mapping: %#x, %v", n, err)
		}
		if _, err := s.MapPool(page(17), Owner{}, MapOptions{}); err != nil {
			t.Errorf("mapping once the slot is free again: %v", err)
		}
	})
	if b, err := os.ReadFile(dmaEntryLimitPath); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(DefaultIdentityMaxMappings) {
		t.Errorf("%s is %q after the test (%v)", dmaEntryLimitPath, b, err)
	}
}

// TestGuestSmallWindow exhausts a 64 KiB window of IOVA space.
func TestGuestSmallWindow(t *testing.T) {
	guest.Require(t)
	mem := sharedMemory(t, 32*4096)
	c := openContainer(t)
	v, s := newVFIOSpace(t, c, Options{Ranges: []Range{{0x100000, 0x10ffff}}})
	before := dmaAvail(t, v)
	var ms []*Mapping
	for i := range 16 {
		m, err := s.MapPool(mem[i*4096:(i+1)*4096], Owner{ID: uint64(i)}, MapOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if m.IOVA() < 0x100000 || m.IOVA() > 0x10f000 {
			t.Errorf("mapping %d at %#x, outside the window", i, m.IOVA())
		}
		ms = append(ms, m)
	}
	_, err := s.MapPool(mem[16*4096:17*4096], Owner{Name: "overflow"}, MapOptions{})
	var ee *ExhaustedError
	if !errors.As(err, &ee) || ee.Free != 0 || ee.Total != 16*4096 {
		t.Fatalf("past the window: got %v, want an *ExhaustedError", err)
	}
	t.Log(err)
	if got := dmaAvail(t, v); got != before-16 {
		t.Errorf("dma_avail %d, want %d: the exhausted MapPool must not map", got, before-16)
	}
	// Two freed neighbours coalesce into room for 8 KiB.
	if err := errors.Join(ms[6].Unmap(), ms[7].Unmap()); err != nil {
		t.Fatal(err)
	}
	m, err := s.MapPool(mem[20*4096:22*4096], Owner{Name: "8 KiB"}, MapOptions{})
	if err != nil || m.IOVA() != ms[6].IOVA() {
		t.Errorf("8 KiB into two freed pages: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := dmaAvail(t, v); got != before {
		t.Errorf("dma_avail %d after Close, want %d", got, before)
	}

	// A window inside the interrupt hole has no IOVA at all.
	if _, err := New(v, Options{Ranges: []Range{{0xfee00000, 0xfeefffff}}}); !errors.Is(err, ErrIOVAExhausted) {
		t.Errorf("a Space in the interrupt window: got %v", err)
	}
}

// TestGuestCloseOrderIsEnforced tries to close the container's last group
// while the Space still has a mapping: vfio refuses (the kernel would drop
// the mapping behind the Space's back), and after the Space is closed the
// group closes.
func TestGuestCloseOrderIsEnforced(t *testing.T) {
	guest.Require(t)
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	if len(bdfs) == 0 {
		t.Fatal("no PCI function is bound to vfio-pci in the guest")
	}
	n, err := vfio.GroupOf(bdfs[0])
	if err != nil {
		t.Fatal(err)
	}
	c, err := vfio.OpenContainer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g, err := vfio.OpenGroup(n)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.SetContainer(c); err != nil {
		t.Fatal(err)
	}
	if err := c.SetIOMMU(vfio.Type1v2IOMMU); err != nil {
		t.Fatal(err)
	}
	v, err := NewVFIO(c)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(v, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mem := sharedMemory(t, 1<<20)
	m, err := s.MapPool(mem, Owner{Name: "orphan"}, MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); !errors.Is(err, vfio.ErrInUse) {
		t.Fatalf("closing the last group with a live mapping: %v, want ErrInUse", err)
	}
	if c.Mappings() != 1 {
		t.Errorf("the container counts %d mappings, want 1", c.Mappings())
	}
	if err := s.Close(); err != nil {
		t.Errorf("closing the Space: %v", err)
	}
	if c.Mappings() != 0 {
		t.Errorf("the container counts %d mappings after the Space closed", c.Mappings())
	}
	if err := g.Close(); err != nil {
		t.Fatalf("closing the group after the Space: %v", err)
	}
	if m.Mapped() {
		t.Error("the mapping is still recorded as mapped")
	}
	if r, ok := s.Lookup(m.IOVA()); !ok || r.Live() {
		t.Errorf("Lookup = %v, %v; want the unmapped record", r, ok)
	}
}
