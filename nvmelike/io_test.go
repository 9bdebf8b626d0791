package nvmelike_test

import (
	"bytes"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// TestWriteReadIntegrity writes and reads back buffers of many sizes at
// page-aligned and unaligned IOVAs: one page, two pages, PRP lists, and
// lists that chain over several pages (with the MDTS raised).
func TestWriteReadIntegrity(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 16384, LBASize: 512}}},
		&nvmelike.Options{MaxTransfer: 4 << 20})
	q := r.queue(t, 64)
	ctx := testContext(t)
	const lbs = 512
	wbuf := r.alloc(t, 4<<20+8192)
	rbuf := r.alloc(t, 4<<20+8192)
	lba := uint64(0)
	for _, size := range []int{512, 1024, 4096, 8192, 12288, 65536, 128 << 10, 1 << 20, 2<<20 + 512, 4 << 20} {
		for _, off := range []int{0, 4, 512, 4092, 4096 - 512} {
			if size+off > 4<<20+8192 {
				continue
			}
			w := wbuf.Slice(off, size)
			rd := rbuf.Slice(off+8, size) // a different offset for the read side
			fill(w.Bytes, byte(size+off))
			clear(rd.Bytes)
			nlb := uint32(size / lbs)
			if lba+uint64(nlb) > 16384 {
				lba = 0
			}
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
			dev := r.dev.NamespaceData(1)[lba*lbs : lba*lbs+uint64(size)]
			if !bytes.Equal(dev, w.Bytes) {
				t.Fatalf("%d bytes at offset %d: device data differs", size, off)
			}
			lba += uint64(nlb)
		}
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d commands outstanding", q.Outstanding())
	}
	if st := q.Stats(); st.Completed != st.Submitted || st.SQDoorbells != st.Submitted || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestCommandErrors(t *testing.T) {
	r := newRig(t, sim.Config{MDTS: 2, Namespaces: []sim.NamespaceConfig{{Blocks: 64}}}, nil)
	q := r.queue(t, 8)
	ctx := testContext(t)
	buf := r.alloc(t, 64<<10)

	c := nvmelike.ReadCommand(1, 60, 8, buf.Slice(0, 4096))
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrLBAOutOfRange) {
		t.Errorf("read past the end: %v", err)
	}
	c = nvmelike.ReadCommand(7, 0, 1, buf.Slice(0, 512))
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrInvalidNamespace) {
		t.Errorf("read of namespace 7: %v", err)
	}
	// A read above MDTS is split (split_test.go); an opcode that is not
	// an LBA command cannot be.
	c = nvmelike.DeallocateCommand(1, 1, buf.Slice(0, 32768))
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrTransferTooLarge) {
		t.Errorf("dataset management above MDTS: %v", err)
	}
	c = nvmelike.ReadCommand(1, 0, 1, buf.Slice(2, 512))
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrUnalignedBuffer) {
		t.Errorf("read into a buffer at an odd IOVA: %v", err)
	}
	// The block count and the buffer must agree, or the device would move
	// data past the buffer.
	c = nvmelike.ReadCommand(1, 0, 2, buf.Slice(0, 512))
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrDataLength) {
		t.Errorf("read of 2 blocks into 1 block: %v", err)
	}
	c = nvmelike.WriteCommand(1, 0, 0, buf.Slice(0, 512)) // nlb 0 is 65536 blocks
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrDataLength) {
		t.Errorf("write of 0 blocks: %v", err)
	}
	c = nvmelike.FlushCommand(1)
	c.Data = buf.Slice(0, 512)
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrDirection) {
		t.Errorf("flush with data: %v", err)
	}
	c = nvmelike.Command{Opcode: 0x7c, NSID: 1}
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrInvalidOpcode) {
		t.Errorf("unknown opcode: %v", err)
	}
	// A PRP pointing at unmapped memory: the device's data transfer fails.
	c = nvmelike.ReadCommand(1, 0, 1, nvmelike.Buffer{Bytes: make([]byte, 512), IOVA: 0x4000})
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrDataTransfer) {
		t.Errorf("read to an unmapped IOVA: %v", err)
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d trackers leaked", q.Outstanding())
	}
}

