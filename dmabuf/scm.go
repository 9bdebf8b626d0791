package dmabuf

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// SendFds sends descriptors (dma-bufs, memfds) with a message over a unix
// socket as SCM_RIGHTS. msg must not be empty on a stream socket: the
// rights travel with at least one byte. The caller keeps owning fds.
func SendFds(conn *net.UnixConn, msg []byte, fds ...int) error {
	if len(msg) == 0 {
		msg = []byte{0}
	}
	oob := unix.UnixRights(fds...)
	n, oobn, err := conn.WriteMsgUnix(msg, oob, nil)
	if err != nil {
		return fmt.Errorf("sending %d descriptors: %w", len(fds), err)
	}
	if n != len(msg) || oobn != len(oob) {
		return fmt.Errorf("sending %d descriptors: short write (%d of %d bytes, %d of %d control bytes)", len(fds), n, len(msg), oobn, len(oob))
	}
	return nil
}

// ReceiveFds receives one message of at most maxMsg bytes and the
// descriptors (at most maxFds) sent with it by SendFds. The caller owns
// the descriptors; they are close-on-exec.
func ReceiveFds(conn *net.UnixConn, maxMsg, maxFds int) ([]byte, []int, error) {
	msg := make([]byte, max(maxMsg, 1))
	oob := make([]byte, unix.CmsgSpace(4*maxFds))
	n, oobn, flags, _, err := conn.ReadMsgUnix(msg, oob)
	if err != nil {
		return nil, nil, fmt.Errorf("receiving descriptors: %w", err)
	}
	var fds []int
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, nil, fmt.Errorf("receiving descriptors: parsing control messages: %w", err)
	}
	for _, c := range cmsgs {
		got, err := unix.ParseUnixRights(&c)
		if err != nil {
			continue
		}
		fds = append(fds, got...)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, nil, fmt.Errorf("receiving descriptors: more than %d sent (MSG_CTRUNC)", maxFds)
	}
	return msg[:n], fds, nil
}
