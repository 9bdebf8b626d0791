package nvmelike_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// TestSplitIntegrity writes and reads back LBA commands larger than the
// controller's MDTS, at aligned and unaligned buffers, with block sizes
// that do and do not divide the transfer limit, and checks that the
// engine split them into as many device commands as it should.
func TestSplitIntegrity(t *testing.T) {
	for _, tc := range []struct {
		name        string
		mdts        uint8
		maxTransfer int
		lbs         int
		chunk       int // the engine's part size
	}{
		{"MDTS 1, 512 B blocks", 1, 0, 512, 8192},
		{"MDTS 2, 4 KiB blocks", 2, 0, 4096, 16384},
		{"MDTS 0, limit 6000, 512 B blocks", 0, 6000, 512, 5632},
		{"MDTS 1, 4 KiB blocks", 1, 0, 4096, 8192},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const nsBytes = 4 << 20
			r := newRig(t, sim.Config{MDTS: tc.mdts, Namespaces: []sim.NamespaceConfig{{Blocks: nsBytes / uint64(tc.lbs), LBASize: tc.lbs}}},
				&nvmelike.Options{MaxTransfer: tc.maxTransfer})
			if tc.maxTransfer == 0 && r.ctrl.MaxTransfer() != tc.chunk {
				t.Fatalf("MaxTransfer %d, want %d", r.ctrl.MaxTransfer(), tc.chunk)
			}
			q := r.queue(t, 512)
			ctx := testContext(t)
			wbuf := r.alloc(t, 1<<20+8192)
			rbuf := r.alloc(t, 1<<20+8192)
			lba := uint64(0)
			var wantCmds uint64
			for _, size := range []int{tc.chunk + tc.lbs, 2 * tc.chunk, 3*tc.chunk - tc.lbs, 64 << 10, 1 << 20} {
				size -= size % tc.lbs
				for _, off := range []int{0, 4, 512, 4092} {
					w := wbuf.Slice(off, size)
					rd := rbuf.Slice(off+8, size)
					fill(w.Bytes, byte(size>>9+off))
					clear(rd.Bytes)
					nlb := uint32(size / tc.lbs)
					if (lba+uint64(nlb))*uint64(tc.lbs) > nsBytes {
						lba = 0
					}
					before := r.dev.Stats()
					wc := nvmelike.WriteCommand(1, lba, nlb, w)
					if _, err := q.Exec(ctx, &wc); err != nil {
						t.Fatalf("write %d bytes at offset %d: %v", size, off, err)
					}
					rc := nvmelike.ReadCommand(1, lba, nlb, rd)
					if _, err := q.Exec(ctx, &rc); err != nil {
						t.Fatalf("read %d bytes at offset %d: %v", size, off, err)
					}
					if !bytes.Equal(w.Bytes, rd.Bytes) {
						t.Fatalf("%d bytes at offset %d: read back differs", size, off)
					}
					dev := r.dev.NamespaceData(1)[lba*uint64(tc.lbs) : lba*uint64(tc.lbs)+uint64(size)]
					if !bytes.Equal(dev, w.Bytes) {
						t.Fatalf("%d bytes at offset %d: device data differs", size, off)
					}
					parts := uint64((size + tc.chunk - 1) / tc.chunk)
					after := r.dev.Stats()
					if after.HostWrites-before.HostWrites != parts || after.HostReads-before.HostReads != parts {
						t.Fatalf("%d bytes: %d writes and %d reads on the device, want %d each", size,
							after.HostWrites-before.HostWrites, after.HostReads-before.HostReads, parts)
					}
					wantCmds += 2 * parts
					lba += uint64(nlb)
				}
			}
			st := q.Stats()
			if q.Outstanding() != 0 || st.Submitted != wantCmds || st.Completed != wantCmds || st.Dropped != 0 || st.Split != 40 {
				t.Errorf("%d outstanding, stats %+v, want %d commands", q.Outstanding(), st, wantCmds)
			}
		})
	}
}

