package dmabuf

import (
	"errors"
	"math"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/hugepage"
)

// nullExporter is an Exporter whose device is /dev/null: every ioctl
// fails with ENOTTY, so the tests see what fails before it.
func nullExporter(t *testing.T, udma bool) *Exporter {
	t.Helper()
	fd, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := &Exporter{device: "/dev/null", udma: udma, fd: fd}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestExportValidatesBeforeTheKernel(t *testing.T) {
	page := int64(os.Getpagesize())
	for _, tc := range []struct {
		name         string
		offset, size int64
		access       Access
		want         error
	}{
		{"zero size", 0, 0, ReadWrite, ErrInvalid},
		{"negative size", 0, -page, ReadWrite, ErrInvalid},
		{"negative offset", -page, page, ReadWrite, ErrInvalid},
		{"unaligned offset", 1, page, ReadWrite, ErrInvalid},
		{"unaligned size", 0, page + 1, ReadWrite, ErrInvalid},
		{"overflow", math.MaxInt64 - page + 1, 2 * page, ReadWrite, ErrOverflow},
		{"bad access", 0, page, Access(7), ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := nullExporter(t, false).Export(3, tc.offset, tc.size, tc.access)
			var ee *ExportError
			if !errors.Is(err, tc.want) || !errors.As(err, &ee) || ee.Errno != 0 {
				t.Fatalf("Export(offset %d, size %d) = %v, want %v before any ioctl", tc.offset, tc.size, err, tc.want)
			}
		})
	}
	// A valid request reaches the ioctl, which /dev/null refuses.
	_, err := nullExporter(t, false).Export(3, page, page, ReadOnly)
	if !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("Export on /dev/null = %v, want ENOTTY from the ioctl", err)
	}
	if _, err := nullExporter(t, true).Export(3, 0, page, ReadOnly); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("read-only udmabuf export = %v, want ErrNotSupported", err)
	}
	e := nullExporter(t, false)
	e.Close()
	if err := e.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := e.Export(3, 0, page, ReadWrite); !errors.Is(err, ErrClosed) {
		t.Fatalf("Export after Close = %v, want ErrClosed", err)
	}
}

func TestErrnoMapping(t *testing.T) {
	for errno, want := range map[unix.Errno]error{
		unix.EBADF:     ErrBadFd,
		unix.EBADFD:    ErrNotMemfd,
		unix.EPERM:     ErrNotSealed,
		unix.EINVAL:    ErrInvalid,
		unix.EOVERFLOW: ErrOverflow,
		unix.ERANGE:    ErrOutOfRange,
		unix.E2BIG:     ErrTooLarge,
		unix.ENOSPC:    ErrTooManyExports,
		unix.EACCES:    ErrAccess,
		unix.EFAULT:    ErrHole,
		unix.ENOMEM:    unix.ENOMEM,
	} {
		err := error(&ExportError{Device: UmdDevice, Err: umdErrno(errno), Errno: errno})
		if !errors.Is(err, want) || !errors.Is(err, errno) {
			t.Errorf("errno %v maps to %v, want %v", errno, err, want)
		}
	}
	if got := udmabufErrno(unix.EINVAL); got != ErrInvalid {
		t.Errorf("udmabuf EINVAL maps to %v", got)
	}
}

func TestOpenWithoutModule(t *testing.T) {
	if _, err := os.Stat(UmdDevice); err == nil {
		t.Skipf("%s exists on this machine: the module is loaded", UmdDevice)
	}
	if _, err := OpenExporter(); !errors.Is(err, ErrNoModule) || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("OpenExporter without the module = %v, want ErrNoModule", err)
	}
}

func TestSyncFlagsCheck(t *testing.T) {
	for _, ok := range []SyncFlags{SyncStart | SyncRead, SyncEnd | SyncWrite, SyncStart | SyncRW} {
		if err := ok.check(); err != nil {
			t.Errorf("%#x: %v", uint64(ok), err)
		}
	}
	for _, bad := range []SyncFlags{0, SyncEnd, 8, SyncRead | 16} {
		if err := bad.check(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%#x: %v, want ErrInvalid", uint64(bad), err)
		}
	}
}

// TestRegionCannotBeFreedWhileExported checks the reference count with a
// Buffer whose descriptor is /dev/null: no kernel module is needed.
func TestRegionCannotBeFreedWhileExported(t *testing.T) {
	p, err := hugepage.New(hugepage.Options{Size: 1 << 20, PageSize: hugepage.Page4K, NUMANode: hugepage.AnyNode})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r, err := NewRegion(p, 10000, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Offset()%os.Getpagesize() != 0 || r.exportLen() != 3*os.Getpagesize() {
		t.Fatalf("region at %d, export length %d: not page-aligned", r.Offset(), r.exportLen())
	}
	var bufs []*Buffer
	for range 2 {
		if err := r.acquire(); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		bufs = append(bufs, newBuffer(fd, int64(r.exportLen()), r.release))
	}
	if err := r.Free(); !errors.Is(err, ErrExported) {
		t.Fatalf("Free with 2 exports = %v, want ErrExported", err)
	}
	for i := 0; i < 2; i++ { // twice: the second Close must not drop the count again
		if err := bufs[0].Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.Exports(); n != 1 {
		t.Fatalf("%d exports after closing one of two buffers (twice), want 1", n)
	}
	if err := r.Free(); !errors.Is(err, ErrExported) {
		t.Fatalf("Free with 1 export = %v, want ErrExported", err)
	}
	bufs[1].Close()
	if err := r.Free(); err != nil {
		t.Fatalf("Free after every export closed = %v", err)
	}
	if err := r.Free(); !errors.Is(err, hugepage.ErrDoubleFree) {
		t.Fatalf("second Free = %v, want ErrDoubleFree", err)
	}
	if err := r.acquire(); !errors.Is(err, ErrClosed) {
		t.Fatalf("exporting a freed region = %v, want ErrClosed", err)
	}
	if s := p.Stats(); s.Buffers != 0 {
		t.Fatalf("pool has %d buffers after Free", s.Buffers)
	}
}

func TestSendReceiveFds(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "sock")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	defer a.Close()
	defer b.Close()
	memfd, err := unix.MemfdCreate("dmabuf-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(memfd)
	if err := unix.Ftruncate(memfd, 4096); err != nil {
		t.Fatal(err)
	}
	if err := SendFds(a, []byte("hello"), memfd); err != nil {
		t.Fatal(err)
	}
	msg, got, err := ReceiveFds(b, 16, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != "hello" || len(got) != 1 {
		t.Fatalf("received %q and %d descriptors", msg, len(got))
	}
	defer unix.Close(got[0])
	var st1, st2 unix.Stat_t
	if err := unix.Fstat(memfd, &st1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(got[0], &st2); err != nil {
		t.Fatal(err)
	}
	if st1.Ino != st2.Ino || st1.Dev != st2.Dev {
		t.Fatalf("received descriptor is another file")
	}
	if flags, err := unix.FcntlInt(uintptr(got[0]), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("received descriptor is not close-on-exec (%#x, %v)", flags, err)
	}
}
