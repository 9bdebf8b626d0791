package iommu

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain fails the package when a test leaves a file descriptor open or a
// DMA mapping of a Space in place.
func TestMain(m *testing.M) {
	// The runtime's poller opens its own fds the first time a pollable file
	// is opened, and keeps them: open them before counting.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before, err := openFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "listing open fds:", err)
		os.Exit(2)
	}
	code := m.Run()
	if code != 0 {
		os.Exit(code)
	}
	after, err := openFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "listing open fds:", err)
		os.Exit(2)
	}
	for fd, target := range after {
		if _, ok := before[fd]; !ok {
			fmt.Fprintf(os.Stderr, "FAIL: fd %s (%s) leaked\n", fd, target)
			code = 1
		}
	}
	if n := openMappings.Load(); n != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d DMA mappings leaked: a Space was not closed\n", n)
		code = 1
	}
	os.Exit(code)
}

// openFDs lists this process's fds and what they refer to, leaving out
// the one that lists them.
func openFDs() (map[string]string, error) {
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
	fds := make(map[string]string)
	for _, name := range names {
		if name == self {
			continue
		}
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", name))
		fds[name] = target
	}
	return fds, nil
}

// anonMemory returns size bytes of anonymous memory mapped for the test,
// page-aligned like the memory MapPool wants, unmapped at the end.
func anonMemory(t testing.TB, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Munmap(mem); err != nil {
			t.Error(err)
		}
	})
	return mem
}

func TestOpenFDsSeesALeak(t *testing.T) {
	before, err := openFDs()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	after, err := openFDs()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var added []string
	for fd, target := range after {
		if _, ok := before[fd]; !ok {
			added = append(added, target)
		}
	}
	if !slices.Equal(added, []string{os.DevNull}) {
		t.Errorf("opening %s added fds to %v", os.DevNull, added)
	}
}
