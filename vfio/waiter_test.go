package vfio

import (
	"context"
	"errors"
	"testing"
	"time"
)

func testWaiter(t *testing.T, irq *Interrupt) *Waiter {
	t.Helper()
	w, err := irq.NewWaiter()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	})
	return w
}

func signal(t *testing.T, irq *Interrupt) {
	t.Helper()
	if err := irq.Signal(); err != nil {
		t.Fatal(err)
	}
}

// sleepsUntilSignal fails the test unless a Wait on w keeps sleeping
// while nothing is signalled and returns, without an error, once irq is.
func sleepsUntilSignal(t *testing.T, w *Waiter, irq *Interrupt, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.Wait(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("%s returned %v with nothing signalled", what, err)
	default:
	}
	signal(t, irq)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(guard):
		t.Fatalf("%s did not return after a signal", what)
	}
}

// woken fails the test unless w has a signal queued: a WaitThread that
// returns at once. Runtime signals can end a wait early, so it retries.
func woken(t *testing.T, w *Waiter, what string) {
	t.Helper()
	for deadline := time.Now().Add(guard); time.Now().Before(deadline); {
		ok, err := w.WaitThread(guard)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
	}
	t.Fatalf("%s: no wake-up", what)
}

// asleep fails the test if w has a signal queued.
func asleep(t *testing.T, w *Waiter, what string) {
	t.Helper()
	if ok, err := w.WaitThread(20 * time.Millisecond); ok || err != nil {
		t.Fatalf("%s: woken %v, %v; want nothing queued", what, ok, err)
	}
}

// TestWaitersEachSeeEverySignal is the point of Waiters: two queue pairs
// that share a vector each wake at each of its interrupts, whichever
// waits first, and through either kind of wait.
func TestWaitersEachSeeEverySignal(t *testing.T) {
	irq := testInterrupt(t)
	a, b := testWaiter(t, irq), testWaiter(t, irq)
	asleep(t, a, "a, before any signal")
	for range 3 {
		signal(t, irq)
		woken(t, a, "a")
		asleep(t, a, "a, once more for the same signal")
		woken(t, b, "b, after a took its wake-up")
		asleep(t, b, "b, once more")
	}
	// Several signals before a wait wake it once.
	signal(t, irq)
	signal(t, irq)
	woken(t, a, "a after two signals")
	asleep(t, a, "a, the second signal")
	woken(t, b, "b after two signals")
	// Wait (on the runtime poller) sees them the same way.
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	signal(t, irq)
	if err := a.Wait(ctx); err != nil {
		t.Fatalf("a.Wait: %v", err)
	}
	if err := b.Wait(ctx); err != nil {
		t.Fatalf("b.Wait: %v", err)
	}
	asleep(t, a, "a after Wait")
	// The Waiters never read the count.
	if n, err := irq.TryRead(); n != 6 || err != nil {
		t.Errorf("the count after 6 signals and the Waiters' waits: %d, %v", n, err)
	}
}

// TestWaiterWait checks that Wait parks until a signal, takes one queued
// before it (also from before NewWaiter, while the count was not zero),
// and returns ctx's error when ctx ends first.
func TestWaiterWait(t *testing.T) {
	irq := testInterrupt(t)
	signal(t, irq)
	w := testWaiter(t, irq)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- w.Wait(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a signal from before NewWaiter: %v", err)
		}
	case <-time.After(guard):
		t.Fatal("Wait did not take the signal from before NewWaiter")
	}
	sleepsUntilSignal(t, w, irq, "Wait")

	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- w.Wait(cctx) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Wait: %v", err)
		}
	case <-time.After(guard):
		t.Fatal("a cancelled Wait did not return")
	}
	// The cancelled wait left nothing behind: the next one waits for a
	// signal, then returns.
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer dcancel()
	if err := w.Wait(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with nothing signalled: %v, want the deadline", err)
	}
	signal(t, irq)
	if err := w.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestWaiterWaitTimeout: WaitTimeout takes a signal as Wait does, returns
// false without an error once its time is up, leaves no deadline behind
// for the next wait, and still ends early with its context.
func TestWaiterWaitTimeout(t *testing.T) {
	irq := testInterrupt(t)
	w := testWaiter(t, irq)
	ctx := context.Background()
	if ok, err := w.WaitTimeout(ctx, 20*time.Millisecond); ok || err != nil {
		t.Fatalf("nothing signalled: %v, %v; want false, nil", ok, err)
	}
	signal(t, irq)
	if ok, err := w.WaitTimeout(ctx, guard); !ok || err != nil {
		t.Fatalf("signalled: %v, %v; want true, nil", ok, err)
	}
	// The timed-out wait's deadline is gone: a Wait sleeps until the
	// next signal.
	sleepsUntilSignal(t, w, irq, "Wait after a timed-out WaitTimeout")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if ok, err := w.WaitTimeout(cctx, guard); ok || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v, %v", ok, err)
	}
}

// TestWaiterHiddenByRead pins down what Waiter's doc warns of: a count read
// between a signal and a wait hides the signal from the wait.
func TestWaiterHiddenByRead(t *testing.T) {
	irq := testInterrupt(t)
	w := testWaiter(t, irq)
	signal(t, irq)
	if n, err := irq.TryRead(); n != 1 || err != nil {
		t.Fatalf("TryRead: %d, %v", n, err)
	}
	asleep(t, w, "after the count was read")
}

// TestWaiterClose checks Close: a Wait in progress returns ErrClosed, later
// waits fail with it, Close twice is fine, and no fd stays open, whether or
// not the Interrupt was closed first (the Waiter keeps its own duplicate
// of the eventfd, so its watch lasts until then).
func TestWaiterClose(t *testing.T) {
	noFDLeak(t, "Waiters")
	irq, err := NewInterrupt()
	if err != nil {
		t.Fatal(err)
	}
	w, err := irq.NewWaiter()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Wait(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Wait during Close: %v, want ErrClosed", err)
		}
	case <-time.After(guard):
		t.Fatal("Close did not end a Wait")
	}
	if err := w.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait after Close: %v", err)
	}
	if _, err := w.WaitThread(time.Millisecond); !errors.Is(err, ErrClosed) {
		t.Errorf("WaitThread after Close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	w2, err := irq.NewWaiter()
	if err != nil {
		t.Fatal(err)
	}
	if err := irq.Close(); err != nil {
		t.Fatal(err)
	}
	asleep(t, w2, "after the Interrupt was closed")
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := irq.NewWaiter(); !errors.Is(err, ErrClosed) {
		t.Errorf("NewWaiter after the Interrupt's Close: %v, want ErrClosed", err)
	}
}

func TestWaiterWaitThreadNoAllocs(t *testing.T) {
	irq := testInterrupt(t)
	w := testWaiter(t, irq)
	allocs := testing.AllocsPerRun(100, func() {
		signal(t, irq)
		if ok, err := w.WaitThread(guard); !ok || err != nil {
			t.Fatalf("%v, %v", ok, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%g allocations per Signal + WaitThread", allocs)
	}
}
