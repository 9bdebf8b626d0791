package vfio

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/umdkit/umd/internal/procfd"
)

// procRoot is where holders looks for processes.
const procRoot = "/proc"

// holders names the processes that have the character device at path
// open ("process 412 (umdbench)", "this process"), as far as this process
// may look into other processes' descriptors (all of them as root; its
// user's otherwise). It returns nil when path is not a character device
// or nothing visible holds it.
func holders(path string) []string {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Type() != fs.ModeDevice|fs.ModeCharDevice {
		return nil
	}
	rdev := fi.Sys().(*syscall.Stat_t).Rdev
	self := os.Getpid()
	var out []string
	for _, h := range procfd.Holders(procRoot, func(block bool, r uint64) bool { return !block && r == rdev }) {
		switch {
		case h.PID == self:
			out = append(out, "this process")
		case h.Comm != "":
			out = append(out, fmt.Sprintf("process %d (%s)", h.PID, h.Comm))
		default:
			out = append(out, fmt.Sprintf("process %d", h.PID))
		}
	}
	return out
}
