// Package procfd finds the processes that hold a device node open, by
// looking through every /proc/PID/fd: stat follows each descriptor's link
// to the open file, whose device number is compared. It sees the
// descriptors this process may look at: every process's as root, its
// user's otherwise.
package procfd

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// A Holder is one process that has one device node open.
type Holder struct {
	PID   int
	Comm  string // the process's name (/proc/PID/comm); "" if unreadable
	Block bool   // a block device; otherwise a character device
	Rdev  uint64 // the device number (stat's st_rdev)
}

// Holders lists, in PID order, each process under procRoot ("/proc") and
// each block or character device it has open for which want is true, once
// per process and device however many descriptors it has on it.
func Holders(procRoot string, want func(block bool, rdev uint64) bool) []Holder {
	procs, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var out []Holder
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid <= 0 {
			continue
		}
		fdDir := filepath.Join(procRoot, p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or not ours to see
		}
		type node struct {
			block bool
			rdev  uint64
		}
		seen := map[node]bool{}
		var comm string
		for _, fd := range fds {
			fi, err := os.Stat(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok {
				continue
			}
			var n node
			switch fi.Mode().Type() {
			case fs.ModeDevice:
				n = node{true, uint64(st.Rdev)}
			case fs.ModeDevice | fs.ModeCharDevice:
				n = node{false, uint64(st.Rdev)}
			default:
				continue
			}
			if seen[n] || !want(n.block, n.rdev) {
				continue
			}
			seen[n] = true
			if comm == "" {
				if b, err := os.ReadFile(filepath.Join(procRoot, p.Name(), "comm")); err == nil {
					comm = strings.TrimSpace(string(b))
				}
			}
			out = append(out, Holder{PID: pid, Comm: comm, Block: n.block, Rdev: n.rdev})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}
