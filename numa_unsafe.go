package umd

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// getcpu returns the CPU and NUMA node the calling thread runs on
// (getcpu(2); x/sys/unix has no wrapper). It is a control-path call.
func getcpu() (cpu, node int, err error) {
	var c, n uint32
	_, _, errno := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&c)), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return 0, 0, errno
	}
	return int(c), int(n), nil
}
