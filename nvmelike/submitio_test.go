package nvmelike_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// ioResults records what an IOCallback was given, by tag.
type ioResults struct {
	errs  map[uint64]error
	calls int
}

func (r *ioResults) callback(tag uint64, _ nvmelike.Completion, err error) {
	r.calls++
	r.errs[tag] = err
}

func ioRig(t *testing.T, depth int) (*rig, *nvmelike.QueuePair, *ioResults) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 256, LBASize: 4096}}}, nil)
	q := r.queue(t, depth)
	res := &ioResults{errs: map[uint64]error{}}
	q.SetIOCallback(res.callback)
	return r, q, res
}

func drain(t *testing.T, q *nvmelike.QueuePair) {
	t.Helper()
	q.Ring()
	for range 100 {
		if q.Outstanding() == 0 {
			return
		}
		if _, err := q.Poll(0); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("%d commands still outstanding", q.Outstanding())
}

// TestSubmitIORoundTrip: writes and reads through SubmitIO land and come
// back, each completion reaching the IOCallback with its own tag, on the
// short path (one page) and the general one (several pages, a PRP list;
// a buffer that starts mid-page).
func TestSubmitIORoundTrip(t *testing.T) {
	r, q, res := ioRig(t, 16)
	src := r.alloc(t, 16*4096)
	fill(src.Bytes, 3)
	dst := r.alloc(t, 16*4096)
	cases := []struct {
		lba    uint64
		blocks uint32
		off    int
	}{{0, 1, 0}, {1, 1, 4096}, {2, 2, 2 * 4096}, {4, 5, 4 * 4096}}
	for i, c := range cases {
		if err := q.SubmitIO(nvmelike.CmdWrite, 1, c.lba, c.blocks, src.Slice(c.off, int(c.blocks)*4096), uint64(100+i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	drain(t, q)
	for i, c := range cases {
		if err := q.SubmitIO(nvmelike.CmdRead, 1, c.lba, c.blocks, dst.Slice(c.off, int(c.blocks)*4096), uint64(200+i)); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	drain(t, q)
	if res.calls != 2*len(cases) {
		t.Errorf("%d callbacks, want %d", res.calls, 2*len(cases))
	}
	for i := range cases {
		for _, tag := range []uint64{uint64(100 + i), uint64(200 + i)} {
			if err, ok := res.errs[tag]; !ok || err != nil {
				t.Errorf("tag %d: delivered %v, error %v", tag, ok, err)
			}
		}
	}
	if !bytes.Equal(dst.Bytes[:9*4096], src.Bytes[:9*4096]) {
		t.Error("data read back differs from data written")
	}
	if st := q.Stats(); st.Submitted != 8 || st.Completed != 8 {
		t.Errorf("stats %+v", st)
	}

	// A buffer inside one page but not at its start: the short path
	// takes any dword-aligned one-page buffer (512-byte blocks here).
	r2 := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 64, LBASize: 512}}}, nil)
	q2 := r2.queue(t, 4)
	res2 := &ioResults{errs: map[uint64]error{}}
	q2.SetIOCallback(res2.callback)
	b := r2.alloc(t, 4096)
	fill(b.Bytes, 9)
	if err := q2.SubmitIO(nvmelike.CmdWrite, 1, 5, 2, b.Slice(1024, 1024), 7); err != nil {
		t.Fatal(err)
	}
	drain(t, q2)
	if err, ok := res2.errs[7]; !ok || err != nil {
		t.Fatalf("mid-page write: %v %v", ok, err)
	}
	if !bytes.Equal(r2.dev.NamespaceData(1)[5*512:7*512], b.Bytes[1024:2048]) {
		t.Error("mid-page write did not land")
	}
}

// TestSubmitIOErrors: what SubmitIO refuses, each with its error, and
// nothing submitted.
func TestSubmitIOErrors(t *testing.T) {
	r, q, _ := ioRig(t, 4)
	over := r.ctrl.MaxTransfer()/4096 + 1 // blocks, one above the transfer limit
	buf := r.alloc(t, over*4096)
	for _, c := range []struct {
		name   string
		op     uint8
		blocks uint32
		size   int
		want   error
	}{
		{"no blocks", nvmelike.CmdRead, 0, 4096, nvmelike.ErrDataLength},
		{"more blocks than the buffer", nvmelike.CmdRead, 2, 4096, nvmelike.ErrDataLength},
		{"fewer blocks than the buffer", nvmelike.CmdWrite, 1, 8192, nvmelike.ErrDataLength},
		{"above the transfer limit", nvmelike.CmdRead, uint32(over), over * 4096, nvmelike.ErrTransferTooLarge},
		{"no LBA data", nvmelike.CmdFlush, 1, 4096, nil},
	} {
		err := q.SubmitIO(c.op, 1, 0, c.blocks, buf.Slice(0, c.size), 1)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if q.Outstanding() != 0 || q.Stats().Submitted != 0 {
		t.Errorf("refused commands were submitted: %d outstanding, stats %+v", q.Outstanding(), q.Stats())
	}
	// Full: three slots at depth 4, then ErrQueueFull itself.
	for i := range 3 {
		if err := q.SubmitIO(nvmelike.CmdRead, 1, uint64(i), 1, buf.Slice(i*4096, 4096), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.SubmitIO(nvmelike.CmdRead, 1, 3, 1, buf.Slice(3*4096, 4096), 3); err != nvmelike.ErrQueueFull {
		t.Errorf("on a full queue: %v, want ErrQueueFull", err)
	}
	drain(t, q)

	// The IOCallback removed with a command in flight: it completes
	// unheard, and its tracker is free again.
	if err := q.SubmitIO(nvmelike.CmdRead, 1, 0, 1, buf.Slice(0, 4096), 9); err != nil {
		t.Fatal(err)
	}
	q.SetIOCallback(nil)
	drain(t, q)

	// Without an IOCallback.
	q2 := r.queue(t, 4)
	if err := q2.SubmitIO(nvmelike.CmdRead, 1, 0, 1, buf.Slice(0, 4096), 1); err == nil {
		t.Error("SubmitIO without an IOCallback accepted")
	}
	// On a deleted queue pair.
	q2.SetIOCallback(func(uint64, nvmelike.Completion, error) {})
	if err := r.ctrl.DeleteQueuePair(testContext(t), q2); err != nil {
		t.Fatal(err)
	}
	if err := q2.SubmitIO(nvmelike.CmdRead, 1, 0, 1, buf.Slice(0, 4096), 1); !errors.Is(err, nvmelike.ErrClosed) {
		t.Errorf("on a deleted queue pair: %v, want ErrClosed", err)
	}
}

// TestSubmitIOFailures: a failed status, a timeout, a DMA fault, deleting
// the queue pair and a reset all reach the IOCallback with the command's
// tag.
func TestSubmitIOFailures(t *testing.T) {
	t.Run("status", func(t *testing.T) {
		r, q, res := ioRig(t, 4)
		buf := r.alloc(t, 4096)
		if err := q.SubmitIO(nvmelike.CmdRead, 1, 1000, 1, buf, 42); err != nil { // past the 256 blocks
			t.Fatal(err)
		}
		drain(t, q)
		var se *nvmelike.StatusError
		if !errors.As(res.errs[42], &se) || se.Opcode != nvmelike.CmdRead {
			t.Errorf("read past the end: %v, want a *StatusError for opcode 2", res.errs[42])
		}
	})
	t.Run("timeout", func(t *testing.T) {
		r, q, res := ioRig(t, 4)
		buf := r.alloc(t, 4096)
		q.SetTimeout(20 * time.Millisecond)
		r.dev.DropCompletions(1)
		if err := q.SubmitIO(nvmelike.CmdRead, 1, 0, 1, buf, 5); err != nil {
			t.Fatal(err)
		}
		q.Ring()
		deadline := time.Now().Add(5 * time.Second)
		for res.calls == 0 && time.Now().Before(deadline) {
			if _, err := q.Poll(0); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
		if !errors.Is(res.errs[5], nvmelike.ErrTimeout) {
			t.Errorf("dropped completion: %v, want ErrTimeout", res.errs[5])
		}
	})
	t.Run("dma fault", func(t *testing.T) {
		r, q, res := ioRig(t, 4)
		buf := r.alloc(t, 4096)
		r.dev.DropCompletions(1)
		if err := q.SubmitIO(nvmelike.CmdRead, 1, 0, 1, buf, 6); err != nil {
			t.Fatal(err)
		}
		q.Ring()
		c, ok := q.InFlight(buf.IOVA + 100)
		if !ok || c.Opcode != nvmelike.CmdRead {
			t.Fatalf("in flight at the buffer: %+v %v", c, ok)
		}
		fault := errors.New("injected")
		if !q.FailInFlight(c.CID, fault) {
			t.Fatal("FailInFlight found nothing")
		}
		if !errors.Is(res.errs[6], fault) || res.calls != 1 {
			t.Errorf("failed in flight: %v after %d calls", res.errs[6], res.calls)
		}
	})
	t.Run("delete", func(t *testing.T) {
		r, q, res := ioRig(t, 4)
		buf := r.alloc(t, 2*4096)
		r.dev.DropCompletions(2)
		for i := range 2 {
			if err := q.SubmitIO(nvmelike.CmdRead, 1, uint64(i), 1, buf.Slice(i*4096, 4096), uint64(10+i)); err != nil {
				t.Fatal(err)
			}
		}
		q.Ring()
		if err := r.ctrl.DeleteQueuePair(testContext(t), q); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res.errs[10], nvmelike.ErrClosed) || !errors.Is(res.errs[11], nvmelike.ErrClosed) {
			t.Errorf("deleted with two in flight: %v", res.errs)
		}
	})
	t.Run("reset", func(t *testing.T) {
		r, q, res := ioRig(t, 8)
		buf := r.alloc(t, 3*4096)
		fill(buf.Bytes, 11)
		r.dev.DropCompletions(3)
		for i := range 3 {
			if err := q.SubmitIO(nvmelike.CmdWrite, 1, uint64(20+i), 1, buf.Slice(i*4096, 4096), uint64(i)); err != nil {
				t.Fatal(err)
			}
		}
		drainOnce(t, q)
		if res.calls != 0 {
			t.Fatalf("completions before the reset: %v", res.errs)
		}
		if err := r.ctrl.Reset(testContext(t), nvmelike.ResetRetry); err != nil {
			t.Fatal(err)
		}
		drain(t, q)
		if res.calls != 3 || res.errs[0] != nil || res.errs[1] != nil || res.errs[2] != nil {
			t.Errorf("after the retry: %d calls, %v", res.calls, res.errs)
		}
		if !bytes.Equal(r.dev.NamespaceData(1)[20*4096:23*4096], buf.Bytes) {
			t.Error("retried writes did not land")
		}
	})
}

func drainOnce(t *testing.T, q *nvmelike.QueuePair) {
	t.Helper()
	q.Ring()
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
}

// TestSubmitIOAllocatesNothing: SubmitIO, Ring, Poll and the IOCallback
// resubmitting allocate nothing.
func TestSubmitIOAllocatesNothing(t *testing.T) {
	r, q, _ := ioRig(t, 64)
	buf := r.alloc(t, 32*4096)
	q.SetIOCallback(func(tag uint64, _ nvmelike.Completion, err error) {
		if err != nil {
			t.Error(err)
		}
	})
	allocs := testing.AllocsPerRun(100, func() {
		for i := range 32 {
			if err := q.SubmitIO(nvmelike.CmdRead, 1, uint64(i), 1, buf.Slice(i*4096, 4096), uint64(i)); err != nil {
				t.Fatal(err)
			}
		}
		q.Ring()
		if _, err := q.Poll(0); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%g allocations per 32 I/Os", allocs)
	}
}

// TestSubmitIODataPointerAuto: with DataPointerAuto on a controller with
// SGLs, SubmitIO describes a one-page buffer with PRPs and a longer one
// that starts off dword alignment (which PRPs cannot describe) with an
// SGL; both land and read back.
func TestSubmitIODataPointerAuto(t *testing.T) {
	r := sglRig(t, &nvmelike.Options{DataPointer: nvmelike.DataPointerAuto})
	q := r.queue(t, 8)
	res := &ioResults{errs: map[uint64]error{}}
	q.SetIOCallback(res.callback)
	src := r.alloc(t, 8*4096)
	fill(src.Bytes, 5)
	one, long := src.Slice(0, 4096), src.Slice(4096+1, 6*512)
	if err := q.SubmitIO(nvmelike.CmdWrite, 1, 0, 8, one, 1); err != nil {
		t.Fatal(err)
	}
	if err := q.SubmitIO(nvmelike.CmdWrite, 1, 8, 6, long, 2); err != nil {
		t.Fatal(err)
	}
	drain(t, q)
	for tag := range uint64(2) {
		if err, ok := res.errs[tag+1]; !ok || err != nil {
			t.Errorf("tag %d: delivered %v, error %v", tag+1, ok, err)
		}
	}
	data := r.dev.NamespaceData(1)
	if !bytes.Equal(data[:4096], one.Bytes) || !bytes.Equal(data[8*512:14*512], long.Bytes) {
		t.Error("device data differs from what was written")
	}

	// The same long buffer with PRPs: refused, so Auto did use an SGL.
	if err := q.SetDataPointer(nvmelike.DataPointerPRP); err != nil {
		t.Fatal(err)
	}
	if err := q.SubmitIO(nvmelike.CmdWrite, 1, 8, 6, long, 3); err == nil {
		drain(t, q)
		t.Error("a buffer off dword alignment went out with PRPs")
	}
}
