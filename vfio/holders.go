package vfio

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// procRoot is where holders looks for processes.
var procRoot = "/proc"

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
	want := fi.Sys().(*syscall.Stat_t).Rdev
	procs, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if holds(filepath.Join(procRoot, p.Name(), "fd"), want) {
			who := fmt.Sprintf("process %d", pid)
			if pid == self {
				who = "this process"
			} else if comm, err := os.ReadFile(filepath.Join(procRoot, p.Name(), "comm")); err == nil {
				who += " (" + strings.TrimSpace(string(comm)) + ")"
			}
			out = append(out, who)
		}
	}
	return out
}

// holds reports whether a descriptor in fdDir (/proc/PID/fd) is the
// character device rdev.
func holds(fdDir string, rdev uint64) bool {
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return false // gone, or not ours to see
	}
	for _, fd := range fds {
		fi, err := os.Stat(filepath.Join(fdDir, fd.Name()))
		if err != nil || fi.Mode().Type() != fs.ModeDevice|fs.ModeCharDevice {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Rdev == rdev {
			return true
		}
	}
	return false
}