// TestVendorCommand runs the software controller's computational opcode,
// defined outside nvmelike, through the same path as Read and Write.
func TestVendorCommand(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	ctx := testContext(t)
	buf := r.alloc(t, 8192)
	fill(buf.Bytes, 3)
	w := nvmelike.WriteCommand(1, 10, 16, buf)
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}
	c := sim.CRC32CCommand(1, 10, 16)
	cpl, err := q.Exec(ctx, &c)
	if err != nil {
		t.Fatal(err)
	}
	if want := crc32.Checksum(buf.Bytes, crc32.MakeTable(crc32.Castagnoli)); cpl.DW0 != want {
		t.Errorf("crc32c 0x%08x, want 0x%08x", cpl.DW0, want)
	}
	if info := r.ctrl.Registry().IO(sim.OpcodeCRC32C); info.Name == "" || info.Dir != nvmelike.DirNone {
		t.Errorf("registry: %+v", info)
	}
	// Its registry entry says it moves no data.
	c.Data = buf
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrDirection) {
		t.Errorf("vendor command with data: %v", err)
	}
}

// TestAsyncBatches submits batches with one doorbell each and checks that
// every callback runs once, with its own tag and data.
func TestAsyncBatches(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 8192, LBASize: 4096}}}, nil)
	const depth = 32
	q := r.queue(t, depth)
	buf := r.alloc(t, 4096*(depth-1))
	var seen [depth - 1]int
	var cbErr error
	cb := func(cmd *nvmelike.Command, c nvmelike.Completion, err error) {
		if err != nil && cbErr == nil {
			cbErr = err
		}
		seen[cmd.Tag]++
	}
	for round := range 20 {
		for i := range depth - 1 {
			b := buf.Slice(i*4096, 4096)
			fill(b.Bytes, byte(round+i))
			c := nvmelike.WriteCommand(1, uint64(round*(depth-1)+i), 1, b)
			c.Tag = uint64(i)
			if err := q.Submit(&c, cb); err != nil {
				t.Fatalf("round %d submit %d: %v", round, i, err)
			}
		}
		before := q.Stats().SQDoorbells
		q.Ring()
		q.Ring() // nothing new: no second doorbell
		if got := q.Stats().SQDoorbells - before; got != 1 {
			t.Fatalf("%d doorbells for one batch", got)
		}
		n, err := q.Poll(0)
		if err != nil || n != depth-1 {
			t.Fatalf("round %d: poll %d, %v", round, n, err)
		}
	}
	if cbErr != nil {
		t.Fatal(cbErr)
	}
	for i, n := range seen {
		if n != 20 {
			t.Errorf("tag %d completed %d times", i, n)
		}
	}
	st := q.Stats()
	if st.CQDoorbells != 20 || st.Submitted != 20*(depth-1) || st.Completed != 20*(depth-1) {
		t.Errorf("stats %+v", st)
	}
	// Data landed: check the last round against the device.
	dev := r.dev.NamespaceData(1)
	for i := range depth - 1 {
		want := make([]byte, 4096)
		fill(want, byte(19+i))
		lba := 19*(depth-1) + i
		if !bytes.Equal(dev[lba*4096:(lba+1)*4096], want) {
			t.Fatalf("block %d differs", lba)
		}
	}
}

