//go:build guest

package dmabuf

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/qemu/guest"
)

// childEnv makes the test binary act as the importing process instead of
// running tests (see runChild).
const childEnv = "UMD_DMABUF_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

const moduleDir = "/sys/module/umd_dmabuf"

// setup prepares a guest test: it watches the kernel log for the test's
// duration and loads umd_dmabuf, unloading it at the end if it was not
// loaded before; it fails the test if dma-bufs, pinned pages, device
// attachments or kernel mappings are left.
func setup(t *testing.T) {
	t.Helper()
	guest.Require(t)
	watchKmsg(t)
	if _, err := os.Stat(moduleDir); err != nil {
		if out, err := exec.Command("modprobe", "umd_dmabuf").CombinedOutput(); err != nil {
			t.Fatalf("modprobe umd_dmabuf: %v\n%s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("modprobe", "-r", "umd_dmabuf").CombinedOutput(); err != nil {
				t.Errorf("modprobe -r umd_dmabuf: %v\n%s", err, out)
			}
		})
	}
	t.Cleanup(func() {
		if n, p := counter(t, "live_exports"), counter(t, "pinned_pages"); n != 0 || p != 0 {
			t.Errorf("the test left %d dma-bufs and %d pinned pages behind", n, p)
		}
		checkImporterCounters(t)
	})
}

// counter reads one of the module's counters (or parameters).
func counter(t *testing.T, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleDir, "parameters", name))
	if err != nil {
		t.Fatalf("reading the module's %s: %v", name, err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("the module's %s: %v", name, err)
	}
	return n
}

// setParam sets a module parameter for the rest of the test.
func setParam(t *testing.T, name string, v int64) {
	t.Helper()
	path := filepath.Join(moduleDir, "parameters", name)
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strconv.FormatInt(v, 10)), 0); err != nil {
		t.Fatalf("setting %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(path, bytes.TrimSpace(old), 0); err != nil {
			t.Errorf("restoring %s: %v", name, err)
		}
	})
}

// kmsgBad are the marks of a kernel in trouble.
var kmsgBad = []string{"WARNING:", "BUG:", "Oops", "general protection fault", "Call Trace", "UBSAN", "refcount_t:", "list_add corruption", "list_del corruption", "Bad page"}

// kmsgEmulator marks a warning the emulator causes, not the kernel or
// this module: a debug exception with the single-step bit in kernel mode
// (x86 exc_debug_kernel), which QEMU's TCG delivered once in a numa
// 6.12 boot during TestShareVersusCopyFigures (kernel code sets no TF).
// Its records, up to the end of its trace, are skipped.
const kmsgEmulator = "exc_debug_kernel"

// watchKmsg fails the test if the kernel logs a warning, BUG or oops
// while it runs.
func watchKmsg(t *testing.T) {
	t.Helper()
	fd := openKmsg(t)
	t.Cleanup(func() {
		defer unix.Close(fd)
		recs, err := readKmsg(fd)
		if !errors.Is(err, unix.EAGAIN) {
			t.Errorf("reading /dev/kmsg: %v", err)
		}
		skipping := false
		for _, rec := range recs {
			switch {
			case strings.Contains(rec, kmsgEmulator):
				t.Logf("kernel log, an emulator artifact: %s", rec)
				skipping = true
				continue
			case skipping && strings.Contains(rec, "end trace"):
				skipping = false
				continue
			case skipping:
				continue
			}
			for _, bad := range kmsgBad {
				if strings.Contains(rec, bad) {
					t.Errorf("kernel log: %s", rec)
					break
				}
			}
		}
	})
}

// openKmsg opens /dev/kmsg positioned after the last record.
func openKmsg(t *testing.T) int {
	t.Helper()
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening /dev/kmsg: %v", err)
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		unix.Close(fd)
		t.Fatalf("seeking /dev/kmsg: %v", err)
	}
	return fd
}

// readKmsg returns the records logged since the last read of fd, and
// the error that ended the reading: EAGAIN when there are no more.
func readKmsg(fd int) ([]string, error) {
	var recs []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EPIPE) { // records overwritten: read on
			continue
		}
		if err != nil {
			return recs, err
		}
		if n <= 0 {
			return recs, io.EOF
		}
		recs = append(recs, strings.TrimSpace(string(buf[:n])))
	}
}

// meminfo returns a field of /proc/meminfo in kB (or pages, for the
// HugePages_ counts).
func meminfo(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("/proc/meminfo has no %s", field)
	return 0
}

