//go:build guest

package hugepage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/umdkit/umd/qemu"
	"github.com/umdkit/umd/qemu/guest"
	"golang.org/x/sys/unix"
)

// The guest boots with 128 × 2 MiB hugepages reserved (hugepagesz=2M
// hugepages=128, spread over the nodes of a NUMA topology) and hugetlbfs
// mounted at /dev/hugepages. Each test leaves the counts as it found
// them, which they check.

// meminfo returns a field of /proc/meminfo.
func meminfo(t *testing.T, field string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.Fields(rest)[0])
			if err != nil {
				t.Fatalf("/proc/meminfo %s: %v", field, err)
			}
			return n
		}
	}
	t.Fatalf("/proc/meminfo has no %s", field)
	return 0
}

// sysCount reads a hugepage counter of the 2 MiB size, system-wide or of
// a node.
func sysCount(t *testing.T, node int, name string) int {
	t.Helper()
	n := readCount(filepath.Join(hugepageSysDir("/sys", Page2M, node), name))
	if n < 0 {
		t.Fatalf("cannot read %s of node %d", name, node)
	}
	return n
}

// expectFreeBack checks, when the test ends, that every hugepage it took
// is free again: pools were closed and failed News released everything.
func expectFreeBack(t *testing.T) {
	t.Helper()
	free, resv := meminfo(t, "HugePages_Free"), meminfo(t, "HugePages_Rsvd")
	t.Cleanup(func() {
		if f, r := meminfo(t, "HugePages_Free"), meminfo(t, "HugePages_Rsvd"); f != free || r != resv {
			t.Errorf("after the test HugePages_Free is %d (was %d), HugePages_Rsvd %d (was %d)", f, free, r, resv)
		}
	})
}

func TestGuestPool2M(t *testing.T) {
	guest.Require(t)
	expectFreeBack(t)
	before := meminfo(t, "HugePages_Free")
	p, err := New(Options{Size: 64 << 20, NUMANode: AnyNode})
	if err != nil {
		t.Fatal(err)
	}
	info := p.Info()
	if p.PageSize() != Page2M || p.Size() != 64<<20 || info.Backing != BackingMemfd || !info.Sealed || info.Fallback != nil {
		p.Close()
		t.Fatalf("pool info %+v: want 64 MiB of 2 MiB pages in a sealed memfd", info)
	}
	if got := before - meminfo(t, "HugePages_Free"); got != 32 {
		t.Errorf("HugePages_Free dropped by %d for a 64 MiB pool, want 32", got)
	}
	placed := 0
	for _, n := range info.NodePages {
		placed += n
	}
	if placed != 32 {
		t.Errorf("placement %v: want 32 pages accounted for", info.NodePages)
	}
	if guest.Topology() != "numa" && (info.NUMANode != 0 || info.NodePages[0] != 32) {
		t.Errorf("placement %v (node %d): want all 32 pages on node 0 of a one-node guest", info.NodePages, info.NUMANode)
	}
	// 2 MiB-aligned buffers start on hugepage boundaries of the mapping.
	b, err := p.Alloc(3<<20, Page2M)
	if err != nil {
		t.Fatal(err)
	}
	mem := b.Bytes()
	for i := range mem {
		mem[i] = byte(i)
	}
	if b.Offset()%Page2M != 0 || b.Cap() != 4<<20 {
		t.Errorf("a 2 MiB-aligned 3 MiB buffer: offset %#x, capacity %d", b.Offset(), b.Cap())
	}
	if err := p.Free(b); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := meminfo(t, "HugePages_Free"); got != before {
		t.Errorf("HugePages_Free is %d after Close, was %d before New", got, before)
	}
}

