//go:build guest

package dmabuf

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/qemu/guest"
)

// exporters returns the exporters of this kernel: umd_dmabuf always,
// udmabuf where the kernel has it (6.12 must: Debian builds it in).
func exporters(t *testing.T) map[string]*Exporter {
	t.Helper()
	m := map[string]*Exporter{}
	e, err := OpenExporter()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	m["umd_dmabuf"] = e
	u, err := OpenUdmabuf()
	switch {
	case err == nil:
		t.Cleanup(func() { u.Close() })
		m["udmabuf"] = u
	case errors.Is(err, ErrNotSupported) && guest.Kernel() == "6.1":
		t.Logf("no udmabuf: Debian's 6.1 is built without CONFIG_UDMABUF (%v)", err)
	default:
		t.Fatalf("opening udmabuf on %s: %v", guest.Kernel(), err)
	}
	return m
}

var pageSizes = []struct {
	name string
	size int
}{{"hugetlb-2M", hugepage.Page2M}, {"shmem-4K", hugepage.Page4K}}

func newPool(t *testing.T, pageSize, size int) *hugepage.Pool {
	t.Helper()
	p, err := hugepage.New(hugepage.Options{Size: size, PageSize: pageSize, NUMANode: hugepage.AnyNode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if !p.Info().Sealed {
		t.Fatalf("pool of %d-byte pages is not sealed", pageSize)
	}
	return p
}

// TestZeroCopyAcrossProcesses exports a pool region, sends the dma-buf to
// a child process over SCM_RIGHTS, lets the child write through its own
// mapping, and checks that the parent reads the bytes in its pool and
// that both mappings have the very same physical pages.
func TestZeroCopyAcrossProcesses(t *testing.T) {
	setup(t)
	for name, e := range exporters(t) {
		for _, ps := range pageSizes {
			t.Run(name+"/"+ps.name, func(t *testing.T) {
				p := newPool(t, ps.size, 4<<20)
				r, err := NewRegion(p, 2<<20+64<<10, 0)
				if err != nil {
					t.Fatal(err)
				}
				b, err := e.ExportRegion(r, ReadWrite)
				if err != nil {
					t.Fatal(err)
				}
				if name == "umd_dmabuf" {
					if got, want := counter(t, "pinned_pages"), int64(r.exportLen()/os.Getpagesize()); got != want {
						t.Errorf("pinned_pages = %d with one export of %d pages", got, want)
					}
				}
				if err := r.Free(); !errors.Is(err, ErrExported) {
					t.Errorf("freeing an exported region: %v, want ErrExported", err)
				}
				seed := int(b.Size()) + len(name)
				childPFNs, shareErr := shareWithChild(t, b, seed)

				mem := r.Bytes()
				for i := range r.exportLen() {
					if mem[i] != pattern(seed, i) {
						t.Fatalf("byte %d of the region is %#x after the child wrote %#x", i, mem[i], pattern(seed, i))
					}
				}
				ours, err := pfns(mem[:r.exportLen()])
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(ours, 0) {
					t.Fatalf("the pool's pagemap shows pages not present (or PFNs hidden): %v", ours[:8])
				}
				switch {
				case errors.Is(shareErr, errPFNMap) && name == "udmabuf":
					// pagemap cannot see udmabuf's frames; show the
					// aliasing in this process instead.
					t.Logf("udmabuf maps by VM_PFNMAP, which pagemap skips: checking aliasing instead of PFNs")
					checkAliasing(t, b, mem[:r.exportLen()])
				case shareErr != nil:
					t.Fatal(shareErr)
				case !slices.Equal(ours, childPFNs):
					t.Fatalf("the child's mapping has other pages than the pool:\npool  %v\nchild %v", head(ours), head(childPFNs))
				default:
					t.Logf("%d pages, PFNs %#x.. identical in the pool and in the child's dma-buf mapping", len(ours), ours[0])
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
				if err := b.Close(); err != nil {
					t.Fatalf("second Close: %v", err)
				}
				if err := r.Free(); err != nil {
					t.Fatalf("freeing the region after its dma-buf closed: %v", err)
				}
			})
		}
	}
}

// checkAliasing maps b in this process and checks that every page of it
// is the same memory as the matching page of pool: a store to one is
// seen by a load from the other at once, with no system call between
// them that could copy.
func checkAliasing(t *testing.T, b *Buffer, pool []byte) {
	t.Helper()
	m, err := Import(b.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mem := m.Bytes()
	for i := 0; i < len(pool); i += os.Getpagesize() {
		j := i + 123
		pool[j] = ^mem[j]
		if mem[j] != pool[j] {
			t.Fatalf("page %d: a store to the pool is not seen through the dma-buf", i/os.Getpagesize())
		}
		mem[j+1] = ^pool[j+1]
		if mem[j+1] != pool[j+1] {
			t.Fatalf("page %d: a store through the dma-buf is not seen in the pool", i/os.Getpagesize())
		}
	}
}

// sink keeps the loads that fault pages in from being optimised away.
var sink byte

func head(s []uint64) string {
	if len(s) > 4 {
		return fmt.Sprint(s[:4], "…")
	}
	return fmt.Sprint(s)
}

// TestExportersAgree maps the same range of a pool through both exporters
// (where the kernel has udmabuf) and checks that both show the pool's
// pages: by PFN where pagemap can see them, else by aliasing.
func TestExportersAgree(t *testing.T) {
	setup(t)
	es := exporters(t)
	if len(es) < 2 {
		t.Skipf("only one exporter on %s: Debian's 6.1 has no udmabuf", guest.Kernel())
	}
	for _, ps := range pageSizes {
		t.Run(ps.name, func(t *testing.T) {
			p := newPool(t, ps.size, 4<<20)
			pool := p.Bytes()[2<<20 : 4<<20]
			want, err := pfns(pool)
			if err != nil {
				t.Fatal(err)
			}
			maps := map[string]*Mapping{}
			for _, name := range []string{"umd_dmabuf", "udmabuf"} {
				b, err := es[name].ExportPool(p, 2<<20, 2<<20, ReadWrite)
				if err != nil {
					t.Fatal(err)
				}
				m, err := Import(b.Fd())
				b.Close()
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				maps[name] = m
				var sum byte
				for i := 0; i < len(m.Bytes()); i += os.Getpagesize() {
					sum += m.Bytes()[i] // fault every page in
				}
				sink += sum
				flags, err := vmFlags(m.Bytes())
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(flags, "pf") {
					t.Logf("%s maps by VM_PFNMAP (VmFlags %v), which pagemap skips: comparing by aliasing", name, flags)
					continue
				}
				got, err := pfns(m.Bytes())
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s maps other pages than the pool's: %s, pool %s", name, head(got), head(want))
				}
				t.Logf("%s: %d pages, PFNs identical to the pool's (VmFlags %v)", name, len(got), flags)
			}
			umd, udma := maps["umd_dmabuf"].Bytes(), maps["udmabuf"].Bytes()
			for i := 0; i < len(pool); i += os.Getpagesize() {
				udma[i+7] = ^umd[i+7]
				if umd[i+7] != udma[i+7] || pool[i+7] != udma[i+7] {
					t.Fatalf("page %d: a store through udmabuf is not seen through umd_dmabuf and the pool", i/os.Getpagesize())
				}
			}
		})
	}
}

// TestExportCycles exports and imports thousands of times and checks that
// nothing stays pinned or allocated.
func TestExportCycles(t *testing.T) {
	setup(t)
	const cycles = 2000
	for name, e := range exporters(t) {
		for _, ps := range pageSizes {
			t.Run(name+"/"+ps.name, func(t *testing.T) {
				p := newPool(t, ps.size, 2<<20)
				hugeFree := meminfo(t, "HugePages_Free")
				memFree := meminfo(t, "MemFree")
				for i := range cycles {
					off := (i % 16) * 64 << 10
					b, err := e.ExportPool(p, off, 64<<10, ReadWrite)
					if err != nil {
						t.Fatalf("cycle %d: %v", i, err)
					}
					m, err := Import(b.Fd())
					if err != nil {
						b.Close()
						t.Fatalf("cycle %d: %v", i, err)
					}
					m.Bytes()[i%(64<<10)] = byte(i)
					if p.Bytes()[off+i%(64<<10)] != byte(i) {
						t.Fatalf("cycle %d: a write through the dma-buf is not in the pool", i)
					}
					if err := m.Close(); err != nil {
						t.Fatal(err)
					}
					if err := b.Close(); err != nil {
						t.Fatal(err)
					}
				}
				if name == "umd_dmabuf" {
					if n, pp := counter(t, "live_exports"), counter(t, "pinned_pages"); n != 0 || pp != 0 {
						t.Fatalf("after %d cycles: %d dma-bufs alive, %d pages pinned", cycles, n, pp)
					}
				}
				if got := meminfo(t, "HugePages_Free"); got != hugeFree {
					t.Errorf("HugePages_Free went from %d to %d over %d cycles", hugeFree, got, cycles)
				}
				// Slab and page-table noise aside, nothing may grow
				// with the cycles: 2000 leaked 64 KiB exports would be
				// 125 MiB.
				if got := meminfo(t, "MemFree"); got < memFree-8<<10 {
					t.Errorf("MemFree went from %d kB to %d kB over %d cycles", memFree, got, cycles)
				}
			})
		}
	}
}

// rawExport issues UMD_DMABUF_IOCTL_EXPORT with any argument, bypassing
// Export's own checks; it closes the dma-buf it may get.
func rawExport(t *testing.T, dev int, arg umdDmabufExport) unix.Errno {
	t.Helper()
	arg.Fd = -1
	errno := ioctlUmdExport(dev, &arg)
	if errno == 0 {
		if arg.Fd < 0 {
			t.Fatalf("the export succeeded with descriptor %d", arg.Fd)
		}
		unix.Close(int(arg.Fd))
	}
	return errno
}

func memfd(t *testing.T, flags int, size int64, seals int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("dmabuf-bad-input", unix.MFD_CLOEXEC|flags)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

// TestBadExportInput feeds the module's ioctl everything it must refuse;
// setup checks that nothing leaked and the kernel logged no warning.
func TestBadExportInput(t *testing.T) {
	setup(t)
	dev, err := unix.Open(UmdDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dev)
	page := uint64(os.Getpagesize())
	good := memfd(t, unix.MFD_ALLOW_SEALING, 1<<20, unix.F_SEAL_SHRINK)
	unsealed := memfd(t, 0, 1<<20, 0)
	sealable := memfd(t, unix.MFD_ALLOW_SEALING, 1<<20, unix.F_SEAL_GROW)
	writeSealed := memfd(t, unix.MFD_ALLOW_SEALING, 1<<20, unix.F_SEAL_SHRINK|unix.F_SEAL_WRITE)
	readOnly, err := unix.Open("/proc/self/fd/"+strconv.Itoa(good), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(readOnly)
	// A memfd's number after it was closed. It is moved above every
	// descriptor in use first, so that no later open reuses it.
	closed, err := unix.FcntlInt(uintptr(memfd(t, unix.MFD_ALLOW_SEALING, 1<<20, unix.F_SEAL_SHRINK)), unix.F_DUPFD_CLOEXEC, 900)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(closed)
	null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(null)
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])

	rw := uint32(UMD_DMABUF_FLAG_RDWR | UMD_DMABUF_FLAG_CLOEXEC)
	for _, tc := range []struct {
		name string
		arg  umdDmabufExport
		want unix.Errno
	}{
		{"valid", umdDmabufExport{Memfd: int32(good), Flags: rw, Size: page}, 0},
		{"valid read-only of a write-sealed memfd", umdDmabufExport{Memfd: int32(writeSealed), Size: page}, 0},
		{"negative fd", umdDmabufExport{Memfd: -1, Flags: rw, Size: page}, unix.EBADF},
		{"fd not open", umdDmabufExport{Memfd: 1 << 20, Flags: rw, Size: page}, unix.EBADF},
		{"closed memfd", umdDmabufExport{Memfd: int32(closed), Flags: rw, Size: page}, unix.EBADF},
		{"/dev/null", umdDmabufExport{Memfd: int32(null), Flags: rw, Size: page}, unix.EBADFD},
		{"pipe", umdDmabufExport{Memfd: int32(pipe[0]), Size: page}, unix.EBADFD},
		{"the device itself", umdDmabufExport{Memfd: int32(dev), Size: page}, unix.EBADFD},
		{"unsealable memfd", umdDmabufExport{Memfd: int32(unsealed), Flags: rw, Size: page}, unix.EPERM},
		{"memfd without F_SEAL_SHRINK", umdDmabufExport{Memfd: int32(sealable), Flags: rw, Size: page}, unix.EPERM},
		{"unaligned offset", umdDmabufExport{Memfd: int32(good), Flags: rw, Offset: 1, Size: page}, unix.EINVAL},
		{"unaligned size", umdDmabufExport{Memfd: int32(good), Flags: rw, Size: page + 512}, unix.EINVAL},
		{"size 0", umdDmabufExport{Memfd: int32(good), Flags: rw}, unix.EINVAL},
		{"unknown flag", umdDmabufExport{Memfd: int32(good), Flags: 0x80, Size: page}, unix.EINVAL},
		{"reserved set", umdDmabufExport{Memfd: int32(good), Flags: rw, Size: page, Reserved: 1}, unix.EINVAL},
		{"offset+size overflows", umdDmabufExport{Memfd: int32(good), Flags: rw, Offset: -page & ^(page - 1), Size: 2 * page}, unix.EOVERFLOW},
		{"past the end", umdDmabufExport{Memfd: int32(good), Flags: rw, Offset: 1 << 20, Size: page}, unix.ERANGE},
		{"straddling the end", umdDmabufExport{Memfd: int32(good), Flags: rw, Offset: 1<<20 - page, Size: 2 * page}, unix.ERANGE},
		{"above max_bytes", umdDmabufExport{Memfd: int32(good), Flags: rw, Size: 2 << 30}, unix.E2BIG},
		{"writable from a read-only fd", umdDmabufExport{Memfd: int32(readOnly), Flags: rw, Size: page}, unix.EACCES},
		{"writable of a write-sealed memfd", umdDmabufExport{Memfd: int32(writeSealed), Flags: rw, Size: page}, unix.EACCES},
	} {
		if got := rawExport(t, dev, tc.arg); got != tc.want {
			t.Errorf("%s: errno %v (%d), want %v (%d)", tc.name, got, got, tc.want, tc.want)
		}
	}

	t.Run("max_bytes", func(t *testing.T) {
		setParam(t, "max_bytes", 16<<10)
		if got := rawExport(t, dev, umdDmabufExport{Memfd: int32(good), Flags: rw, Size: 16 << 10}); got != 0 {
			t.Errorf("export of max_bytes: %v", got)
		}
		if got := rawExport(t, dev, umdDmabufExport{Memfd: int32(good), Flags: rw, Size: 20 << 10}); got != unix.E2BIG {
			t.Errorf("export above max_bytes: %v, want E2BIG", got)
		}
	})

	t.Run("max_exports", func(t *testing.T) {
		setParam(t, "max_exports", 3)
		e, err := OpenExporter()
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		var bufs []*Buffer
		defer func() {
			for _, b := range bufs {
				b.Close()
			}
		}()
		for range 3 {
			b, err := e.Export(good, 0, int64(page), ReadWrite)
			if err != nil {
				t.Fatal(err)
			}
			bufs = append(bufs, b)
		}
		if _, err := e.Export(good, 0, int64(page), ReadWrite); !errors.Is(err, ErrTooManyExports) {
			t.Fatalf("a fourth export with max_exports=3: %v, want ErrTooManyExports", err)
		}
		if n := counter(t, "live_exports"); n != 3 {
			t.Fatalf("live_exports = %d with 3 exports alive", n)
		}
		bufs[0].Close()
		b, err := e.Export(good, 0, int64(page), ReadWrite)
		if err != nil {
			t.Fatalf("exporting after one of max_exports closed: %v", err)
		}
		bufs = append(bufs, b)
	})

	t.Run("hugetlb hole", func(t *testing.T) {
		// An unpopulated hugetlb memfd: 6.11+ allocates the page on
		// export (memfd_pin_folios), 6.1 refuses the hole.
		huge := memfd(t, unix.MFD_HUGETLB|unix.MFD_HUGE_2MB|unix.MFD_ALLOW_SEALING, 2<<20, unix.F_SEAL_SHRINK)
		got := rawExport(t, dev, umdDmabufExport{Memfd: int32(huge), Flags: rw, Size: 2 << 20})
		want := unix.Errno(0)
		if guest.Kernel() == "6.1" {
			want = unix.EFAULT
		}
		if got != want {
			t.Errorf("exporting an unpopulated hugetlb memfd on %s: %v, want %v", guest.Kernel(), got, want)
		}
	})

	t.Run("typed errors", func(t *testing.T) {
		e, err := OpenExporter()
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		for fd, want := range map[int]error{unsealed: ErrNotSealed, null: ErrNotMemfd, closed: ErrBadFd} {
			if _, err := e.Export(fd, 0, int64(page), ReadWrite); !errors.Is(err, want) {
				t.Errorf("Export(%d) = %v, want %v", fd, err, want)
			}
		}
	})
}

// TestSyncAndSyncFile brackets CPU access with DMA_BUF_IOCTL_SYNC and
// exports sync_files, which both kernels (6.0+) must support.
func TestSyncAndSyncFile(t *testing.T) {
	setup(t)
	for name, e := range exporters(t) {
		t.Run(name, func(t *testing.T) {
			p := newPool(t, hugepage.Page2M, 2<<20)
			b, err := e.ExportPool(p, 0, 2<<20, ReadWrite)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for _, f := range []SyncFlags{SyncStart | SyncRead, SyncEnd | SyncRead, SyncStart | SyncRW, SyncEnd | SyncRW} {
				if err := b.Sync(f); err != nil {
					t.Errorf("Sync(%#x): %v", uint64(f), err)
				}
			}
			for _, f := range []SyncFlags{SyncRead, SyncWrite} {
				sf, err := b.ExportSyncFile(f)
				if err != nil {
					t.Fatalf("ExportSyncFile(%#x) on %s: %v", uint64(f), guest.Kernel(), err)
				}
				// No fence is attached: the sync_file is signalled,
				// so poll says readable at once.
				pfd := []unix.PollFd{{Fd: int32(sf.Fd()), Events: unix.POLLIN}}
				if n, err := unix.Poll(pfd, 1000); err != nil || n != 1 {
					t.Errorf("polling the sync_file: %d, %v", n, err)
				}
				sf.Close()
			}
		})
	}
}

// TestReadOnlyExport checks that a read-only dma-buf maps read-only.
func TestReadOnlyExport(t *testing.T) {
	setup(t)
	e, err := OpenExporter()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	p := newPool(t, hugepage.Page4K, 1<<20)
	copy(p.Bytes(), "read me")
	b, err := e.ExportPool(p, 0, 1<<20, ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := unix.Mmap(b.Fd(), 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); !errors.Is(err, unix.EACCES) {
		t.Fatalf("writable mmap of a read-only dma-buf: %v, want EACCES", err)
	}
	m, err := Import(b.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Writable() || string(m.Bytes()[:7]) != "read me" {
		t.Fatalf("read-only import: writable %v, reads %q", m.Writable(), m.Bytes()[:7])
	}
}

// TestPinsOutlivePool closes the pool (and so the memfd) while a dma-buf
// of it is alive: the pages stay, with their contents, until the
// dma-buf goes.
func TestPinsOutlivePool(t *testing.T) {
	setup(t)
	for name, e := range exporters(t) {
		t.Run(name, func(t *testing.T) {
			hugeFree := meminfo(t, "HugePages_Free")
			p, err := hugepage.New(hugepage.Options{Size: 2 << 20, NUMANode: hugepage.AnyNode})
			if err != nil {
				t.Fatal(err)
			}
			copy(p.Bytes()[4096:], "still here")
			b, err := e.ExportPool(p, 0, 2<<20, ReadWrite)
			if err != nil {
				p.Close()
				t.Fatal(err)
			}
			defer b.Close()
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if got := meminfo(t, "HugePages_Free"); got != hugeFree-1 {
				t.Errorf("HugePages_Free = %d with the closed pool's page exported, want %d", got, hugeFree-1)
			}
			m, err := Import(b.Fd())
			if err != nil {
				t.Fatal(err)
			}
			if got := string(m.Bytes()[4096 : 4096+10]); got != "still here" {
				t.Errorf("the dma-buf reads %q after the pool closed", got)
			}
			m.Close()
			b.Close()
			if got := meminfo(t, "HugePages_Free"); got != hugeFree {
				t.Errorf("HugePages_Free = %d after the dma-buf closed, want %d back", got, hugeFree)
			}
		})
	}
}

// TestConcurrentExports exports, maps and closes from several goroutines
// at once, over one region of a pool, and checks that everything is let
// go.
func TestConcurrentExports(t *testing.T) {
	setup(t)
	for name, e := range exporters(t) {
		t.Run(name, func(t *testing.T) {
			p := newPool(t, hugepage.Page2M, 2<<20)
			const workers, cycles = 8, 200
			errs := make(chan error, workers)
			for w := range workers {
				go func() {
					for i := range cycles {
						off := (w*cycles + i) % 32 * 64 << 10
						b, err := e.ExportPool(p, off, 64<<10, ReadWrite)
						if err != nil {
							errs <- err
							return
						}
						m, err := Import(b.Fd())
						if err != nil {
							b.Close()
							errs <- err
							return
						}
						m.Bytes()[w] = byte(i)
						if err := errors.Join(b.Close(), m.Close()); err != nil {
							errs <- err
							return
						}
					}
					errs <- nil
				}()
			}
			for range workers {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestRefaultAfterZap drops a dma-buf mapping's page table entries
// (MADV_DONTNEED) and checks that the next touch maps the same pages
// again, through the module's fault handler.
func TestRefaultAfterZap(t *testing.T) {
	setup(t)
	e, err := OpenExporter()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, ps := range pageSizes {
		t.Run(ps.name, func(t *testing.T) {
			p := newPool(t, ps.size, 2<<20)
			b, err := e.ExportPool(p, 0, 2<<20, ReadWrite)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			m, err := Import(b.Fd())
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			copy(m.Bytes()[8192:], "across the zap")
			if err := unix.Madvise(m.Bytes(), unix.MADV_DONTNEED); err != nil {
				t.Fatal(err)
			}
			if got, err := pfns(m.Bytes()[:4096]); err != nil || got[0] != 0 {
				t.Fatalf("first page after MADV_DONTNEED: PFN %v, %v; want not present", got, err)
			}
			if got := string(m.Bytes()[8192 : 8192+14]); got != "across the zap" {
				t.Fatalf("after MADV_DONTNEED the dma-buf reads %q", got)
			}
			var sum byte
			for i := 0; i < len(m.Bytes()); i += os.Getpagesize() {
				sum += m.Bytes()[i]
			}
			sink += sum
			got, err := pfns(m.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			want, err := pfns(p.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("refaulted pages differ from the pool's: %s, pool %s", head(got), head(want))
			}
		})
	}
}

// TestKmsgWatcher checks that the kernel-log check every test relies on
// sees what is logged while a test runs.
func TestKmsgWatcher(t *testing.T) {
	guest.Require(t)
	fd := openKmsg(t)
	defer unix.Close(fd)
	const mark = "umd_dmabuf test: kmsg watcher probe"
	// The newline ends the record: without it the kernel keeps it open
	// for a continuation, and readers do not see it yet.
	if err := os.WriteFile("/dev/kmsg", []byte(mark+"\n"), 0); err != nil {
		t.Fatal(err)
	}
	recs, err := readKmsg(fd)
	if !slices.ContainsFunc(recs, func(r string) bool { return strings.HasSuffix(r, mark) }) {
		t.Fatalf("the probe written to /dev/kmsg was not read back: %q (%v)", recs, err)
	}
}

// TestModuleHeldWhileExported checks that the module cannot be unloaded
// while one of its dma-bufs lives: each holds a reference to it.
func TestModuleHeldWhileExported(t *testing.T) {
	setup(t)
	e, err := OpenExporter()
	if err != nil {
		t.Fatal(err)
	}
	p := newPool(t, hugepage.Page4K, 1<<20)
	b, err := e.ExportPool(p, 0, 1<<20, ReadWrite)
	e.Close() // the device is closed; the dma-buf alone holds the module
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if out, err := exec.Command("modprobe", "-r", "umd_dmabuf").CombinedOutput(); err == nil {
		t.Fatalf("modprobe -r umd_dmabuf succeeded with a dma-buf alive (%s)", out)
	}
	if _, err := os.Stat(moduleDir); err != nil {
		t.Fatalf("the module is gone with a dma-buf alive: %v", err)
	}
}