// pfns returns the physical frame numbers behind each 4 KiB page of mem,
// from /proc/self/pagemap (which shows them to root only); 0 for a page
// not present.
func pfns(mem []byte) ([]uint64, error) {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
	n := len(mem) / int(page)
	raw := make([]byte, 8*n)
	if _, err := f.ReadAt(raw, int64(start/page*8)); err != nil {
		return nil, fmt.Errorf("reading pagemap: %w", err)
	}
	out := make([]uint64, n)
	for i := range out {
		e := binary.LittleEndian.Uint64(raw[8*i:])
		if e&(1<<63) != 0 {
			out[i] = e & (1<<55 - 1)
		}
	}
	return out, nil
}

// vmFlags returns the VmFlags of the mapping holding mem, from
// /proc/self/smaps ("pf" marks VM_PFNMAP, "mm" VM_MIXEDMAP).
func vmFlags(mem []byte) ([]string, error) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return nil, err
	}
	addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem))))
	in := false
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(f[0], "-"); ok && !strings.HasSuffix(f[0], ":") {
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			in = err1 == nil && err2 == nil && l <= addr && addr < h
			continue
		}
		if in && f[0] == "VmFlags:" {
			return f[1:], nil
		}
	}
	return nil, fmt.Errorf("no mapping at %#x in /proc/self/smaps", addr)
}

// errPFNMap means pagemap cannot show a mapping's frames: the kernel's
// page walker skips VM_PFNMAP mappings (udmabuf's, since 6.12).
var errPFNMap = errors.New("VM_PFNMAP mapping: pagemap shows no frames")

// pattern is what the child writes at byte i for a given seed.
func pattern(seed, i int) byte { return byte(seed + i*7 + i>>12) }

// runChild is the importing process: it receives a dma-buf over the unix
// socket at descriptor 3, maps it, writes the pattern for the seed it was
// sent, and prints the PFNs of its mapping, one per line.
func runChild() int {
	f := os.NewFile(3, "sock")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	msg, fds, err := ReceiveFds(conn, 128, 1)
	if err != nil || len(fds) != 1 {
		fmt.Fprintln(os.Stderr, "child: receiving the dma-buf:", err, len(fds))
		return 3
	}
	m, err := Import(fds[0])
	unix.Close(fds[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 4
	}
	defer m.Close()
	if want, ok := strings.CutPrefix(string(msg), "check:"); ok {
		// Read-only: check the contents against the parent's hash.
		if err := m.Sync(SyncStart | SyncRead); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 5
		}
		sum := sha256.Sum256(m.Bytes())
		if got := hex.EncodeToString(sum[:]); got != want {
			fmt.Fprintf(os.Stderr, "child: the dma-buf's contents hash to %s, the parent's to %s; they start % x\n", got, want, m.Bytes()[:16])
			return 8
		}
		if err := m.Sync(SyncEnd | SyncRead); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 6
		}
		return printFrames(m.Bytes())
	}
	seed, _ := strconv.Atoi(string(msg))
	if err := m.Sync(SyncStart | SyncWrite); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 5
	}
	mem := m.Bytes()
	for i := range mem {
		mem[i] = pattern(seed, i)
	}
	if err := m.Sync(SyncEnd | SyncWrite); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 6
	}
	return printFrames(mem)
}

// printFrames prints the PFNs of mem, one per line, or "pfnmap" when
// pagemap cannot show them.
func printFrames(mem []byte) int {
	flags, err := vmFlags(mem)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 7
	}
	if slices.Contains(flags, "pf") {
		fmt.Println("pfnmap")
		return 0
	}
	frames, err := pfns(mem)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 7
	}
	for _, pfn := range frames {
		fmt.Println(pfn)
	}
	return 0
}

// shareWithChild sends b to a child process, which writes the pattern of
// seed through its own mapping of the dma-buf; it returns the PFNs the
// child's mapping had.
func shareWithChild(t *testing.T, b *Buffer, seed int) ([]uint64, error) {
	t.Helper()
	return sendToChild(t, b, strconv.Itoa(seed))
}

// sendToChild sends b and msg to a child process (see runChild) and
// returns the PFNs of the child's mapping.
func sendToChild(t *testing.T, b *Buffer, msg string) ([]uint64, error) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	childEnd := os.NewFile(uintptr(fds[1]), "child-sock")
	parentFile := os.NewFile(uintptr(fds[0]), "parent-sock")
	c, err := net.FileConn(parentFile)
	parentFile.Close()
	if err != nil {
		childEnd.Close()
		t.Fatal(err)
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.ExtraFiles = []*os.File{childEnd}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		childEnd.Close()
		t.Fatal(err)
	}
	childEnd.Close()
	if err := SendFds(conn, []byte(msg), b.Fd()); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.Bytes())
	}
	if strings.TrimSpace(stdout.String()) == "pfnmap" {
		return nil, errPFNMap
	}
	var out []uint64
	for _, line := range strings.Fields(stdout.String()) {
		n, err := strconv.ParseUint(line, 10, 64)
		if err != nil {
			t.Fatalf("child printed %q", line)
		}
		out = append(out, n)
	}
	return out, nil
}
