package nvmelike_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// TestDroppedCompletion: Exec gives up when its context ends, the tracker
// stays reserved (the device might still use the buffer), and the queue
// keeps working.
func TestDroppedCompletion(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	buf := r.alloc(t, 4096)
	r.dev.DropCompletions(1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	c := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
	if _, err := q.Exec(ctx, &c); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Exec with a dropped completion: %v, want DeadlineExceeded", err)
	}
	if q.Outstanding() != 1 {
		t.Errorf("%d outstanding after the timeout, want the orphan", q.Outstanding())
	}
	if _, err := q.Exec(testContext(t), &c); err != nil {
		t.Fatalf("next Exec: %v", err)
	}
	// Deleting the queue frees the orphan.
	if err := r.ctrl.DeleteQueuePair(testContext(t), q); err != nil {
		t.Fatal(err)
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d outstanding after delete", q.Outstanding())
	}
}

// TestDroppedCompletionAsync: a callback's command whose completion is
// dropped completes with ErrClosed when the queue is deleted.
func TestDroppedCompletionAsync(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	r.dev.DropCompletions(1)
	var got error
	calls := 0
	c := nvmelike.FlushCommand(1)
	if err := q.Submit(&c, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) { calls++; got = err }); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	if n, err := q.Poll(0); n != 0 || err != nil {
		t.Fatalf("poll %d, %v", n, err)
	}
	if err := r.ctrl.DeleteQueuePair(testContext(t), q); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || !errors.Is(got, nvmelike.ErrClosed) {
		t.Errorf("%d calls, %v", calls, got)
	}
}

// TestDuplicateCompletion: the second copy of a completion is detected as
// stale and dropped, even when the tracker was reused in between.
func TestDuplicateCompletion(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	calls := map[uint64]int{}
	cb := func(cmd *nvmelike.Command, _ nvmelike.Completion, err error) {
		if err != nil {
			t.Errorf("callback: %v", err)
		}
		calls[cmd.Tag]++
	}
	r.dev.DuplicateCompletions(1)
	c := nvmelike.FlushCommand(1)
	c.Tag = 1
	if err := q.Submit(&c, cb); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	n, err := q.Poll(1) // just the first copy
	if n != 1 || err != nil {
		t.Fatalf("poll %d, %v", n, err)
	}
	// Reuse the tracker before the duplicate is seen.
	c.Tag = 2
	if err := q.Submit(&c, cb); err != nil {
		t.Fatal(err)
	}
	n, err = q.Poll(0) // the duplicate; tag 2 is not rung yet
	if n != 0 || !errors.Is(err, nvmelike.ErrStaleCID) {
		t.Fatalf("poll of the duplicate: %d, %v, want ErrStaleCID", n, err)
	}
	var ce *nvmelike.CQEError
	if !errors.As(err, &ce) || ce.QID != q.ID() {
		t.Errorf("error %#v", err)
	}
	q.Ring()
	if n, err := q.Poll(0); n != 1 || err != nil {
		t.Fatalf("poll %d, %v", n, err)
	}
	if calls[1] != 1 || calls[2] != 1 {
		t.Errorf("callbacks %v: a duplicate was delivered", calls)
	}
	if st := q.Stats(); st.Dropped != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestDuplicateCompletionOfExec: a duplicate completion for a waiting
// Exec, in the same poll batch, is dropped.
func TestDuplicateCompletionOfExec(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	r.dev.DuplicateCompletions(1)
	c := nvmelike.FlushCommand(1)
	if _, err := q.Exec(testContext(t), &c); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Completed != 1 || st.Dropped != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestGarbledCID: a completion whose CID was corrupted is not delivered to
// any command; the command it belonged to times out.
func TestGarbledCID(t *testing.T) {
	for _, x := range []uint16{0x8000, 0x0400, 0x0007} {
		r := newRig(t, sim.Config{}, nil)
		q := r.queue(t, 8)
		// Keep other trackers busy so a flipped index can hit one.
		other := 0
		for range 3 {
			c := nvmelike.FlushCommand(1)
			if err := q.Submit(&c, func(*nvmelike.Command, nvmelike.Completion, error) { other++ }); err != nil {
				t.Fatal(err)
			}
		}
		r.dev.DropCompletions(3) // they stay outstanding
		q.Ring()
		r.dev.GarbleCIDs(1, x)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		c := nvmelike.FlushCommand(1)
		_, err := q.Exec(ctx, &c)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("xor 0x%x: Exec: %v", x, err)
		}
		st := q.Stats()
		if st.Dropped != 1 || other != 0 {
			t.Errorf("xor 0x%x: stats %+v, other callbacks %d", x, st, other)
		}
	}
}

func TestInvalidCIDFromPoll(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 7) // 6 trackers and the spare: index bits 3, index 7 is invalid
	if !r.dev.PostRaw(q.ID(), nvmelike.Completion{CID: 7, SQID: q.ID()}) {
		t.Fatal("PostRaw")
	}
	n, err := q.Poll(0)
	if n != 0 || !errors.Is(err, nvmelike.ErrInvalidCID) {
		t.Fatalf("poll %d, %v, want ErrInvalidCID", n, err)
	}
	if !r.dev.PostRaw(q.ID(), nvmelike.Completion{CID: 2, SQID: q.ID()}) {
		t.Fatal("PostRaw")
	}
	if n, err := q.Poll(0); n != 0 || !errors.Is(err, nvmelike.ErrStaleCID) {
		t.Fatalf("poll %d, %v, want ErrStaleCID", n, err)
	}
}

