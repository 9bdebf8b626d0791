package hugepage

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// These tests run on any Linux host, root or not, with or without
// hugepages reserved: they use 4 KiB pages, or assert what happens when
// hugepages are missing only after checking that they are.

// new4K makes a pool of ordinary pages that is closed when the test ends.
func new4K(t *testing.T, size int) *Pool {
	t.Helper()
	p, err := New(Options{Size: size, PageSize: Page4K, NUMANode: AnyNode})
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, p)
	return p
}

func TestNew4K(t *testing.T) {
	p := new4K(t, 1<<20+1) // rounded up to the next page
	info := p.Info()
	if p.Size() != 1<<20+4096 || p.PageSize() != Page4K || len(p.Bytes()) != p.Size() {
		t.Fatalf("size %d, page size %d, %d bytes mapped; want %d, %d", p.Size(), p.PageSize(), len(p.Bytes()), 1<<20+4096, Page4K)
	}
	if info.Backing != BackingMemfd || info.Imported || info.Fallback != nil {
		t.Errorf("info %+v: want a memfd, not imported, no fallback", info)
	}
	// The memory is usable and the file is sealed against resizing.
	mem := p.Bytes()
	mem[0], mem[len(mem)-1] = 1, 2
	if !info.Sealed {
		t.Error("the memfd is not sealed")
	}
	seals, err := unix.FcntlInt(uintptr(p.Fd()), unix.F_GET_SEALS, 0)
	if err != nil || seals != unix.F_SEAL_SHRINK|unix.F_SEAL_GROW {
		t.Errorf("seals %#x (%v), want F_SEAL_SHRINK|F_SEAL_GROW", seals, err)
	}
	if err := unix.Ftruncate(p.Fd(), 4096); err != unix.EPERM {
		t.Errorf("shrinking the sealed memfd: %v, want EPERM", err)
	}
	// Every page is resident and locked.
	if locked := lockedBytes("/proc/self/status"); locked < p.Size() {
		t.Errorf("VmLck is %d bytes, less than the pool's %d", locked, p.Size())
	}
	// move_pages reports -ENOENT for a page that is not present.
	status, err := pageNodes(mem, Page4K)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range status {
		if s < 0 {
			t.Fatalf("page %d is not resident after New: %d", i, s)
		}
	}
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(p.Fd()))
	if err != nil || !strings.HasPrefix(target, "/memfd:"+defaultName) {
		t.Errorf("the pool's descriptor is %q (%v), want a memfd named %s", target, err, defaultName)
	}
}

func TestNoSeal(t *testing.T) {
	p, err := New(Options{Size: 4096, PageSize: Page4K, NUMANode: AnyNode, NoSeal: true, Name: "umd-hugepage-unsealed"})
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, p)
	if p.Info().Sealed {
		t.Error("Info says sealed for NoSeal")
	}
	if seals, err := unix.FcntlInt(uintptr(p.Fd()), unix.F_GET_SEALS, 0); err == nil && seals&unix.F_SEAL_SHRINK != 0 {
		t.Errorf("seals %#x on an unsealed pool", seals)
	}
}