// TestSplitAsync submits several split commands at once, with completions
// posted late from another goroutine: each callback runs once, with the
// caller's command (its tag and whole buffer) and no error.
func TestSplitAsync(t *testing.T) {
	r := newRig(t, sim.Config{MDTS: 1, Namespaces: []sim.NamespaceConfig{{Blocks: 4096, LBASize: 512}}}, nil)
	q := r.queue(t, 64)
	r.dev.DelayCompletions(100 * time.Microsecond)
	const n, size = 4, 40 << 10 // 5 parts each
	buf := r.alloc(t, n*size)
	calls := map[uint64]int{}
	var cbErr error
	cb := func(cmd *nvmelike.Command, c nvmelike.Completion, err error) {
		calls[cmd.Tag]++
		if err != nil && cbErr == nil {
			cbErr = err
		}
		if cmd.Data.Len() != size || cmd.Data.IOVA != buf.IOVA+cmd.Tag*size || cmd.CDW12 != size/512-1 {
			cbErr = errors.New("callback got a part, not the caller's command")
		}
	}
	for i := range n {
		b := buf.Slice(i*size, size)
		fill(b.Bytes, byte(i))
		w := nvmelike.WriteCommand(1, uint64(i*size/512), size/512, b)
		w.Tag = uint64(i)
		if err := q.Submit(&w, cb); err != nil {
			t.Fatal(err)
		}
	}
	if q.Outstanding() != n*5 {
		t.Fatalf("%d outstanding, want %d trackers", q.Outstanding(), n*5)
	}
	before := q.Stats().SQDoorbells
	q.Ring()
	if d := q.Stats().SQDoorbells - before; d != 1 {
		t.Errorf("%d doorbells for the batch", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for q.Outstanding() > 0 && time.Now().Before(deadline) {
		if _, err := q.Poll(3); err != nil {
			t.Fatal(err)
		}
	}
	if cbErr != nil {
		t.Fatal(cbErr)
	}
	for i := range n {
		if calls[uint64(i)] != 1 {
			t.Errorf("command %d: %d callbacks", i, calls[uint64(i)])
		}
	}
	if !bytes.Equal(r.dev.NamespaceData(1)[:n*size], buf.Bytes) {
		t.Error("device data differs")
	}
}

// TestSplitPartFails: one part of a split command fails; the caller sees
// that failure once, and no tracker is left behind.
func TestSplitPartFails(t *testing.T) {
	r := newRig(t, sim.Config{MDTS: 1, Namespaces: []sim.NamespaceConfig{{Blocks: 64, LBASize: 512}}}, nil)
	q := r.queue(t, 16)
	ctx := testContext(t)
	buf := r.alloc(t, 64<<10)
	// 48 blocks from LBA 32: the parts at 32 and 48 are in range, the
	// one at 64 is not.
	c := nvmelike.ReadCommand(1, 32, 48, buf.Slice(0, 48*512))
	cpl, err := q.Exec(ctx, &c)
	if !errors.Is(err, nvmelike.ErrLBAOutOfRange) {
		t.Fatalf("read past the end: %v", err)
	}
	var se *nvmelike.StatusError
	if !errors.As(err, &se) || se.Opcode != nvmelike.CmdRead || se.CID != cpl.CID {
		t.Errorf("status error %+v for completion %+v", se, cpl)
	}
	calls := 0
	cb := func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		calls++
		if !errors.Is(err, nvmelike.ErrLBAOutOfRange) {
			t.Errorf("callback: %v", err)
		}
	}
	if err := q.Submit(&c, cb); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || q.Outstanding() != 0 {
		t.Errorf("%d callbacks, %d outstanding", calls, q.Outstanding())
	}
	// Compare split in parts: a mismatch in the last part fails it.
	w := nvmelike.WriteCommand(1, 0, 40, buf.Slice(0, 40*512))
	fill(w.Data.Bytes, 9)
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}
	cmp := nvmelike.CompareCommand(1, 0, 40, buf.Slice(0, 40*512))
	if _, err := q.Exec(ctx, &cmp); err != nil {
		t.Fatalf("compare of equal data: %v", err)
	}
	buf.Bytes[40*512-1] ^= 1
	if _, err := q.Exec(ctx, &cmp); !errors.Is(err, nvmelike.ErrCompareFailure) {
		t.Fatalf("compare with the last block changed: %v", err)
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d outstanding", q.Outstanding())
	}
}

