//go:build guest

package vfio_test

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/vfio"
)

// These tests run as root in the umd QEMU guest (q35 + intel-iommu), where
// every QEMU NVMe controller is bound to vfio-pci.

const (
	qemuVendor = 0x1b36   // Red Hat, Inc., QEMU's PCI vendor id
	qemuNVMe   = 0x0010   // QEMU NVM Express controller
	nvmeClass  = 0x010802 // mass storage, non-volatile memory, NVM Express
	cardsNVMe  = 5        // NVMe functions (each in its own group) of the cards topology
)

// vfioFunctions returns the BDFs of the functions bound to vfio-pci, failing
// the test when there are none.
func vfioFunctions(t *testing.T) []string {
	t.Helper()
	if d := os.Getenv(guest.EnvDriver); d != "" && d != "vfio-pci" {
		t.Skipf("the guest bound its NVMe functions to %s, not vfio-pci", d)
	}
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	if len(bdfs) == 0 {
		t.Fatal("no PCI function is bound to vfio-pci in the guest")
	}
	return bdfs
}

// groupsOf maps each function to its IOMMU group, checking vfio.GroupOf
// against the guest's own reading of sysfs, and returns the groups sorted.
func groupsOf(t *testing.T, bdfs []string) (map[string]int, []int) {
	t.Helper()
	byBDF := make(map[string]int)
	var groups []int
	for _, bdf := range bdfs {
		n, err := vfio.GroupOf(bdf)
		if err != nil {
			t.Fatal(err)
		}
		if want := guest.IOMMUGroup(t, bdf); strconv.Itoa(n) != want {
			t.Errorf("GroupOf(%s) = %d, sysfs says group %s", bdf, n, want)
		}
		byBDF[bdf] = n
		if !slices.Contains(groups, n) {
			groups = append(groups, n)
		}
	}
	slices.Sort(groups)
	return byBDF, groups
}

// setup is a container with every vfio-pci function's group set to it,
// the IOMMU set to type1v2 and every function open as a device.
type setup struct {
	container *vfio.Container
	groups    []*vfio.Group
	devices   []*vfio.Device
}

