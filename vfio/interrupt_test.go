package vfio

import (
	"context"
	"errors"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/fdleak"
)

// Eventfds work on any Linux kernel, so the Interrupt type is tested here on
// the host; the guest tests connect Interrupts to real device vectors.

// guard is how long a test waits for something that should happen at once
// before it declares a hang. It bounds a failure, it measures nothing.
const guard = 10 * time.Second

func testInterrupt(t testing.TB) *Interrupt {
	t.Helper()
	irq, err := NewInterrupt()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := irq.Close(); err != nil {
			t.Error(err)
		}
	})
	return irq
}

// waitResult is what a Wait in a goroutine returned.
type waitResult struct {
	n   uint64
	err error
}

func waitAsync(ctx context.Context, irq *Interrupt) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		n, err := irq.Wait(ctx)
		ch <- waitResult{n, err}
	}()
	return ch
}

func receive(t *testing.T, ch <-chan waitResult) waitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(guard):
		t.Fatal("Wait did not return")
		return waitResult{}
	}
}

// pending fails the test if ch already holds a result: the Wait behind it
// should still be parked.
func pending(t *testing.T, ch <-chan waitResult) {
	t.Helper()
	time.Sleep(20 * time.Millisecond)
	select {
	case r := <-ch:
		t.Fatalf("Wait returned %d, %v; want it still waiting", r.n, r.err)
	default:
	}
}

func TestInterruptCounts(t *testing.T) {
	irq := testInterrupt(t)
	if n, err := irq.TryRead(); n != 0 || err != nil {
		t.Errorf("TryRead of a fresh eventfd = %d, %v; want 0, nil", n, err)
	}
	for range 3 {
		if err := irq.Signal(); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := irq.TryRead(); n != 3 || err != nil {
		t.Errorf("TryRead after 3 signals = %d, %v; want 3, nil", n, err)
	}
	if n, err := irq.TryRead(); n != 0 || err != nil {
		t.Errorf("TryRead after reading = %d, %v; want 0, nil", n, err)
	}
	if err := irq.Signal(); err != nil {
		t.Fatal(err)
	}
	if n, err := irq.Wait(context.Background()); n != 1 || err != nil {
		t.Errorf("Wait with one signal pending = %d, %v; want 1, nil", n, err)
	}
	if irq.Fd() < 0 || !strings.Contains(irq.String(), strconv.Itoa(irq.Fd())) {
		t.Errorf("Fd() = %d, String() = %q", irq.Fd(), irq.String())
	}
}

func TestInterruptWaitBlocksUntilSignal(t *testing.T) {
	irq := testInterrupt(t)
	ch := waitAsync(context.Background(), irq)
	pending(t, ch)
	if err := irq.Signal(); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, ch); r.n != 1 || r.err != nil {
		t.Errorf("Wait = %d, %v; want 1, nil", r.n, r.err)
	}
}

func TestInterruptWaitCancel(t *testing.T) {
	irq := testInterrupt(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := waitAsync(ctx, irq)
	pending(t, ch)
	cancel()
	if r := receive(t, ch); r.n != 0 || !errors.Is(r.err, context.Canceled) {
		t.Errorf("Wait after cancel = %d, %v; want 0, context.Canceled", r.n, r.err)
	}

	// The deadline used to interrupt the read is gone: a later Wait
	// blocks again, and a signal reaches it.
	ch = waitAsync(context.Background(), irq)
	pending(t, ch)
	if err := irq.Signal(); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, ch); r.n != 1 || r.err != nil {
		t.Errorf("Wait after a cancelled Wait = %d, %v; want 1, nil", r.n, r.err)
	}
}

func TestInterruptWaitDeadline(t *testing.T) {
	irq := testInterrupt(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if n, err := irq.Wait(ctx); n != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait past its deadline = %d, %v; want 0, context.DeadlineExceeded", n, err)
	}
}

func TestInterruptWaitDoneContext(t *testing.T) {
	irq := testInterrupt(t)
	if err := irq.Signal(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := irq.Wait(ctx); n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a cancelled context = %d, %v; want 0, context.Canceled", n, err)
	}
	// The signal was not consumed.
	if n, err := irq.TryRead(); n != 1 || err != nil {
		t.Errorf("TryRead after the cancelled Wait = %d, %v; want 1, nil", n, err)
	}
}