func TestClose(t *testing.T) {
	p, err := New(Options{Size: 64 << 10, PageSize: Page4K, NUMANode: AnyNode})
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Alloc(512, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if p.Bytes() != nil || b.Bytes() != nil || p.Fd() != -1 {
		t.Error("a closed pool still hands out its memory or descriptor")
	}
	if _, err := p.Alloc(512, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Alloc after Close: %v, want ErrClosed", err)
	}
	if err := p.Free(b); !errors.Is(err, ErrClosed) {
		t.Errorf("Free after Close: %v, want ErrClosed", err)
	}
	if _, err := p.File(); !errors.Is(err, ErrClosed) {
		t.Errorf("File after Close: %v, want ErrClosed", err)
	}
	if leaks := poolLeaks(); len(leaks) > 0 {
		t.Errorf("after Close: %v", leaks)
	}
}

func TestOptionErrors(t *testing.T) {
	for _, o := range []Options{
		{Size: 0, NUMANode: AnyNode},
		{Size: -1, NUMANode: AnyNode},
		{Size: 4096, PageSize: 8192, NUMANode: AnyNode},
		{Size: 4096, PageSize: Page4K, NUMANode: -2},
		{Size: 4096, PageSize: Page4K, NUMANode: AnyNode, Backing: BackingHugetlbfs},
		{Size: 4096, PageSize: Page4K, NUMANode: AnyNode, Backing: 9},
		{Size: 2 << 40, PageSize: Page4K, NUMANode: AnyNode},
	} {
		if p, err := New(o); err == nil {
			p.Close()
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

// freeHugepages returns the kernel's count of free (not yet promised)
// hugepages of a size on this host, or -1 when the size is unsupported.
func freeHugepages(pageSize int) int {
	dir := hugepageSysDir("/sys", pageSize, AnyNode)
	free, resv := readCount(filepath.Join(dir, "free_hugepages")), readCount(filepath.Join(dir, "resv_hugepages"))
	if free < 0 || resv < 0 {
		return -1
	}
	return free - resv
}

// TestNoHugepages asks for one more 2 MiB page than the host has free,
// without and then with fallback.
func TestNoHugepages(t *testing.T) {
	free := freeHugepages(Page2M)
	if free < 0 {
		t.Skip("this kernel has no 2 MiB hugepages")
	}
	if free > 64 {
		t.Skipf("this host has %d free 2 MiB hugepages; asking for more would take too much memory", free)
	}
	size := (free + 1) * Page2M
	_, err := New(Options{Size: size, NUMANode: AnyNode})
	if !errors.Is(err, ErrNoHugepages) {
		t.Fatalf("asking for %d pages with %d free: %v, want ErrNoHugepages", free+1, free, err)
	}
	var he *HugepageError
	if !errors.As(err, &he) || he.Needed != free+1 || he.Free < 0 || he.Total < 0 {
		t.Fatalf("error %v: want a HugepageError with the counts", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"need " + strconv.Itoa(free+1) + " × 2 MiB",
		"> /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
		"hugepagesz=2M",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, msg)
		}
	}
	t.Log(msg)

	p, err := New(Options{Size: size, NUMANode: AnyNode, AllowFallback: true})
	if err != nil {
		t.Fatalf("with fallback: %v", err)
	}
	closePool(t, p)
	if p.PageSize() != Page4K || !errors.Is(p.Info().Fallback, ErrNoHugepages) {
		t.Fatalf("with fallback: %d-byte pages, Fallback %v; want 4 KiB pages and the reason", p.PageSize(), p.Info().Fallback)
	}
}

// TestNoGiganticPages asks for 1 GiB pages, which hosts rarely have free:
// with fallback, the pool gets the next size that works.
func TestNoGiganticPages(t *testing.T) {
	if free := freeHugepages(Page1G); free != 0 {
		t.Skipf("this host has %d free 1 GiB pages (-1: none supported)", free)
	}
	_, err := New(Options{Size: Page1G, PageSize: Page1G, NUMANode: AnyNode})
	if !errors.Is(err, ErrNoHugepages) || !strings.Contains(err.Error(), "hugepages-1048576kB/nr_hugepages") || !strings.Contains(err.Error(), "hugepagesz=1G") {
		t.Fatalf("1 GiB pages: %v, want ErrNoHugepages with the remedy", err)
	}
	p, err := New(Options{Size: 4 << 20, PageSize: Page1G, NUMANode: AnyNode, AllowFallback: true})
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, p)
	if p.PageSize() == Page1G || p.Info().Fallback == nil {
		t.Fatalf("fell back to %d-byte pages, reason %v", p.PageSize(), p.Info().Fallback)
	}
	// The first attempt rounded the size up to 1 GiB; a fallback rounds
	// the caller's size again, to its own page size.
	if p.Size() != 4<<20 {
		t.Errorf("fallback pool of %d bytes, want 4 MiB", p.Size())
	}
}

func TestNUMAHost(t *testing.T) {
	p, err := New(Options{Size: 1 << 20, PageSize: Page4K, NUMANode: 0})
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, p)
	if p.NUMANode() != 0 || p.Info().NodePages[0] != 256 {
		t.Errorf("placed on node 0: NUMANode %d, pages per node %v", p.NUMANode(), p.Info().NodePages)
	}
	_, err = New(Options{Size: 1 << 20, PageSize: Page4K, NUMANode: 63})
	if !errors.Is(err, ErrNUMANode) || !strings.Contains(err.Error(), "node 63") {
		t.Errorf("node 63: %v, want ErrNUMANode naming it", err)
	}
}

func TestMemlockHost(t *testing.T) {
	withMemlockLimit(t, 64<<10, func() {
		_, err := New(Options{Size: 1 << 20, PageSize: Page4K, NUMANode: AnyNode})
		if !errors.Is(err, ErrMemlock) {
			t.Fatalf("a 1 MiB pool with a 64 KiB memlock limit: %v, want ErrMemlock", err)
		}
		var me *MemlockError
		if !errors.As(err, &me) || !me.Known || me.Cur != 64<<10 {
			t.Fatalf("error %v: want a MemlockError giving the 64 KiB limit", err)
		}
		for _, want := range []string{"RLIMIT_MEMLOCK is 64 KiB", "ulimit -l", "limits.conf", "LimitMEMLOCK", "CAP_IPC_LOCK"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the error does not say %q:\n%v", want, err)
			}
		}
		t.Log(err)
	})
}

