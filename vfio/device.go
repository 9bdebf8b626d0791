package vfio

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/vfioabi"
)

// Device is an open VFIO device: one PCI function, obtained from
// Group.Device. Its methods are safe for concurrent use.
type Device struct {
	bdf   string
	group *Group
	file  *file

	mu     sync.Mutex
	closed bool
	config *RegionInfo // the config space region, once looked up

	// irqMu serialises VFIO_DEVICE_SET_IRQS and guards what the device
	// set up with it (irq.go).
	irqMu     sync.Mutex
	irqs      map[IRQIndex]*irqState
	irqClosed bool // Close has torn the interrupts down
}

// BDF returns the device's PCI address, such as "0000:00:03.0".
func (d *Device) BDF() string { return d.bdf }

// Group returns the group the device was opened from; nil for a Device
// made by DeviceFromFD.
func (d *Device) Group() *Group { return d.group }

// Info returns what VFIO_DEVICE_GET_INFO reports: flags and the number of
// regions and IRQ indexes. A vfio-pci device has DevicePCI set,
// NumPCIRegions regions (more with device-specific ones) and NumPCIIRQs IRQ
// indexes.
func (d *Device) Info() (DeviceInfo, error) {
	what := "getting the info of device " + d.bdf
	var raw vfioabi.DeviceInfo
	buf, err := getInfo(d.file, vfioabi.SizeofDeviceInfo, func(fd int, buf []byte) (uint32, error) {
		var err error
		raw, err = vfioabi.DeviceGetInfo(fd, buf)
		return raw.Argsz, err
	})
	if err != nil {
		return DeviceInfo{}, fmt.Errorf("%s: %w", what, err)
	}
	caps, err := parseCaps(buf, vfioabi.SizeofDeviceInfo, raw.Flags&vfioabi.VFIO_DEVICE_FLAGS_CAPS != 0, raw.CapOffset)
	if err != nil {
		return DeviceInfo{}, fmt.Errorf("%s: %w", what, err)
	}
	return DeviceInfo{
		Flags:      DeviceFlags(raw.Flags),
		NumRegions: int(raw.NumRegions),
		NumIRQs:    int(raw.NumIRQs),
		Caps:       convertCaps(caps),
	}, nil
}

// RegionInfo returns what VFIO_DEVICE_GET_REGION_INFO reports about one
// region, with its capabilities decoded: sparse mmap areas, MSI-X
// mappability, device-specific type.
func (d *Device) RegionInfo(index RegionIndex) (RegionInfo, error) {
	what := fmt.Sprintf("getting the info of region %s of device %s", index, d.bdf)
	var raw vfioabi.RegionInfo
	buf, err := getInfo(d.file, vfioabi.SizeofRegionInfo, func(fd int, buf []byte) (uint32, error) {
		var err error
		raw, err = vfioabi.DeviceGetRegionInfo(fd, uint32(index), buf)
		return raw.Argsz, err
	})
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			err = hint(err, "the device has no region %d; Info says how many it has", uint32(index))
		}
		return RegionInfo{}, fmt.Errorf("%s: %w", what, err)
	}
	caps, err := parseCaps(buf, vfioabi.SizeofRegionInfo, raw.Flags&vfioabi.VFIO_REGION_INFO_FLAG_CAPS != 0, raw.CapOffset)
	if err != nil {
		return RegionInfo{}, fmt.Errorf("%s: %w", what, err)
	}
	info := RegionInfo{
		Index:  index,
		Flags:  RegionFlags(raw.Flags),
		Size:   raw.Size,
		Offset: raw.Offset,
		Caps:   convertCaps(caps),
	}
	for _, c := range caps {
		switch c.ID {
		case vfioabi.VFIO_REGION_INFO_CAP_SPARSE_MMAP:
			areas, err := vfioabi.ParseSparseMmap(c)
			if err != nil {
				return RegionInfo{}, fmt.Errorf("%s: %w", what, err)
			}
			info.SparseMmap = make([]MmapArea, 0, len(areas))
			for _, a := range areas {
				info.SparseMmap = append(info.SparseMmap, MmapArea{Offset: a.Offset, Size: a.Size})
			}
		case vfioabi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
			info.MSIXMappable = true
		case vfioabi.VFIO_REGION_INFO_CAP_TYPE:
			t, err := vfioabi.ParseRegionType(c)
			if err != nil {
				return RegionInfo{}, fmt.Errorf("%s: %w", what, err)
			}
			info.Type = &RegionType{Type: t.Type, Subtype: t.Subtype}
		}
	}
	return info, nil
}

