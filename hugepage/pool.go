package hugepage

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Page sizes a pool can be backed by.
const (
	// Page4K is the ordinary page size of x86-64: a pool of such pages
	// is a plain (shmem) memfd, not hugepages. It needs no reservation
	// but gives the IOMMU and the CPU's TLB 512 times as many pages to
	// track as Page2M.
	Page4K = 4 << 10
	// Page2M is the default hugepage size of x86-64.
	Page2M = 2 << 20
	// Page1G is the gigantic page size of x86-64, on CPUs with pdpe1gb.
	Page1G = 1 << 30
)

// Paths the package reads the kernel's state from; tests may point them
// at a fake tree.
var (
	sysRoot  = "/sys"
	procRoot = "/proc"
)

// Options configure New. Size is the only field that must be set; note
// that NUMANode's zero value is node 0, not AnyNode.
type Options struct {
	// Size is the pool's size in bytes. It is rounded up to a multiple
	// of the page size.
	Size int
	// PageSize is the size of the pages behind the pool: Page2M (the
	// default when 0), Page1G, or Page4K for ordinary pages.
	PageSize int
	// NUMANode is the node the pool's memory must come from, or AnyNode
	// to let the kernel choose. The placement is strict (MPOL_BIND:
	// creating the pool fails if that node cannot supply the pages)
	// unless NUMAPreferred is set.
	NUMANode int
	// NUMAPreferred makes NUMANode a preference (MPOL_PREFERRED): pages
	// come from other nodes when it has none left. Info says where they
	// landed.
	NUMAPreferred bool
	// AllowFallback lets New use smaller pages when the requested ones
	// cannot be had: 1 GiB, then 2 MiB, then 4 KiB pages. A pool that
	// fell back says why in Info().Fallback.
	AllowFallback bool
	// Backing chooses where hugepages come from: BackingAuto (the
	// default: a hugetlb memfd, or a hugetlbfs file when the kernel
	// cannot make hugetlb memfds), BackingMemfd or BackingHugetlbfs.
	// 4 KiB pages always come from a memfd.
	Backing Backing
	// HugetlbfsDir is the directory a hugetlbfs-backed pool's file is
	// created in. Empty means the first hugetlbfs mount with the page
	// size in /proc/mounts.
	HugetlbfsDir string
	// NoSeal leaves a memfd unsealed. By default it is sealed against
	// shrinking and growing (F_SEAL_SHRINK|F_SEAL_GROW), so that no
	// process it is shared with can truncate it under the others (whose
	// next access would die of SIGBUS); exporting it as a dma-buf needs
	// F_SEAL_SHRINK too. No further seals are added, so F_SEAL_WRITE and
	// friends stay available to whoever needs them. hugetlbfs files
	// cannot be sealed.
	NoSeal bool
	// Name names the memfd (in /proc/PID/maps it shows as /memfd:NAME)
	// or prefixes the hugetlbfs file's name. Default "umd-hugepage".
	Name string
}

// Info describes a pool as it was made.
type Info struct {
	Size     int // bytes, a multiple of PageSize
	PageSize int
	Backing  Backing
	// Dir is the hugetlbfs directory a BackingHugetlbfs pool's file was
	// created in (and unlinked from).
	Dir string
	// Sealed reports whether the file is sealed against shrinking
	// (F_SEAL_SHRINK).
	Sealed bool
	// NUMANode is the node all of the pool's pages are on, or AnyNode
	// when they are spread over several or the kernel could not say.
	NUMANode int
	// NodePages counts the pool's pages on each node; nil when the
	// kernel could not say.
	NodePages map[int]int
	// Imported reports a pool made by OpenPool from another process's
	// descriptor.
	Imported bool
	// Fallback is nil unless the pool has smaller pages than were asked
	// for (Options.AllowFallback). It then holds the errors that made
	// New fall back, which match ErrNoHugepages and say how to reserve
	// the missing pages. A library does not log: show it to the user.
	Fallback error
}