func TestOpenPoolInProcess(t *testing.T) {
	p := new4K(t, 256<<10)
	copy(p.Bytes(), "shared")
	q, err := OpenPool(p.Fd())
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, q)
	info := q.Info()
	if !info.Imported || info.Backing != BackingMemfd || !info.Sealed || q.Size() != p.Size() || q.PageSize() != Page4K {
		t.Fatalf("imported info %+v", info)
	}
	if string(q.Bytes()[:6]) != "shared" {
		t.Fatal("the imported pool does not see the exporter's data")
	}
	q.Bytes()[100] = 42
	if p.Bytes()[100] != 42 {
		t.Fatal("the exporter does not see the importer's write")
	}
	if q.Fd() == p.Fd() {
		t.Fatal("OpenPool did not duplicate the descriptor")
	}
}

func TestOpenPoolRejects(t *testing.T) {
	// A file of a valid size: accepted on tmpfs (as BackingTmpfs), refused
	// on any other file system.
	f, err := os.CreateTemp(t.TempDir(), defaultName+"-file")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	q, err := OpenPool(int(f.Fd()))
	if uint32(st.Type) == uint32(unix.TMPFS_MAGIC) {
		if err != nil || q.Info().Backing != BackingTmpfs {
			t.Errorf("a tmpfs file: %v", err)
		}
		if q != nil {
			q.Close()
		}
	} else if err == nil {
		q.Close()
		t.Errorf("OpenPool accepted a file on a file system of type %#x", st.Type)
	}
	empty, err := unix.MemfdCreate(defaultName+"-empty", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(empty)
	if _, err := OpenPool(empty); err == nil {
		t.Error("OpenPool accepted an empty memfd")
	}
	if _, err := OpenPool(-1); err == nil {
		t.Error("OpenPool accepted descriptor -1")
	}
}

func TestShareWithChildProcess(t *testing.T) {
	shareWithChild(t, new4K(t, 2<<20))
}

// TestBuffersOnMemory carves a real pool into many buffers of random
// sizes, fills each with its own pattern and checks that no write
// reached another buffer.
func TestBuffersOnMemory(t *testing.T) {
	p := new4K(t, 4<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	var bufs []Buffer
	for {
		size := 1 + rng.IntN(64<<10)
		b, err := p.Alloc(size, 1<<(9+rng.IntN(4)))
		if errors.Is(err, ErrPoolFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if b.Len() != size || len(b.Bytes()) != size || cap(b.Bytes()) != size || b.Cap() < size || b.Pool() != p {
			t.Fatalf("buffer of %d bytes: Len %d, Bytes %d/%d, Cap %d", size, b.Len(), len(b.Bytes()), cap(b.Bytes()), b.Cap())
		}
		if &b.Bytes()[0] != &p.Bytes()[b.Offset()] {
			t.Fatal("Bytes is not the pool's memory at Offset")
		}
		bufs = append(bufs, b)
	}
	if len(bufs) < 50 {
		t.Fatalf("only %d buffers fit", len(bufs))
	}
	for i, b := range bufs {
		mem := b.Bytes()
		for j := range mem {
			mem[j] = byte(i)
		}
	}
	for i, b := range bufs {
		for j, v := range b.Bytes() {
			if v != byte(i) {
				t.Fatalf("byte %d of buffer %d was overwritten with %d", j, i, v)
			}
		}
	}
	for _, b := range bufs {
		if err := p.Free(b); err != nil {
			t.Fatal(err)
		}
	}
	if s := p.Stats(); s.Free != p.Size() || s.Buffers != 0 || s.LargestFree != p.Size() {
		t.Fatalf("after freeing everything: %+v", s)
	}
	whole, err := p.Alloc(p.Size(), Page4K)
	if err != nil {
		t.Fatalf("one buffer for the whole pool after freeing everything: %v", err)
	}
	if err := p.Free(whole); err != nil {
		t.Fatal(err)
	}
}

func TestAllocErrors(t *testing.T) {
	p := new4K(t, 1<<20)
	for _, c := range []struct{ size, align int }{
		{0, 0}, {-1, 0}, {p.Size() + 1, 0}, {512, 3}, {512, -512}, {512, 2 * Page4K},
	} {
		if b, err := p.Alloc(c.size, c.align); err == nil {
			t.Errorf("Alloc(%d, %d) gave %+v", c.size, c.align, b)
		}
	}
	b, err := p.Alloc(100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b.Cap() != MinBlock || b.Offset()%MinBlock != 0 {
		t.Errorf("a 100-byte buffer: Cap %d, Offset %d", b.Cap(), b.Offset())
	}
	copyOfB := b
	if err := p.Free(b); err != nil {
		t.Fatal(err)
	}
	if err := p.Free(copyOfB); !errors.Is(err, ErrDoubleFree) {
		t.Errorf("double free through a copy: %v", err)
	}
	again, _ := p.Alloc(100, 0)
	if again.Offset() != b.Offset() {
		t.Fatalf("expected the freed block back, got offset %d", again.Offset())
	}
	if err := p.Free(b); !errors.Is(err, ErrDoubleFree) {
		t.Errorf("freeing a stale copy whose block has a new owner: %v", err)
	}
	if err := p.Free(again); err != nil {
		t.Errorf("the new owner's free after the stale one was refused: %v", err)
	}
	other := new4K(t, 64<<10)
	ob, _ := other.Alloc(512, 0)
	if err := p.Free(ob); !errors.Is(err, ErrForeignBuffer) {
		t.Errorf("freeing another pool's buffer: %v", err)
	}
	if err := p.Free(Buffer{}); !errors.Is(err, ErrForeignBuffer) {
		t.Errorf("freeing the zero Buffer: %v", err)
	}
	if (Buffer{}).Bytes() != nil {
		t.Error("the zero Buffer has bytes")
	}
	if err := other.Free(ob); err != nil {
		t.Error(err)
	}
	// A buffer too big for the largest block of an odd-sized pool.
	odd := new4K(t, 3<<20)
	if _, err := odd.Alloc(3<<20, 0); !errors.Is(err, ErrPoolFull) {
		t.Errorf("a 3 MiB buffer (a 4 MiB block) from a 3 MiB pool: %v, want ErrPoolFull", err)
	}
	if s := p.Stats(); s.Buffers != 0 || s.Free != p.Size() {
		t.Errorf("rejected frees changed the pool: %+v", s)
	}
}

// TestAllocFreeNoHeap proves Alloc, Bytes and Free make no Go heap
// allocation, for small and large buffers.
func TestAllocFreeNoHeap(t *testing.T) {
	p := new4K(t, 4<<20)
	for _, c := range []struct{ size, align int }{{512, 0}, {4096, 4096}, {100 << 10, 512}, {2 << 20, 0}} {
		var failed error
		allocs := testing.AllocsPerRun(1000, func() {
			b, err := p.Alloc(c.size, c.align)
			if err != nil {
				failed = err
				return
			}
			b.Bytes()[0] = 1
			if err := p.Free(b); err != nil {
				failed = err
			}
		})
		if failed != nil {
			t.Fatal(failed)
		}
		if allocs != 0 {
			t.Errorf("Alloc(%d, %d) + Bytes + Free: %v heap allocations per run, want 0", c.size, c.align, allocs)
		}
	}
}

// TestOpenPoolTmpfs imports a pool from a file on tmpfs that is not a
// memfd, such as one in /dev/shm.
func TestOpenPoolTmpfs(t *testing.T) {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || uint32(st.Type) != uint32(unix.TMPFS_MAGIC) {
		t.Skip("no tmpfs at /dev/shm")
	}
	f, err := os.CreateTemp("/dev/shm", defaultName+"-shm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := f.Truncate(64 << 10); err != nil {
		t.Fatal(err)
	}
	p, err := OpenPool(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, p)
	if info := p.Info(); info.Backing != BackingTmpfs || info.Sealed || p.Size() != 64<<10 || p.PageSize() != Page4K {
		t.Errorf("tmpfs pool info %+v", info)
	}
}

// TestFaultInByCopy checks the pre-faulting of kernels without
// MADV_POPULATE_WRITE: it leaves the memory's content as it was, and a
// page that cannot be had (here, past the end of the file) is an EFAULT,
// not the SIGBUS touching it would raise.
func TestFaultInByCopy(t *testing.T) {
	fd, err := unix.MemfdCreate("umd-faultin", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, 3*Page4K); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, 4*Page4K, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	mem[0], mem[Page4K] = 0x5a, 0xa5
	if err := faultInByCopy(mem[:3*Page4K], Page4K); err != nil {
		t.Fatal(err)
	}
	if mem[0] != 0x5a || mem[Page4K] != 0xa5 || mem[2*Page4K] != 0 {
		t.Errorf("content changed: %#x %#x %#x", mem[0], mem[Page4K], mem[2*Page4K])
	}
	// move_pages(2) reports a page that is not there as -ENOENT.
	if status, err := pageNodes(mem[:3*Page4K], Page4K); err == nil && status[2] < 0 {
		t.Errorf("the third page, never touched from Go, is not resident after faulting in: status %v", status)
	}
	if err := faultInByCopy(mem, Page4K); err != unix.EFAULT {
		t.Errorf("a page past the end of the file: %v, want EFAULT", err)
	}
}