// TestSplitLimits: a split takes as many trackers as parts, all at once
// or none; what cannot be split still fails with ErrTransferTooLarge.
func TestSplitLimits(t *testing.T) {
	r := newRig(t, sim.Config{MDTS: 1, Namespaces: []sim.NamespaceConfig{{Blocks: 1024, LBASize: 512}}}, nil)
	q := r.queue(t, 4) // 3 trackers
	ctx := testContext(t)
	buf := r.alloc(t, 64<<10)
	c := nvmelike.ReadCommand(1, 0, 64, buf.Slice(0, 32<<10)) // 4 parts
	if err := q.Submit(&c, nil); !errors.Is(err, nvmelike.ErrTransferTooLarge) {
		t.Errorf("4 parts on 3 trackers: %v", err)
	}
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrTransferTooLarge) {
		t.Errorf("Exec of 4 parts on 3 trackers: %v", err)
	}
	one := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
	if err := q.Submit(&one, nil); err != nil {
		t.Fatal(err)
	}
	three := nvmelike.ReadCommand(1, 0, 48, buf.Slice(0, 24<<10)) // 3 parts
	if err := q.Submit(&three, nil); err != nvmelike.ErrQueueFull {
		t.Fatalf("3 parts with 2 trackers free: %v, want ErrQueueFull", err)
	}
	if q.Outstanding() != 1 {
		t.Fatalf("%d outstanding after a refused split", q.Outstanding())
	}
	done := 0
	if err := q.SubmitWait(ctx, &three, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		if err != nil {
			t.Error(err)
		}
		done++
	}); err != nil {
		t.Fatalf("SubmitWait: %v", err)
	}
	q.Ring()
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if done != 1 || q.Outstanding() != 0 {
		t.Errorf("%d done, %d outstanding", done, q.Outstanding())
	}
	for _, tc := range []struct {
		name string
		mod  func(*nvmelike.Command)
		want error
	}{
		{"unaligned", func(c *nvmelike.Command) { c.Data = buf.Slice(2, 16<<10) }, nvmelike.ErrUnalignedBuffer},
		{"fused", func(c *nvmelike.Command) { c.Flags = 1 }, nvmelike.ErrTransferTooLarge},
		{"metadata pointer", func(c *nvmelike.Command) { c.MPTR = buf.IOVA }, nvmelike.ErrTransferTooLarge},
		{"unknown namespace", func(c *nvmelike.Command) { c.NSID = 9 }, nvmelike.ErrTransferTooLarge},
	} {
		c := nvmelike.ReadCommand(1, 0, 32, buf.Slice(0, 16<<10))
		tc.mod(&c)
		if _, err := q.Exec(ctx, &c); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d outstanding", q.Outstanding())
	}
}

// TestSplitGivenUp: Exec gives up on a split command one of whose parts
// never completes; its trackers are held until the other parts complete
// and the queue is deleted.
func TestSplitGivenUp(t *testing.T) {
	r := newRig(t, sim.Config{MDTS: 1, Namespaces: []sim.NamespaceConfig{{Blocks: 1024, LBASize: 512}}}, nil)
	q := r.queue(t, 8)
	buf := r.alloc(t, 64<<10)
	r.dev.DropCompletions(1) // the first part's
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	c := nvmelike.ReadCommand(1, 0, 48, buf.Slice(0, 24<<10))
	if _, err := q.Exec(ctx, &c); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Exec: %v, want DeadlineExceeded", err)
	}
	if q.Outstanding() != 1 {
		t.Errorf("%d outstanding, want the first part's tracker", q.Outstanding())
	}
	// The queue keeps working around it.
	c2 := nvmelike.ReadCommand(1, 0, 32, buf.Slice(32<<10, 16<<10))
	if _, err := q.Exec(testContext(t), &c2); err != nil {
		t.Fatal(err)
	}
	if err := r.ctrl.DeleteQueuePair(testContext(t), q); err != nil {
		t.Fatal(err)
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d outstanding after delete", q.Outstanding())
	}
}

