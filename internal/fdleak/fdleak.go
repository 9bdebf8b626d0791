// Package fdleak fails a test binary whose tests leave file descriptors
// open. In umd every fd is a resource with an owner (a device, a group, an
// eventfd, a pool), so a leaked fd is a leaked resource; a package's
// TestMain hands its run to Main:
//
//	func TestMain(m *testing.M) { fdleak.Main(m) }
package fdleak

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// A Snapshot is the set of a process's open fds: fd number → what it
// refers to (the /proc/self/fd link).
type Snapshot map[string]string

// Take lists the process's open fds, leaving out the one it reads them
// with.
func Take() (Snapshot, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	self := fmt.Sprint(d.Fd())
	s := make(Snapshot, len(names))
	for _, name := range names {
		if name == self {
			continue
		}
		target, err := os.Readlink(filepath.Join("/proc/self/fd", name))
		if err != nil {
			continue // closed meanwhile
		}
		s[name] = target
	}
	return s, nil
}

// Leaked returns the fds open in after that were not open (to the same
// target) in s, as "N -> target", sorted.
func (s Snapshot) Leaked(after Snapshot) []string {
	var leaked []string
	for fd, target := range after {
		if s[fd] != target {
			leaked = append(leaked, fd+" -> "+target)
		}
	}
	sort.Strings(leaked)
	return leaked
}

// Main runs the tests and exits. It fails the run when an fd opened
// during the tests is still open after them, or when a check returns
// something (each line a leak of another kind, such as DMA mappings).
func Main(m *testing.M, checks ...func() []string) {
	os.Exit(run(m, os.Stderr, checks...))
}

func run(m interface{ Run() int }, w io.Writer, checks ...func() []string) int {
	// The runtime opens its poller's fds (epoll, a wakeup eventfd) the
	// first time a pollable file appears and keeps them: have that
	// happen before the first snapshot.
	if r, pw, err := os.Pipe(); err == nil {
		r.Close()
		pw.Close()
	}
	before, err := Take()
	if err != nil {
		fmt.Fprintln(w, "fdleak: listing open fds:", err)
		return 2
	}
	code := m.Run()
	after, err := Take()
	if err != nil {
		fmt.Fprintln(w, "fdleak: listing open fds:", err)
		return 2
	}
	var leaks []string
	for _, l := range before.Leaked(after) {
		leaks = append(leaks, "fd "+l)
	}
	for _, check := range checks {
		leaks = append(leaks, check()...)
	}
	if len(leaks) > 0 {
		fmt.Fprintf(w, "FAIL: the tests leaked %d resource(s):\n", len(leaks))
		for _, l := range leaks {
			fmt.Fprintln(w, "\t"+l)
		}
		if code == 0 {
			code = 1
		}
	}
	return code
}
