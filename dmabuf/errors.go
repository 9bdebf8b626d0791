package dmabuf

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Sentinel errors. Errors returned by this package wrap them (and the
// kernel's errno, when there is one), so test with errors.Is.
var (
	// ErrNotSupported means the running kernel lacks what was asked
	// for: /dev/udmabuf, or DMA_BUF_IOCTL_EXPORT_SYNC_FILE (Linux 6.0).
	ErrNotSupported = errors.New("not supported by this kernel")
	// ErrNoModule means /dev/umd-dmabuf does not exist: load the
	// umd_dmabuf module (`modprobe umd_dmabuf`).
	ErrNoModule = errors.New("umd_dmabuf module not loaded")
	// ErrBadFd means the descriptor to export is not open.
	ErrBadFd = errors.New("bad file descriptor")
	// ErrNotMemfd means the descriptor is not a memfd (shmem or
	// hugetlb): only memfds can be exported.
	ErrNotMemfd = errors.New("not a memfd")
	// ErrNotSealed means the memfd is not sealed against shrinking
	// (F_SEAL_SHRINK), so the exported pages could be truncated away.
	ErrNotSealed = errors.New("memfd not sealed with F_SEAL_SHRINK")
	// ErrInvalid means an offset or size that is negative, zero (for a
	// size) or not a multiple of the page size, or unknown flags.
	ErrInvalid = errors.New("invalid range or flags")
	// ErrOverflow means offset+size overflows.
	ErrOverflow = errors.New("range overflows")
	// ErrOutOfRange means the range runs past the end of the memfd.
	ErrOutOfRange = errors.New("range past the end of the memfd")
	// ErrTooLarge means the size is above the exporter's limit (the
	// module's max_bytes parameter, udmabuf's size_limit_mb).
	ErrTooLarge = errors.New("range larger than the exporter allows")
	// ErrTooManyExports means the module's max_exports dma-bufs are
	// alive already.
	ErrTooManyExports = errors.New("too many dma-bufs exported")
	// ErrAccess means a writable export of a memfd that is not open for
	// writing or is sealed against writes.
	ErrAccess = errors.New("memfd not writable")
	// ErrHole means a hugetlb memfd has no page at some offset of the
	// range and the kernel cannot allocate it for an export (Linux
	// before 6.11): populate the memfd first.
	ErrHole = errors.New("hole in the memfd")
	// ErrExported means a region cannot be freed: a dma-buf of it is
	// still alive.
	ErrExported = errors.New("region is exported")
	// ErrNotDmaBuf means a descriptor given to Inspect is not a
	// dma-buf.
	ErrNotDmaBuf = errors.New("not a dma-buf")
	// ErrClosed is returned by the methods of a closed Buffer, Mapping
	// or Exporter.
	ErrClosed = errors.New("closed")
)

// An ExportError is a failed export: what was asked, of which exporter,
// and what the kernel said. It matches a sentinel above and the errno
// under errors.Is.
type ExportError struct {
	Device string // "/dev/umd-dmabuf" or "/dev/udmabuf"
	Memfd  int
	Offset int64
	Size   int64
	Err    error      // a sentinel of this package
	Errno  unix.Errno // 0 when the check failed before the ioctl
}

func (e *ExportError) Error() string {
	msg := fmt.Sprintf("exporting %d bytes at offset %d of descriptor %d through %s: %v", e.Size, e.Offset, e.Memfd, e.Device, e.Err)
	if e.Errno != 0 {
		msg += " (" + e.Errno.Error() + ")"
	}
	return msg
}

// Unwrap lets errors.Is match the sentinel and the errno.
func (e *ExportError) Unwrap() []error {
	if e.Errno == 0 {
		return []error{e.Err}
	}
	return []error{e.Err, e.Errno}
}

// umdErrno maps an errno of UMD_DMABUF_IOCTL_EXPORT to its sentinel (see
// umd_dmabuf.c).
func umdErrno(errno unix.Errno) error {
	switch errno {
	case unix.EBADF:
		return ErrBadFd
	case unix.EBADFD:
		return ErrNotMemfd
	case unix.EPERM:
		return ErrNotSealed
	case unix.EINVAL:
		return ErrInvalid
	case unix.EOVERFLOW:
		return ErrOverflow
	case unix.ERANGE:
		return ErrOutOfRange
	case unix.E2BIG:
		return ErrTooLarge
	case unix.ENOSPC:
		return ErrTooManyExports
	case unix.EACCES:
		return ErrAccess
	case unix.EFAULT:
		return ErrHole
	}
	return errno
}

// udmabufErrno maps an errno of UDMABUF_CREATE to its sentinel. udmabuf
// says EINVAL for most refusals (an unsealed memfd, a file that is not a
// memfd, an unaligned range), so those stay ErrInvalid.
func udmabufErrno(errno unix.Errno) error {
	switch errno {
	case unix.EBADF:
		return ErrBadFd
	case unix.EINVAL:
		return ErrInvalid
	case unix.E2BIG:
		return ErrTooLarge
	}
	return errno
}