// A Pool is a range of locked, pre-faulted, shared memory backed by a
// file descriptor, carved into Buffers by Alloc and Free. Its memory
// stays at the same physical pages for the pool's life, which is what a
// device doing DMA needs; mapping it into an IOMMU is the iommu package's
// business, not this one's.
//
// A Pool is safe for concurrent use. Close releases everything; buffers
// must not be used after it.
type Pool struct {
	mem    []byte // exactly the slice unix.Mmap returned, to Munmap it
	fd     int
	info   Info
	closed atomic.Bool

	mu    sync.Mutex // guards buddy
	buddy *buddy

	// cleanup releases the memory and descriptor of a pool that became
	// unreachable without Close: a leak net, not a way to manage pools.
	cleanup runtime.Cleanup
}

// New creates a pool as opts say. Its memory is a file (see Backing)
// mapped shared, so that its descriptor can be handed to another process
// that maps the same pages (see Fd and OpenPool); faulted in up front,
// on the requested NUMA node, so that no DMA ever meets a missing page;
// and locked.
//
// When hugepages run out, the error wraps ErrNoHugepages and says how to
// reserve more; when locking fails, it wraps ErrMemlock and says how to
// raise the limit. A failed New leaves nothing behind.
func New(opts Options) (*Pool, error) {
	if opts.PageSize == 0 {
		opts.PageSize = Page2M
	}
	if opts.Name == "" {
		opts.Name = defaultName
	}
	if err := opts.check(); err != nil {
		return nil, err
	}
	sizes := []int{opts.PageSize}
	if opts.AllowFallback {
		for _, ps := range []int{Page2M, Page4K} {
			if ps < sizes[len(sizes)-1] {
				sizes = append(sizes, ps)
			}
		}
	}
	var failures []error
	for i, ps := range sizes {
		p, err := create(opts, ps)
		if err == nil {
			if len(failures) > 0 {
				p.info.Fallback = errors.Join(failures...)
			}
			return p, nil
		}
		failures = append(failures, err)
		// Only a shortage of pages is worth trying smaller ones for: a
		// memlock limit or a missing NUMA node would fail them too.
		if i == len(sizes)-1 || !errors.Is(err, ErrNoHugepages) {
			break
		}
	}
	return nil, errors.Join(failures...)
}

func (o *Options) check() error {
	switch {
	case o.Size <= 0:
		return fmt.Errorf("pool size %d: must be positive", o.Size)
	case o.PageSize != Page4K && o.PageSize != Page2M && o.PageSize != Page1G:
		return fmt.Errorf("page size %d: must be Page4K, Page2M or Page1G", o.PageSize)
	case o.Size > maxPoolSize:
		return fmt.Errorf("pool size %s: more than the %s this package allows", formatSize(o.Size), formatSize(maxPoolSize))
	case o.NUMANode < AnyNode:
		return fmt.Errorf("NUMA node %d: must be a node number or AnyNode (-1)", o.NUMANode)
	case o.Backing < BackingAuto || o.Backing > BackingHugetlbfs:
		return fmt.Errorf("backing %v: must be BackingAuto, BackingMemfd or BackingHugetlbfs", o.Backing)
	case o.Backing == BackingHugetlbfs && o.PageSize == Page4K:
		return errors.New("a hugetlbfs backing needs hugepages, not Page4K")
	}
	return nil
}

// maxPoolSize bounds a pool so that sizes and offsets never overflow and
// the allocator's bookkeeping stays reasonable (2.25 bytes per 512).
const maxPoolSize = 1 << 40

