package hugepage

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mbind sets the memory policy of mem, which must not be touched yet, to
// mode (mpolBind or mpolPreferred) over the single node. Pages are placed
// when they are first faulted in, so this has to come before populating.
func mbind(mem []byte, mode, node int) error {
	mask := nodeMask(node)
	// maxnode counts bits, and the kernel reads one bit fewer than it is
	// told (mm/mempolicy.c: get_nodes does --maxnode): pass one extra.
	maxnode := uintptr(len(mask)*64 + 1)
	_, _, errno := unix.Syscall6(unix.SYS_MBIND,
		uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(mode),
		uintptr(unsafe.Pointer(&mask[0])), maxnode, 0)
	runtime.KeepAlive(mask)
	if errno != 0 {
		return errno
	}
	return nil
}

// pageNodes returns the NUMA node of each pageSize page of mem (a negative
// errno for a page the kernel could not tell about), asking move_pages(2)
// with no target nodes, which only reports. mem must be populated.
func pageNodes(mem []byte, pageSize int) ([]int32, error) {
	n := len(mem) / pageSize
	status := make([]int32, n)
	const batch = 1024
	addrs := make([]uintptr, batch)
	base := uintptr(unsafe.Pointer(&mem[0]))
	for start := 0; start < n; start += batch {
		count := min(batch, n-start)
		for i := range count {
			addrs[i] = base + uintptr((start+i)*pageSize)
		}
		_, _, errno := unix.Syscall6(unix.SYS_MOVE_PAGES, 0, uintptr(count),
			uintptr(unsafe.Pointer(&addrs[0])), 0,
			uintptr(unsafe.Pointer(&status[start])), 0)
		if errno != 0 {
			return nil, errno
		}
	}
	runtime.KeepAlive(addrs)
	runtime.KeepAlive(status)
	runtime.KeepAlive(mem)
	return status, nil
}
