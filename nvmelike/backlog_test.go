package nvmelike_test

import (
	"errors"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// TestBacklog: with a backlog, Submit accepts commands past a full queue
// and Poll submits them in order; past the backlog it is ErrBacklogFull
// (an ErrQueueFull); without one, ErrQueueFull as before.
func TestBacklog(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 4) // 3 commands in flight at most
	buf := r.alloc(t, 512)
	var order []uint64
	cb := func(c *nvmelike.Command, _ nvmelike.Completion, err error) {
		if err != nil {
			t.Errorf("command %d: %v", c.Tag, err)
		}
		order = append(order, c.Tag)
	}
	submit := func(tag uint64) error {
		c := nvmelike.ReadCommand(1, tag, 1, buf)
		c.Tag = tag
		return q.Submit(&c, cb)
	}
	for i := range 3 {
		if err := submit(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := submit(3); err != nvmelike.ErrQueueFull {
		t.Fatalf("a fourth command without a backlog: %v, want ErrQueueFull", err)
	}
	if err := q.SetBacklog(5); err != nil {
		t.Fatal(err)
	}
	for i := 3; i < 8; i++ {
		if err := submit(uint64(i)); err != nil {
			t.Fatalf("command %d into the backlog: %v", i, err)
		}
	}
	if err := submit(8); !errors.Is(err, nvmelike.ErrBacklogFull) || !errors.Is(err, nvmelike.ErrQueueFull) {
		t.Fatalf("past the backlog: %v, want ErrBacklogFull", err)
	}
	if q.Backlogged() != 5 || q.Outstanding() != 3 {
		t.Fatalf("%d backlogged, %d outstanding; want 5 and 3", q.Backlogged(), q.Outstanding())
	}
	if err := q.SetBacklog(10); err == nil {
		t.Fatal("SetBacklog with commands in the backlog succeeded")
	}
	q.Ring()
	for len(order) < 8 {
		if _, err := q.Poll(0); err != nil {
			t.Fatal(err)
		}
	}
	for i, tag := range order {
		if tag != uint64(i) {
			t.Fatalf("completion order %v, want submission order", order)
		}
	}
	if st := q.Stats(); st.Backlogged != 5 || q.Backlogged() != 0 || q.Outstanding() != 0 {
		t.Fatalf("stats %+v, %d backlogged, %d outstanding", st, q.Backlogged(), q.Outstanding())
	}
}

// TestBacklogReset: a reset that fails outstanding commands fails the
// backlogged ones too.
func TestBacklogReset(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 2)
	if err := q.SetBacklog(4); err != nil {
		t.Fatal(err)
	}
	buf := r.alloc(t, 512)
	var errs []error
	for range 4 {
		c := nvmelike.ReadCommand(1, 0, 1, buf)
		if err := q.Submit(&c, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) { errs = append(errs, err) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.ctrl.Reset(testContext(t), nvmelike.ResetFail); err != nil {
		t.Fatal(err)
	}
	if len(errs) != 4 {
		t.Fatalf("%d callbacks after the reset, want 4", len(errs))
	}
	for _, err := range errs {
		if !errors.Is(err, nvmelike.ErrReset) {
			t.Errorf("%v, want ErrReset", err)
		}
	}
	if q.Backlogged() != 0 || q.Outstanding() != 0 {
		t.Fatalf("%d backlogged, %d outstanding after the reset", q.Backlogged(), q.Outstanding())
	}
}

// TestBacklogAllocatesNothing: a command through the backlog and back
// out costs no allocation.
func TestBacklogAllocatesNothing(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 2)
	if err := q.SetBacklog(2); err != nil {
		t.Fatal(err)
	}
	buf := r.alloc(t, 512)
	cmd := nvmelike.ReadCommand(1, 0, 1, buf)
	cb := nvmelike.Callback(func(*nvmelike.Command, nvmelike.Completion, error) {})
	allocs := testing.AllocsPerRun(1000, func() {
		if err := q.Submit(&cmd, cb); err != nil { // into the SQ
			t.Fatal(err)
		}
		if err := q.Submit(&cmd, cb); err != nil { // into the backlog
			t.Fatal(err)
		}
		q.Ring()
		for q.Outstanding() > 0 || q.Backlogged() > 0 {
			if _, err := q.Poll(0); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per backlogged command", allocs)
	}
}

// TestBacklogSubmitWait: with the SQ and the backlog full, SubmitWait
// polls until there is room instead of returning ErrBacklogFull.
func TestBacklogSubmitWait(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 2)
	if err := q.SetBacklog(1); err != nil {
		t.Fatal(err)
	}
	buf := r.alloc(t, 512)
	done := 0
	cb := func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		if err != nil {
			t.Error(err)
		}
		done++
	}
	for range 2 { // one into the SQ, one into the backlog
		c := nvmelike.ReadCommand(1, 0, 1, buf)
		if err := q.Submit(&c, cb); err != nil {
			t.Fatal(err)
		}
	}
	c := nvmelike.ReadCommand(1, 0, 1, buf)
	if err := q.SubmitWait(testContext(t), &c, cb); err != nil {
		t.Fatalf("SubmitWait with SQ and backlog full: %v", err)
	}
	q.Ring()
	for done < 3 {
		if _, err := q.Poll(0); err != nil {
			t.Fatal(err)
		}
	}
}