// openAll builds a setup and registers its teardown, in the order the
// package demands: devices, then groups, then the container.
func openAll(t *testing.T) *setup {
	t.Helper()
	bdfs := vfioFunctions(t)
	byBDF, numbers := groupsOf(t, bdfs)

	c, err := vfio.OpenContainer()
	if err != nil {
		t.Fatal(err)
	}
	s := &setup{container: c}
	t.Cleanup(func() {
		for _, d := range s.devices {
			if err := d.Close(); err != nil {
				t.Error(err)
			}
		}
		for _, g := range s.groups {
			if err := g.Close(); err != nil {
				t.Error(err)
			}
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})

	byNumber := make(map[int]*vfio.Group)
	for _, n := range numbers {
		g, err := vfio.OpenGroup(n)
		if err != nil {
			t.Fatal(err)
		}
		s.groups = append(s.groups, g)
		byNumber[n] = g
		if err := g.SetContainer(c); err != nil {
			t.Fatal(err)
		}
		if c.IOMMU() == 0 {
			if err := c.SetIOMMU(vfio.Type1v2IOMMU); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, bdf := range bdfs {
		d, err := byNumber[byBDF[bdf]].Device(bdf)
		if err != nil {
			t.Fatal(err)
		}
		s.devices = append(s.devices, d)
	}
	return s
}

func TestGuestContainer(t *testing.T) {
	guest.Require(t)
	c, err := vfio.OpenContainer()
	if err != nil {
		t.Fatal(err)
	}
	version, err := c.APIVersion()
	if err != nil || version != 0 {
		t.Errorf("APIVersion = %d, %v; want VFIO_API_VERSION 0", version, err)
	}
	for ext, want := range map[vfio.Extension]bool{
		vfio.Type1v2IOMMU: true,
		vfio.Type1IOMMU:   true,
		vfio.NoIOMMU:      false, // Debian's kernels are built without VFIO_NOIOMMU
	} {
		got, err := c.CheckExtension(ext)
		if err != nil || got != want {
			t.Errorf("CheckExtension(%s) = %v, %v; want %v", ext, got, err, want)
		}
	}
	if err := c.SetIOMMU(vfio.Type1v2IOMMU); err == nil || !strings.Contains(err.Error(), "no group is set") {
		t.Errorf("SetIOMMU on a container without groups: got %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.APIVersion(); !errors.Is(err, vfio.ErrClosed) {
		t.Errorf("APIVersion after Close: got %v, want ErrClosed", err)
	}
}

func TestGuestGroupsViable(t *testing.T) {
	guest.Require(t)
	bdfs := vfioFunctions(t)
	byBDF, numbers := groupsOf(t, bdfs)
	if guest.Topology() == "cards" && (len(bdfs) != cardsNVMe || len(numbers) != cardsNVMe) {
		t.Errorf("the cards topology has %d vfio-pci functions in %d groups, want %d in %d", len(bdfs), len(numbers), cardsNVMe, cardsNVMe)
	}
	for _, bdf := range bdfs {
		devices, err := vfio.GroupDevices(byBDF[bdf])
		if err != nil || !slices.Contains(devices, bdf) {
			t.Errorf("GroupDevices(%d) = %v, %v; want it to hold %s", byBDF[bdf], devices, err, bdf)
		}
	}
	for _, n := range numbers {
		g, err := vfio.OpenGroup(n)
		if err != nil {
			t.Fatal(err)
		}
		if g.Number() != n {
			t.Errorf("Number() = %d, want %d", g.Number(), n)
		}
		status, err := g.Status()
		if err != nil {
			t.Error(err)
		} else if !status.Viable || status.ContainerSet {
			t.Errorf("group %d: status %+v, want viable without a container", n, status)
		}

		// The kernel lets a group be open once at a time.
		_, err = vfio.OpenGroup(n)
		if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "already open by this process") {
			t.Errorf("opening group %d a second time: got %v, want EBUSY explained", n, err)
		}
		if err := g.Close(); err != nil {
			t.Error(err)
		}
		if err := g.Close(); err != nil {
			t.Errorf("second Close of group %d: %v", n, err)
		}
	}
}

func TestGuestSetContainerAndIOMMU(t *testing.T) {
	guest.Require(t)
	bdfs := vfioFunctions(t)
	byBDF, _ := groupsOf(t, bdfs)
	bdf := bdfs[0]

	c, err := vfio.OpenContainer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g, err := vfio.OpenGroup(byBDF[bdf])
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()

	if _, err := g.Device(bdf); err == nil || !strings.Contains(err.Error(), "call SetContainer first") {
		t.Errorf("Device before SetContainer: got %v", err)
	}
	if err := g.SetContainer(c); err != nil {
		t.Fatal(err)
	}
	if status, err := g.Status(); err != nil || !status.Viable || !status.ContainerSet {
		t.Errorf("status after SetContainer = %+v, %v; want viable with a container", status, err)
	}
	if _, err := g.Device(bdf); err == nil || !strings.Contains(err.Error(), "call Container.SetIOMMU first") {
		t.Errorf("Device before SetIOMMU: got %v", err)
	}
	if err := c.SetIOMMU(vfio.Type1v2IOMMU); err != nil {
		t.Fatal(err)
	}

	info, err := c.IOMMUInfo()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("IOMMU: page sizes %#x, IOVA ranges %v, DMA avail %d (reported: %v)", info.PageSizes, info.IOVARanges, info.DMAAvail, info.HasDMAAvail)
	if len(info.IOVARanges) == 0 {
		t.Error("the IOMMU reports no IOVA range")
	}
	for _, r := range info.IOVARanges {
		if r.End < r.Start {
			t.Errorf("IOVA range %v ends before it starts", r)
		}
	}
	if info.PageSizes&4096 == 0 {
		t.Errorf("page sizes %#x lack 4 KiB", info.PageSizes)
	}
	if !info.HasDMAAvail || info.DMAAvail == 0 {
		t.Errorf("DMA avail = %d (reported: %v); both kernels report a nonzero limit", info.DMAAvail, info.HasDMAAvail)
	}

	d, err := g.Device(bdf)
	if err != nil {
		t.Fatal(err)
	}
	// Out of order: the package refuses.
	if err := g.Close(); !errors.Is(err, vfio.ErrInUse) {
		t.Errorf("closing the group with a device open: got %v, want ErrInUse", err)
	}
	if err := c.Close(); !errors.Is(err, vfio.ErrInUse) {
		t.Errorf("closing the container with a group set: got %v, want ErrInUse", err)
	}
	if err := d.Close(); err != nil {
		t.Error(err)
	}
	if err := g.Close(); err != nil {
		t.Error(err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
}

func TestGuestDevice(t *testing.T) {
	guest.Require(t)
	s := openAll(t)
	for _, d := range s.devices {
		t.Run(d.BDF(), func(t *testing.T) {
			info, err := d.Info()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("device flags %#x, %d regions, %d IRQ indexes", info.Flags, info.NumRegions, info.NumIRQs)
			if info.Flags&vfio.DevicePCI == 0 {
				t.Errorf("device flags %#x lack the PCI flag", info.Flags)
			}
			if info.NumRegions != vfio.NumPCIRegions || info.NumIRQs != vfio.NumPCIIRQs {
				t.Errorf("%d regions and %d IRQ indexes, want %d and %d", info.NumRegions, info.NumIRQs, vfio.NumPCIRegions, vfio.NumPCIIRQs)
			}

			checkBAR0(t, d)
			checkConfig(t, d)

			msix, err := d.IRQInfo(vfio.IRQMSIX)
			if err != nil {
				t.Fatal(err)
			}
			if msix.Count == 0 || msix.Flags&vfio.IRQEventfd == 0 {
				t.Errorf("MSI-X: %+v, want vectors that signal eventfds", msix)
			}
			if req, err := d.IRQInfo(vfio.IRQReq); err != nil || req.Count != 1 {
				t.Errorf("REQ IRQ = %+v, %v; want one", req, err)
			}

			if info.Flags&vfio.DeviceResettable != 0 {
				if err := d.Reset(); err != nil {
					t.Error(err)
				}
				checkConfigIDs(t, d)
			}
		})
	}
}

func checkBAR0(t *testing.T, d *vfio.Device) {
	t.Helper()
	bar0, err := d.RegionInfo(vfio.RegionBAR0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BAR0: size %#x, offset %#x, flags %#x, mmap-able areas %v (sparse: %v), MSI-X mappable %v", bar0.Size, bar0.Offset, bar0.Flags, bar0.MmapAreas(), bar0.SparseMmap != nil, bar0.MSIXMappable)
	if bar0.Size == 0 {
		t.Fatal("BAR0 has size 0")
	}
	want := vfio.RegionReadable | vfio.RegionWritable | vfio.RegionMappable
	if bar0.Flags&want != want {
		t.Errorf("BAR0 flags %#x, want readable, writable and mappable", bar0.Flags)
	}
	areas := bar0.MmapAreas()
	if len(areas) == 0 {
		t.Fatal("BAR0 has no mmap-able area")
	}
	m, err := d.Mmap(vfio.RegionBAR0, areas[0].Offset, areas[0].Size)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(m.Bytes())) != areas[0].Size {
		t.Errorf("mapped %d bytes, want %d", len(m.Bytes()), areas[0].Size)
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	if err := m.Close(); err != nil || m.Bytes() != nil {
		t.Errorf("second Close of the mapping: %v, bytes %v", err, m.Bytes())
	}
	if _, err := d.Mmap(vfio.RegionBAR0, 0, bar0.Size+4096); err == nil || !strings.Contains(err.Error(), "outside the region's mmap-able areas") {
		t.Errorf("mapping past BAR0: got %v", err)
	}
	if _, err := d.Mmap(vfio.RegionConfig, 0, 4096); err == nil || !strings.Contains(err.Error(), "cannot be mmap'd") {
		t.Errorf("mapping config space: got %v", err)
	}
}

func checkConfigIDs(t *testing.T, d *vfio.Device) {
	t.Helper()
	var id [12]byte
	if _, err := d.ReadConfig(id[:], 0); err != nil {
		t.Fatal(err)
	}
	vendor := binary.LittleEndian.Uint16(id[0:2])
	device := binary.LittleEndian.Uint16(id[2:4])
	class := uint32(id[11])<<16 | uint32(id[10])<<8 | uint32(id[9])
	if vendor != qemuVendor || device != qemuNVMe || class != nvmeClass {
		t.Errorf("config space says vendor %#04x device %#04x class %#06x, want %#04x %#04x %#06x", vendor, device, class, qemuVendor, qemuNVMe, nvmeClass)
	}
}

func checkConfig(t *testing.T, d *vfio.Device) {
	t.Helper()
	checkConfigIDs(t, d)

	cfg, err := d.RegionInfo(vfio.RegionConfig)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Size < 256 || cfg.Flags&(vfio.RegionReadable|vfio.RegionWritable) != vfio.RegionReadable|vfio.RegionWritable {
		t.Errorf("config region: size %d, flags %#x; want at least 256 bytes, readable and writable", cfg.Size, cfg.Flags)
	}
	if _, err := d.ReadConfig(make([]byte, 4), int64(cfg.Size)-2); err == nil || !strings.Contains(err.Error(), "outside the") {
		t.Errorf("reading past config space: got %v", err)
	}

	// vfio-pci virtualises the Interrupt Line register (0x3c) as plain
	// read-write storage: a write must read back.
	const intLine = 0x3c
	old := make([]byte, 1)
	if _, err := d.ReadConfig(old, intLine); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteConfig([]byte{0x5a}, intLine); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1)
	if _, err := d.ReadConfig(got, intLine); err != nil || got[0] != 0x5a {
		t.Errorf("Interrupt Line reads back %#x, %v after writing 0x5a", got[0], err)
	}
	if _, err := d.WriteConfig(old, intLine); err != nil {
		t.Error(err)
	}
}

func TestGuestSharedContainer(t *testing.T) {
	guest.Require(t)
	s := openAll(t)
	if guest.Topology() == "cards" && (len(s.groups) != cardsNVMe || len(s.devices) != cardsNVMe) {
		t.Errorf("one container holds %d groups and %d devices, want %d of each in the cards topology", len(s.groups), len(s.devices), cardsNVMe)
	}
	if len(s.groups) < 2 {
		t.Skipf("the %s topology has one IOMMU group; sharing a container needs two", guest.Topology())
	}
	for _, g := range s.groups {
		if status, err := g.Status(); err != nil || !status.ContainerSet {
			t.Errorf("group %d: status %+v, %v; want its container set", g.Number(), status, err)
		}
	}
	for _, d := range s.devices {
		checkConfigIDs(t, d)
	}
	if info, err := s.container.IOMMUInfo(); err != nil || len(info.IOVARanges) == 0 {
		t.Errorf("IOMMU info of the shared container: %+v, %v", info, err)
	}
}

func TestGuestMapDMA(t *testing.T) {
	guest.Require(t)
	s := openAll(t)
	c := s.container
	info, err := c.IOMMUInfo()
	if err != nil {
		t.Fatal(err)
	}

	const size = 2 << 20
	mem := anonMem(t, size)

	// The first 2 MiB-aligned IOVA above 1 MiB that lies in a range.
	iova, ok := uint64(0), false
	for _, r := range info.IOVARanges {
		start := max(r.Start, 1<<20)
		start = (start + size - 1) &^ (size - 1)
		if r.Contains(start, size) {
			iova, ok = start, true
			break
		}
	}
	if !ok {
		t.Fatalf("no 2 MiB-aligned room in the IOVA ranges %v", info.IOVARanges)
	}

	if err := c.MapDMA(mem, iova, vfio.DMAReadWrite); err != nil {
		t.Fatal(err)
	}
	if after, err := c.IOMMUInfo(); err != nil || after.DMAAvail != info.DMAAvail-1 {
		t.Errorf("DMA avail after one map = %d, %v; want %d", after.DMAAvail, err, info.DMAAvail-1)
	}
	err = c.MapDMA(mem, iova, vfio.DMAReadWrite)
	if !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), "overlaps an existing mapping") {
		t.Errorf("mapping the same IOVA twice: got %v, want EEXIST explained", err)
	}
	unmapped, err := c.UnmapDMA(iova, size)
	if err != nil || unmapped != size {
		t.Errorf("UnmapDMA = %#x, %v; want %#x", unmapped, err, size)
	}
	if unmapped, err := c.UnmapDMA(iova, size); err != nil || unmapped != 0 {
		t.Errorf("unmapping again = %#x, %v; want nothing unmapped", unmapped, err)
	}

	// An IOVA outside every range: in the hole between the first two
	// ranges (intel-iommu reserves the MSI window at 0xfee00000), or past
	// the last one.
	var outside uint64
	switch last := info.IOVARanges[len(info.IOVARanges)-1]; {
	case len(info.IOVARanges) >= 2:
		outside = info.IOVARanges[0].End + 1
	case last.End < ^uint64(0)-size:
		outside = (last.End + size) &^ (size - 1)
	default:
		t.Fatalf("the IOVA ranges %v leave no hole to test with", info.IOVARanges)
	}
	err = c.MapDMA(mem, outside, vfio.DMAReadWrite)
	t.Logf("mapping outside the ranges: %v", err)
	if !errors.Is(err, vfio.ErrIOVAOutOfRange) || !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "outside the container's IOVA ranges") {
		t.Errorf("mapping iova %#x outside %v: got %v, want ErrIOVAOutOfRange wrapping EINVAL", outside, info.IOVARanges, err)
	}
}

// TestGuestUnbindDropsMappings unbinds the only vfio device of a group (its
// bridges stay with pcieport) while a DMA mapping is live: the unbind
// waits for the device fd, and once it is done the kernel has detached the
// group from the container and dropped the container's IOMMU with its
// mappings. UnmapDMA then reports the
// range unmapped (the kernel answers EINVAL: there is nothing left), and
// the group and the container close without leaking their fds. The
// function is bound to vfio-pci again after.
func TestGuestUnbindDropsMappings(t *testing.T) {
	guest.Require(t)
	const guard = time.Minute // bounds a hang, measures nothing
	bdfs := vfioFunctions(t)
	byBDF, _ := groupsOf(t, bdfs)
	bdf := ""
	for _, b := range bdfs {
		alone := true
		for _, o := range bdfs {
			alone = alone && (o == b || byBDF[o] != byBDF[b])
		}
		if alone {
			bdf = b
			break
		}
	}
	if bdf == "" {
		t.Fatalf("topology %s: no vfio-pci function is the only one in its IOMMU group", guest.Topology())
	}

	c, err := vfio.OpenContainer()
	if err != nil {
		t.Fatal(err)
	}
	g, err := vfio.OpenGroup(byBDF[bdf])
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetContainer(c); err != nil {
		t.Fatal(err)
	}
	if err := c.SetIOMMU(vfio.Type1v2IOMMU); err != nil {
		t.Fatal(err)
	}
	d, err := g.Device(bdf)
	if err != nil {
		t.Fatal(err)
	}
	const size = 2 << 20
	mem := anonMem(t, size)
	const iova = 4 << 20
	if err := c.MapDMA(mem, iova, vfio.DMAReadWrite); err != nil {
		t.Fatal(err)
	}

	unbound := guest.Unbind(t, bdf)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	guest.WaitUnbound(t, unbound, guard, "the device closed")
	if st, err := g.Status(); err == nil && st.ContainerSet {
		t.Fatalf("after the unbind the group still reports its container: %+v", st)
	}
	if n, err := c.UnmapDMA(iova, size); err != nil || n != size {
		t.Errorf("UnmapDMA after the kernel dropped the group: %#x, %v; want the range reported unmapped", n, err)
	}
	if n := c.Mappings(); n != 0 {
		t.Errorf("%d mappings still counted", n)
	}
	if err := g.Close(); err != nil {
		t.Errorf("closing the group: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("closing the container: %v", err)
	}
}

// anonMem returns size bytes of populated anonymous memory, unmapped when
// t ends.
func anonMem(t *testing.T, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}
