package dmabuf

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// A Buffer owns a dma-buf descriptor: one made by an Exporter, or one
// received from another process (NewBuffer). Close is safe to call twice.
type Buffer struct {
	mu      sync.Mutex
	fd      int // -1 once closed
	size    int64
	release func() // drops the Region's count, if any

	cleanup runtime.Cleanup
}

func newBuffer(fd int, size int64, release func()) *Buffer {
	b := &Buffer{fd: fd, size: size, release: release}
	b.cleanup = runtime.AddCleanup(b, func(fd int) { unix.Close(fd) }, fd)
	return b
}

// NewBuffer takes ownership of fd, a dma-buf descriptor (received over a
// unix socket, say), and finds its size.
func NewBuffer(fd int) (*Buffer, error) {
	size, err := unix.Seek(fd, 0, unix.SEEK_END)
	if err != nil {
		return nil, fmt.Errorf("finding the size of dma-buf %d: %w", fd, err)
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_SET); err != nil {
		return nil, fmt.Errorf("rewinding dma-buf %d: %w", fd, err)
	}
	return newBuffer(fd, size, nil), nil
}

// Fd returns the dma-buf's descriptor, -1 after Close. The Buffer keeps
// owning it.
func (b *Buffer) Fd() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fd
}

// Size returns the dma-buf's size in bytes.
func (b *Buffer) Size() int64 { return b.size }

// File returns a duplicate of the descriptor that the caller owns, for
// exec.Cmd.ExtraFiles and the like.
func (b *Buffer) File() (*os.File, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fd < 0 {
		return nil, ErrClosed
	}
	fd, err := unix.FcntlInt(uintptr(b.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating dma-buf descriptor: %w", err)
	}
	return os.NewFile(uintptr(fd), "dmabuf"), nil
}

// Close closes this process's descriptor. The pages stay pinned while
// other references to the dma-buf live (descriptors in other processes,
// mappings, device attachments); a Region's export count drops now.
func (b *Buffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fd < 0 {
		return nil
	}
	b.cleanup.Stop()
	err := unix.Close(b.fd)
	b.fd = -1
	if b.release != nil {
		b.release()
		b.release = nil
	}
	if err != nil {
		return fmt.Errorf("closing dma-buf: %w", err)
	}
	return nil
}

// Sync brackets CPU access to the dma-buf (DMA_BUF_IOCTL_SYNC): call it
// with SyncStart before reading or writing the mapped memory and with
// SyncEnd after, with the same SyncRead/SyncWrite, so the exporter can do
// the cache maintenance non-coherent devices need.
func (b *Buffer) Sync(flags SyncFlags) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fd < 0 {
		return ErrClosed
	}
	return syncFd(b.fd, flags)
}

// SyncFlags are DMA_BUF_IOCTL_SYNC's flags: one of SyncStart and SyncEnd,
// or'ed with SyncRead, SyncWrite or both.
type SyncFlags uint64

// Flags of Sync.
const (
	SyncStart SyncFlags = DMA_BUF_SYNC_START
	SyncEnd   SyncFlags = DMA_BUF_SYNC_END
	SyncRead  SyncFlags = DMA_BUF_SYNC_READ
	SyncWrite SyncFlags = DMA_BUF_SYNC_WRITE
	SyncRW    SyncFlags = DMA_BUF_SYNC_RW
)

func (f SyncFlags) check() error {
	if f&^(SyncEnd|SyncRW) != 0 || f&SyncRW == 0 {
		return fmt.Errorf("sync flags %#x: %w", uint64(f), ErrInvalid)
	}
	return nil
}

func syncFd(fd int, flags SyncFlags) error {
	if err := flags.check(); err != nil {
		return err
	}
	arg := dmaBufSync{Flags: uint64(flags)}
	for {
		errno := ioctlSync(fd, &arg)
		switch errno {
		case 0:
			return nil
		case unix.EINTR, unix.EAGAIN:
			continue
		}
		return fmt.Errorf("DMA_BUF_IOCTL_SYNC %#x: %w", uint64(flags), errno)
	}
}

