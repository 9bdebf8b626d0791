package nvmelike_test

import (
	"bytes"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// TestShadowDoorbells: with Doorbell Buffer Config the doorbell values go
// through memory; a controller that publishes its event indexes as it
// processes (QEMU's way) still gets an MMIO write per batch.
func TestShadowDoorbells(t *testing.T) {
	r := newRig(t, sim.Config{DoorbellBufferConfig: true, Namespaces: []sim.NamespaceConfig{{Blocks: 256, LBASize: 4096}}},
		&nvmelike.Options{ShadowDoorbells: true})
	q := r.queue(t, 8)
	ctx := testContext(t)
	buf := r.alloc(t, 4096)
	back := r.alloc(t, 4096)
	for i := range 20 {
		fill(buf.Bytes, byte(i))
		w := nvmelike.WriteCommand(1, uint64(i), 1, buf)
		if _, err := q.Exec(ctx, &w); err != nil {
			t.Fatal(err)
		}
		rd := nvmelike.ReadCommand(1, uint64(i), 1, back)
		if _, err := q.Exec(ctx, &rd); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes, back.Bytes) {
			t.Fatalf("round %d: data differs", i)
		}
	}
	if r.dev.Stats().ShadowReads == 0 {
		t.Error("the controller never read a shadow doorbell")
	}
	// Reset hands the (zeroed) buffers over again.
	if err := r.ctrl.Reset(ctx, nvmelike.ResetFail); err != nil {
		t.Fatal(err)
	}
	f := nvmelike.FlushCommand(1)
	for range 10 {
		if _, err := q.Exec(ctx, &f); err != nil {
			t.Fatalf("after reset: %v", err)
		}
	}
}

// TestShadowDoorbellsPolled: against a controller that polls the shadow
// doorbells, the host writes no MMIO doorbell after the first.
func TestShadowDoorbellsPolled(t *testing.T) {
	r := newRig(t, sim.Config{DoorbellBufferConfig: true, ShadowPolling: true},
		&nvmelike.Options{ShadowDoorbells: true})
	q := r.queue(t, 8)
	done := 0
	cb := func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		if err != nil {
			t.Error(err)
		}
		done++
	}
	f := nvmelike.FlushCommand(1)
	for range 40 { // five times round the rings
		if err := q.Submit(&f, cb); err != nil {
			t.Fatal(err)
		}
		q.Ring()
		r.dev.PollShadow()
		if _, err := q.Poll(0); err != nil {
			t.Fatal(err)
		}
	}
	r.dev.PollShadow()
	if !testing.Short() {
		allocs := testing.AllocsPerRun(200, func() {
			_ = q.Submit(&f, nil)
			q.Ring()
			r.dev.PollShadow()
			_, _ = q.Poll(0)
		})
		if allocs != 0 {
			t.Errorf("%v allocations per I/O with shadow doorbells", allocs)
		}
	}
	st := q.Stats()
	if done != 40 || st.SQDoorbells > 1 || st.CQDoorbells > 1 || st.ShadowOnly < 78 {
		t.Errorf("%d done, stats %+v", done, st)
	}
}

// TestShadowDoorbellsUnsupported: asking for shadow doorbells on a
// controller without them just leaves them off.
func TestShadowDoorbellsUnsupported(t *testing.T) {
	r := newRig(t, sim.Config{}, &nvmelike.Options{ShadowDoorbells: true})
	q := r.queue(t, 8)
	f := nvmelike.FlushCommand(1)
	if _, err := q.Exec(testContext(t), &f); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.ShadowOnly != 0 || st.SQDoorbells != 1 {
		t.Errorf("stats %+v", st)
	}
}
