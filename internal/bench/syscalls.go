package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Counting a thread's system calls: Linux keeps no per-thread count, but a
// perf event on the raw_syscalls:sys_enter tracepoint, opened for the
// calling thread alone, counts every system call it enters, in the
// kernel, at no cost to the thread beyond the calls themselves. It needs
// tracefs (for the tracepoint's id) and the right to open perf events on
// tracepoints (root, or perf_event_paranoid permitting).

// tracepointID returns the id of tracefs event group/name.
func tracepointID(group, name string) (uint64, error) {
	for _, root := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		raw, err := os.ReadFile(root + "/events/" + group + "/" + name + "/id")
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
	}
	return 0, fmt.Errorf("no tracefs with %s:%s (mount -t tracefs nodev /sys/kernel/tracing)", group, name)
}

// syscallCounter counts the system calls of the thread that made it.
type syscallCounter struct{ fd int }

// countSyscalls starts counting the calling thread's system calls. The
// caller must stay on its thread (runtime.LockOSThread).
func countSyscalls() (*syscallCounter, error) {
	id, err := tracepointID("raw_syscalls", "sys_enter")
	if err != nil {
		return nil, err
	}
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_TRACEPOINT,
		Config: id,
		Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
	}
	// pid 0, cpu -1: this thread, on any CPU; no group; close-on-exec.
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("perf_event_open(raw_syscalls:sys_enter): %w", err)
	}
	return &syscallCounter{fd: fd}, nil
}

// stop reads the count and closes the counter. The read itself is not
// counted.
func (c *syscallCounter) stop() (uint64, error) {
	defer unix.Close(c.fd)
	var b [8]byte
	n, err := unix.Read(c.fd, b[:])
	if err != nil || n != 8 {
		return 0, fmt.Errorf("reading the syscall count: %d bytes, %v", n, err)
	}
	// The count includes the read's own entry.
	return max(binary.LittleEndian.Uint64(b[:]), 1) - 1, nil
}
