package hugepage

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// childEnv makes the test binary act as the "other process" a pool's
// descriptor is sent to, instead of running tests (see runChild).
const childEnv = "UMD_HUGEPAGE_TEST_CHILD"

// TestMain runs the tests, then fails the run if any pool's descriptor or
// mapping is still open: every test must Close what it made, and every
// failed New must leave nothing behind.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	code := m.Run()
	if leaks := poolLeaks(); code == 0 && len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: pools leaked:\n\t%s\n", strings.Join(leaks, "\n\t"))
		code = 1
	}
	os.Exit(code)
}

// poolLeaks lists this process's descriptors and mappings of pool files
// (named after defaultName).
func poolLeaks() []string {
	var leaks []string
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.Contains(target, defaultName) {
			leaks = append(leaks, "fd "+e.Name()+" → "+target)
		}
	}
	maps, _ := os.ReadFile("/proc/self/maps")
	for line := range strings.Lines(string(maps)) {
		if strings.Contains(line, defaultName) {
			leaks = append(leaks, "mapping "+strings.TrimSpace(line))
		}
	}
	return leaks
}

// childPattern is what the child writes into a shared pool, at offset i.
func childPattern(i int) byte { return byte(i*7 + 3) }

// parentGreeting is what the parent writes before starting the child.
var parentGreeting = []byte("written by the parent")

// runChild maps the pool passed as descriptor 3, checks the parent's
// greeting, writes childPattern over the rest of the first MiB (or the
// pool, if smaller) and exits: 0 on success.
func runChild() int {
	p, err := OpenPool(3)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	defer p.Close()
	mem := p.Bytes()
	if !bytes.HasPrefix(mem, parentGreeting) {
		fmt.Fprintf(os.Stderr, "child: the pool starts with %q, not the parent's greeting\n", mem[:len(parentGreeting)])
		return 3
	}
	if want := os.Getenv("UMD_HUGEPAGE_TEST_PAGESIZE"); want != strconv.Itoa(p.PageSize()) {
		fmt.Fprintf(os.Stderr, "child: the imported pool has %d-byte pages, the parent's has %s\n", p.PageSize(), want)
		return 4
	}
	for i := len(parentGreeting); i < min(len(mem), 1<<20); i++ {
		mem[i] = childPattern(i)
	}
	// The child's allocator works on the imported memory too.
	b, err := p.Alloc(4096, 4096)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: allocating from the imported pool:", err)
		return 5
	}
	if err := p.Free(b); err != nil {
		fmt.Fprintln(os.Stderr, "child: freeing:", err)
		return 6
	}
	return 0
}

// shareWithChild starts this test binary as a child process with p's
// descriptor as its fd 3 and checks that what the child writes is what
// this process sees: the two share the pool's pages.
func shareWithChild(t *testing.T, p *Pool) {
	t.Helper()
	mem := p.Bytes()
	copy(mem, parentGreeting)
	f, err := p.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "UMD_HUGEPAGE_TEST_PAGESIZE="+strconv.Itoa(p.PageSize()))
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child process: %v\n%s", err, out)
	}
	for i := len(parentGreeting); i < min(len(mem), 1<<20); i++ {
		if mem[i] != childPattern(i) {
			t.Fatalf("byte %d of the pool is %#x after the child wrote %#x there", i, mem[i], childPattern(i))
		}
	}
}

// withMemlockLimit runs f with RLIMIT_MEMLOCK lowered to limit and, for
// a root test, without CAP_IPC_LOCK (which would let mlock ignore the
// limit), and restores both. The capability is dropped for this OS
// thread only, so the goroutine is locked to it and never unlocked: if
// restoring failed, the thread dies with the goroutine instead of being
// reused without the capability.
func withMemlockLimit(t *testing.T, limit uint64, f func()) {
	t.Helper()
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		t.Fatalf("capget: %v", err)
	}
	saved := caps
	if caps[0].Effective&(1<<unix.CAP_IPC_LOCK) != 0 {
		caps[0].Effective &^= 1 << unix.CAP_IPC_LOCK
		if err := unix.Capset(&hdr, &caps[0]); err != nil {
			t.Fatalf("dropping CAP_IPC_LOCK: %v", err)
		}
		defer func() {
			if err := unix.Capset(&hdr, &saved[0]); err != nil {
				t.Errorf("restoring CAP_IPC_LOCK: %v", err)
			}
		}()
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
		t.Fatal(err)
	}
	// Kernels before 5.16 default to a 64 KiB hard limit: raise it (as
	// root) when the soft limit asked for is above it.
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: limit, Max: max(old.Max, limit)}); err != nil {
		t.Fatalf("lowering RLIMIT_MEMLOCK: %v", err)
	}
	defer func() {
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
			t.Errorf("restoring RLIMIT_MEMLOCK: %v", err)
		}
	}()
	f()
}

// closePool closes p at the end of the test and checks that Close
// succeeds.
func closePool(t *testing.T, p *Pool) {
	t.Helper()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("closing the pool: %v", err)
		}
	})
}
