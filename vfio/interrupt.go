package vfio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Interrupt is an eventfd that a device's interrupt vector signals, or that
// anything else signals (Signal, another process it was handed to). The
// kernel adds one to the eventfd's counter per interrupt; reading it
// returns the count since the last read and resets it to zero, so
// interrupts that arrive while nobody reads are coalesced, never lost.
//
// The eventfd is non-blocking but not registered with Go's runtime poller
// until it is needed: the runtime's epoll set is edge-triggered and watches
// open files, so while it watches the eventfd every signal wakes a thread
// blocked in the scheduler's epoll_wait, for nothing when the Interrupt is
// read with TryRead or WaitThread (in a guest at 3.5 K interrupts/s the
// other threads spent 2.1 s of CPU per 5 s run on those wake-ups, the I/O
// loop 2.5 s). The first Wait
// registers a duplicate of the fd and keeps it until Close: Wait parks the
// calling goroutine on the poller, not an OS thread, and the package parks
// no goroutine of its own per Interrupt. TryRead is the non-blocking check
// for polling loops, WaitThread the thread-blocking wait for thread-locked
// ones. Fd gives the number for a caller's own epoll set.
//
// An Interrupt is connected to device vectors with Device.ConnectIRQs and
// friends. While it is connected, Close refuses with ErrInUse: disconnect
// it, disable the device's IRQ index, or close the device first. Its
// methods are safe for concurrent use.
type Interrupt struct {
	// f holds the eventfd for TryRead, WaitThread, Signal and Close. It is
	// not registered with the runtime poller (os.NewFile saw the fd in
	// blocking mode); rc.Control keeps the fd open while a raw call uses
	// it: Close closes it when the last Control returns.
	f  *os.File
	rc syscall.RawConn
	fd int // the number, for Fd: os.File.Fd would put the fd in blocking mode

	// waitSem admits one Wait at a time: a deadline is per file, so two
	// waiters would cancel each other. waitBuf belongs to the admitted one.
	waitSem chan struct{}
	waitBuf [8]byte
	// waitF is a duplicate of the fd registered with the runtime poller,
	// for Wait: made by the first Wait, closed by Close. Under mu.
	waitF *os.File

	// TryRead's state: the buffer, the result and the callback it hands to
	// RawConn.Control, made once so that TryRead does not allocate.
	tryMu    sync.Mutex
	tryBuf   [8]byte
	tryCount uint64
	tryErr   error
	tryFn    func(fd uintptr)

	// thread is WaitThread's Waiter: the first WaitThread makes it (under
	// mu, so not after Close), Close closes it.
	thread atomic.Pointer[Waiter]
	// Signal's state, made once like TryRead's.
	sigMu  sync.Mutex
	sigBuf [8]byte
	sigErr error
	sigFn  func(fd uintptr)

	mu     sync.Mutex
	closed bool
	users  int // device vectors connected to this eventfd
}

// NewInterrupt creates a non-blocking, close-on-exec eventfd with its
// counter at zero.
func NewInterrupt() (*Interrupt, error) {
	// Blocking at first, for newInterrupt.
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating an interrupt eventfd: %w", os.NewSyscallError("eventfd2", err))
	}
	i, err := newInterrupt(fd)
	if err != nil {
		return nil, fmt.Errorf("creating an interrupt eventfd: %w", err)
	}
	return i, nil
}

