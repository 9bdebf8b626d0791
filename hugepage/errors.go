package hugepage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Sentinel errors. Errors returned by this package wrap them, so test with
// errors.Is.
var (
	// ErrNoHugepages means the kernel could not supply the hugepages a
	// pool needs. The error that wraps it is a *HugepageError, whose
	// message says how many pages are missing and how to reserve them.
	ErrNoHugepages = errors.New("not enough hugepages")
	// ErrMemlock means the pool's memory could not be locked in RAM. The
	// error that wraps it is a *MemlockError, whose message gives
	// RLIMIT_MEMLOCK and how to raise it.
	ErrMemlock = errors.New("cannot lock pool memory")
	// ErrNUMANode means the requested NUMA node does not exist or has no
	// memory.
	ErrNUMANode = errors.New("NUMA node unavailable")
	// ErrClosed is returned by a pool's methods after Close.
	ErrClosed = errors.New("pool closed")
	// ErrPoolFull means no free block of the pool is large enough for a
	// buffer: free some, or make the pool larger. The allocator rounds
	// every buffer up to a power of two (at least MinBlock) and to its
	// alignment.
	ErrPoolFull = errors.New("pool full")
	// ErrDoubleFree means a buffer given to Free is not allocated: it was
	// freed already (maybe through a copy of the Buffer value).
	ErrDoubleFree = errors.New("buffer already freed")
	// ErrForeignBuffer means a buffer given to Free belongs to another
	// pool, or is the zero Buffer.
	ErrForeignBuffer = errors.New("buffer not from this pool")
)

// A HugepageError reports that a pool's hugepages could not be had, with
// the numbers an operator needs to fix it. It matches ErrNoHugepages and
// the kernel's errno under errors.Is.
type HugepageError struct {
	PageSize int // bytes
	// Node is the NUMA node the pages were asked for, or AnyNode.
	Node int
	// Needed is how many pages the pool needs.
	Needed int
	// Total and Free are the kernel's nr_hugepages and free_hugepages for
	// this page size, on Node when one was asked; -1 when unknown.
	Total, Free int
	// Reserved is resv_hugepages: free pages already promised to other
	// mappings (only known system-wide; -1 when unknown).
	Reserved int
	// Unsupported means the kernel offers no pages of this size at all.
	Unsupported bool
	// Mount is the hugetlbfs mount the pool's file was on, if any: its
	// size= option can also cap a pool.
	Mount string
	// Err is what the kernel returned, when it returned something.
	Err error
}

func (e *HugepageError) Error() string {
	var b strings.Builder
	size := formatSize(e.PageSize)
	if e.Unsupported {
		fmt.Fprintf(&b, "this kernel offers no %s hugepages (%s does not exist): the CPU or the kernel's configuration lacks them; use another page size",
			size, hugepageSysDir("/sys", e.PageSize, AnyNode))
		return b.String()
	}
	where := ""
	if e.Node != AnyNode {
		where = fmt.Sprintf(" on NUMA node %d", e.Node)
	}
	fmt.Fprintf(&b, "not enough hugepages: need %d × %s%s", e.Needed, size, where)
	available := -1
	if e.Free >= 0 {
		available = e.Free
		if e.Node == AnyNode && e.Reserved > 0 {
			available = max(e.Free-e.Reserved, 0)
			fmt.Fprintf(&b, ", %d available (%d free, %d of them promised to other mappings", available, e.Free, e.Reserved)
		} else {
			fmt.Fprintf(&b, ", %d free (", e.Free)
		}
		if e.Total >= 0 {
			if e.Node == AnyNode && e.Reserved > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%d in the pool%s", e.Total, where)
		}
		b.WriteString(")")
	}
	// nr_hugepages is the size of the kernel's pool, not an increment:
	// the command sets it to what is there now plus what is missing.
	target := e.Needed
	if e.Total >= 0 && available >= 0 {
		target = e.Total + max(e.Needed-available, 0)
	}
	fmt.Fprintf(&b, "; reserve more with `echo %d > %s/nr_hugepages`", target, hugepageSysDir("/sys", e.PageSize, e.Node))
	// The boot parameter takes node:count pairs since Linux 5.16.
	boot := fmt.Sprintf("hugepagesz=%s hugepages=%d", kernelSizeName(e.PageSize), target)
	if e.Node != AnyNode {
		boot = fmt.Sprintf("hugepagesz=%s hugepages=%d:%d", kernelSizeName(e.PageSize), e.Node, target)
	}
	if e.PageSize >= Page1G {
		fmt.Fprintf(&b, " or, more reliably, at boot with `%s` on the kernel command line (a running kernel seldom finds %s of contiguous free memory)", boot, size)
	} else {
		fmt.Fprintf(&b, " (at boot: `%s` on the kernel command line)", boot)
	}
	if e.Mount != "" {
		fmt.Fprintf(&b, "; the size= option of the hugetlbfs mount at %s can also cap it", e.Mount)
	}
	switch {
	case e.Err == unix.EFAULT:
		// What MADV_POPULATE_WRITE returns for the SIGBUS of a hugetlb
		// fault: "bad address" would mislead.
		b.WriteString(": a page fault found no free hugepage (EFAULT)")
	case e.Err != nil:
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap lets errors.Is match both ErrNoHugepages and the kernel's errno.
func (e *HugepageError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrNoHugepages}
	}
	return []error{ErrNoHugepages, e.Err}
}

