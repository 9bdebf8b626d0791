package dmabuf

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// An Inspection is what the umd_dmabuf module's kernel importer saw of a
// dma-buf (see Inspect).
type Inspection struct {
	// Size is the dma-buf's size in bytes.
	Size int64
	// Own is true when the umd_dmabuf module exported the dma-buf.
	Own bool
	// SGEntries and SGBytes are the CPU entries of the scatter-gather
	// table the exporter gave the importer, and their total length.
	SGEntries int
	SGBytes   int64
	// DMASegments and DMABytes are the segments of that table once
	// mapped for the importing device, and their total length.
	DMASegments int
	DMABytes    int64
	// PFNs are the physical frame numbers of the pages the table
	// covers, one per 4 KiB page, in order: the same numbers
	// /proc/PID/pagemap shows for a mapping of the same memory.
	PFNs []uint64
	// Checksum is the 64-bit FNV-1a (hash/fnv's New64a) of the
	// contents, read by the kernel through the exporter's vmap between
	// begin and end of CPU access.
	Checksum uint64
	// Attached and Mapped are, for Own dma-bufs, the attachments the
	// exporter listed while the importer was attached and mapped, and
	// how many of them had a mapping: 1 and 1 when no one else used the
	// dma-buf.
	Attached, Mapped int
}

// Inspect runs the umd_dmabuf module's kernel importer on a dma-buf
// descriptor (of any exporter: umd_dmabuf, udmabuf, a dma-heap): the
// module attaches its own device to the dma-buf, maps the attachment for
// device reads (so read-only dma-bufs can be inspected too), reads the
// scatter-gather table, begins CPU access, vmaps and checksums
// the contents, and undoes it all before it returns.
//
// It is a diagnostic, not a data path: it shows that an exporter works
// for kernel importers (device drivers) and which physical pages they
// get. It needs the module loaded (ErrNoModule) and CAP_SYS_ADMIN, since
// it reveals physical addresses. A descriptor that is not open gives
// ErrBadFd, one that is not a dma-buf ErrNotDmaBuf.
func Inspect(fd int) (*Inspection, error) {
	if fd < 0 || fd > 1<<31-1 {
		return nil, fmt.Errorf("inspecting dma-buf %d: %w", fd, ErrBadFd)
	}
	size, err := unix.Seek(fd, 0, unix.SEEK_END)
	if err != nil {
		// A descriptor that is not a dma-buf may not seek: let the
		// kernel say what it is.
		size = 0
	} else if _, err := unix.Seek(fd, 0, unix.SEEK_SET); err != nil {
		return nil, fmt.Errorf("inspecting dma-buf %d: rewinding: %w", fd, err)
	}
	dev, err := unix.Open(UmdDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("inspecting dma-buf %d: opening %s: %w: %w", fd, UmdDevice, ErrNoModule, err)
	}
	defer unix.Close(dev)

	pfns := make([]uint64, size/int64(os.Getpagesize()))
	for try := 0; ; try++ {
		arg := umdDmabufInspect{Fd: int32(fd)}
		if errno := ioctlUmdInspect(dev, &arg, pfns); errno != 0 {
			return nil, fmt.Errorf("inspecting dma-buf %d: %w", fd, inspectErrno(errno))
		}
		if arg.NrPfns > uint64(len(pfns)) {
			if try > 0 || arg.NrPfns > arg.Size {
				return nil, fmt.Errorf("inspecting dma-buf %d: the importer saw %d pages in %d bytes", fd, arg.NrPfns, arg.Size)
			}
			// The table covers more pages than the size said (or
			// the size was unknown): ask again with room for all.
			pfns = make([]uint64, arg.NrPfns)
			continue
		}
		return &Inspection{
			Size:        int64(arg.Size),
			Own:         arg.Exporter&UMD_DMABUF_INSPECT_OWN != 0,
			SGEntries:   int(arg.SgNents),
			SGBytes:     int64(arg.SgBytes),
			DMASegments: int(arg.DmaNents),
			DMABytes:    int64(arg.DmaBytes),
			PFNs:        pfns[:arg.NrPfns],
			Checksum:    arg.Checksum,
			Attached:    int(arg.Attached),
			Mapped:      int(arg.Mapped),
		}, nil
	}
}

// inspectErrno maps an errno of UMD_DMABUF_IOCTL_INSPECT to its sentinel,
// wrapped with the errno itself.
func inspectErrno(errno unix.Errno) error {
	switch errno {
	case unix.EBADF:
		return fmt.Errorf("%w: %w", ErrBadFd, errno)
	case unix.EINVAL: // what dma_buf_get says of other files
		return fmt.Errorf("%w: %w", ErrNotDmaBuf, errno)
	case unix.ENOTTY: // a module from before the importer
		return fmt.Errorf("%w: %w", ErrNotSupported, errno)
	}
	return errno
}
