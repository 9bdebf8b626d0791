package vfio

import (
	"bufio"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/fdleak"
)

// eventfdID returns the kernel's id of the eventfd open at fd (the
// "eventfd-id:" line of /proc/self/fdinfo), and false when fd is not an
// eventfd or the kernel does not show the id. Every eventfd has the same
// anonymous inode, so the id is what tells two apart; fds of the same
// eventfd (dups) share it.
func eventfdID(fd int) (string, bool) {
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || link != "anon_inode:[eventfd]" {
		return "", false
	}
	f, err := os.Open("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "eventfd-id:"); ok {
			return strings.TrimSpace(id), true
		}
	}
	return "", false
}

// epollWatchers returns the epoll fds of the process (the runtime poller's
// among them) that watch the eventfd with the given id, by the "tfd:"
// lines of /proc/self/fdinfo/<epfd>, leaving out the Interrupt's own one
// for WaitThread, ep (-1: none). The runtime removes an fd from its set
// before closing it, so the numbers are live.
func epollWatchers(t *testing.T, id string, ep int) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var watchers []string
	epolls := 0
	for _, e := range entries {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		data, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		epolls++
		if e.Name() == strconv.Itoa(ep) {
			continue
		}
		for line := range strings.Lines(string(data)) {
			fields := strings.Fields(line)
			if len(fields) < 2 || fields[0] != "tfd:" {
				continue
			}
			tfd, err := strconv.Atoi(fields[1])
			if err != nil {
				t.Fatalf("epoll fd %s: fdinfo line %q", e.Name(), line)
			}
			if got, ok := eventfdID(tfd); ok && got == id {
				watchers = append(watchers, "epoll fd "+e.Name()+" watches fd "+fields[1])
			}
		}
	}
	if epolls == 0 {
		t.Fatal("no epoll fd in /proc/self/fd: the runtime poller should have one")
	}
	return watchers
}

// checkPollerUse runs an Interrupt through TryRead, Signal, WaitThread,
// Wait and Close and checks, by the epoll sets' fdinfo, that the runtime
// poller watches its eventfd only from the first Wait to Close, and
// WaitThread's own epoll fd from the first WaitThread to Close.
func checkPollerUse(t *testing.T, irq *Interrupt) {
	t.Helper()
	id, ok := eventfdID(irq.Fd())
	if !ok {
		t.Skip("the kernel shows no eventfd-id in /proc/self/fdinfo")
	}
	if flags, err := unix.FcntlInt(uintptr(irq.Fd()), unix.F_GETFL, 0); err != nil || flags&unix.O_NONBLOCK == 0 {
		t.Errorf("flags %#x, %v: want O_NONBLOCK", flags, err)
	}
	if w := epollWatchers(t, id, -1); len(w) > 0 {
		t.Errorf("a fresh Interrupt: %v; want the eventfd in no epoll set", w)
	}
	if n, err := irq.TryRead(); n != 0 || err != nil {
		t.Fatalf("TryRead = %d, %v", n, err)
	}
	if err := irq.Signal(); err != nil {
		t.Fatal(err)
	}
	if woken, err := irq.WaitThread(time.Second); !woken || err != nil {
		t.Fatalf("WaitThread = %v, %v", woken, err)
	}
	if woken, err := irq.WaitThread(time.Millisecond); woken || err != nil {
		t.Fatalf("WaitThread with nothing new = %v, %v", woken, err)
	}
	ep := -1
	if err := irq.thread.Load().rc.Control(func(fd uintptr) { ep = int(fd) }); err != nil {
		t.Fatal(err)
	}
	if w := epollWatchers(t, id, ep); len(w) > 0 {
		t.Errorf("after TryRead, Signal and WaitThread: %v; want the eventfd in no epoll set but WaitThread's (fd %d)", w, ep)
	}
	if w := epollWatchers(t, id, -1); len(w) != 1 {
		t.Errorf("after WaitThread: %v; want WaitThread's epoll fd %d watching the eventfd", w, ep)
	}
	// WaitThread left the count for TryRead.
	if n, err := irq.TryRead(); n != 1 || err != nil {
		t.Fatalf("TryRead after WaitThread = %d, %v; want the signal's 1", n, err)
	}

	// Wait registers it, once, and it stays registered.
	for range 2 {
		if err := irq.Signal(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		n, err := irq.Wait(ctx)
		cancel()
		if n != 1 || err != nil {
			t.Fatalf("Wait = %d, %v", n, err)
		}
	}
	if w := epollWatchers(t, id, ep); len(w) != 1 {
		t.Errorf("after two Waits: %v; want one epoll set watching the eventfd, once, besides WaitThread's", w)
	}
	// The raw paths still work beside it. The Waits read the count of
	// the signals they woke on, and epoll reports an edge only while the
	// eventfd is still readable, so WaitThread has nothing until the next
	// signal.
	if woken, err := irq.WaitThread(time.Millisecond); woken || err != nil {
		t.Errorf("WaitThread after Waits read every signal = %v, %v", woken, err)
	}
	if err := irq.Signal(); err != nil {
		t.Fatal(err)
	}
	if woken, err := irq.WaitThread(time.Second); !woken || err != nil {
		t.Errorf("WaitThread after Wait = %v, %v", woken, err)
	}

	if err := irq.Close(); err != nil {
		t.Fatal(err)
	}
	if w := epollWatchers(t, id, -1); len(w) > 0 {
		t.Errorf("after Close: %v; want the eventfd in no epoll set", w)
	}
	// A Wait after Close fails and registers nothing.
	if _, err := irq.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait after Close: %v, want ErrClosed", err)
	}
	if w := epollWatchers(t, id, -1); len(w) > 0 {
		t.Errorf("after a Wait after Close: %v; want the eventfd in no epoll set", w)
	}
}