func TestControllerFatal(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	r.dev.SetFatal()
	c := nvmelike.FlushCommand(1)
	if _, err := q.Exec(testContext(t), &c); !errors.Is(err, nvmelike.ErrControllerFatal) {
		t.Fatalf("Exec: %v, want ErrControllerFatal", err)
	}
	if err := r.ctrl.Check(); !errors.Is(err, nvmelike.ErrControllerFatal) {
		t.Errorf("Check: %v", err)
	}
	// Close cannot shut a dead controller down cleanly; it resets it and
	// says why, without hanging.
	if err := r.ctrl.Close(); !errors.Is(err, nvmelike.ErrControllerFatal) {
		t.Errorf("Close of a fatal controller: %v", err)
	}
	// The reset stopped all DMA, so everything was freed.
	if n := r.mem.Regions(); n != 0 {
		t.Errorf("%d DMA regions left", n)
	}
}

func TestSurpriseRemoval(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	r.dev.Remove()
	c := nvmelike.FlushCommand(1)
	if _, err := q.Exec(testContext(t), &c); !errors.Is(err, nvmelike.ErrDeviceGone) {
		t.Fatalf("Exec: %v, want ErrDeviceGone", err)
	}
	if _, err := r.ctrl.IdentifyNamespace(testContext(t), 1); !errors.Is(err, nvmelike.ErrDeviceGone) {
		t.Fatalf("admin command: %v, want ErrDeviceGone", err)
	}
	if err := r.ctrl.Close(); !errors.Is(err, nvmelike.ErrDeviceGone) {
		t.Errorf("Close: %v, want ErrDeviceGone", err)
	}
	if n := r.mem.Regions(); n != 0 {
		t.Errorf("%d DMA regions left", n)
	}
}

// TestDelayedCompletions: completions posted from another goroutine (run
// under -race) arrive whole and in any batch shape.
func TestDelayedCompletions(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 1024, LBASize: 4096}}}, nil)
	q := r.queue(t, 16)
	r.dev.DelayCompletions(200 * time.Microsecond)
	buf := r.alloc(t, 15*4096)
	done := 0
	var cbErr error
	for round := range 10 {
		for i := range 15 {
			b := buf.Slice(i*4096, 4096)
			c := nvmelike.ReadCommand(1, uint64(round*15+i), 1, b)
			if err := q.Submit(&c, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
				if err != nil {
					cbErr = err
				}
				done++
			}); err != nil {
				t.Fatal(err)
			}
		}
		q.Ring()
		deadline := time.Now().Add(5 * time.Second)
		for q.Outstanding() > 0 && time.Now().Before(deadline) {
			if _, err := q.Poll(4); err != nil {
				t.Fatal(err)
			}
		}
	}
	if done != 150 || cbErr != nil {
		t.Fatalf("%d done, %v", done, cbErr)
	}
	// Sync Exec with a delayed completion.
	c := nvmelike.FlushCommand(1)
	if _, err := q.Exec(testContext(t), &c); err != nil {
		t.Fatal(err)
	}
}

// TestCQOverflowFromDuplicates: a controller posting more completions than
// commands cannot make Poll misroute or loop.
func TestManyDuplicates(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 4)
	r.dev.DuplicateCompletions(100)
	good := 0
	for range 50 {
		c := nvmelike.FlushCommand(1)
		if err := q.Submit(&c, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
			if err == nil {
				good++
			}
		}); err != nil {
			t.Fatal(err)
		}
		q.Ring()
		for range 3 {
			_, _ = q.Poll(0)
		}
	}
	if good != 50 {
		t.Errorf("%d of 50 delivered", good)
	}
	if st := q.Stats(); st.Dropped != 50 {
		t.Errorf("stats %+v", st)
	}
}

// TestAdminTimeout: an admin command without a deadline of its own is
// bounded by Options.AdminTimeout.
func TestAdminTimeout(t *testing.T) {
	r := newRig(t, sim.Config{}, &nvmelike.Options{AdminTimeout: 50 * time.Millisecond})
	r.dev.DropAdminCompletions(1)
	_, err := r.ctrl.IdentifyNamespace(context.Background(), 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("IdentifyNamespace: %v, want DeadlineExceeded", err)
	}
	if _, err := r.ctrl.IdentifyNamespace(context.Background(), 1); err != nil {
		t.Fatalf("next admin command: %v", err)
	}
	// The buffer the lost command may still write to is freed only after
	// shutdown.
	if err := r.ctrl.Close(); err != nil {
		t.Fatal(err)
	}
	if n := r.mem.Regions(); n != 0 {
		t.Errorf("%d DMA regions left", n)
	}
}
