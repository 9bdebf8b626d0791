package vfio

import (
	"errors"
	"fmt"
	"os"
)

var (
	// ErrNoIOMMU means VFIO cannot work on this machine as booted: the
	// vfio device nodes are missing or a device has no IOMMU group.
	ErrNoIOMMU = errors.New("no usable IOMMU: vfio needs the IOMMU on (boot with intel_iommu=on or amd_iommu=on) and the vfio, vfio_iommu_type1 and vfio-pci modules loaded")

	// ErrNotViable means a group cannot be set to a container because a
	// device in it is still bound to a kernel driver that does DMA.
	ErrNotViable = errors.New("vfio group is not viable: every device in the IOMMU group must be bound to vfio-pci or to no driver")

	// ErrInUse is returned by a Close that would pull a handle out from
	// under the handles that depend on it: a Group with open devices, a
	// Container with groups set to it.
	ErrInUse = errors.New("still in use")

	// ErrIOVAOutOfRange is returned by MapDMA when the IOVA range lies
	// outside every range the container's IOMMU accepts.
	ErrIOVAOutOfRange = errors.New("IOVA outside the container's IOVA ranges")

	// ErrNotSupported means the kernel or the device does not offer what
	// was asked: a device feature vfio-pci does not implement for it, an
	// IRQ index the device lacks, masking an index that is not maskable.
	// The kernel's errno (ENOTTY, EINVAL), when there was one, is wrapped
	// too.
	ErrNotSupported = errors.New("not supported")

	// ErrClosed is returned by methods of a closed handle. It is
	// os.ErrClosed, so either can be tested for.
	ErrClosed = os.ErrClosed
)

// hint adds a parenthesised explanation of a common cause to err.
func hint(err error, format string, args ...any) error {
	return fmt.Errorf("%w (%s)", err, fmt.Sprintf(format, args...))
}