// TestSplitFailInFlight: a DMA fault on any part's memory fails the whole
// command once; its trackers are freed as its parts complete.
func TestSplitFailInFlight(t *testing.T) {
	r := newRig(t, sim.Config{MDTS: 1, Namespaces: []sim.NamespaceConfig{{Blocks: 1024, LBASize: 512}}}, nil)
	q := r.queue(t, 8)
	buf := r.alloc(t, 64<<10)
	calls := 0
	var got error
	c := nvmelike.WriteCommand(1, 0, 48, buf.Slice(0, 24<<10))
	c.Tag = 77
	if err := q.Submit(&c, func(cmd *nvmelike.Command, _ nvmelike.Completion, err error) {
		calls++
		got = err
		if cmd.Tag != 77 || cmd.Data.Len() != 24<<10 {
			t.Errorf("callback with %+v", cmd)
		}
	}); err != nil {
		t.Fatal(err)
	}
	// The third part's data.
	in, ok := q.InFlight(buf.IOVA + 20<<10)
	if !ok {
		t.Fatal("no command in flight at the third part")
	}
	r.ctrl.ReportDMAFault(nvmelike.DMAFault{IOVA: buf.IOVA + 20<<10})
	if q.FailInFlight(in.CID, errors.New("first")) != true {
		t.Fatal("FailInFlight on a part")
	}
	if q.FailInFlight(in.CID, errors.New("second")) {
		t.Error("a second FailInFlight took")
	}
	q.Ring()
	if _, err := q.Poll(0); err != nil { // applies the reported fault: already failed
		t.Fatal(err)
	}
	if calls != 1 || got == nil || got.Error() != "first" {
		t.Errorf("%d callbacks, %v", calls, got)
	}
	if st := q.Stats(); q.Outstanding() != 0 || st.Orphaned != 3 || st.DMAFaults != 1 {
		t.Errorf("%d outstanding, stats %+v", q.Outstanding(), st)
	}
}

// TestSplitResetRetry: a split command outstanding at a reset runs again,
// whole, and completes once.
func TestSplitResetRetry(t *testing.T) {
	r := newRig(t, sim.Config{MDTS: 1, Namespaces: []sim.NamespaceConfig{{Blocks: 1024, LBASize: 512}}}, nil)
	q := r.queue(t, 8)
	buf := r.alloc(t, 24<<10)
	fill(buf.Bytes, 5)
	r.dev.DropCompletions(2) // two of the three parts
	calls := 0
	w := nvmelike.WriteCommand(1, 100, 48, buf)
	if err := q.Submit(&w, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		calls++
		if err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if calls != 0 || q.Outstanding() != 2 {
		t.Fatalf("before the reset: %d calls, %d outstanding", calls, q.Outstanding())
	}
	if err := r.ctrl.Reset(testContext(t), nvmelike.ResetRetry); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || q.Outstanding() != 0 {
		t.Errorf("after the reset: %d calls, %d outstanding", calls, q.Outstanding())
	}
	if !bytes.Equal(r.dev.NamespaceData(1)[100*512:148*512], buf.Bytes) {
		t.Error("device data differs")
	}
}

// TestSplitNoAllocations: the split path allocates nothing either.
func TestSplitNoAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counting is skipped in -short mode")
	}
	r := newRig(t, sim.Config{MDTS: 1, Namespaces: []sim.NamespaceConfig{{Blocks: 1024, LBASize: 512}}}, nil)
	q := r.queue(t, 64)
	ctx := testContext(t)
	buf := r.alloc(t, 128<<10)
	cb := nvmelike.Callback(func(*nvmelike.Command, nvmelike.Completion, error) {})
	for _, b := range []nvmelike.Buffer{buf.Slice(0, 64<<10), buf.Slice(516, 40<<10)} {
		nlb := uint32(b.Len() / 512)
		write := nvmelike.WriteCommand(1, 0, nlb, b)
		read := nvmelike.ReadCommand(1, 0, nlb, b)
		allocs := testing.AllocsPerRun(500, func() {
			if err := q.Submit(&write, cb); err != nil {
				t.Fatal(err)
			}
			if err := q.Submit(&read, cb); err != nil {
				t.Fatal(err)
			}
			q.Ring()
			if _, err := q.Poll(0); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%d bytes: submit+ring+poll: %v allocations per run", b.Len(), allocs)
		}
		allocs = testing.AllocsPerRun(500, func() {
			if _, err := q.Exec(ctx, &read); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%d bytes: Exec: %v allocations per run", b.Len(), allocs)
		}
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d outstanding", q.Outstanding())
	}
}
