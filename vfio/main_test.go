package vfio

import (
	"fmt"
	"os"
	"slices"
	"testing"
)

// TestMain fails the test binary when its tests leave file descriptors
// open: every handle of this package owns one, and a leaked fd is a leaked
// device, group, container or eventfd. It runs for the guest tests too.
func TestMain(m *testing.M) {
	// The runtime opens its poller's own fds (epoll, a wakeup eventfd) the
	// first time a pollable file appears; make that happen before counting.
	r, w, err := os.Pipe()
	if err == nil {
		r.Close()
		w.Close()
	}
	before, err := listFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "listing open fds:", err)
		os.Exit(1)
	}
	code := m.Run()
	after, err := listFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "listing open fds:", err)
		os.Exit(1)
	}
	if leaked := leakedFDs(before, after); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the tests leaked %d file descriptor(s):\n", len(leaked))
		for _, l := range leaked {
			fmt.Fprintln(os.Stderr, "\t"+l)
		}
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// listFDs returns the process's open fds, each as "N -> target".
func listFDs() ([]string, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	var fds []string
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the fd ReadDir itself used, closed by now
		}
		fds = append(fds, e.Name()+" -> "+target)
	}
	return fds, nil
}

// leakedFDs returns the entries of after that are not in before.
func leakedFDs(before, after []string) []string {
	var leaked []string
	for _, fd := range after {
		if !slices.Contains(before, fd) {
			leaked = append(leaked, fd)
		}
	}
	return leaked
}