func TestInterruptOneWaiterAtATime(t *testing.T) {
	irq := testInterrupt(t)
	first := waitAsync(context.Background(), irq)
	pending(t, first)

	// A second waiter queues behind the first and still honours its
	// context while it does.
	ctx, cancel := context.WithCancel(context.Background())
	second := waitAsync(ctx, irq)
	pending(t, second)
	cancel()
	if r := receive(t, second); !errors.Is(r.err, context.Canceled) {
		t.Errorf("queued Wait after cancel = %d, %v; want context.Canceled", r.n, r.err)
	}
	// The first never noticed.
	pending(t, first)
	if err := irq.Signal(); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, first); r.n != 1 || r.err != nil {
		t.Errorf("first Wait = %d, %v; want 1, nil", r.n, r.err)
	}
}

func TestInterruptTryReadDuringWait(t *testing.T) {
	irq := testInterrupt(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := waitAsync(ctx, irq)
	pending(t, ch)
	// TryRead does not wait behind the parked Wait.
	done := make(chan struct{})
	go func() {
		defer close(done)
		if n, err := irq.TryRead(); n != 0 || err != nil {
			t.Errorf("TryRead during a Wait = %d, %v; want 0, nil", n, err)
		}
	}()
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatal("TryRead blocked behind a Wait")
	}
	cancel()
	receive(t, ch)
}

func TestInterruptClose(t *testing.T) {
	irq, err := NewInterrupt()
	if err != nil {
		t.Fatal(err)
	}
	ch := waitAsync(context.Background(), irq)
	pending(t, ch)
	if err := irq.Close(); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, ch); !errors.Is(r.err, ErrClosed) {
		t.Errorf("Wait in progress at Close = %d, %v; want ErrClosed", r.n, r.err)
	}
	if err := irq.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := irq.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait after Close: %v, want ErrClosed", err)
	}
	if _, err := irq.TryRead(); !errors.Is(err, ErrClosed) {
		t.Errorf("TryRead after Close: %v, want ErrClosed", err)
	}
	if err := irq.Signal(); !errors.Is(err, ErrClosed) {
		t.Errorf("Signal after Close: %v, want ErrClosed", err)
	}
	if err := irq.acquire(); !errors.Is(err, ErrClosed) {
		t.Errorf("connecting a closed Interrupt: %v, want ErrClosed", err)
	}
}

func TestInterruptCloseWhileConnected(t *testing.T) {
	irq := testInterrupt(t)
	// What ConnectIRQs does before handing the fd to the kernel.
	if err := irq.acquire(); err != nil {
		t.Fatal(err)
	}
	err := irq.Close()
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "disconnect") {
		t.Errorf("Close while connected: %v, want ErrInUse saying what to do", err)
	}
	// Still open and working.
	if err := irq.Signal(); err != nil {
		t.Errorf("Signal after a refused Close: %v", err)
	}
	irq.release()
}