// fillCounts reads the kernel's hugepage counters for e's page size (and
// node) under the sysfs root sys. It is called after the failed pool's
// memory was released, so the numbers do not include it.
func (e *HugepageError) fillCounts(sys string) {
	dir := hugepageSysDir(sys, e.PageSize, e.Node)
	e.Total = readCount(filepath.Join(dir, "nr_hugepages"))
	e.Free = readCount(filepath.Join(dir, "free_hugepages"))
	e.Reserved = -1
	if e.Node == AnyNode {
		e.Reserved = readCount(filepath.Join(dir, "resv_hugepages"))
	}
}

// hugepageSysDir is the sysfs directory of one hugepage size, system-wide
// or for one NUMA node.
func hugepageSysDir(sys string, pageSize, node int) string {
	name := fmt.Sprintf("hugepages-%dkB", pageSize>>10)
	if node == AnyNode {
		return filepath.Join(sys, "kernel/mm/hugepages", name)
	}
	return filepath.Join(sys, "devices/system/node", "node"+strconv.Itoa(node), "hugepages", name)
}

// readCount reads a sysfs file holding one decimal number; -1 when it
// cannot.
func readCount(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// A MemlockError reports that a pool's memory could not be locked, with
// the limit in force and how to raise it. It matches ErrMemlock and the
// kernel's errno under errors.Is.
type MemlockError struct {
	// Size is how many bytes were to be locked.
	Size int
	// Cur and Max are RLIMIT_MEMLOCK's soft and hard limits in bytes
	// (unix.RLIM_INFINITY when unlimited); Known is false when they
	// could not be read.
	Cur, Max uint64
	Known    bool
	// Locked is how many bytes this process had locked already (VmLck),
	// -1 when unknown: the limit covers them all.
	Locked int
	Err    error
}

func (e *MemlockError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "locking %s of pool memory", formatSize(e.Size))
	if e.Known {
		fmt.Fprintf(&b, ": RLIMIT_MEMLOCK is %s (hard limit %s)", formatLimit(e.Cur), formatLimit(e.Max))
		if e.Locked > 0 {
			fmt.Fprintf(&b, " and %s is locked already", formatSize(e.Locked))
		}
		b.WriteString(", and the process lacks CAP_IPC_LOCK")
	}
	b.WriteString("; raise the limit to at least the size of all pools (VFIO's DMA mappings count against it too):" +
		" `ulimit -l unlimited` in the shell that starts the program (which needs a hard limit that allows it)," +
		" `USER - memlock unlimited` in /etc/security/limits.conf for a login user," +
		" LimitMEMLOCK=infinity in the [Service] section of a systemd unit;" +
		" or give the program CAP_IPC_LOCK")
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap lets errors.Is match both ErrMemlock and the kernel's errno.
func (e *MemlockError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrMemlock}
	}
	return []error{ErrMemlock, e.Err}
}

// newMemlockError describes a failed mlock of size bytes with the limits
// in force now.
func newMemlockError(size int, err error) *MemlockError {
	e := &MemlockError{Size: size, Locked: lockedBytes("/proc/self/status"), Err: err}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) == nil {
		e.Cur, e.Max, e.Known = lim.Cur, lim.Max, true
	}
	return e
}

// lockedBytes returns the VmLck line of a /proc/PID/status file in bytes,
// or -1.
func lockedBytes(status string) int {
	b, err := os.ReadFile(status)
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "VmLck:")
		if !ok {
			continue
		}
		kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
		if err != nil {
			return -1
		}
		return kb << 10
	}
	return -1
}

func formatLimit(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	if v > 1<<62 {
		return strconv.FormatUint(v, 10) + " B"
	}
	return formatSize(int(v))
}

// formatSize writes a byte count in the largest binary unit that divides
// it exactly, so that no figure in an error message is rounded.
func formatSize(n int) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// kernelSizeName spells a hugepage size the way the kernel command line's
// hugepagesz= does.
func kernelSizeName(n int) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	default:
		return fmt.Sprintf("%dK", n>>10)
	}
}