func TestQueueFull(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 4) // 3 usable slots
	buf := r.alloc(t, 4096)
	done := 0
	cb := func(*nvmelike.Command, nvmelike.Completion, error) { done++ }
	c := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
	for i := range 3 {
		if err := q.Submit(&c, cb); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	if err := q.Submit(&c, cb); err != nvmelike.ErrQueueFull {
		t.Fatalf("fourth submit: %v, want ErrQueueFull", err)
	}
	// SubmitWait rings, polls and gets a slot.
	if err := q.SubmitWait(testContext(t), &c, cb); err != nil {
		t.Fatalf("SubmitWait: %v", err)
	}
	q.Ring()
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if done != 4 || q.Outstanding() != 0 {
		t.Errorf("%d done, %d outstanding", done, q.Outstanding())
	}
	// A callback may resubmit on a full queue (the spare tracker stands
	// in for its own), once: the second finds the queue full. The
	// command it was handed stays as it was across its submissions, and
	// it is not counted as outstanding.
	resubmitted := false
	var resubErr, secondErr error
	var inside int
	var cb2 nvmelike.Callback
	cb2 = func(cmd *nvmelike.Command, _ nvmelike.Completion, _ error) {
		if resubmitted {
			return
		}
		resubmitted = true
		inside = q.Outstanding()
		before := *cmd
		other := nvmelike.ReadCommand(1, 3, 1, buf.Slice(0, 512))
		other.Tag = 99
		resubErr = q.Submit(&other, cb2)
		secondErr = q.Submit(&other, cb2)
		if cmd.Tag != before.Tag || cmd.CDW10 != before.CDW10 || cmd.Opcode != before.Opcode {
			t.Errorf("the callback's command changed under it: %+v, was %+v", *cmd, before)
		}
	}
	for i := range 3 {
		c := nvmelike.ReadCommand(1, uint64(i), 1, buf.Slice(0, 512))
		c.Tag = uint64(i)
		if err := q.Submit(&c, cb2); err != nil {
			t.Fatal(err)
		}
	}
	q.Ring()
	if _, err := q.Poll(1); err != nil {
		t.Fatal(err)
	}
	if resubErr != nil {
		t.Fatalf("resubmit from a callback: %v", resubErr)
	}
	if secondErr != nvmelike.ErrQueueFull {
		t.Errorf("a second submission from the callback on a full queue: %v, want ErrQueueFull", secondErr)
	}
	if inside != 2 {
		t.Errorf("Outstanding in the callback: %d, want 2", inside)
	}
	q.Ring()
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d outstanding", q.Outstanding())
	}
}

func TestPollFromCallback(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 4)
	var inner error
	c := nvmelike.FlushCommand(1)
	if err := q.Submit(&c, func(*nvmelike.Command, nvmelike.Completion, error) {
		_, inner = q.Poll(0)
	}); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(inner, nvmelike.ErrReentrantPoll) {
		t.Errorf("Poll in a callback: %v", inner)
	}
}

func TestSubmitBatch(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8) // 7 slots
	buf := r.alloc(t, 10*512)
	cmds := make([]nvmelike.Command, 10)
	for i := range cmds {
		fill(buf.Bytes[i*512:(i+1)*512], byte(i))
		cmds[i] = nvmelike.WriteCommand(1, uint64(i), 1, buf.Slice(i*512, 512))
	}
	done := 0
	cb := func(*nvmelike.Command, nvmelike.Completion, error) { done++ }
	n, err := q.SubmitBatch(cmds, cb)
	if n != 7 || err != nvmelike.ErrQueueFull {
		t.Fatalf("SubmitBatch: %d, %v; want 7, ErrQueueFull", n, err)
	}
	if st := q.Stats(); st.SQDoorbells != 1 {
		t.Errorf("%d doorbells", st.SQDoorbells)
	}
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if n, err := q.SubmitBatch(cmds[7:], cb); n != 3 || err != nil {
		t.Fatalf("SubmitBatch of the rest: %d, %v", n, err)
	}
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if done != 10 || !bytes.Equal(r.dev.NamespaceData(1)[:10*512], buf.Bytes) {
		t.Errorf("%d done or data differs", done)
	}
}
