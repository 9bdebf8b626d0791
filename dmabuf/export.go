package dmabuf

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/hugepage"
)

// Device paths of the two exporters.
const (
	// UmdDevice is the umd_dmabuf module's misc device.
	UmdDevice = "/dev/umd-dmabuf"
	// UdmabufDevice is the kernel's own memfd exporter
	// (CONFIG_UDMABUF, not in Debian's 6.1).
	UdmabufDevice = "/dev/udmabuf"
)

// Access says whether a dma-buf may be written through.
type Access int

const (
	// ReadWrite dma-bufs can be mapped writable and written by devices.
	ReadWrite Access = iota
	// ReadOnly dma-bufs can only be mapped for reading (umd_dmabuf
	// only: udmabuf always makes writable ones).
	ReadOnly
)

// An Exporter turns ranges of sealed memfds into dma-bufs, through the
// umd_dmabuf module (OpenExporter) or the kernel's udmabuf
// (OpenUdmabuf). It is safe for concurrent use.
type Exporter struct {
	device string
	udma   bool

	mu sync.RWMutex
	fd int // -1 once closed
}

// OpenExporter opens /dev/umd-dmabuf. Without the module loaded the
// error wraps ErrNoModule.
func OpenExporter() (*Exporter, error) {
	return openExporter(UmdDevice, false)
}

// OpenUdmabuf opens the kernel's /dev/udmabuf. On kernels built without
// it the error wraps ErrNotSupported.
func OpenUdmabuf() (*Exporter, error) {
	return openExporter(UdmabufDevice, true)
}

func openExporter(device string, udma bool) (*Exporter, error) {
	fd, err := unix.Open(device, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		missing := ErrNoModule
		if udma {
			missing = ErrNotSupported
		}
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("opening %s: %w: %w", device, missing, err)
		}
		return nil, fmt.Errorf("opening %s: %w", device, err)
	}
	return &Exporter{device: device, udma: udma, fd: fd}, nil
}

// Device returns the device file the exporter uses.
func (e *Exporter) Device() string { return e.device }

// Close closes the exporter's device. Buffers it made stay valid. Close
// is safe to call twice.
func (e *Exporter) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fd < 0 {
		return nil
	}
	err := unix.Close(e.fd)
	e.fd = -1
	if err != nil {
		return fmt.Errorf("closing %s: %w", e.device, err)
	}
	return nil
}

// checkRange validates an export's range the way the kernel will, so
// that the common mistakes fail before the ioctl with the same errors.
func checkRange(offset, size int64) error {
	page := int64(os.Getpagesize())
	switch {
	case offset < 0 || size <= 0:
		return ErrInvalid
	case offset > math.MaxInt64-size:
		return ErrOverflow
	case offset%page != 0 || size%page != 0:
		return ErrInvalid
	}
	return nil
}

// Export makes a dma-buf of size bytes at offset of the memfd memfd,
// which must be sealed with F_SEAL_SHRINK; offset and size must be
// multiples of the page size. The kernel pins the pages until the
// dma-buf's last reference goes (its descriptor closed everywhere, its
// mappings unmapped, its device attachments detached); the memfd may be
// closed meanwhile. The caller keeps owning memfd.
func (e *Exporter) Export(memfd int, offset, size int64, access Access) (*Buffer, error) {
	fail := func(sentinel error, errno unix.Errno) error {
		return &ExportError{Device: e.device, Memfd: memfd, Offset: offset, Size: size, Err: sentinel, Errno: errno}
	}
	if err := checkRange(offset, size); err != nil {
		return nil, fail(err, 0)
	}
	if access != ReadWrite && access != ReadOnly {
		return nil, fail(ErrInvalid, 0)
	}
	if e.udma && access == ReadOnly {
		return nil, fmt.Errorf("exporting through %s: read-only dma-bufs: %w", e.device, ErrNotSupported)
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.fd < 0 {
		return nil, fail(ErrClosed, 0)
	}
	if e.udma {
		if memfd < 0 {
			return nil, fail(ErrBadFd, unix.EBADF)
		}
		arg := udmabufCreate{Memfd: uint32(memfd), Flags: UDMABUF_FLAGS_CLOEXEC, Offset: uint64(offset), Size: uint64(size)}
		fd, errno := ioctlUdmabufCreate(e.fd, &arg)
		if errno != 0 {
			return nil, fail(udmabufErrno(errno), errno)
		}
		return newBuffer(fd, size, nil), nil
	}
	arg := umdDmabufExport{Memfd: int32(memfd), Flags: UMD_DMABUF_FLAG_CLOEXEC, Offset: uint64(offset), Size: uint64(size)}
	if memfd > math.MaxInt32 {
		return nil, fail(ErrBadFd, unix.EBADF)
	}
	if access == ReadWrite {
		arg.Flags |= UMD_DMABUF_FLAG_RDWR
	}
	if errno := ioctlUmdExport(e.fd, &arg); errno != 0 {
		return nil, fail(umdErrno(errno), errno)
	}
	return newBuffer(int(arg.Fd), size, nil), nil
}

// ExportPool makes a dma-buf of size bytes at offset of a pool's memory.
// The pool must be a sealed memfd (hugepage.New seals them unless told
// not to; hugetlbfs files cannot be). The kernel pins the pages, so they
// outlive even the pool's Close; but nothing stops the pool's allocator
// from handing the range to another owner: export Regions for that.
func (e *Exporter) ExportPool(p *hugepage.Pool, offset, size int, access Access) (*Buffer, error) {
	fd := p.Fd()
	if fd < 0 {
		return nil, fmt.Errorf("exporting a pool: %w", hugepage.ErrClosed)
	}
	return e.Export(fd, int64(offset), int64(size), access)
}

// ExportRegion makes a dma-buf of a region's pages (its length rounded up
// to the page size). The region cannot be freed until the Buffer is
// closed.
func (e *Exporter) ExportRegion(r *Region, access Access) (*Buffer, error) {
	if err := r.acquire(); err != nil {
		return nil, fmt.Errorf("exporting a region: %w", err)
	}
	b, err := e.ExportPool(r.pool, r.buf.Offset(), r.exportLen(), access)
	if err != nil {
		r.release()
		return nil, err
	}
	b.release = r.release
	return b, nil
}