// ExportSyncFile returns a sync_file (DMA_BUF_IOCTL_EXPORT_SYNC_FILE,
// Linux 6.0) that signals when the fences now attached to the dma-buf
// do: with SyncWrite, the fences a writer must wait for (all of them);
// with SyncRead, those a reader must wait for (the writers'). The caller
// owns the file. Kernels without the ioctl return an error wrapping
// ErrNotSupported.
func (b *Buffer) ExportSyncFile(flags SyncFlags) (*os.File, error) {
	if flags&^SyncRW != 0 || flags == 0 {
		return nil, fmt.Errorf("exporting a sync_file with flags %#x: %w", uint64(flags), ErrInvalid)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fd < 0 {
		return nil, ErrClosed
	}
	arg := dmaBufExportSyncFile{Flags: uint32(flags), Fd: -1}
	if errno := ioctlExportSyncFile(b.fd, &arg); errno != 0 {
		if errno == unix.ENOTTY {
			return nil, fmt.Errorf("DMA_BUF_IOCTL_EXPORT_SYNC_FILE: %w: %w", ErrNotSupported, errno)
		}
		return nil, fmt.Errorf("DMA_BUF_IOCTL_EXPORT_SYNC_FILE: %w", errno)
	}
	return os.NewFile(uintptr(arg.Fd), "sync_file"), nil
}

// A Mapping is a dma-buf mapped into this process (Import). It holds its
// own reference to the dma-buf, so the Buffer or descriptor it came from
// may be closed first.
type Mapping struct {
	mu   sync.Mutex
	fd   int    // a duplicate, for Sync; -1 once closed
	mem  []byte // exactly what unix.Mmap returned
	prot int
}

// Import maps the whole dma-buf fd, writable when the dma-buf allows it,
// read-only otherwise. It duplicates fd: the caller keeps owning it.
func Import(fd int) (*Mapping, error) {
	size, err := unix.Seek(fd, 0, unix.SEEK_END)
	if err != nil {
		return nil, fmt.Errorf("importing dma-buf %d: finding its size: %w", fd, err)
	}
	if size <= 0 || size > int64(^uint(0)>>1) {
		return nil, fmt.Errorf("importing dma-buf %d: size %d: %w", fd, size, ErrInvalid)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("importing dma-buf %d: duplicating it: %w", fd, err)
	}
	prot := unix.PROT_READ | unix.PROT_WRITE
	mem, err := unix.Mmap(dup, 0, int(size), prot, unix.MAP_SHARED)
	if errors.Is(err, unix.EACCES) {
		prot = unix.PROT_READ
		mem, err = unix.Mmap(dup, 0, int(size), prot, unix.MAP_SHARED)
	}
	if err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("importing dma-buf %d: mapping %d bytes: %w", fd, size, err)
	}
	return &Mapping{fd: dup, mem: mem, prot: prot}, nil
}

// Bytes returns the mapped memory, nil after Close.
func (m *Mapping) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mem
}

// Writable reports whether the mapping allows writes.
func (m *Mapping) Writable() bool { return m.prot&unix.PROT_WRITE != 0 }

// Sync is Buffer.Sync for the mapped dma-buf.
func (m *Mapping) Sync(flags SyncFlags) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fd < 0 {
		return ErrClosed
	}
	return syncFd(m.fd, flags)
}

// Close unmaps the memory and drops the mapping's reference to the
// dma-buf. It is safe to call twice.
func (m *Mapping) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fd < 0 {
		return nil
	}
	var errs []error
	if err := unix.Munmap(m.mem); err != nil {
		errs = append(errs, fmt.Errorf("unmapping dma-buf: %w", err))
	}
	if err := unix.Close(m.fd); err != nil {
		errs = append(errs, fmt.Errorf("closing dma-buf: %w", err))
	}
	m.mem, m.fd = nil, -1
	return errors.Join(errs...)
}
