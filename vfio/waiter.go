package vfio

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A Waiter waits for an Interrupt's signals on its own, however many other
// Waiters there are: queue pairs that share one interrupt vector each wait
// through a Waiter of theirs, and each is woken by every interrupt of the
// vector. It is an epoll instance that watches the eventfd edge-triggered;
// every signal queues an event in each Waiter's instance, and a wait takes
// it. A Waiter never reads the eventfd's count, and nothing else should
// while Waiters are in use: epoll reports a queued event only while the
// eventfd is readable, so a read by anyone (Interrupt.Wait, TryRead) between
// a signal and a Waiter's wait hides the signal from that Waiter. Left
// unread, the count holds 2^64-2 signals.
//
// A Waiter keeps a duplicate of the eventfd, so closing the Interrupt
// does not end its watch; it is simply never signalled again. Its methods
// are safe for concurrent use, but it has one wait at a time: use one
// Waiter per waiting goroutine.
type Waiter struct {
	what string // "waiting on interrupt eventfd N", for messages
	efd  int    // the duplicate of the eventfd the epoll instance watches
	// ep is the epoll instance, blocking and outside the runtime poller,
	// for WaitThread; rc.Control keeps it open while a wait uses it.
	ep *os.File
	rc syscall.RawConn

	// WaitThread's state, made once so that WaitThread does not allocate.
	threadMu sync.Mutex
	timeout  int // milliseconds, for epoll_wait
	events   [1]unix.EpollEvent
	woken    bool
	err      error
	threadFn func(fd uintptr)

	// Wait's: waitSem admits one Wait at a time (a deadline is per
	// file); pollF is a duplicate of ep registered with the runtime
	// poller, made by the first Wait and closed by Close (under mu).
	waitSem chan struct{}
	mu      sync.Mutex
	pollF   *os.File
	pollRC  syscall.RawConn
	closed  bool
}

// NewWaiter makes a Waiter for the Interrupt's signals from now on: two
// file descriptors (a duplicate of the eventfd and an epoll instance),
// until Close. Signals before NewWaiter that nobody has read (the count is
// not zero) wake its first wait.
func (i *Interrupt) NewWaiter() (*Waiter, error) {
	dup, err := dupFD(i.rc)
	if err != nil {
		return nil, fmt.Errorf("making a waiter on interrupt eventfd %d: %w", i.fd, err)
	}
	ep, rc, err := edgeEpoll(dup)
	if err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("making a waiter on interrupt eventfd %d: %w", i.fd, err)
	}
	w := &Waiter{what: fmt.Sprintf("waiting on interrupt eventfd %d", i.fd), efd: dup, ep: ep, rc: rc, waitSem: make(chan struct{}, 1)}
	w.threadFn = w.waitThread
	return w, nil
}

// dupFD duplicates the fd behind rc (close-on-exec); it fails with
// ErrClosed once the file is closed.
func dupFD(rc syscall.RawConn) (int, error) {
	dup, dupErr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, ErrClosed
	}
	if dupErr != nil {
		return -1, os.NewSyscallError("fcntl", dupErr)
	}
	return dup, nil
}

// edgeEpoll makes an epoll instance that watches fd (an eventfd) for
// input, edge-triggered: each signal of the eventfd makes it ready once,
// so the count need not be read to stop it being ready. Added while the
// count is not zero, it starts out ready. The instance is blocking, so
// os.NewFile leaves it out of the runtime poller.
func edgeEpoll(fd int) (*os.File, syscall.RawConn, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, nil, os.NewSyscallError("epoll_create1", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(ep)
		return nil, nil, os.NewSyscallError("epoll_ctl", err)
	}
	f := os.NewFile(uintptr(ep), "epoll")
	rc, _ := f.SyscallConn() // fails only on a nil *os.File
	return f, rc, nil
}

// epollWait is one raw epoll_wait(2) on ep for at most len(events) events,
// the runtime not told of it: whether an event came, or the error. The
// runtime's signals end it (EINTR) with neither.
func epollWait(ep uintptr, events []unix.EpollEvent, timeoutMS int) (bool, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, ep, uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), uintptr(timeoutMS), 0, 0)
	switch {
	case errno == unix.EINTR:
		return false, nil
	case errno != 0:
		return false, os.NewSyscallError("epoll_wait", errno)
	}
	return n > 0, nil
}

// WaitThread blocks the calling OS thread until the Interrupt is signalled
// or timeout passes, like Interrupt.WaitThread (which says when to use
// it): true when a signal came since the Waiter's previous wait, false at
// the timeout or when one of the runtime's signals ended the wait. One
// raw epoll_wait(2); it does not allocate. A Close meanwhile takes effect
// when it returns.
func (w *Waiter) WaitThread(timeout time.Duration) (bool, error) {
	w.threadMu.Lock()
	defer w.threadMu.Unlock()
	w.timeout = epollTimeout(timeout)
	w.woken, w.err = false, nil
	if err := w.rc.Control(w.threadFn); err != nil {
		return false, fmt.Errorf("%s: %w", w.what, ErrClosed)
	}
	if w.err != nil {
		return false, fmt.Errorf("%s: %w", w.what, w.err)
	}
	return w.woken, nil
}