// IRQInfo returns what VFIO_DEVICE_GET_IRQ_INFO reports about one IRQ
// index.
func (d *Device) IRQInfo(index IRQIndex) (IRQInfo, error) {
	var raw vfioabi.IRQInfo
	err := d.file.control(func(fd int) error {
		var err error
		raw, err = vfioabi.DeviceGetIRQInfo(fd, uint32(index))
		return err
	})
	if err != nil {
		return IRQInfo{}, fmt.Errorf("getting the info of %s interrupts of device %s: %w", index, d.bdf, err)
	}
	return IRQInfo{Index: index, Flags: IRQFlags(raw.Flags), Count: int(raw.Count)}, nil
}

// configRegion returns the config space region, looked up once.
func (d *Device) configRegion() (RegionInfo, error) {
	d.mu.Lock()
	cached := d.config
	d.mu.Unlock()
	if cached != nil {
		return *cached, nil
	}
	info, err := d.RegionInfo(RegionConfig)
	if err != nil {
		return RegionInfo{}, err
	}
	d.mu.Lock()
	d.config = &info
	d.mu.Unlock()
	return info, nil
}

// configAccess checks an access of n bytes at off against the config
// region and returns the matching offset in the device fd.
func (d *Device) configAccess(verb string, n int, off int64) (int64, error) {
	what := fmt.Sprintf("%s config space of %s at 0x%x (%d bytes)", verb, d.bdf, off, n)
	cfg, err := d.configRegion()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if off < 0 || uint64(off)+uint64(n) > cfg.Size {
		return 0, fmt.Errorf("%s: outside the %d-byte config space", what, cfg.Size)
	}
	if cfg.Size > math.MaxInt64 || cfg.Offset > math.MaxInt64-cfg.Size {
		return 0, fmt.Errorf("%s: the config region's offset 0x%x does not fit a file offset", what, cfg.Offset)
	}
	return int64(cfg.Offset) + off, nil
}

// ReadConfig reads len(p) bytes of the device's PCI config space from
// offset off, through the config region (the kernel virtualises parts of
// it). Config space is little-endian. It reads all of p or returns an
// error.
func (d *Device) ReadConfig(p []byte, off int64) (int, error) {
	pos, err := d.configAccess("reading", len(p), off)
	if err != nil {
		return 0, err
	}
	n, err := d.file.f.ReadAt(p, pos)
	if err != nil {
		return n, fmt.Errorf("reading config space of %s at 0x%x (%d bytes): %w", d.bdf, off, len(p), err)
	}
	return n, nil
}

// WriteConfig writes p to the device's PCI config space at offset off,
// through the config region. The kernel filters what may be written (it
// owns the MSI and MSI-X capabilities, for one).
func (d *Device) WriteConfig(p []byte, off int64) (int, error) {
	pos, err := d.configAccess("writing", len(p), off)
	if err != nil {
		return 0, err
	}
	n, err := d.file.f.WriteAt(p, pos)
	if err != nil {
		return n, fmt.Errorf("writing config space of %s at 0x%x (%d bytes): %w", d.bdf, off, len(p), err)
	}
	return n, nil
}

// regionAccess checks an access of n bytes at off against region index
// and returns the matching offset in the device fd.
func (d *Device) regionAccess(verb string, index RegionIndex, n int, off int64) (int64, error) {
	what := fmt.Sprintf("%s region %d of %s at 0x%x (%d bytes)", verb, index, d.bdf, off, n)
	info, err := d.RegionInfo(index)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if off < 0 || uint64(off)+uint64(n) > info.Size {
		return 0, fmt.Errorf("%s: outside the 0x%x-byte region", what, info.Size)
	}
	if info.Size > math.MaxInt64 || info.Offset > math.MaxInt64-info.Size {
		return 0, fmt.Errorf("%s: the region's offset 0x%x does not fit a file offset", what, info.Offset)
	}
	return int64(info.Offset) + off, nil
}

// ReadRegion reads len(p) bytes of a region (a BAR, say) at offset off
// through the device fd: the kernel performs the access (ioread for a
// memory BAR), so it reaches parts of a region that cannot be mmap'd. It
// costs a system call or two per call; the I/O path maps BARs instead.
func (d *Device) ReadRegion(index RegionIndex, p []byte, off int64) (int, error) {
	pos, err := d.regionAccess("reading", index, len(p), off)
	if err != nil {
		return 0, err
	}
	n, err := d.file.f.ReadAt(p, pos)
	if err != nil {
		return n, fmt.Errorf("reading region %d of %s at 0x%x (%d bytes): %w", index, d.bdf, off, len(p), err)
	}
	return n, nil
}