func TestGuestHugetlbfs(t *testing.T) {
	guest.Require(t)
	expectFreeBack(t)
	before := meminfo(t, "HugePages_Free")
	p, err := New(Options{Size: 16 << 20, NUMANode: AnyNode, Backing: BackingHugetlbfs})
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, p)
	info := p.Info()
	if info.Backing != BackingHugetlbfs || info.Dir != "/dev/hugepages" || info.Sealed || p.PageSize() != Page2M {
		t.Fatalf("pool info %+v: want an unsealed hugetlbfs file in /dev/hugepages", info)
	}
	if got := before - meminfo(t, "HugePages_Free"); got != 8 {
		t.Errorf("HugePages_Free dropped by %d for a 16 MiB pool, want 8", got)
	}
	// The file was unlinked: nothing is left in the mount.
	entries, err := os.ReadDir("/dev/hugepages")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), defaultName) {
			t.Errorf("the pool's file %s is still linked", e.Name())
		}
	}
	copy(p.Bytes(), "hugetlbfs")
	q, err := OpenPool(p.Fd())
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, q)
	if q.Info().Backing != BackingHugetlbfs || q.PageSize() != Page2M || string(q.Bytes()[:9]) != "hugetlbfs" {
		t.Errorf("imported hugetlbfs pool: %+v", q.Info())
	}

	explicit, err := New(Options{Size: 2 << 20, NUMANode: AnyNode, Backing: BackingHugetlbfs, HugetlbfsDir: "/dev/hugepages"})
	if err != nil {
		t.Fatal(err)
	}
	explicit.Close()
	if _, err := New(Options{Size: 2 << 20, NUMANode: AnyNode, Backing: BackingHugetlbfs, HugetlbfsDir: "/tmp"}); err == nil {
		t.Error("a hugetlbfs pool in /tmp (not a hugetlbfs) was made")
	}
}

// TestGuestNoHugepages holds all free hugepages but one and asks for two.
func TestGuestNoHugepages(t *testing.T) {
	guest.Require(t)
	expectFreeBack(t)
	free := meminfo(t, "HugePages_Free") - meminfo(t, "HugePages_Rsvd")
	total := sysCount(t, AnyNode, "nr_hugepages")
	hold, err := New(Options{Size: (free - 1) * Page2M, NUMANode: AnyNode})
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, hold)

	_, err = New(Options{Size: 4 << 20, NUMANode: AnyNode})
	if !errors.Is(err, ErrNoHugepages) {
		t.Fatalf("two pages with one free: %v, want ErrNoHugepages", err)
	}
	var he *HugepageError
	if !errors.As(err, &he) || he.Needed != 2 || he.Free != 1 || he.Total != total {
		t.Fatalf("error %#v: want 2 needed, 1 free, %d in total", he, total)
	}
	want := fmt.Sprintf("`echo %d > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`", total+1)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("the error does not give the command %s:\n%v", want, err)
	}
	t.Log(err)

	// The same through hugetlbfs.
	_, err = New(Options{Size: 4 << 20, NUMANode: AnyNode, Backing: BackingHugetlbfs})
	if !errors.Is(err, ErrNoHugepages) || !strings.Contains(err.Error(), want) {
		t.Errorf("hugetlbfs, two pages with one free: %v", err)
	}

	// With fallback: 4 KiB pages, and the reason.
	p, err := New(Options{Size: 4 << 20, NUMANode: AnyNode, AllowFallback: true})
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, p)
	if p.PageSize() != Page4K || !errors.Is(p.Info().Fallback, ErrNoHugepages) || !strings.Contains(p.Info().Fallback.Error(), want) {
		t.Errorf("fallback pool: %d-byte pages, reason %v", p.PageSize(), p.Info().Fallback)
	}

	// More pages than the kernel has at all.
	_, err = New(Options{Size: (total + 1) * Page2M, NUMANode: AnyNode})
	if !errors.Is(err, ErrNoHugepages) {
		t.Errorf("%d pages of %d: %v", total+1, total, err)
	}
}

func TestGuestGiganticPages(t *testing.T) {
	guest.Require(t)
	expectFreeBack(t)
	_, err := New(Options{Size: Page1G, PageSize: Page1G, NUMANode: AnyNode})
	if !errors.Is(err, ErrNoHugepages) {
		t.Fatalf("1 GiB pages in a guest with none reserved: %v, want ErrNoHugepages", err)
	}
	if hugepageSizeSupported("/sys", Page1G) {
		if !strings.Contains(err.Error(), "hugepages-1048576kB/nr_hugepages") {
			t.Errorf("no remedy for 1 GiB pages: %v", err)
		}
	} else if !strings.Contains(err.Error(), "no 1 GiB hugepages") {
		t.Errorf("unsupported 1 GiB pages not said: %v", err)
	}
	t.Log(err)
	p, err := New(Options{Size: 4 << 20, PageSize: Page1G, NUMANode: AnyNode, AllowFallback: true})
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, p)
	if p.PageSize() != Page2M || p.Size() != 4<<20 || !errors.Is(p.Info().Fallback, ErrNoHugepages) {
		t.Errorf("fallback from 1 GiB: %d-byte pages, %d bytes, reason %v", p.PageSize(), p.Size(), p.Info().Fallback)
	}
}

