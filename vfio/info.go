package vfio

import (
	"fmt"

	"github.com/umdkit/umd/internal/vfioabi"
)

const (
	// infoRoom is how many bytes after an INFO struct the first call
	// offers for its capability chain: enough for the chains seen in
	// practice (a few IOVA ranges, a few sparse areas), so one ioctl
	// usually does.
	infoRoom = 256
	// maxInfoSize bounds the buffer an INFO ioctl may ask for.
	maxInfoSize = 1 << 20
)

// getInfo runs an INFO ioctl through call, which issues it with buf and
// returns the Argsz the kernel answered. When the kernel asks for a larger
// buffer (its capability chain did not fit), getInfo calls again with one.
// It returns the buffer holding the answer, cut to Argsz.
func getInfo(h *file, fixedSize int, call func(fd int, buf []byte) (argsz uint32, err error)) ([]byte, error) {
	size := fixedSize + infoRoom
	for range 4 {
		buf := make([]byte, size)
		var argsz uint32
		err := h.control(func(fd int) error {
			var err error
			argsz, err = call(fd, buf)
			return err
		})
		if err != nil {
			return nil, err
		}
		if int(argsz) <= len(buf) {
			return buf[:max(int(argsz), fixedSize)], nil
		}
		if argsz > maxInfoSize {
			return nil, fmt.Errorf("the kernel asks for a %d-byte info buffer, more than the %d this package allows", argsz, maxInfoSize)
		}
		size = int(argsz)
	}
	return nil, fmt.Errorf("the kernel kept asking for a larger info buffer (last %d bytes)", size)
}

// parseCaps walks the capability chain of an INFO buffer when flags say
// there is one.
func parseCaps(buf []byte, fixedSize int, hasCaps bool, first uint32) ([]vfioabi.Cap, error) {
	if !hasCaps || first == 0 {
		return nil, nil
	}
	return vfioabi.ParseCapChain(buf, fixedSize, first)
}
