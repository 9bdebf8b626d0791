package qemu

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// How QEMU does the emulated disks' I/O on the host (-drive aio=).
const (
	// AIOThreads is QEMU's default: each request is handed to a worker
	// thread that does a blocking read or write and wakes the event loop
	// when it is done.
	AIOThreads = "threads"
	// AIOIOURing submits requests to the host kernel's io_uring from the
	// event loop itself: no worker thread round trip per request.
	AIOIOURing = "io_uring"
)

// DefaultAIO is the -drive aio= mode a guest gets when Config.DiskAIO is
// empty: io_uring where the host kernel allows it, else threads.
//
// Measured on the 2-core development VM (docs/performance.md), io_uring
// halves the CPU QEMU's event loop spends per emulated NVMe command (the
// thread that runs the device model, which at queue depth 1 spent 26-54
// µs per command waking and being woken by the worker threads), which
// both speeds up the test suite and lets benchmarks see more of the
// driver and less of the emulator.
func DefaultAIO() string {
	if ioURingAvailable() {
		return AIOIOURing
	}
	return AIOThreads
}

// ioURingAvailable reports whether this process may set up an io_uring:
// kernels without it return ENOSYS, and kernel.io_uring_disabled or a
// seccomp filter may refuse it (EPERM).
func ioURingAvailable() bool {
	var params [120]byte // struct io_uring_params, zeroed
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
	if errno != 0 {
		return false
	}
	unix.Close(int(fd))
	return true
}

func checkAIO(mode string) error {
	switch mode {
	case AIOThreads, AIOIOURing:
		return nil
	}
	// aio=native (Linux AIO) is left out: QEMU takes it only with
	// cache.direct=on, which the harness's disks do not set.
	return fmt.Errorf("disk I/O mode %q: the harness runs QEMU's -drive aio=threads or aio=io_uring", mode)
}