// waitThread is WaitThread's callback, on the epoll fd; w.threadMu is
// held.
func (w *Waiter) waitThread(ep uintptr) {
	w.woken, w.err = epollWait(ep, w.events[:], w.timeout)
}

// Wait blocks the calling goroutine until the Interrupt is signalled (a
// signal since the Waiter's previous wait counts) or ctx is done, when it
// returns ctx.Err(). The goroutine waits on the runtime poller; the first
// Wait registers the Waiter there (a duplicate of its epoll fd), and from
// then until Close every signal also wakes a poller thread. One Wait at a
// time: a second waits for the first to return. After Close it returns an
// error wrapping ErrClosed, and a Wait in progress returns one.
func (w *Waiter) Wait(ctx context.Context) error {
	_, err := w.wait(ctx, time.Time{})
	return err
}

// WaitTimeout is Wait that also gives up after d: it reports whether a
// signal came (false when d passed first, with no error). For a waiter
// that wants to look at something else now and then, such as whether the
// device still works, without a context per wait.
func (w *Waiter) WaitTimeout(ctx context.Context, d time.Duration) (bool, error) {
	return w.wait(ctx, time.Now().Add(d))
}

// wait is Wait until deadline (none when zero).
func (w *Waiter) wait(ctx context.Context, deadline time.Time) (bool, error) {
	select {
	case w.waitSem <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-w.waitSem }()
	if err := ctx.Err(); err != nil {
		return false, err
	}
	f, rc, err := w.pollFile()
	if err != nil {
		return false, err
	}
	if !deadline.IsZero() {
		f.SetReadDeadline(deadline) // fails only once the file is closed, when Read fails too
		defer f.SetReadDeadline(time.Time{})
	}
	readDone := cancelRead(ctx, f)
	// Read resets the poller's readiness, then calls the function, which
	// takes an event queued since the last wait (even one queued before
	// the reset) without blocking; only if there is none does it park
	// until the poller reports the epoll fd readable again.
	var events [1]unix.EpollEvent
	var waitErr error
	err = rc.Read(func(ep uintptr) bool {
		var woken bool
		woken, waitErr = epollWait(ep, events[:], 0)
		return woken || waitErr != nil
	})
	readDone()
	switch {
	case err == nil && waitErr == nil:
		return true, nil
	case err == nil:
		return false, fmt.Errorf("%s: %w", w.what, waitErr)
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		return false, ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded) && !deadline.IsZero():
		return false, nil
	case errors.Is(err, os.ErrClosed) || w.isClosed():
		// RawConn.Read returns internal/poll's "use of closed file",
		// which is not os.ErrClosed.
		return false, fmt.Errorf("%s: %w", w.what, ErrClosed)
	}
	return false, fmt.Errorf("%s: %w", w.what, err)
}

func (w *Waiter) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// pollFile returns the duplicate of the epoll fd that Wait parks on,
// making it on the first call; it fails with ErrClosed once Close has
// begun.
func (w *Waiter) pollFile() (*os.File, syscall.RawConn, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, nil, fmt.Errorf("%s: %w", w.what, ErrClosed)
	}
	if w.pollF != nil {
		return w.pollF, w.pollRC, nil
	}
	dup, err := dupFD(w.rc)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: duplicating the epoll fd for the runtime poller: %w", w.what, err)
	}
	// Non-blocking, so os.NewFile registers it with the poller. The
	// flag belongs to the open file, which WaitThread's epoll_wait does
	// not look at.
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, nil, fmt.Errorf("%s: %w", w.what, os.NewSyscallError("fcntl", err))
	}
	w.pollF = os.NewFile(uintptr(dup), "epoll")
	w.pollRC, _ = w.pollF.SyscallConn()
	return w.pollF, w.pollRC, nil
}

// Close releases the Waiter's file descriptors. A Wait in progress returns
// an error wrapping ErrClosed; a WaitThread in progress keeps the epoll fd
// open until it returns. Closing twice returns nil.
func (w *Waiter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	var errs []error
	if w.pollF != nil {
		errs = append(errs, w.pollF.Close())
	}
	errs = append(errs, w.ep.Close())
	if err := unix.Close(w.efd); err != nil {
		errs = append(errs, os.NewSyscallError("close", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing a waiter on %s: %w", strings.TrimPrefix(w.what, "waiting on "), err)
	}
	return nil
}
