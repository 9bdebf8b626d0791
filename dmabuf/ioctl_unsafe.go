package dmabuf

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ioctls pass pointers to their structs; these are the only uses of
// package unsafe. Each may block (pinning pages, waiting for fences), so
// they use Syscall, not RawSyscall.

func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) unix.Errno {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	return errno
}

func ioctlUmdExport(fd int, arg *umdDmabufExport) unix.Errno {
	errno := ioctlPtr(fd, UMD_DMABUF_IOCTL_EXPORT, unsafe.Pointer(arg))
	runtime.KeepAlive(arg)
	return errno
}

// ioctlUmdInspect passes pfns (which may be empty) as arg's array; the
// kernel fills at most len(pfns) entries.
func ioctlUmdInspect(fd int, arg *umdDmabufInspect, pfns []uint64) unix.Errno {
	arg.Pfns, arg.MaxPfns = 0, 0
	if len(pfns) > 0 {
		arg.Pfns = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(pfns))))
		arg.MaxPfns = uint64(len(pfns))
	}
	errno := ioctlPtr(fd, UMD_DMABUF_IOCTL_INSPECT, unsafe.Pointer(arg))
	runtime.KeepAlive(arg)
	runtime.KeepAlive(pfns)
	return errno
}

func ioctlUdmabufCreate(fd int, arg *udmabufCreate) (int, unix.Errno) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), UDMABUF_CREATE, uintptr(unsafe.Pointer(arg)))
	runtime.KeepAlive(arg)
	return int(r), errno
}

func ioctlSync(fd int, arg *dmaBufSync) unix.Errno {
	errno := ioctlPtr(fd, DMA_BUF_IOCTL_SYNC, unsafe.Pointer(arg))
	runtime.KeepAlive(arg)
	return errno
}

func ioctlExportSyncFile(fd int, arg *dmaBufExportSyncFile) unix.Errno {
	errno := ioctlPtr(fd, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, unsafe.Pointer(arg))
	runtime.KeepAlive(arg)
	return errno
}
