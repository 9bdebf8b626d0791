package vfio

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/vfioabi"
)

// These tests run without root and without VFIO. Real VFIO behaviour is
// covered by the guest tests (*_guest_test.go).

// fakeSysfs builds a sysfs tree with the given PCI functions, each in an
// IOMMU group (or none, for group -1) and bound to a driver (or none, for
// ""), and returns its root.
func fakeSysfs(t *testing.T, functions ...function) string {
	t.Helper()
	sys := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, fn := range functions {
		// As in the real sysfs, bus/pci/devices/<bdf> is a link into
		// devices/, and the function's iommu_group and driver are links
		// out of it.
		devDir := filepath.Join(sys, "devices", "pci0000:00", fn.bdf)
		must(os.MkdirAll(devDir, 0o755))
		must(os.MkdirAll(filepath.Join(sys, "bus", "pci", "devices"), 0o755))
		must(os.Symlink(filepath.Join("..", "..", "..", "devices", "pci0000:00", fn.bdf), filepath.Join(sys, "bus", "pci", "devices", fn.bdf)))
		if fn.driver != "" {
			drv := filepath.Join(sys, "bus", "pci", "drivers", fn.driver)
			must(os.MkdirAll(drv, 0o755))
			must(os.Symlink(drv, filepath.Join(devDir, "driver")))
		}
		if fn.group >= 0 {
			grp := filepath.Join(sys, "kernel", "iommu_groups", strconv.Itoa(fn.group))
			must(os.MkdirAll(filepath.Join(grp, "devices"), 0o755))
			must(os.Symlink(grp, filepath.Join(devDir, "iommu_group")))
			must(os.Symlink(devDir, filepath.Join(grp, "devices", fn.bdf)))
		}
	}
	return sys
}

// function is a PCI function of a fake sysfs tree.
type function struct {
	bdf, driver string
	group       int
}

func TestGroupOf(t *testing.T) {
	sys := fakeSysfs(t,
		function{"0000:00:03.0", "vfio-pci", 7},
		function{"0000:01:00.0", "vfio-pci", 12},
		function{"0000:00:1f.2", "ahci", -1},
	)
	r := Root{Sys: sys}
	for bdf, want := range map[string]int{"0000:00:03.0": 7, "0000:01:00.0": 12} {
		got, err := r.GroupOf(bdf)
		if err != nil || got != want {
			t.Errorf("GroupOf(%s) = %d, %v; want %d", bdf, got, err, want)
		}
	}

	_, err := r.GroupOf("0000:00:1f.2")
	if !errors.Is(err, ErrNoIOMMU) {
		t.Errorf("GroupOf of a function without iommu_group: got %v, want ErrNoIOMMU", err)
	}
	if err != nil && !strings.Contains(err.Error(), "intel_iommu=on") {
		t.Errorf("error %q does not say how to turn the IOMMU on", err)
	}

	_, err = r.GroupOf("0000:00:04.0")
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "no such PCI function") {
		t.Errorf("GroupOf of a missing function: got %v, want a 'no such PCI function' error wrapping fs.ErrNotExist", err)
	}

	for _, bad := range []string{"", "00:03.0", "0000:00:03.8", "0000:00:03.0/../../x", "../0000:00:03.0", "0000:00:03.0\x00", "0000:00:3.0", "0000:00:20.0", "0000:0G:03.0"} {
		if _, err := r.GroupOf(bad); err == nil || !strings.Contains(err.Error(), "is not a PCI address") {
			t.Errorf("GroupOf(%q): got %v, want an error about the address", bad, err)
		}
	}
}

func TestGroupOfBadLink(t *testing.T) {
	sys := t.TempDir()
	dev := filepath.Join(sys, "bus", "pci", "devices", "0000:00:03.0")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../kernel/iommu_groups/seven", filepath.Join(dev, "iommu_group")); err != nil {
		t.Fatal(err)
	}
	_, err := Root{Sys: sys}.GroupOf("0000:00:03.0")
	if err == nil || !strings.Contains(err.Error(), "does not end in a group number") {
		t.Errorf("got %v, want an error about the link", err)
	}
}

func TestGroupDevices(t *testing.T) {
	sys := fakeSysfs(t,
		function{"0000:00:03.1", "nvme", 7},
		function{"0000:00:03.0", "vfio-pci", 7},
		function{"0000:00:04.0", "", 8},
	)
	r := Root{Sys: sys}
	got, err := r.GroupDevices(7)
	if want := []string{"0000:00:03.0", "0000:00:03.1"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("GroupDevices(7) = %v, %v; want %v", got, err, want)
	}
	if _, err := r.GroupDevices(9); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GroupDevices(9): got %v, want fs.ErrNotExist", err)
	}
	if got, want := r.describeGroup(7), "0000:00:03.0 (vfio-pci), 0000:00:03.1 (nvme)"; got != want {
		t.Errorf("describeGroup(7) = %q, want %q", got, want)
	}
	if got, want := r.describeGroup(8), "0000:00:04.0 (no driver)"; got != want {
		t.Errorf("describeGroup(8) = %q, want %q", got, want)
	}
	if got := r.describeGroup(9); got != "" {
		t.Errorf("describeGroup of a missing group = %q, want empty", got)
	}
}