// TestInterruptNotInPollerUntilWait: an Interrupt's eventfd is in no epoll
// set (the runtime poller's would wake a thread per signal) until the first
// Wait, which puts it in the poller's, and Close takes it out; the same for
// an adopted eventfd that arrives non-blocking or blocking.
func TestInterruptNotInPollerUntilWait(t *testing.T) {
	t.Run("NewInterrupt", func(t *testing.T) {
		irq, err := NewInterrupt()
		if err != nil {
			t.Fatal(err)
		}
		defer irq.Close()
		checkPollerUse(t, irq)
	})
	for _, flags := range []int{unix.EFD_NONBLOCK, 0} {
		name := "InterruptFromFD/blocking"
		if flags != 0 {
			name = "InterruptFromFD/nonblocking"
		}
		t.Run(name, func(t *testing.T) {
			fd, err := unix.Eventfd(0, flags)
			if err != nil {
				t.Fatal(err)
			}
			irq, err := InterruptFromFD(fd)
			if err != nil {
				unix.Close(fd)
				t.Fatal(err)
			}
			defer irq.Close()
			checkPollerUse(t, irq)
		})
	}
}

// TestInterruptCloseDuringFirstWait races Close against Waits that make
// Wait's duplicate fd, and Waits after Close, which must not make one: every
// Wait returns (ErrClosed, or a count), and no fd stays open.
func TestInterruptCloseDuringFirstWait(t *testing.T) {
	noFDLeak(t, "100 Interrupts closed during their first Waits")
	for i := range 100 {
		irq, err := NewInterrupt()
		if err != nil {
			t.Fatal(err)
		}
		chs := []<-chan waitResult{waitAsync(context.Background(), irq), waitAsync(context.Background(), irq)}
		if i%2 == 0 {
			time.Sleep(time.Duration(i%5) * 50 * time.Microsecond)
		}
		if err := irq.Close(); err != nil {
			t.Fatal(err)
		}
		chs = append(chs, waitAsync(context.Background(), irq))
		for _, ch := range chs {
			if r := receive(t, ch); !errors.Is(r.err, ErrClosed) {
				t.Fatalf("Wait racing Close = %d, %v; want ErrClosed", r.n, r.err)
			}
		}
	}
}

// noFDLeak fails t if, when it ends, file descriptors are open that were
// not open now. Call it before the test registers any cleanup of its own
// (cleanups run last first, so those would run after the check).
func noFDLeak(t *testing.T, what string) {
	t.Helper()
	before, err := fdleak.Take()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		after, err := fdleak.Take()
		if err != nil {
			t.Fatal(err)
		}
		if leaked := before.Leaked(after); len(leaked) > 0 {
			t.Errorf("%s leaked %v", what, leaked)
		}
	})
}

// TestInterruptCloseDuringWaitThread races Close against WaitThreads, the
// first of which makes the epoll fd: each returns (at its timeout, a
// signal, or with ErrClosed), WaitThread after Close fails with ErrClosed
// and makes nothing, and neither the eventfd nor the epoll fd stays open.
func TestInterruptCloseDuringWaitThread(t *testing.T) {
	noFDLeak(t, "50 Interrupts closed during WaitThreads")
	for i := range 50 {
		irq, err := NewInterrupt()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := irq.WaitThread(20 * time.Millisecond)
			done <- err
		}()
		time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
		if err := irq.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, ErrClosed) {
				t.Fatalf("WaitThread racing Close: %v", err)
			}
		case <-time.After(guard):
			t.Fatalf("WaitThread still waiting %v after Close", guard)
		}
		if _, err := irq.WaitThread(time.Millisecond); !errors.Is(err, ErrClosed) {
			t.Fatalf("WaitThread after Close: %v, want ErrClosed", err)
		}
	}
}
