package vfio

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/vfioabi"
)

// Container is an open /dev/vfio/vfio: one IOMMU address space, shared by
// the groups set to it. Its methods are safe for concurrent use.
type Container struct {
	file *file
	path string

	mu     sync.Mutex
	closed bool
	groups []*Group  // groups set to this container, in the order they were set
	iommu  Extension // the IOMMU type set, 0 before SetIOMMU
	// mappings are the live DMA mappings, IOVA → size: the last group
	// may not leave while there are any (the kernel would drop them
	// behind their owner's back).
	mappings map[uint64]uint64
}

// OpenContainer opens <Dev>/vfio/vfio and checks that the kernel speaks
// VFIO_API_VERSION. When the file is missing the error wraps ErrNoIOMMU.
func (r Root) OpenContainer() (*Container, error) {
	path := r.containerPath()
	f, err := openFile(path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("opening vfio container: %w: %w", ErrNoIOMMU, err)
		case errors.Is(err, fs.ErrPermission):
			return nil, fmt.Errorf("opening vfio container: %w", hint(err, "run as root, or give this user read-write access to %s", path))
		}
		return nil, fmt.Errorf("opening vfio container: %w", err)
	}
	c := &Container{file: f, path: path}
	version, err := c.APIVersion()
	if err != nil {
		f.close()
		if errors.Is(err, unix.ENOTTY) {
			err = hint(err, "%s is not the vfio container device", path)
		}
		return nil, fmt.Errorf("opening vfio container %s: %w", path, err)
	}
	if version != vfioabi.VFIO_API_VERSION {
		f.close()
		return nil, fmt.Errorf("opening vfio container %s: the kernel speaks VFIO API version %d, this package version %d", path, version, vfioabi.VFIO_API_VERSION)
	}
	return c, nil
}