// InterruptFromFD takes ownership of fd, which must be an eventfd, such as
// one received from another process over a unix socket (SCM_RIGHTS). It
// puts the fd in non-blocking, close-on-exec mode (clearing O_NONBLOCK
// for a moment first, for the reason newInterrupt gives); O_NONBLOCK
// belongs to the open file, so other fds of the same eventfd (the
// sender's) see it too, which is harmless for eventfds read through poll
// or epoll. On error the fd is left open and still the caller's (but for
// a failure to set O_NONBLOCK again, which fcntl does not do and after
// which the fd is closed).
func InterruptFromFD(fd int) (*Interrupt, error) {
	what := fmt.Sprintf("taking fd %d as an interrupt eventfd", fd)
	if fd < 0 {
		return nil, fmt.Errorf("%s: not a file descriptor", what)
	}
	// An eventfd is an anonymous inode that /proc names "anon_inode:[eventfd]".
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if link != "anon_inode:[eventfd]" {
		return nil, fmt.Errorf("%s: the fd is %s, not an eventfd", what, link)
	}
	// Blocking for the moment, for newInterrupt, which makes it
	// non-blocking again.
	if err := unix.SetNonblock(fd, false); err != nil {
		return nil, fmt.Errorf("%s: %w", what, os.NewSyscallError("fcntl", err))
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("%s: %w", what, os.NewSyscallError("fcntl", err))
	}
	i, err := newInterrupt(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return i, nil
}

// newInterrupt takes fd, an eventfd in blocking mode (not negative), and
// makes it non-blocking. os.NewFile registers a non-blocking fd with the
// runtime poller and a blocking one not: wrapping the fd before setting
// O_NONBLOCK keeps it out of the poller's epoll set, where each signal
// would wake a thread in the scheduler for nothing. Wait registers its own
// duplicate (waitFile).
//
// It fails only if fcntl cannot set O_NONBLOCK, which it does not do on an
// eventfd whose flags it has just read; fd is closed then.
func newInterrupt(fd int) (*Interrupt, error) {
	f := os.NewFile(uintptr(fd), "eventfd")
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, os.NewSyscallError("fcntl", err)
	}
	// SyscallConn fails only on a nil *os.File, which NewFile returns
	// only for a negative fd.
	rc, _ := f.SyscallConn()
	i := &Interrupt{f: f, rc: rc, fd: fd, waitSem: make(chan struct{}, 1)}
	i.tryFn = i.tryRead
	i.sigFn = i.signal
	return i, nil
}

// waitFile returns the duplicate of the eventfd that Wait reads through the
// runtime poller, making it on the first call. It fails with ErrClosed once
// Close has begun, and then makes nothing.
func (i *Interrupt) waitFile() (*os.File, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil, fmt.Errorf("waiting on interrupt eventfd %d: %w", i.fd, ErrClosed)
	}
	if i.waitF != nil {
		return i.waitF, nil
	}
	// The duplicate shares the open file and with it O_NONBLOCK, so
	// os.NewFile registers it with the poller.
	dup, err := dupFD(i.rc)
	if err != nil {
		return nil, fmt.Errorf("waiting on interrupt eventfd %d: duplicating it for the runtime poller: %w", i.fd, err)
	}
	i.waitF = os.NewFile(uintptr(dup), "eventfd")
	return i.waitF, nil
}

// Fd returns the eventfd's number, for a caller's own epoll set or for
// handing to another process. It stays valid until Close. Do not close it,
// and do not put it in blocking mode: Wait, TryRead, WaitThread and Signal
// depend on it being non-blocking.
func (i *Interrupt) Fd() int { return i.fd }

// past is a read deadline that has always expired.
var past = time.Unix(1, 0)

// Wait blocks until the eventfd has been signalled and returns the count
// of signals since the last read (at least 1), resetting it to zero. The
// goroutine waits on the runtime poller. The first Wait registers the
// eventfd with the poller (a duplicate fd), and from then until Close
// every signal also wakes a poller thread.
//
// When ctx is done first, Wait returns 0 and ctx.Err() promptly; signals
// that arrive meanwhile stay counted for the next read. One goroutine waits
// at a time: a second Wait waits for the first to return (or for its own
// ctx). After Close, Wait returns an error wrapping ErrClosed, and a Wait
// in progress returns one.
func (i *Interrupt) Wait(ctx context.Context) (uint64, error) {
	select {
	case i.waitSem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-i.waitSem }()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	f, err := i.waitFile()
	if err != nil {
		return 0, err
	}

	readDone := cancelRead(ctx, f)
	n, err := f.Read(i.waitBuf[:])
	readDone()

	switch {
	case err == nil && n == len(i.waitBuf):
		return binary.NativeEndian.Uint64(i.waitBuf[:]), nil
	case err == nil:
		return 0, fmt.Errorf("waiting on interrupt eventfd %d: read %d bytes, want 8", i.fd, n)
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		return 0, ctx.Err()
	case errors.Is(err, os.ErrClosed):
		return 0, fmt.Errorf("waiting on interrupt eventfd %d: %w", i.fd, ErrClosed)
	}
	return 0, fmt.Errorf("waiting on interrupt eventfd %d: %w", i.fd, err)
}