// WriteRegion writes p to a region at offset off through the device fd.
func (d *Device) WriteRegion(index RegionIndex, p []byte, off int64) (int, error) {
	pos, err := d.regionAccess("writing", index, len(p), off)
	if err != nil {
		return 0, err
	}
	n, err := d.file.f.WriteAt(p, pos)
	if err != nil {
		return n, fmt.Errorf("writing region %d of %s at 0x%x (%d bytes): %w", index, d.bdf, off, len(p), err)
	}
	return n, nil
}

// Reset resets the device (VFIO_DEVICE_RESET): a function-level reset or
// whatever the kernel found to work. Info's DeviceResettable says whether
// there is one.
func (d *Device) Reset() error {
	err := d.file.control(vfioabi.DeviceReset)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			err = hint(err, "the kernel knows no way to reset this device; see DeviceResettable")
		}
		return fmt.Errorf("resetting device %s: %w", d.bdf, err)
	}
	return nil
}

// Mmap maps length bytes of a region, from offset within it, into the
// process (shared, readable and writable as the region allows). The range
// must lie within one of the region's MmapAreas and offset must be
// page-aligned. Close the Mapping to unmap it; it stays valid after the
// Device is closed.
//
// The bytes of a BAR mapping are device registers: read and write them
// with the access widths the device expects, never through copy or the
// like.
func (d *Device) Mmap(index RegionIndex, offset, length uint64) (*Mapping, error) {
	what := fmt.Sprintf("mapping region %s of device %s at 0x%x (0x%x bytes)", index, d.bdf, offset, length)
	info, err := d.RegionInfo(index)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	areas := info.MmapAreas()
	inArea := func(a MmapArea) bool {
		return offset >= a.Offset && length <= a.Size && offset-a.Offset <= a.Size-length
	}
	switch {
	case length == 0:
		return nil, fmt.Errorf("%s: nothing to map", what)
	case length > math.MaxInt:
		return nil, fmt.Errorf("%s: too long", what)
	case len(areas) == 0:
		return nil, fmt.Errorf("%s: the region cannot be mmap'd", what)
	case !slices.ContainsFunc(areas, inArea):
		return nil, fmt.Errorf("%s: outside the region's mmap-able areas %v", what, areas)
	case offset%uint64(os.Getpagesize()) != 0:
		return nil, fmt.Errorf("%s: the offset is not a multiple of the page size", what)
	case info.Offset+offset < info.Offset || info.Offset+offset > math.MaxInt64:
		return nil, fmt.Errorf("%s: the region's offset 0x%x does not fit a file offset", what, info.Offset)
	}
	prot := 0
	if info.Flags&RegionReadable != 0 {
		prot |= unix.PROT_READ
	}
	if info.Flags&RegionWritable != 0 {
		prot |= unix.PROT_WRITE
	}
	var mem []byte
	err = d.file.control(func(fd int) error {
		var err error
		mem, err = unix.Mmap(fd, int64(info.Offset+offset), int(length), prot, unix.MAP_SHARED)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &Mapping{mem: mem}, nil
}

// Close closes the device. It first disables every IRQ index the Device
// enabled, so that the Interrupts connected to them may be closed after
// it. Mappings made with Mmap stay valid until they are closed. Closing
// twice returns nil.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	irqErr := d.closeIRQs()
	err := d.file.close()
	if d.group != nil {
		d.group.removeDevice(d)
	}
	if err = errors.Join(irqErr, err); err != nil {
		return fmt.Errorf("closing device %s: %w", d.bdf, err)
	}
	return nil
}

// Mapping is a part of a device region mmap'd into the process.
type Mapping struct {
	mu  sync.Mutex
	mem []byte // exactly what unix.Mmap returned, to give back to unix.Munmap
}

// Bytes returns the mapped memory, or nil once the mapping is closed. Do
// not use the slice after Close.
func (m *Mapping) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mem
}

// Close unmaps the memory. Closing twice returns nil.
func (m *Mapping) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mem == nil {
		return nil
	}
	err := unix.Munmap(m.mem)
	m.mem = nil
	if err != nil {
		return fmt.Errorf("unmapping device memory: %w", err)
	}
	return nil
}
