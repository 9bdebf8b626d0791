package vfioabi

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Every raw pointer that crosses into the kernel goes through the three
// helpers below. Each converts its pointer to uintptr inside the argument
// list of unix.Syscall itself, which is the form the Go compiler recognises
// as keeping the pointee alive and unmoved for the duration of the call, and
// adds runtime.KeepAlive after it for the reader's benefit.
//
// They use unix.Syscall, never RawSyscall: VFIO_IOMMU_MAP_DMA pins pages and
// may sleep, and RawSyscall would hold up the Go scheduler meanwhile. The
// cost of Syscall is irrelevant at the rate these ioctls are issued.

// ioctlPointer issues an ioctl whose argument is a pointer to *p.
func ioctlPointer[T any](fd int, req uintptr, p *T) (uintptr, unix.Errno) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(p)))
	runtime.KeepAlive(p)
	return r, errno
}

// ioctlBytes issues an ioctl whose argument is a pointer to buf[0]. buf must
// not be empty.
func ioctlBytes(fd int, req uintptr, buf []byte) (uintptr, unix.Errno) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&buf[0])))
	runtime.KeepAlive(buf)
	return r, errno
}

// bytesOf returns the memory of *p as a byte slice, for copying a fixed
// struct into and out of an argument buffer without regard to the buffer's
// alignment. T must be one of this package's structs: fixed-width fields,
// no pointers.
func bytesOf[T any](p *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p))
}