// APIVersion returns the kernel's VFIO API version (VFIO_GET_API_VERSION);
// every kernel so far answers 0.
func (c *Container) APIVersion() (int, error) {
	var version int
	err := c.file.control(func(fd int) error {
		var err error
		version, err = vfioabi.GetAPIVersion(fd)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("getting the vfio API version: %w", err)
	}
	return version, nil
}

// CheckExtension reports whether the kernel supports ext
// (VFIO_CHECK_EXTENSION). Some answers change once the container has
// groups: DMACoherentIOMMU, for one, depends on them.
func (c *Container) CheckExtension(ext Extension) (bool, error) {
	var r int
	err := c.file.control(func(fd int) error {
		var err error
		r, err = vfioabi.CheckExtension(fd, uint32(ext))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("checking vfio extension %s: %w", ext, err)
	}
	return r > 0, nil
}

// SetIOMMU sets the container's IOMMU type (VFIO_SET_IOMMU), such as
// Type1v2IOMMU. A group must be set to the container first; the IOMMU
// type stays until the last group leaves.
func (c *Container) SetIOMMU(t Extension) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	what := "setting the container's IOMMU to " + t.String()
	switch {
	case c.closed:
		return fmt.Errorf("%s: %w", what, ErrClosed)
	case len(c.groups) == 0:
		return fmt.Errorf("%s: no group is set to the container yet (call Group.SetContainer first)", what)
	case c.iommu != 0:
		return fmt.Errorf("%s: the container's IOMMU is already %s", what, c.iommu)
	}
	err := c.file.control(func(fd int) error { return vfioabi.SetIOMMU(fd, uint32(t)) })
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENODEV) {
			err = hint(err, "the kernel has no IOMMU driver of this type for the container's groups; is vfio_iommu_type1 loaded?")
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	c.iommu = t
	return nil
}

// IOMMU returns the IOMMU type set by SetIOMMU, or 0.
func (c *Container) IOMMU() Extension {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.iommu
}

// IOMMUInfo returns what VFIO_IOMMU_GET_INFO reports: the IOMMU page
// sizes, the IOVA ranges the container may map and how many more DMA
// mappings it may hold. The IOMMU type must be set. The ranges can shrink
// when a group joins (its devices may reserve IOVAs).
func (c *Container) IOMMUInfo() (IOMMUInfo, error) {
	const what = "getting the container's IOMMU info"
	if c.IOMMU() == 0 {
		return IOMMUInfo{}, fmt.Errorf("%s: the container's IOMMU type is not set (call SetIOMMU first)", what)
	}
	var raw vfioabi.IOMMUType1Info
	buf, err := getInfo(c.file, vfioabi.SizeofIOMMUType1Info, func(fd int, buf []byte) (uint32, error) {
		var err error
		raw, err = vfioabi.IOMMUGetInfo(fd, buf)
		return raw.Argsz, err
	})
	if err != nil {
		return IOMMUInfo{}, fmt.Errorf("%s: %w", what, err)
	}
	caps, err := parseCaps(buf, vfioabi.SizeofIOMMUType1Info, raw.Flags&vfioabi.VFIO_IOMMU_INFO_CAPS != 0, raw.CapOffset)
	if err != nil {
		return IOMMUInfo{}, fmt.Errorf("%s: %w", what, err)
	}
	info := IOMMUInfo{Caps: convertCaps(caps)}
	if raw.Flags&vfioabi.VFIO_IOMMU_INFO_PGSIZES != 0 {
		info.PageSizes = raw.IOVAPgsizes
	}
	if cp, ok := vfioabi.FindCap(caps, vfioabi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE); ok {
		ranges, err := vfioabi.ParseIOVARanges(cp)
		if err != nil {
			return IOMMUInfo{}, fmt.Errorf("%s: %w", what, err)
		}
		for _, r := range ranges {
			info.IOVARanges = append(info.IOVARanges, IOVARange{Start: r.Start, End: r.End})
		}
		slices.SortFunc(info.IOVARanges, func(a, b IOVARange) int {
			switch {
			case a.Start < b.Start:
				return -1
			case a.Start > b.Start:
				return 1
			}
			return 0
		})
	}
	if cp, ok := vfioabi.FindCap(caps, vfioabi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL); ok {
		avail, err := vfioabi.ParseDMAAvail(cp)
		if err != nil {
			return IOMMUInfo{}, fmt.Errorf("%s: %w", what, err)
		}
		info.DMAAvail, info.HasDMAAvail = avail, true
	}
	return info, nil
}

// MapDMA maps mem at iova in the container's IOMMU (VFIO_IOMMU_MAP_DMA),
// letting its devices read and/or write it as perm says. The kernel pins
// the pages; they stay pinned and mapped until UnmapDMA, or until the last
// group leaves the container.
//
// mem must be memory this process mapped itself (mmap, hugetlb): never
// memory of the Go heap, which the runtime may free or reuse while the
// device still writes to it. It must stay mapped until UnmapDMA. iova,
// len(mem) and mem's address must be aligned to the IOMMU page size (see
// IOMMUInfo.PageSizes). Choosing the IOVA is the caller's business.
func (c *Container) MapDMA(mem []byte, iova uint64, perm DMAPerm) error {
	size := uint64(len(mem))
	what := fmt.Sprintf("mapping iova 0x%x (0x%x bytes)", iova, size)
	switch {
	case size == 0:
		return fmt.Errorf("%s: no memory given", what)
	case iova+size-1 < iova:
		return fmt.Errorf("%s: the range wraps around the end of the IOVA space", what)
	case perm == 0 || perm&^DMAReadWrite != 0:
		return fmt.Errorf("%s: permission %#x is not DMARead, DMAWrite or both", what, uint32(perm))
	case c.IOMMU() == 0:
		return fmt.Errorf("%s: the container's IOMMU type is not set (call SetIOMMU first)", what)
	}
	m := vfioabi.IOMMUType1DMAMap{
		Flags: uint32(perm),
		Vaddr: uint64(addressOf(mem)),
		IOVA:  iova,
		Size:  size,
	}
	err := c.file.control(func(fd int) error { return vfioabi.IOMMUMapDMA(fd, m) })
	if err != nil {
		return c.mapError(what, iova, size, err)
	}
	c.mu.Lock()
	if c.mappings == nil {
		c.mappings = map[uint64]uint64{}
	}
	c.mappings[iova] = size
	c.mu.Unlock()
	return nil
}

// Mappings returns how many DMA mappings made with MapDMA are live.
func (c *Container) Mappings() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.mappings)
}

// mapError explains a failed VFIO_IOMMU_MAP_DMA by its usual causes.
func (c *Container) mapError(what string, iova, size uint64, err error) error {
	switch {
	case errors.Is(err, unix.EINVAL):
		// The kernel says EINVAL both for an IOVA outside the ranges and
		// for misalignment: ask it for the ranges to tell which.
		info, ierr := c.IOMMUInfo()
		if ierr == nil && len(info.IOVARanges) > 0 && !slices.ContainsFunc(info.IOVARanges, func(r IOVARange) bool { return r.Contains(iova, size) }) {
			return fmt.Errorf("%s: %w %s: %w", what, ErrIOVAOutOfRange, formatRanges(info.IOVARanges), err)
		}
		err = hint(err, "IOVA, address and size must be aligned to the IOMMU page size")
	case errors.Is(err, unix.EEXIST):
		err = hint(err, "the IOVA range overlaps an existing mapping")
	case errors.Is(err, unix.ENOSPC):
		err = hint(err, "the container holds as many DMA mappings as vfio_iommu_type1's dma_entry_limit allows")
	case errors.Is(err, unix.ENOMEM):
		err = hint(err, "pinning the memory would pass the locked-memory limit (RLIMIT_MEMLOCK), or memory ran out")
	case errors.Is(err, unix.EFAULT):
		err = hint(err, "the memory is not mapped in this process")
	}
	return fmt.Errorf("%s: %w", what, err)
}

