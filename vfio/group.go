package vfio

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/vfioabi"
)

// Group is an open /dev/vfio/N: one IOMMU group. Its methods are safe for
// concurrent use.
type Group struct {
	number int
	root   Root
	file   *file

	mu        sync.Mutex
	closed    bool
	container *Container // set by SetContainer
	devices   []*Device  // open devices, in the order they were opened
}

// OpenGroup opens <Dev>/vfio/<number>. The kernel lets one process at a
// time hold a group open.
func (r Root) OpenGroup(number int) (*Group, error) {
	what := fmt.Sprintf("opening vfio group %d", number)
	if number < 0 {
		return nil, fmt.Errorf("%s: group numbers are not negative", what)
	}
	path := r.groupPath(number)
	f, err := openFile(path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if _, cerr := os.Stat(r.containerPath()); cerr != nil {
				return nil, fmt.Errorf("%s: %w: %w", what, ErrNoIOMMU, err)
			}
			noiommu := r.noIOMMUGroupPath(number)
			if _, nerr := os.Stat(noiommu); nerr == nil {
				// vfio's unsafe no-IOMMU mode names the group noiommu-N:
				// nothing translates the device's DMA, so there are no
				// IOVAs for umd to map.
				return nil, fmt.Errorf("%s: %w: %w (vfio runs in its unsafe no-IOMMU mode, enable_unsafe_noiommu_mode, and made %s: without an IOMMU umd cannot map DMA)", what, ErrNoIOMMU, err, noiommu)
			}
			err = hint(err, "no device of IOMMU group %d is bound to vfio-pci; bind them through driver_override", number)
		case errors.Is(err, unix.EBUSY):
			by := "in this process or another"
			if who := holders(path); len(who) > 0 {
				by = "by " + strings.Join(who, ", ")
			}
			err = hint(err, "the group is already open %s: the kernel lets one process at a time open a vfio group", by)
		case errors.Is(err, fs.ErrPermission):
			err = hint(err, "run as root, or give this user read-write access to %s", path)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &Group{number: number, root: r, file: f}, nil
}

// Number returns the IOMMU group number.
func (g *Group) Number() int { return g.number }

// Status returns what VFIO_GROUP_GET_STATUS reports.
func (g *Group) Status() (GroupStatus, error) {
	var raw vfioabi.GroupStatus
	err := g.file.control(func(fd int) error {
		var err error
		raw, err = vfioabi.GroupGetStatus(fd)
		return err
	})
	if err != nil {
		return GroupStatus{}, fmt.Errorf("getting the status of vfio group %d: %w", g.number, err)
	}
	return GroupStatus{
		Viable:       raw.Flags&vfioabi.VFIO_GROUP_FLAGS_VIABLE != 0,
		ContainerSet: raw.Flags&vfioabi.VFIO_GROUP_FLAGS_CONTAINER_SET != 0,
	}, nil
}

// SetContainer adds the group to container c (VFIO_GROUP_SET_CONTAINER). The
// group must be viable: when it is not, the error wraps ErrNotViable and
// names the devices of the group and their drivers. A group belongs to one
// container; it leaves it when the group is closed.
func (g *Group) SetContainer(c *Container) error {
	what := fmt.Sprintf("setting the container of vfio group %d", g.number)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case c == nil:
		return fmt.Errorf("%s: no container given", what)
	case g.closed:
		return fmt.Errorf("%s: %w", what, ErrClosed)
	case g.container == c:
		return nil
	case g.container != nil:
		return fmt.Errorf("%s: the group is already set to another container", what)
	}
	status, err := g.Status()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !status.Viable {
		return fmt.Errorf("%s: %w", what, g.notViable())
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("%s: container: %w", what, ErrClosed)
	}
	err = g.file.control(func(groupFD int) error {
		return c.file.control(func(containerFD int) error {
			return vfioabi.GroupSetContainer(groupFD, containerFD)
		})
	})
	if err != nil {
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EBUSY):
			err = fmt.Errorf("%w: %w", g.notViable(), err)
		case errors.Is(err, unix.EINVAL):
			err = hint(err, "the group is already set to a container")
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	g.container = c
	c.addGroup(g)
	return nil
}

// notViable builds the ErrNotViable error for the group, naming its devices
// and their drivers when sysfs can say.
func (g *Group) notViable() error {
	if devices := g.root.describeGroup(g.number); devices != "" {
		return fmt.Errorf("%w; group %d holds %s", ErrNotViable, g.number, devices)
	}
	return ErrNotViable
}

// Device opens the device bdf (such as "0000:00:03.0") of the group
// (VFIO_GROUP_GET_DEVICE_FD). The group must be set to a container whose
// IOMMU type is set.
func (g *Group) Device(bdf string) (*Device, error) {
	what := fmt.Sprintf("opening device %s of vfio group %d", bdf, g.number)
	if err := checkBDF(bdf); err != nil {
		return nil, fmt.Errorf("opening a device of vfio group %d: %w", g.number, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return nil, fmt.Errorf("%s: %w", what, ErrClosed)
	case g.container == nil:
		return nil, fmt.Errorf("%s: the group is not set to a container (call SetContainer first)", what)
	case g.container.IOMMU() == 0:
		return nil, fmt.Errorf("%s: the container's IOMMU type is not set (call Container.SetIOMMU first)", what)
	}
	var fd int
	err := g.file.control(func(groupFD int) error {
		var err error
		fd, err = vfioabi.GroupGetDeviceFD(groupFD, deviceName(bdf)) // deviceName: vftoken.go
		return err
	})
	if err != nil {
		if errors.Is(err, unix.ENODEV) {
			if devices := g.root.describeGroup(g.number); devices != "" {
				err = hint(err, "%s is not a vfio device of this group, which holds %s", bdf, devices)
			} else {
				err = hint(err, "%s is not a vfio device of this group", bdf)
			}
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	f, err := newFile(fd, "vfio device "+bdf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	d := &Device{bdf: bdf, group: g, file: f}
	g.devices = append(g.devices, d)
	return d, nil
}

// Close closes the group, which takes it out of its container. It fails
// with ErrInUse while a device of the group is open, or while it is the
// last group of a container that still has DMA mappings (the kernel would
// drop them with it): the order is DMA unmap, devices, groups, container.
// Closing twice returns nil.
func (g *Group) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	if len(g.devices) > 0 {
		bdfs := make([]string, len(g.devices))
		for i, d := range g.devices {
			bdfs[i] = d.bdf
		}
		open := "device " + bdfs[0] + " is"
		if len(bdfs) > 1 {
			open = "devices " + strings.Join(bdfs, ", ") + " are"
		}
		return fmt.Errorf("closing vfio group %d: %w: %s still open; close devices before their group", g.number, ErrInUse, open)
	}
	if g.container != nil {
		if err := g.container.lastGroupBusy(g); err != nil {
			return fmt.Errorf("closing vfio group %d: %w", g.number, err)
		}
	}
	g.closed = true
	err := g.file.close()
	if g.container != nil {
		g.container.removeGroup(g)
		g.container = nil
	}
	if err != nil {
		return fmt.Errorf("closing vfio group %d: %w", g.number, err)
	}
	return nil
}

// removeDevice records that d was closed.
func (g *Group) removeDevice(d *Device) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.devices = slices.DeleteFunc(g.devices, func(x *Device) bool { return x == d })
}