func TestGuestMemlock(t *testing.T) {
	guest.Require(t)
	expectFreeBack(t)
	withMemlockLimit(t, 1<<20, func() {
		_, err := New(Options{Size: 8 << 20, NUMANode: AnyNode})
		if !errors.Is(err, ErrMemlock) {
			t.Fatalf("an 8 MiB pool with a 1 MiB memlock limit: %v, want ErrMemlock", err)
		}
		for _, want := range []string{"RLIMIT_MEMLOCK is 1 MiB", "ulimit -l", "LimitMEMLOCK", "CAP_IPC_LOCK"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the error does not say %q:\n%v", want, err)
			}
		}
		t.Log(err)
	})
	// With the limit and capability back, the same pool works.
	p, err := New(Options{Size: 8 << 20, NUMANode: AnyNode})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
}

func TestGuestShareWithChildProcess(t *testing.T) {
	guest.Require(t)
	expectFreeBack(t)
	p, err := New(Options{Size: 8 << 20, NUMANode: AnyNode})
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, p)
	shareWithChild(t, p)
}

func TestGuestNUMA(t *testing.T) {
	guest.Require(t)
	expectFreeBack(t)
	topo, err := qemu.LookupTopology(guest.Topology())
	if err != nil {
		t.Fatal(err)
	}
	nodes := max(topo.NUMANodes, 1)

	for node := range nodes {
		t.Run(fmt.Sprintf("node%d", node), func(t *testing.T) {
			before := make([]int, nodes)
			for n := range nodes {
				before[n] = sysCount(t, n, "free_hugepages")
			}
			p, err := New(Options{Size: 16 << 20, NUMANode: node})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.NUMANode() != node || p.Info().NodePages[node] != 8 {
				t.Errorf("asked for node %d: landed on %d, pages per node %v", node, p.NUMANode(), p.Info().NodePages)
			}
			for n := range nodes {
				want := before[n]
				if n == node {
					want -= 8
				}
				if got := sysCount(t, n, "free_hugepages"); got != want {
					t.Errorf("node %d has %d free hugepages, want %d", n, got, want)
				}
			}
			small, err := New(Options{Size: 1 << 20, PageSize: Page4K, NUMANode: node})
			if err != nil {
				t.Fatal(err)
			}
			defer small.Close()
			if small.NUMANode() != node {
				t.Errorf("4 KiB pages asked for node %d landed on %d (%v)", node, small.NUMANode(), small.Info().NodePages)
			}
		})
	}

	_, err = New(Options{Size: 2 << 20, NUMANode: nodes})
	if !errors.Is(err, ErrNUMANode) || !strings.Contains(err.Error(), fmt.Sprintf("node %d does not exist", nodes)) {
		t.Errorf("nonexistent node %d: %v", nodes, err)
	}
	t.Log(err)

	if nodes < 2 {
		return
	}
	// Strict placement on a node with too few free pages fails with the
	// node's own remedy, even though the other node has plenty; a
	// preference spills over instead.
	last := nodes - 1
	onNode := sysCount(t, last, "free_hugepages")
	size := (onNode + 1) * Page2M
	_, err = New(Options{Size: size, NUMANode: last})
	if !errors.Is(err, ErrNoHugepages) {
		t.Fatalf("%d pages on node %d with %d free there: %v", onNode+1, last, onNode, err)
	}
	if want := fmt.Sprintf("/sys/devices/system/node/node%d/hugepages/hugepages-2048kB/nr_hugepages", last); !strings.Contains(err.Error(), want) {
		t.Errorf("the error does not name %s:\n%v", want, err)
	}
	t.Log(err)
	p, err := New(Options{Size: size, NUMANode: last, NUMAPreferred: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.NUMANode() != AnyNode || p.Info().NodePages[last] != onNode || p.Info().NodePages[0] != 1 {
		t.Errorf("preferred node %d with %d free: pages per node %v", last, onNode, p.Info().NodePages)
	}
}

// TestGuestSeals checks the seals the kernel enforces on a hugetlb memfd.
func TestGuestSeals(t *testing.T) {
	guest.Require(t)
	expectFreeBack(t)
	p, err := New(Options{Size: 4 << 20, NUMANode: AnyNode})
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, p)
	if err := unix.Ftruncate(p.Fd(), 2<<20); err != unix.EPERM {
		t.Errorf("shrinking a sealed hugetlb memfd: %v, want EPERM", err)
	}
	if err := unix.Ftruncate(p.Fd(), 8<<20); err != unix.EPERM {
		t.Errorf("growing a sealed hugetlb memfd: %v, want EPERM", err)
	}
}