// cancelRead makes a Read parked on f (through the runtime poller) return
// when ctx is done, by putting the read deadline in the past; call the
// function it returns once the Read has returned. context.AfterFunc starts
// a goroutine only when ctx is done, and the returned function keeps it
// from starting; if it did start, it waits for it before clearing the
// deadline, so that it cannot land on the next Read. A ctx that is never
// done costs nothing.
func cancelRead(ctx context.Context, f *os.File) (readReturned func()) {
	if ctx.Done() == nil {
		return noop
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		f.SetReadDeadline(past) // fails only once the file is closed, when Read returns anyway
		close(fired)
	})
	return func() {
		if !stop() {
			<-fired
			f.SetReadDeadline(time.Time{})
		}
	}
}

func noop() {}

// TryRead returns the count of signals since the last read and resets it
// to zero, without blocking: 0 and no error when nothing is pending. It is
// one read(2) and no allocation, for polling loops; it does not touch the
// runtime poller, so it never waits behind a Wait in progress.
func (i *Interrupt) TryRead() (uint64, error) {
	i.tryMu.Lock()
	defer i.tryMu.Unlock()
	i.tryCount, i.tryErr = 0, nil
	if err := i.rc.Control(i.tryFn); err != nil {
		return 0, fmt.Errorf("reading interrupt eventfd %d: %w", i.fd, ErrClosed)
	}
	if i.tryErr != nil {
		return 0, fmt.Errorf("reading interrupt eventfd %d: %w", i.fd, i.tryErr)
	}
	return i.tryCount, nil
}

// WaitThread blocks the calling OS thread until the eventfd is signalled
// (an interrupt, or Signal) or timeout passes. It returns true when the
// eventfd was signalled since the previous WaitThread returned (the first
// time: when its count is not zero) and its count has not been read since
// (epoll reports the edge only while the eventfd is readable), false when
// the wait timed out or one of the runtime's signals ended it. It is one system call, an
// epoll_wait(2) on an epoll instance that watches the eventfd
// edge-triggered, and it does not read the count: the eventfd's counter
// only grows while WaitThread is the way it is waited on (it holds 2^64-2
// signals), and a TryRead or Wait in between reads it as usual. Reading
// it as well would take a second system call per wake-up: with ppoll(2)
// and read(2), in a TCG guest, interrupt-driven I/O spent 35-50 % more
// kernel time per I/O (docs/performance.md).
//
// It is for a goroutine locked to its thread (runtime.LockOSThread) that
// polls its queues between waits, such as a completion loop. The wait is
// a raw system call the Go runtime is not told of, so the goroutine keeps
// its P while it sleeps. Wait, or any system call the runtime knows of, has
// sysmon hand the P to another thread after 20 µs and the woken goroutine
// get one back: in a TCG guest those hand-offs cost more CPU than the
// waiting goroutine's own work, and interrupt-driven I/O ran at a third to
// two thirds of the rate it does with WaitThread. The runtime can still
// preempt the goroutine: its signal ends the wait (epoll_wait is never
// restarted after a signal handler; a blocking read(2) would be, and would
// hold up a stop-the-world until the next interrupt). Keep timeout short
// for the same reason, and use Wait when other goroutines should run on
// the P meanwhile. The timeout is rounded up to a millisecond.
//
// WaitThread, TryRead and Signal leave the eventfd out of the runtime
// poller's epoll set: there each signal would also wake a thread blocked
// in the scheduler's epoll_wait, for nothing. Wait puts it there, until
// Close, so a loop that waits with WaitThread should not also use Wait on
// the same Interrupt.
//
// The first call makes a Waiter of the Interrupt's own (an epoll instance
// and a duplicate of the eventfd: two more file descriptors, until Close)
// and every call is its WaitThread. One WaitThread at a time; a Close
// meanwhile takes effect when it returns. It does not allocate.
func (i *Interrupt) WaitThread(timeout time.Duration) (bool, error) {
	w := i.thread.Load()
	if w == nil {
		var err error
		if w, err = i.makeThreadWaiter(); err != nil {
			return false, err
		}
	}
	return w.WaitThread(timeout)
}

// epollTimeout is d in epoll_wait's milliseconds: rounded up, 0 for
// negative d, at most the largest an int32 holds (24 days).
func epollTimeout(d time.Duration) int {
	ms := max(d, 0) / time.Millisecond
	if ms*time.Millisecond < d {
		ms++
	}
	return int(min(ms, math.MaxInt32))
}

