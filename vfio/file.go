package vfio

import (
	"fmt"
	"os"
	"syscall"
)

// file is the owned file descriptor under every handle. The fd is only
// ever used inside control, which holds a reference on it for the length
// of the call, so a concurrent Close cannot free the number (and let it be
// reused by an unrelated open) while an ioctl is in flight. The *os.File
// also closes the fd if a handle is dropped without Close, as a leak net.
type file struct {
	f  *os.File
	rc syscall.RawConn
}

func wrapFile(f *os.File) (*file, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &file{f: f, rc: rc}, nil
}

// openFile opens a VFIO character device read-write and close-on-exec.
func openFile(path string) (*file, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return wrapFile(f)
}

// newFile takes ownership of an fd the kernel returned.
func newFile(fd int, name string) (*file, error) {
	f := os.NewFile(uintptr(fd), name)
	if f == nil {
		return nil, fmt.Errorf("fd %d is not valid", fd)
	}
	return wrapFile(f)
}

// control runs fn with the fd. It returns ErrClosed once the file is
// closed.
func (h *file) control(fn func(fd int) error) error {
	var inner error
	if err := h.rc.Control(func(fd uintptr) { inner = fn(int(fd)) }); err != nil {
		return ErrClosed
	}
	return inner
}

func (h *file) close() error { return h.f.Close() }
