package broker

import (
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerGroups returns the supplementary groups of the process at the other
// end of uc as the kernel recorded them at connect (SO_PEERGROUPS).
func peerGroups(uc *net.UnixConn) ([]uint32, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	buf := make([]uint32, 64)
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			n := uint32(len(buf) * 4)
			_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERGROUPS, uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
			switch {
			case e == unix.ERANGE && int(n/4) > len(buf) && n/4 <= 1<<16:
				buf = make([]uint32, n/4)
				continue
			case e != 0:
				serr = os.NewSyscallError("getsockopt SO_PEERGROUPS", e)
			default:
				buf = buf[:n/4]
			}
			return
		}
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	return buf, nil
}