// makeThreadWaiter makes WaitThread's Waiter, unless another WaitThread
// just did. It fails with ErrClosed once Close has begun, and then makes
// nothing.
func (i *Interrupt) makeThreadWaiter() (*Waiter, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil, fmt.Errorf("waiting on interrupt eventfd %d: %w", i.fd, ErrClosed)
	}
	if w := i.thread.Load(); w != nil {
		return w, nil
	}
	w, err := i.NewWaiter()
	if err != nil {
		return nil, err
	}
	i.thread.Store(w)
	return w, nil
}

// tryRead is TryRead's callback; i.tryMu is held.
func (i *Interrupt) tryRead(fd uintptr) {
	for {
		n, err := unix.Read(int(fd), i.tryBuf[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			// Nothing pending.
		case err != nil:
			i.tryErr = os.NewSyscallError("read", err)
		case n != len(i.tryBuf):
			i.tryErr = fmt.Errorf("read %d bytes, want 8", n)
		default:
			i.tryCount = binary.NativeEndian.Uint64(i.tryBuf[:])
		}
		return
	}
}

// Signal adds one to the eventfd's counter, waking a Wait: what a device
// vector does on an interrupt, done from software. Like TryRead it is one
// write(2) and no allocation. It fails only when the counter is at its
// maximum (2^64-2) or the Interrupt is closed.
func (i *Interrupt) Signal() error {
	i.sigMu.Lock()
	defer i.sigMu.Unlock()
	i.sigErr = nil
	if err := i.rc.Control(i.sigFn); err != nil {
		return fmt.Errorf("signalling interrupt eventfd %d: %w", i.fd, ErrClosed)
	}
	if i.sigErr != nil {
		return fmt.Errorf("signalling interrupt eventfd %d: %w", i.fd, i.sigErr)
	}
	return nil
}

// signal is Signal's callback; i.sigMu is held.
func (i *Interrupt) signal(fd uintptr) {
	binary.NativeEndian.PutUint64(i.sigBuf[:], 1)
	for {
		_, err := unix.Write(int(fd), i.sigBuf[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			i.sigErr = hint(os.NewSyscallError("write", err), "the counter is full: nobody reads this eventfd")
		case err != nil:
			i.sigErr = os.NewSyscallError("write", err)
		}
		return
	}
}

// Close closes the eventfd (and Wait's duplicate, which takes it out of
// the runtime poller, and WaitThread's epoll fd). A Wait in progress
// returns an error wrapping ErrClosed; a WaitThread, TryRead or Signal in
// progress keeps the fds it uses open until it returns. Close fails with
// ErrInUse while device vectors are connected to the eventfd. Closing
// twice returns nil.
func (i *Interrupt) Close() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil
	}
	if i.users > 0 {
		return fmt.Errorf("closing interrupt eventfd %d: %w: %d device interrupt vector(s) signal it; disconnect them, disable their IRQ index or close the device first", i.fd, ErrInUse, i.users)
	}
	i.closed = true
	var waitErr error
	if i.waitF != nil {
		// Removes the duplicate from the epoll set, wakes a Wait in
		// progress and returns once its Read has.
		waitErr = i.waitF.Close()
		i.waitF = nil
	}
	if w := i.thread.Load(); w != nil {
		// Its epoll fd is closed when a WaitThread in progress returns.
		// Not set to nil: a WaitThread that loaded it finds it closed.
		waitErr = errors.Join(waitErr, w.Close())
	}
	if err := i.f.Close(); err != nil {
		return fmt.Errorf("closing interrupt eventfd %d: %w", i.fd, err)
	}
	if waitErr != nil {
		return fmt.Errorf("closing interrupt eventfd %d: its duplicate for Wait or epoll fd for WaitThread: %w", i.fd, waitErr)
	}
	return nil
}

// acquire records that a device vector is about to be connected to the
// eventfd, which keeps Close from closing it; it fails once closed.
func (i *Interrupt) acquire() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return fmt.Errorf("interrupt eventfd %d: %w", i.fd, ErrClosed)
	}
	i.users++
	return nil
}

// release undoes acquire.
func (i *Interrupt) release() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.users > 0 {
		i.users--
	}
}

// String names the eventfd, for messages.
func (i *Interrupt) String() string { return "eventfd " + strconv.Itoa(i.fd) }
