package vfio

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// A VFIO device file descriptor works in any process that holds it: a
// process that owns a device (a broker) can send a duplicate to another
// (over a unix socket, with SCM_RIGHTS), which then maps the device's BARs
// and uses its regions as the owner does. Whoever holds it can do anything
// the owner can with the device — reset it, rewrite its registers, point
// its DMA anywhere in the container's IOMMU domain — so only hand it to
// processes trusted that far.

// DupFd returns a new close-on-exec descriptor of the device, for sending
// to another process. The caller owns it.
func (d *Device) DupFd() (int, error) {
	var nfd int
	err := d.file.control(func(fd int) error {
		var err error
		nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("duplicating the descriptor of device %s: %w", d.bdf, err)
	}
	return nfd, nil
}

// DeviceFromFD takes ownership of fd, a VFIO device descriptor received
// from another process, and returns a Device over it; bdf names it in
// errors. It has no Group. Its regions, Mmap, config space and IRQ
// methods work as on a Device from Group.Device; Close closes the
// descriptor (and disables the IRQ indexes this Device enabled).
//
// fd is checked with VFIO_DEVICE_GET_INFO, so a descriptor of anything
// else is refused (and closed).
func DeviceFromFD(fd int, bdf string) (*Device, error) {
	f, err := newFile(fd, "vfio device "+bdf)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("taking the descriptor of device %s: %w", bdf, err)
	}
	d := &Device{bdf: bdf, file: f}
	if _, err := d.Info(); err != nil {
		f.close()
		return nil, fmt.Errorf("taking the descriptor of device %s: not a VFIO device: %w", bdf, err)
	}
	return d, nil
}