func TestOpenContainerWithoutVFIO(t *testing.T) {
	_, err := Root{Dev: t.TempDir()}.OpenContainer()
	if !errors.Is(err, ErrNoIOMMU) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want an error wrapping ErrNoIOMMU and fs.ErrNotExist", err)
	}
	msg := err.Error()
	for _, want := range []string{"opening vfio container: ", "vfio-pci", "vfio_iommu_type1", "intel_iommu=on", filepath.Join("vfio", "vfio")} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
}

func TestOpenContainerNotVFIO(t *testing.T) {
	dev := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dev, "vfio"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "vfio", "vfio"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)
	_, err := Root{Dev: dev}.OpenContainer()
	if !errors.Is(err, unix.ENOTTY) || !strings.Contains(err.Error(), "is not the vfio container device") {
		t.Fatalf("got %v, want an ENOTTY error saying the file is not the container device", err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("the failed open leaked %d fds", after-before)
	}
}

func TestOpenGroupWithoutVFIO(t *testing.T) {
	_, err := Root{Dev: t.TempDir()}.OpenGroup(7)
	if !errors.Is(err, ErrNoIOMMU) || !strings.HasPrefix(err.Error(), "opening vfio group 7: ") {
		t.Fatalf("without /dev/vfio: got %v, want 'opening vfio group 7: ...' wrapping ErrNoIOMMU", err)
	}

	// With the container node present, a missing group means its devices
	// are not bound to vfio-pci.
	dev := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dev, "vfio"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "vfio", "vfio"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Root{Dev: dev}.OpenGroup(7)
	if errors.Is(err, ErrNoIOMMU) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "bound to vfio-pci") {
		t.Fatalf("without /dev/vfio/7: got %v, want an error saying to bind the group to vfio-pci", err)
	}

	// In vfio's no-IOMMU mode the group is noiommu-7: no IOMMU to use.
	if err := os.WriteFile(filepath.Join(dev, "vfio", "noiommu-7"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Root{Dev: dev}.OpenGroup(7)
	if !errors.Is(err, ErrNoIOMMU) || !strings.Contains(err.Error(), "no-IOMMU mode") {
		t.Fatalf("with /dev/vfio/noiommu-7: got %v, want ErrNoIOMMU naming the no-IOMMU mode", err)
	}

	if _, err := OpenGroup(-1); err == nil || !strings.Contains(err.Error(), "not negative") {
		t.Errorf("OpenGroup(-1): got %v", err)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// fakeHandles builds a container, a group set to it and an open device of
// the group, each on its own /dev/null fd. /dev/null answers every ioctl
// with ENOTTY, which is enough to test the bookkeeping of close order.
func fakeHandles(t *testing.T) (*Container, *Group, *Device) {
	t.Helper()
	open := func() *file {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		h, err := wrapFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	c := &Container{file: open(), path: os.DevNull}
	g := &Group{number: 7, file: open()}
	g.container = c
	c.addGroup(g)
	c.iommu = Type1v2IOMMU
	d := &Device{bdf: "0000:00:03.0", group: g, file: open()}
	g.devices = append(g.devices, d)
	return c, g, d
}

func TestCloseOrder(t *testing.T) {
	before := openFDs(t)
	c, g, d := fakeHandles(t)

	// Out of order: refused, and the handles stay usable.
	err := c.Close()
	if !errors.Is(err, ErrInUse) || err.Error() != "closing vfio container: still in use: vfio group 7 is set to it; close groups before their container" {
		t.Errorf("closing the container with a group set: got %v", err)
	}
	if _, err := c.APIVersion(); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("container after a refused Close: got %v, want it still open (ENOTTY from /dev/null)", err)
	}
	err = g.Close()
	if !errors.Is(err, ErrInUse) || err.Error() != "closing vfio group 7: still in use: device 0000:00:03.0 is still open; close devices before their group" {
		t.Errorf("closing the group with a device open: got %v", err)
	}
	if _, err := g.Status(); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("group after a refused Close: got %v, want it still open", err)
	}

	// In order, twice each.
	for _, h := range []struct {
		name  string
		close func() error
	}{{"device", d.Close}, {"group", g.Close}, {"container", c.Close}} {
		if err := h.close(); err != nil {
			t.Errorf("closing the %s: %v", h.name, err)
		}
		if err := h.close(); err != nil {
			t.Errorf("closing the %s a second time: %v", h.name, err)
		}
	}
	if len(g.devices) != 0 || len(c.groups) != 0 || c.iommu != 0 {
		t.Errorf("after closing: group devices %v, container groups %v, IOMMU %v", g.devices, c.groups, c.iommu)
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d fds leaked", after-before)
	}

	// Everything on a closed handle fails with ErrClosed.
	if _, err := c.APIVersion(); !errors.Is(err, ErrClosed) {
		t.Errorf("APIVersion after Close: %v", err)
	}
	if _, err := c.CheckExtension(Type1v2IOMMU); !errors.Is(err, ErrClosed) {
		t.Errorf("CheckExtension after Close: %v", err)
	}
	if err := c.SetIOMMU(Type1v2IOMMU); !errors.Is(err, ErrClosed) {
		t.Errorf("SetIOMMU after Close: %v", err)
	}
	if _, err := g.Status(); !errors.Is(err, ErrClosed) {
		t.Errorf("Status after Close: %v", err)
	}
	if err := g.SetContainer(c); !errors.Is(err, ErrClosed) {
		t.Errorf("SetContainer after Close: %v", err)
	}
	if _, err := g.Device("0000:00:03.0"); !errors.Is(err, ErrClosed) {
		t.Errorf("Device after Close: %v", err)
	}
	if _, err := d.Info(); !errors.Is(err, ErrClosed) {
		t.Errorf("Info after Close: %v", err)
	}
	if _, err := d.RegionInfo(RegionBAR0); !errors.Is(err, ErrClosed) {
		t.Errorf("RegionInfo after Close: %v", err)
	}
	if _, err := d.IRQInfo(IRQMSIX); !errors.Is(err, ErrClosed) {
		t.Errorf("IRQInfo after Close: %v", err)
	}
	if _, err := d.ReadConfig(make([]byte, 4), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadConfig after Close: %v", err)
	}
	if err := d.Reset(); !errors.Is(err, ErrClosed) {
		t.Errorf("Reset after Close: %v", err)
	}
	if _, err := d.Mmap(RegionBAR0, 0, 4096); !errors.Is(err, ErrClosed) {
		t.Errorf("Mmap after Close: %v", err)
	}
}

func TestClosingTheLastGroupDropsTheIOMMU(t *testing.T) {
	c, g, d := fakeHandles(t)
	defer c.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if c.IOMMU() != Type1v2IOMMU {
		t.Fatalf("IOMMU = %v before the group closed", c.IOMMU())
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if c.IOMMU() != 0 {
		t.Errorf("IOMMU = %v after the last group left, want unset", c.IOMMU())
	}
}

func TestPreconditions(t *testing.T) {
	c, g, d := fakeHandles(t)
	defer c.Close()
	defer g.Close()
	defer d.Close()

	// A fresh container and group, with nothing set.
	c2 := &Container{file: c.file, path: os.DevNull}
	g2 := &Group{number: 8, file: g.file}

	checks := []struct {
		name string
		err  error
		want string
	}{
		{"SetIOMMU without a group", c2.SetIOMMU(Type1v2IOMMU), "no group is set to the container yet"},
		{"SetIOMMU twice", c.SetIOMMU(Type1v2IOMMU), "already type1v2"},
		{"IOMMUInfo before SetIOMMU", errOf(c2.IOMMUInfo()), "call SetIOMMU first"},
		{"MapDMA before SetIOMMU", c2.MapDMA(make([]byte, 4096), 0, DMARead), "call SetIOMMU first"},
		{"UnmapDMA before SetIOMMU", errOf(c2.UnmapDMA(0, 4096)), "call SetIOMMU first"},
		{"MapDMA of nothing", c.MapDMA(nil, 0, DMARead), "no memory given"},
		{"MapDMA wrapping", c.MapDMA(make([]byte, 8192), ^uint64(0)-4095, DMARead), "wraps around"},
		{"MapDMA without permission", c.MapDMA(make([]byte, 4096), 0, 0), "is not DMARead"},
		{"MapDMA with a bad permission", c.MapDMA(make([]byte, 4096), 0, 8), "is not DMARead"},
		{"Device before SetContainer", errOf(g2.Device("0000:00:03.0")), "call SetContainer first"},
		{"Device with a bad address", errOf(g.Device("3.0")), "is not a PCI address"},
		{"SetContainer(nil)", g2.SetContainer(nil), "no container given"},
		{"SetContainer to a second container", g.SetContainer(c2), "already set to another container"},
	}
	for _, ch := range checks {
		if ch.err == nil || !strings.Contains(ch.err.Error(), ch.want) {
			t.Errorf("%s: got %v, want an error containing %q", ch.name, ch.err, ch.want)
		}
	}
	if err := g.SetContainer(c); err != nil {
		t.Errorf("setting the same container again: %v", err)
	}

	g2.container = c2
	if _, err := g2.Device("0000:00:03.0"); err == nil || !strings.Contains(err.Error(), "call Container.SetIOMMU first") {
		t.Errorf("Device before SetIOMMU: got %v", err)
	}
}

func errOf[T any](_ T, err error) error { return err }

func TestMapErrorHints(t *testing.T) {
	c := &Container{}
	for _, tt := range []struct {
		errno unix.Errno
		want  string
	}{
		{unix.EEXIST, "overlaps an existing mapping"},
		{unix.ENOSPC, "dma_entry_limit"},
		{unix.ENOMEM, "RLIMIT_MEMLOCK"},
		{unix.EFAULT, "not mapped in this process"},
	} {
		err := c.mapError("mapping iova 0x0 (0x1000 bytes)", 0, 4096, &vfioabi.Error{Ioctl: "VFIO_IOMMU_MAP_DMA", Errno: tt.errno})
		if !errors.Is(err, tt.errno) || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "mapping iova 0x0 (0x1000 bytes): VFIO_IOMMU_MAP_DMA: ") {
			t.Errorf("%v: got %q", tt.errno, err)
		}
	}
}

func TestGetInfoGrowsTheBuffer(t *testing.T) {
	c, g, d := fakeHandles(t)
	defer c.Close()
	defer g.Close()
	defer d.Close()
	var sizes []int
	buf, err := getInfo(d.file, 16, func(fd int, buf []byte) (uint32, error) {
		sizes = append(sizes, len(buf))
		if len(buf) < 1000 {
			return 1000, nil // the chain needs 1000 bytes
		}
		return uint32(len(buf)), nil
	})
	if err != nil || len(buf) != 1000 || !slices.Equal(sizes, []int{16 + infoRoom, 1000}) {
		t.Errorf("getInfo = %d bytes, %v after calls with %v; want 1000 bytes after calls with [%d 1000]", len(buf), err, sizes, 16+infoRoom)
	}

	_, err = getInfo(d.file, 16, func(int, []byte) (uint32, error) { return maxInfoSize + 1, nil })
	if err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("an oversized request: got %v", err)
	}
	_, err = getInfo(d.file, 16, func(_ int, buf []byte) (uint32, error) { return uint32(len(buf) + 8), nil })
	if err == nil || !strings.Contains(err.Error(), "kept asking") {
		t.Errorf("an ever-growing request: got %v", err)
	}
}

func TestIOVARangeContains(t *testing.T) {
	r := IOVARange{Start: 0x1000, End: 0x1fff}
	for _, tt := range []struct {
		iova, size uint64
		want       bool
	}{
		{0x1000, 0x1000, true},
		{0x1800, 0x800, true},
		{0x1000, 0x1001, false},
		{0x0, 0x1000, false},
		{0x1000, 0, false},
		{0x1800, ^uint64(0), false},
	} {
		if got := r.Contains(tt.iova, tt.size); got != tt.want {
			t.Errorf("%v.Contains(0x%x, 0x%x) = %v", r, tt.iova, tt.size, got)
		}
	}
	if got := formatRanges([]IOVARange{{0, 0xfedfffff}, {0xfef00000, 1<<39 - 1}}); got != "[0x0-0xfedfffff 0xfef00000-0x7fffffffff]" {
		t.Errorf("formatRanges = %s", got)
	}
}

func TestMmapAreas(t *testing.T) {
	whole := RegionInfo{Flags: RegionMappable, Size: 0x4000}
	if got := whole.MmapAreas(); !slices.Equal(got, []MmapArea{{0, 0x4000}}) {
		t.Errorf("whole region: %v", got)
	}
	sparse := RegionInfo{Flags: RegionMappable, Size: 0x4000, SparseMmap: []MmapArea{{0, 0x2000}, {0x3000, 0x1000}}}
	if got := sparse.MmapAreas(); !slices.Equal(got, sparse.SparseMmap) {
		t.Errorf("sparse region: %v", got)
	}
	none := RegionInfo{Flags: RegionMappable, Size: 0x4000, SparseMmap: []MmapArea{}}
	if got := none.MmapAreas(); len(got) != 0 {
		t.Errorf("sparse region with no areas: %v", got)
	}
	if got := (RegionInfo{Flags: RegionReadable, Size: 0x100}).MmapAreas(); got != nil {
		t.Errorf("unmappable region: %v", got)
	}
}

func TestNames(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{RegionBAR0.String(), "BAR0"},
		{RegionBAR5.String(), "BAR5"},
		{RegionConfig.String(), "config"},
		{RegionIndex(12).String(), "region 12"},
		{IRQMSIX.String(), "MSI-X"},
		{IRQIndex(9).String(), "IRQ index 9"},
		{Type1v2IOMMU.String(), "type1v2"},
		{Extension(99).String(), "extension 99"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
