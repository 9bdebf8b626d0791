package nvmelike_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// TestResetAfterFatal: a controller with CSTS.CFS comes back with Reset;
// outstanding commands fail with ErrReset; the queue pairs work again with
// the same values.
func TestResetAfterFatal(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 64, LBASize: 4096}}}, nil)
	q1 := r.queue(t, 8)
	q2 := r.queue(t, 8)
	ctx := testContext(t)
	buf := r.alloc(t, 4096)
	fill(buf.Bytes, 1)
	w := nvmelike.WriteCommand(1, 3, 1, buf)
	if _, err := q1.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}
	// Two commands in flight when the controller dies.
	r.dev.DropCompletions(2)
	var errs []error
	cb := func(_ *nvmelike.Command, _ nvmelike.Completion, err error) { errs = append(errs, err) }
	f := nvmelike.FlushCommand(1)
	for _, q := range []*nvmelike.QueuePair{q1, q2} {
		if err := q.Submit(&f, cb); err != nil {
			t.Fatal(err)
		}
		q.Ring()
	}
	r.dev.SetFatal()
	if _, err := q1.Exec(ctx, &f); !errors.Is(err, nvmelike.ErrControllerFatal) {
		t.Fatalf("Exec on a fatal controller: %v", err)
	}

	if err := r.ctrl.Reset(ctx, nvmelike.ResetFail); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if len(errs) != 2 || !errors.Is(errs[0], nvmelike.ErrReset) || !errors.Is(errs[1], nvmelike.ErrReset) {
		t.Errorf("callbacks: %v", errs)
	}
	if err := r.ctrl.Check(); err != nil {
		t.Fatalf("Check after reset: %v", err)
	}
	for _, q := range []*nvmelike.QueuePair{q1, q2} {
		if q.Outstanding() != 0 {
			t.Errorf("queue %d: %d outstanding", q.ID(), q.Outstanding())
		}
		back := r.alloc(t, 4096)
		rd := nvmelike.ReadCommand(1, 3, 1, back)
		for range 20 { // enough to wrap the rings
			if _, err := q.Exec(ctx, &rd); err != nil {
				t.Fatalf("queue %d after reset: %v", q.ID(), err)
			}
		}
		if !bytes.Equal(back.Bytes, buf.Bytes) {
			t.Errorf("queue %d: data written before the reset differs", q.ID())
		}
	}
	if _, err := r.ctrl.IdentifyNamespace(ctx, 1); err != nil {
		t.Errorf("admin after reset: %v", err)
	}
}

// TestResetRetry: commands outstanding at the reset run again and complete
// through their callbacks.
func TestResetRetry(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 64, LBASize: 4096}}}, nil)
	q := r.queue(t, 8)
	ctx := testContext(t)
	buf := r.alloc(t, 3*4096)
	fill(buf.Bytes, 7)
	r.dev.DropCompletions(3) // the writes run, but nobody hears of it
	done := map[uint64]error{}
	cb := func(cmd *nvmelike.Command, _ nvmelike.Completion, err error) { done[cmd.Tag] = err }
	for i := range 3 {
		w := nvmelike.WriteCommand(1, uint64(10+i), 1, buf.Slice(i*4096, 4096))
		w.Tag = uint64(i)
		if err := q.Submit(&w, cb); err != nil {
			t.Fatal(err)
		}
	}
	q.Ring()
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if len(done) != 0 {
		t.Fatalf("completions before the reset: %v", done)
	}
	if err := r.ctrl.Reset(ctx, nvmelike.ResetRetry); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if len(done) != 3 || done[0] != nil || done[1] != nil || done[2] != nil {
		t.Errorf("after the retry: %v", done)
	}
	if !bytes.Equal(r.dev.NamespaceData(1)[10*4096:13*4096], buf.Bytes) {
		t.Error("retried writes did not land")
	}
}

func TestResetDeviceGone(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	r.queue(t, 8)
	r.dev.Remove()
	if err := r.ctrl.Reset(testContext(t), nvmelike.ResetFail); !errors.Is(err, nvmelike.ErrDeviceGone) {
		t.Fatalf("Reset: %v, want ErrDeviceGone", err)
	}
}

// TestResetFromOutside: a controller reset behind the engine's back (a
// Function Level Reset through sysfs) loses every queue. Check says so,
// waits and admin commands fail with ErrNotReady at once instead of
// running into their timeouts, Reset brings the queue pairs back with the
// commands that were outstanding, and Close after another such reset
// frees everything.
func TestResetFromOutside(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 64, LBASize: 4096}}}, &nvmelike.Options{AdminTimeout: time.Hour})
	q := r.queue(t, 8)
	ctx := testContext(t)
	if err := q.Check(); err != nil {
		t.Fatalf("Check before: %v", err)
	}
	buf := r.alloc(t, 2*4096)
	fill(buf.Bytes, 9)
	done := map[uint64]error{}
	cb := func(cmd *nvmelike.Command, _ nvmelike.Completion, err error) { done[cmd.Tag] = err }
	for i := range 2 {
		w := nvmelike.WriteCommand(1, uint64(20+i), 1, buf.Slice(i*4096, 4096))
		w.Tag = uint64(i)
		if err := q.Submit(&w, cb); err != nil {
			t.Fatal(err)
		}
	}
	// The reset comes before the doorbell: the device never saw them.
	r.dev.FunctionReset()
	q.Ring()
	if err := q.Check(); !errors.Is(err, nvmelike.ErrNotReady) {
		t.Fatalf("queue pair Check: %v, want ErrNotReady", err)
	}
	if err := r.ctrl.Check(); !errors.Is(err, nvmelike.ErrNotReady) {
		t.Fatalf("controller Check: %v, want ErrNotReady", err)
	}
	// Bounded by testContext, not by the hour-long admin timeout: both
	// must notice the reset.
	f := nvmelike.FlushCommand(1)
	if _, err := q.Exec(ctx, &f); !errors.Is(err, nvmelike.ErrNotReady) {
		t.Fatalf("Exec: %v, want ErrNotReady", err)
	}
	if _, err := r.ctrl.IdentifyNamespace(ctx, 1); !errors.Is(err, nvmelike.ErrNotReady) {
		t.Fatalf("admin command: %v, want ErrNotReady", err)
	}
	if len(done) != 0 {
		t.Fatalf("callbacks before the recovery: %v", done)
	}

	if err := r.ctrl.Reset(ctx, nvmelike.ResetRetry); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if err := q.Check(); err != nil {
		t.Fatalf("Check after Reset: %v", err)
	}
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if len(done) != 2 || done[0] != nil || done[1] != nil {
		t.Errorf("retried commands: %v", done)
	}
	if !bytes.Equal(r.dev.NamespaceData(1)[20*4096:22*4096], buf.Bytes) {
		t.Error("retried writes did not land")
	}

	if err := r.mem.Free(buf); err != nil {
		t.Fatal(err)
	}
	r.dev.FunctionReset()
	if err := r.ctrl.Close(); !errors.Is(err, nvmelike.ErrNotReady) {
		t.Errorf("Close after a reset from outside: %v, want ErrNotReady", err)
	}
	if n := r.mem.Regions(); n != 0 {
		t.Errorf("%d DMA regions left", n)
	}
}