// UnmapDMA removes the DMA mappings in the size bytes from iova
// (VFIO_IOMMU_UNMAP_DMA) and returns how many bytes the kernel unmapped. With
// type1v2 a mapping is removed whole or not at all: the range must not cut
// one in two.
func (c *Container) UnmapDMA(iova, size uint64) (uint64, error) {
	what := fmt.Sprintf("unmapping iova 0x%x (0x%x bytes)", iova, size)
	if c.IOMMU() == 0 {
		return 0, fmt.Errorf("%s: the container's IOMMU type is not set (call SetIOMMU first)", what)
	}
	var unmapped uint64
	err := c.file.control(func(fd int) error {
		var err error
		unmapped, err = vfioabi.IOMMUUnmapDMA(fd, vfioabi.IOMMUType1DMAUnmap{IOVA: iova, Size: size})
		return err
	})
	if err != nil {
		if errors.Is(err, unix.EINVAL) && c.forgetDroppedIOMMU() {
			// Nothing left to unmap: the container's IOMMU went with
			// its last group.
			return size, nil
		}
		if errors.Is(err, unix.EINVAL) {
			err = hint(err, "type1v2 unmaps whole mappings only, and the range must be aligned to the IOMMU page size")
		}
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	// type1v2 removed every mapping that lies inside the range.
	c.mu.Lock()
	for start, n := range c.mappings {
		if start >= iova && start-iova+n <= size {
			delete(c.mappings, start)
		}
	}
	c.mu.Unlock()
	return unmapped, nil
}

// Close closes the container. It fails with ErrInUse while a group is set
// to it: close the groups first. Closing twice returns nil.
func (c *Container) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if len(c.groups) > 0 {
		numbers := make([]string, len(c.groups))
		for i, g := range c.groups {
			numbers[i] = strconv.Itoa(g.number)
		}
		set := "vfio group " + numbers[0] + " is"
		if len(numbers) > 1 {
			set = "vfio groups " + strings.Join(numbers, ", ") + " are"
		}
		return fmt.Errorf("closing vfio container: %w: %s set to it; close groups before their container", ErrInUse, set)
	}
	c.closed = true
	if err := c.file.close(); err != nil {
		return fmt.Errorf("closing vfio container: %w", err)
	}
	return nil
}

// addGroup records that g was set to the container. c.mu must be held.
func (c *Container) addGroup(g *Group) { c.groups = append(c.groups, g) }

// removeGroup records that g left the container; the kernel drops the
// container's IOMMU with its last group.
func (c *Container) removeGroup(g *Group) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.groups = slices.DeleteFunc(c.groups, func(x *Group) bool { return x == g })
	if len(c.groups) == 0 {
		c.forgetIOMMU()
	}
}

// forgetDroppedIOMMU checks whether the kernel has taken every group of
// the container out of it: the last device of each was unbound from vfio-pci
// or removed (an unbind that waited for the device fd, which is closed by
// now), and the kernel detaches a group with its last device. The
// container's IOMMU, and every DMA mapping in it, went with the last
// group, so UnmapDMA finds nothing (EINVAL). If so, the container forgets
// its IOMMU and mappings (forgetIOMMU, as when its last group closes),
// and it reports true: unmapping is done. A group the kernel dropped answers VFIO_GROUP_GET_STATUS with
// ENODEV (or without CONTAINER_SET).
func (c *Container) forgetDroppedIOMMU() bool {
	c.mu.Lock()
	groups := slices.Clone(c.groups)
	c.mu.Unlock()
	if len(groups) == 0 {
		return false
	}
	for _, g := range groups {
		st, err := g.Status()
		switch {
		case errors.Is(err, unix.ENODEV):
		case err != nil || st.ContainerSet:
			return false
		}
	}
	c.mu.Lock()
	c.forgetIOMMU()
	c.mu.Unlock()
	return true
}

// forgetIOMMU records that the kernel dropped the container's IOMMU, and
// every mapping with it, as it does with the container's last group.
// c.mu must be held.
func (c *Container) forgetIOMMU() {
	c.iommu = 0
	c.mappings = nil
}

// lastGroupBusy returns an error when g is the container's last group and
// DMA mappings are still live: closing it would make the kernel drop them.
func (c *Container) lastGroupBusy(g *Group) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.groups) == 1 && c.groups[0] == g && len(c.mappings) > 0 {
		return fmt.Errorf("%w: %d DMA mapping(s) of its container are live; unmap them before the container's last group closes", ErrInUse, len(c.mappings))
	}
	return nil
}
