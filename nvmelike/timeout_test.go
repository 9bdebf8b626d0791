package nvmelike_test

import (
	"errors"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// pollUntil polls q until done reports true or 5 s pass.
func pollUntil(t *testing.T, q *nvmelike.QueuePair, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatal("timed out polling")
		}
		if _, err := q.Poll(0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestTimeoutAbort: a command whose completion is lost fails with
// ErrTimeout through its callback, an Abort naming it reaches the
// controller, and its tracker is held until the late completion arrives.
func TestTimeoutAbort(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q, err := r.ctrl.CreateQueuePair(testContext(t), nvmelike.QueueOptions{Depth: 8, Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	buf := r.alloc(t, 4096)
	// A command that completes in time does not time out.
	ok := 0
	c := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
	if err := q.Submit(&c, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		if err != nil {
			t.Error(err)
		}
		ok++
	}); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	time.Sleep(30 * time.Millisecond)
	if _, err := q.Poll(0); err != nil || ok != 1 {
		t.Fatalf("poll: %v, %d callbacks", err, ok)
	}

	r.dev.DropCompletions(1)
	calls := 0
	var got error
	c.Tag = 5
	if err := q.Submit(&c, func(cmd *nvmelike.Command, _ nvmelike.Completion, err error) {
		calls++
		got = err
		if cmd.Tag != 5 {
			t.Errorf("callback with tag %d", cmd.Tag)
		}
	}); err != nil {
		t.Fatal(err)
	}
	in, found := q.InFlight(buf.IOVA)
	if !found {
		t.Fatal("command not in flight")
	}
	start := time.Now()
	q.Ring()
	pollUntil(t, q, func() bool { return calls > 0 })
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Errorf("timed out after %v", el)
	}
	if calls != 1 || !errors.Is(got, nvmelike.ErrTimeout) {
		t.Fatalf("%d callbacks, %v", calls, got)
	}
	st := r.dev.Stats()
	if st.Aborts != 1 || st.LastAbortSQID != q.ID() || st.LastAbortCID != in.CID {
		t.Errorf("controller saw %d aborts, the last of SQ %d CID 0x%04x; want SQ %d CID 0x%04x",
			st.Aborts, st.LastAbortSQID, st.LastAbortCID, q.ID(), in.CID)
	}
	if as := r.ctrl.AbortStats(); as.Requested != 1 || as.Sent != 1 || as.Dropped != 0 {
		t.Errorf("abort stats %+v", as)
	}
	if q.Outstanding() != 1 || q.Stats().Timeouts != 1 {
		t.Fatalf("%d outstanding, stats %+v", q.Outstanding(), q.Stats())
	}
	// The late completion frees the tracker, and is not delivered again.
	if !r.dev.PostRaw(q.ID(), nvmelike.Completion{CID: in.CID, SQID: q.ID(), SQHead: 2}) {
		t.Fatal("PostRaw")
	}
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || q.Outstanding() != 0 || q.Stats().Orphaned != 1 {
		t.Errorf("%d callbacks, %d outstanding, stats %+v", calls, q.Outstanding(), q.Stats())
	}
	// Admin commands still work, and reap the Abort's completion.
	if _, err := r.ctrl.IdentifyNamespace(testContext(t), 1); err != nil {
		t.Fatal(err)
	}
}

// TestTimeoutDelayed: a completion that arrives after the timeout frees
// the tracker; an Exec on the same queue is not subject to the timeout.
func TestTimeoutDelayed(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	q.SetTimeout(5 * time.Millisecond)
	if q.Timeout() != 5*time.Millisecond {
		t.Fatalf("Timeout %v", q.Timeout())
	}
	r.dev.DelayCompletions(200 * time.Millisecond)
	var got []error
	cb := func(_ *nvmelike.Command, _ nvmelike.Completion, err error) { got = append(got, err) }
	cmds := []nvmelike.Command{nvmelike.FlushCommand(1), nvmelike.FlushCommand(1)}
	if n, err := q.SubmitBatch(cmds, cb); n != 2 || err != nil {
		t.Fatalf("SubmitBatch: %d, %v", n, err)
	}
	pollUntil(t, q, func() bool { return len(got) == 2 })
	for _, err := range got {
		if !errors.Is(err, nvmelike.ErrTimeout) {
			t.Errorf("callback: %v", err)
		}
	}
	if q.Outstanding() != 2 {
		t.Errorf("%d outstanding after the timeouts", q.Outstanding())
	}
	pollUntil(t, q, func() bool { return q.Outstanding() == 0 })
	if st := q.Stats(); st.Orphaned != 2 || st.Timeouts != 2 || len(got) != 2 {
		t.Errorf("stats %+v, %d callbacks", st, len(got))
	}
	if n := r.dev.Stats().Aborts; n != 2 {
		t.Errorf("%d aborts", n)
	}
	f := nvmelike.FlushCommand(1)
	if _, err := q.Exec(testContext(t), &f); err != nil {
		t.Errorf("Exec with a 200 ms completion on a queue with a 5 ms timeout: %v", err)
	}
}

// TestTimeoutDelete: a timed-out command's tracker is freed when the queue
// pair is deleted, without a second callback.
func TestTimeoutDelete(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	r.dev.DropCompletions(1)
	calls := 0
	c := nvmelike.FlushCommand(1)
	if err := q.SubmitTimeout(&c, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		calls++
		if !errors.Is(err, nvmelike.ErrTimeout) {
			t.Errorf("callback: %v", err)
		}
	}, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	pollUntil(t, q, func() bool { return calls > 0 })
	if q.Outstanding() != 1 {
		t.Fatalf("%d outstanding", q.Outstanding())
	}
	if err := r.ctrl.DeleteQueuePair(testContext(t), q); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || q.Outstanding() != 0 {
		t.Errorf("%d callbacks, %d outstanding", calls, q.Outstanding())
	}
}

// TestTimeoutSplit: a split command times out as one, with an Abort for
// each part still on the device.
func TestTimeoutSplit(t *testing.T) {
	r := newRig(t, sim.Config{MDTS: 1, Namespaces: []sim.NamespaceConfig{{Blocks: 1024, LBASize: 512}}}, nil)
	q := r.queue(t, 8)
	buf := r.alloc(t, 24<<10)
	r.dev.DropCompletions(2) // parts 1 and 2 of 3
	calls := 0
	c := nvmelike.ReadCommand(1, 0, 48, buf)
	if err := q.SubmitTimeout(&c, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		calls++
		if !errors.Is(err, nvmelike.ErrTimeout) {
			t.Errorf("callback: %v", err)
		}
	}, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	pollUntil(t, q, func() bool { return calls > 0 })
	if n := r.dev.Stats().Aborts; n != 2 {
		t.Errorf("%d aborts, want one per lost part", n)
	}
	if calls != 1 || q.Outstanding() != 2 {
		t.Errorf("%d callbacks, %d outstanding", calls, q.Outstanding())
	}
	if err := r.ctrl.DeleteQueuePair(testContext(t), q); err != nil {
		t.Fatal(err)
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d outstanding after delete", q.Outstanding())
	}
}

// TestTimeoutNoAllocations: timed submissions and the Poll that checks
// them allocate nothing.
func TestTimeoutNoAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counting is skipped in -short mode")
	}
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 1024, LBASize: 4096}}}, nil)
	q, err := r.ctrl.CreateQueuePair(testContext(t), nvmelike.QueueOptions{Depth: 64, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	buf := r.alloc(t, 8192)
	cb := nvmelike.Callback(func(*nvmelike.Command, nvmelike.Completion, error) {})
	read := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 4096))
	batch := []nvmelike.Command{read, read}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := q.Submit(&read, cb); err != nil {
			t.Fatal(err)
		}
		if err := q.SubmitTimeout(&read, cb, time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := q.SubmitBatch(batch, cb); err != nil {
			t.Fatal(err)
		}
		if n, err := q.Poll(0); n != 4 || err != nil {
			t.Fatalf("poll %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run", allocs)
	}
}

// TestTimeoutDuringDelete: a command found timed out by the Poll inside
// DeleteQueuePair (which holds the controller's lock) neither deadlocks
// nor loses its Abort: the deletion's own admin commands carry it.
func TestTimeoutDuringDelete(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	r.dev.DropCompletions(1)
	calls := 0
	c := nvmelike.FlushCommand(1)
	if err := q.SubmitTimeout(&c, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		calls++
		if !errors.Is(err, nvmelike.ErrTimeout) {
			t.Errorf("callback: %v", err)
		}
	}, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	time.Sleep(5 * time.Millisecond)
	if err := r.ctrl.DeleteQueuePair(testContext(t), q); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || q.Outstanding() != 0 {
		t.Errorf("%d callbacks, %d outstanding", calls, q.Outstanding())
	}
	if n := r.dev.Stats().Aborts; n != 1 {
		t.Errorf("%d aborts", n)
	}
	if as := r.ctrl.AbortStats(); as.Sent != 1 {
		t.Errorf("abort stats %+v", as)
	}
}