// create makes a pool of pageSize pages, or releases everything it did.
func create(opts Options, pageSize int) (_ *Pool, err error) {
	size := (opts.Size + pageSize - 1) / pageSize * pageSize
	p := &Pool{fd: -1, info: Info{Size: size, PageSize: pageSize, NUMANode: AnyNode}}
	defer func() {
		if err == nil {
			return
		}
		p.release()
		// The counts are read now that this pool's pages are back, so
		// they say what another attempt would find.
		var he *HugepageError
		if errors.As(err, &he) && !he.Unsupported {
			he.fillCounts(sysRoot)
		}
		err = fmt.Errorf("creating a pool of %s in %s pages: %w", formatSize(size), formatSize(pageSize), err)
	}()

	huge := pageSize != Page4K
	if huge && !hugepageSizeSupported(sysRoot, pageSize) {
		return nil, &HugepageError{PageSize: pageSize, Node: opts.NUMANode, Unsupported: true}
	}
	numa := false
	if opts.NUMANode != AnyNode {
		if numa, err = checkNode(sysRoot, opts.NUMANode); err != nil {
			return nil, err
		}
	}
	shortage := func(err error) *HugepageError {
		return &HugepageError{PageSize: pageSize, Node: opts.NUMANode, Needed: size / pageSize, Mount: p.info.Dir, Err: err}
	}

	sealable := false
	if p.fd, sealable, err = openBacking(&p.info, opts, pageSize); err != nil {
		return nil, err
	}
	if err = unix.Ftruncate(p.fd, int64(size)); err != nil {
		return nil, fmt.Errorf("sizing the file: %w", err)
	}
	if sealable && !opts.NoSeal {
		if _, err = unix.FcntlInt(uintptr(p.fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
			return nil, fmt.Errorf("sealing the memfd: %w", err)
		}
		p.info.Sealed = true
	}

	// No MAP_POPULATE: pages must not be faulted in before mbind has
	// said where they go, and MAP_POPULATE would not report a failure.
	// A hugetlb mapping reserves its pages here, so a shortage shows up
	// as ENOMEM (or ENOSPC from a hugetlbfs mount's size limit).
	if p.mem, err = unix.Mmap(p.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		if huge && (err == unix.ENOMEM || err == unix.ENOSPC) {
			return nil, shortage(err)
		}
		return nil, fmt.Errorf("mapping the file: %w", err)
	}
	if numa {
		mode, name := mpolBind, "MPOL_BIND"
		if opts.NUMAPreferred {
			mode, name = mpolPreferred, "MPOL_PREFERRED"
		}
		if err = mbind(p.mem, mode, opts.NUMANode); err != nil {
			return nil, fmt.Errorf("placing the memory on NUMA node %d (mbind %s): %w", opts.NUMANode, name, err)
		}
	}
	if err = populate(p.mem, pageSize, shortage); err != nil {
		return nil, err
	}
	// Locking keeps 4 KiB pages from being swapped out or migrated
	// under a device's DMA. Hugetlb pages never are, but the kernel
	// still checks RLIMIT_MEMLOCK, and so does VFIO when it pins them
	// for the IOMMU: failing here, with advice, beats failing there.
	if err = unix.Mlock(p.mem); err != nil {
		return nil, newMemlockError(size, err)
	}
	p.info.NodePages, p.info.NUMANode = placement(p.mem, pageSize, numa)
	if p.buddy, err = newBuddy(size); err != nil {
		return nil, err
	}
	p.cleanup = runtime.AddCleanup(p, releaseLeaked, leaked{p.mem, p.fd})
	return p, nil
}

// openBacking opens the pool's file and records how in info.
func openBacking(info *Info, opts Options, pageSize int) (fd int, sealable bool, err error) {
	if pageSize == Page4K || opts.Backing != BackingHugetlbfs {
		fd, sealable, err = openMemfd(opts.Name, pageSize, opts.NoSeal)
		if err == nil {
			info.Backing = BackingMemfd
			return fd, sealable, nil
		}
		err = fmt.Errorf("memfd_create: %w", err)
		if pageSize == Page4K || opts.Backing == BackingMemfd {
			return -1, false, err
		}
	}
	// A kernel without hugetlb memfds (before 4.14, or one that forbids
	// memfd_create) may still have a hugetlbfs mount to use.
	memfdErr := err
	fd, dir, err := openHugetlbfs(procRoot, opts.HugetlbfsDir, opts.Name, pageSize)
	if err != nil {
		if memfdErr != nil {
			return -1, false, fmt.Errorf("%v; hugetlbfs: %w", memfdErr, err)
		}
		return -1, false, err
	}
	info.Backing, info.Dir = BackingHugetlbfs, dir
	return fd, false, nil
}

// populate faults in every page of mem for writing. MADV_POPULATE_WRITE
// (Linux 5.14) reports what the faults met, where touching the pages
// from Go would die of SIGBUS when a hugepage cannot be had. Older
// kernels refuse the advice (EINVAL); there the pages are faulted in by
// the kernel itself, two system calls per page (faultInByCopy), which
// turns that SIGBUS into EFAULT too.
func populate(mem []byte, pageSize int, shortage func(error) *HugepageError) error {
	huge := pageSize != Page4K
	err := unix.Madvise(mem, unix.MADV_POPULATE_WRITE)
	if err == unix.EINVAL {
		err = faultInByCopy(mem, pageSize)
	}
	switch {
	case err == nil:
		return nil
	case huge && (err == unix.EFAULT || err == unix.ENOMEM):
		// EFAULT is the SIGBUS a hugetlb fault gives when the
		// reservation could not be met where the policy allows, such
		// as on a node with no free pages left.
		return shortage(err)
	}
	return fmt.Errorf("pre-faulting the memory: %w", err)
}

// faultInByCopy faults in each page of mem, as MADV_POPULATE_WRITE does,
// on kernels without it: the kernel copies the page's first byte into a
// pipe (write(2) reads it from user memory, faulting the page in) and
// back out onto itself (read(2) writes the same byte back: a write fault,
// and the content stays as it was, which matters for a pool another
// process filled). A fault the kernel cannot meet makes the call fail
// with EFAULT instead of raising SIGBUS.
func faultInByCopy(mem []byte, pageSize int) error {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	for off := 0; off < len(mem); off += pageSize {
		b := mem[off : off+1]
		if _, err := unix.Write(fds[1], b); err != nil {
			return err
		}
		if _, err := unix.Read(fds[0], b); err != nil {
			return err
		}
	}
	return nil
}

// placement reports the node of each page of mem; numa is false on a
// kernel without NUMA, where everything is on node 0.
func placement(mem []byte, pageSize int, numa bool) (map[int]int, int) {
	status, err := pageNodes(mem, pageSize)
	if err != nil {
		if !numa && err == unix.ENOSYS {
			return map[int]int{0: len(mem) / pageSize}, 0
		}
		return nil, AnyNode
	}
	return summarizeNodes(status)
}

// leaked is what releaseLeaked needs; it must not point to the Pool, or
// the Pool would never become unreachable.
type leaked struct {
	mem []byte
	fd  int
}

func releaseLeaked(l leaked) {
	unix.Munmap(l.mem)
	unix.Close(l.fd)
}

// release unmaps the memory (which also unlocks it) and closes the file.
func (p *Pool) release() error {
	var errs []error
	if p.mem != nil {
		if err := unix.Munmap(p.mem); err != nil {
			errs = append(errs, fmt.Errorf("unmapping the pool: %w", err))
		}
	}
	if p.fd >= 0 {
		if err := unix.Close(p.fd); err != nil {
			errs = append(errs, fmt.Errorf("closing the pool's file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Close unmaps and unlocks the pool's memory and closes its descriptor;
// the hugepages go back to the kernel once no other process holds the
// file. Buffers of the pool must not be used after Close: their Bytes
// return nil, and Free returns ErrClosed. Close is safe to call twice.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Swap(true) {
		return nil
	}
	p.cleanup.Stop()
	return p.release()
}

// Bytes returns the pool's whole memory, or nil after Close.
func (p *Pool) Bytes() []byte {
	if p.closed.Load() {
		return nil
	}
	return p.mem
}

// Fd returns the pool's file descriptor, for sending to another process
// (over SCM_RIGHTS, say), which maps the same memory with OpenPool. The
// Pool keeps owning it: do not close it. Fd returns -1 after Close.
func (p *Pool) Fd() int {
	if p.closed.Load() {
		return -1
	}
	return p.fd
}

// File returns a duplicate of the pool's descriptor as an *os.File that
// the caller owns, for exec.Cmd.ExtraFiles and the like.
func (p *Pool) File() (*os.File, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	fd, err := unix.FcntlInt(uintptr(p.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating the pool's descriptor: %w", err)
	}
	return os.NewFile(uintptr(fd), "hugepage-pool"), nil
}

// Size returns the pool's size in bytes.
func (p *Pool) Size() int { return p.info.Size }

// PageSize returns the size of the pages behind the pool.
func (p *Pool) PageSize() int { return p.info.PageSize }

// NUMANode returns the node all the pool's pages are on, or AnyNode.
func (p *Pool) NUMANode() int { return p.info.NUMANode }

// Info describes how the pool was made. Its NodePages map is shared:
// do not modify it.
func (p *Pool) Info() Info { return p.info }

// OpenPool maps a pool's memory from a descriptor another process sent,
// as New's memory is: shared, faulted in and locked. It duplicates fd,
// so the caller still owns (and should close) its own. The descriptor
// must be a memfd, a hugetlbfs file or a tmpfs file; its size is the
// pool's.
//
// Info().Sealed reports whether the file is sealed against shrinking. If
// it is not, the sender can truncate it, and this process's next access
// to the memory would die of SIGBUS: accept unsealed pools only from a
// sender you trust (New seals its memfds unless told not to).
//
// The returned pool has an allocator of its own that knows nothing of
// other processes': carve a shared pool in one process only.
func OpenPool(fd int) (_ *Pool, err error) {
	backing, pageSize, err := fsKind(fd)
	if err != nil {
		return nil, fmt.Errorf("opening a pool from descriptor %d: %w", fd, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("opening a pool from descriptor %d: fstat: %w", fd, err)
	}
	size := int(st.Size)
	switch {
	case size <= 0 || size%pageSize != 0:
		return nil, fmt.Errorf("opening a pool from descriptor %d: its size %d is not a positive multiple of its %s pages", fd, size, formatSize(pageSize))
	case size > maxPoolSize:
		return nil, fmt.Errorf("opening a pool from descriptor %d: its size %s is more than the %s this package allows", fd, formatSize(size), formatSize(maxPoolSize))
	}
	p := &Pool{fd: -1, info: Info{Size: size, PageSize: pageSize, Backing: backing, Imported: true, NUMANode: AnyNode}}
	defer func() {
		if err != nil {
			p.release()
			err = fmt.Errorf("opening a pool of %s in %s pages from descriptor %d: %w", formatSize(size), formatSize(pageSize), fd, err)
		}
	}()
	if p.fd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
		p.fd = -1
		return nil, fmt.Errorf("duplicating the descriptor: %w", err)
	}
	if seals, err := unix.FcntlInt(uintptr(p.fd), unix.F_GET_SEALS, 0); err == nil {
		p.info.Sealed = seals&unix.F_SEAL_SHRINK != 0
	}
	if p.mem, err = unix.Mmap(p.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("mapping the file: %w", err)
	}
	// The pages normally exist already (the sender populated them); this
	// maps them all now, and finds a hole as an error rather than a
	// SIGBUS later.
	shortage := func(err error) *HugepageError {
		return &HugepageError{PageSize: pageSize, Node: AnyNode, Needed: size / pageSize, Total: -1, Free: -1, Reserved: -1, Err: err}
	}
	if err = populate(p.mem, pageSize, shortage); err != nil {
		return nil, err
	}
	if err = unix.Mlock(p.mem); err != nil {
		return nil, newMemlockError(size, err)
	}
	_, statErr := os.Stat(sysRoot + "/devices/system/node")
	p.info.NodePages, p.info.NUMANode = placement(p.mem, pageSize, statErr == nil)
	if p.buddy, err = newBuddy(size); err != nil {
		return nil, err
	}
	p.cleanup = runtime.AddCleanup(p, releaseLeaked, leaked{p.mem, p.fd})
	return p, nil
}