func TestInterruptFromFD(t *testing.T) {
	// A blocking eventfd, as another process might send one: Wait must
	// still be cancellable, which needs the fd made non-blocking.
	fd, err := unix.Eventfd(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	irq, err := InterruptFromFD(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	defer irq.Close()
	if irq.Fd() != fd {
		t.Errorf("Fd() = %d, want %d", irq.Fd(), fd)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil || flags&unix.O_NONBLOCK == 0 {
		t.Errorf("flags %#x, %v: want O_NONBLOCK", flags, err)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("fd flags %#x, %v: want FD_CLOEXEC", flags, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := irq.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait on an adopted eventfd: %v, want context.DeadlineExceeded", err)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := InterruptFromFD(int(r.Fd())); err == nil || !strings.Contains(err.Error(), "not an eventfd") {
		t.Errorf("a pipe: got %v, want an error saying it is not an eventfd", err)
	}
	if _, err := InterruptFromFD(-1); err == nil {
		t.Error("fd -1: got no error")
	}
}

// threads returns the number of OS threads of the process.
// threadsInRead counts this process's threads that are inside a read
// system call now, from /proc/self/task/*/syscall (the number of the call
// a thread is blocked in, or "running"). A goroutine parked on the runtime
// poller holds no thread; one blocked in read(2) holds one each.
func threadsInRead(t *testing.T) (inRead, all int) {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	read := strconv.Itoa(unix.SYS_READ) + " "
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/syscall")
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		all++
		if strings.HasPrefix(string(b), read) {
			inRead++
		}
	}
	return inRead, all
}

// TestInterruptWaitParksNoThread checks that Wait waits on the runtime
// poller: many goroutines waiting at once hold no OS thread blocked in
// read(2). The number of threads alone says too little: on a loaded host
// the runtime starts threads whenever a short system call is slow.
func TestInterruptWaitParksNoThread(t *testing.T) {
	const n = 64
	irqs := make([]*Interrupt, n)
	chs := make([]<-chan waitResult, n)
	for i := range irqs {
		irqs[i] = testInterrupt(t)
		chs[i] = waitAsync(context.Background(), irqs[i])
	}
	time.Sleep(50 * time.Millisecond)
	inRead, all := threadsInRead(t)
	t.Logf("%d goroutines in Wait: %d threads, %d of them in read(2)", n, all, inRead)
	if inRead >= n/2 {
		t.Errorf("%d goroutines in Wait hold %d threads blocked in read(2): Wait is not on the runtime poller", n, inRead)
	}
	for i, irq := range irqs {
		if err := irq.Signal(); err != nil {
			t.Fatal(err)
		}
		if r := receive(t, chs[i]); r.n != 1 || r.err != nil {
			t.Errorf("Wait %d = %d, %v", i, r.n, r.err)
		}
	}
}

// TestInterruptNoGoroutineLeak cancels many Waits, some before and some
// during the read, and checks that no goroutine stays behind.
func TestInterruptNoGoroutineLeak(t *testing.T) {
	irq := testInterrupt(t)
	before := runtime.NumGoroutine()
	for i := range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		if i%2 == 0 {
			cancel()
		} else {
			time.AfterFunc(time.Duration(i%5)*100*time.Microsecond, cancel)
		}
		if i%3 == 0 {
			if err := irq.Signal(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := irq.Wait(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		cancel()
	}
	var after int
	for start := time.Now(); time.Since(start) < guard; time.Sleep(10 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= before {
			return
		}
	}
	t.Errorf("%d goroutines before 200 cancelled Waits, %d after", before, after)
}

func TestInterruptNoFDLeak(t *testing.T) {
	before, err := fdleak.Take()
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		irq, err := NewInterrupt()
		if err != nil {
			t.Fatal(err)
		}
		if err := irq.Close(); err != nil {
			t.Fatal(err)
		}
	}
	after, err := fdleak.Take()
	if err != nil {
		t.Fatal(err)
	}
	if leaked := before.Leaked(after); len(leaked) > 0 {
		t.Errorf("100 Interrupts opened and closed leaked %v", leaked)
	}
}

func TestInterruptConcurrentSignals(t *testing.T) {
	irq := testInterrupt(t)
	const writers, each = 8, 1000
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				if err := irq.Signal(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var total uint64
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	for total < writers*each {
		n, err := irq.Wait(ctx)
		if err != nil {
			t.Fatalf("after %d of %d signals: %v", total, writers*each, err)
		}
		total += n
	}
	wg.Wait()
	if n, _ := irq.TryRead(); total+n != writers*each {
		t.Errorf("read %d signals, want %d", total+n, writers*each)
	}
}

func TestInterruptNoAllocs(t *testing.T) {
	irq := testInterrupt(t)
	if a := testing.AllocsPerRun(100, func() { irq.TryRead() }); a != 0 {
		t.Errorf("TryRead allocates %.1f times per call", a)
	}
	if a := testing.AllocsPerRun(100, func() { irq.Signal() }); a != 0 {
		t.Errorf("Signal allocates %.1f times per call", a)
	}
	ctx := context.Background()
	if a := testing.AllocsPerRun(100, func() { irq.Signal(); irq.Wait(ctx) }); a != 0 {
		t.Errorf("Wait without a cancellable context allocates %.1f times per call", a)
	}
}

func BenchmarkInterruptTryReadEmpty(b *testing.B) {
	irq := testInterrupt(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := irq.TryRead(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInterruptSignalTryRead(b *testing.B) {
	irq := testInterrupt(b)
	b.ReportAllocs()
	for b.Loop() {
		irq.Signal()
		if n, err := irq.TryRead(); n != 1 || err != nil {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkInterruptWakeup measures a signal from one goroutine waking a
// Wait in another, through the runtime poller.
func BenchmarkInterruptWakeup(b *testing.B) {
	irq := testInterrupt(b)
	ack := testInterrupt(b)
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := irq.Wait(ctx); err != nil {
				return
			}
			if ack.Signal() != nil {
				return
			}
		}
	}()
	b.ReportAllocs()
	for b.Loop() {
		irq.Signal()
		if _, err := ack.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// Stop the waiter: closing irq makes its Wait return.
	irq.Close()
	<-done
}

// TestInterruptWaitThread: WaitThread returns false when nothing came,
// true once for any number of signals since it last returned (leaving the
// count for TryRead), wakes on a signal from another goroutine, allocates
// nothing, and reports a closed Interrupt.
func TestInterruptWaitThread(t *testing.T) {
	irq := testInterrupt(t)
	// Nothing pending: false at the timeout, or earlier when one of the
	// runtime's signals (preemption, after ~10 ms) ends the wait; but it
	// does sleep, every time.
	start := time.Now()
	for range 10 {
		if woken, err := irq.WaitThread(20 * time.Millisecond); woken || err != nil {
			t.Fatalf("nothing pending: %v, %v", woken, err)
		}
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		// Each sleeps until its timeout or a preemption signal
		// (~10 ms); waits that returned at once would take far less.
		t.Errorf("ten 20 ms waits with nothing pending took %v: they do not each sleep", d)
	}
	for range 3 {
		if err := irq.Signal(); err != nil {
			t.Fatal(err)
		}
	}
	if woken, err := irq.WaitThread(time.Second); !woken || err != nil {
		t.Errorf("three signals: %v, %v", woken, err)
	}
	// Edge-triggered: the three signals wake it once, and the count
	// stays for TryRead (a level-triggered wait on a count nobody reads
	// would return at once, every time).
	if woken, err := irq.WaitThread(20 * time.Millisecond); woken || err != nil {
		t.Errorf("no signal since the last WaitThread: %v, %v", woken, err)
	}
	if n, err := irq.TryRead(); n != 3 || err != nil {
		t.Errorf("after WaitThread the count is %d (%v), want the 3 signals", n, err)
	}
	// A signal from another goroutine wakes a thread blocked in it.
	go func() {
		time.Sleep(10 * time.Millisecond)
		_ = irq.Signal()
	}()
	woken := false
	var err error
	for deadline := time.Now().Add(5 * time.Second); !woken && err == nil && time.Now().Before(deadline); {
		woken, err = irq.WaitThread(5 * time.Second) // false if a runtime signal ended the wait first
	}
	if !woken || err != nil {
		t.Errorf("signalled while waiting: %v, %v", woken, err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := irq.Signal(); err != nil {
			t.Fatal(err)
		}
		if woken, err := irq.WaitThread(time.Second); !woken || err != nil {
			t.Fatalf("%v, %v", woken, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%g allocations per Signal + WaitThread", allocs)
	}
	if err := irq.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := irq.WaitThread(time.Millisecond); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

func TestEpollTimeout(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int
	}{
		{-time.Second, 0}, {0, 0}, {time.Nanosecond, 1}, {time.Millisecond, 1},
		{time.Millisecond + 1, 2}, {100 * time.Millisecond, 100},
		{time.Duration(math.MaxInt64), math.MaxInt32},
	} {
		if got := epollTimeout(c.d); got != c.want {
			t.Errorf("epollTimeout(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}
