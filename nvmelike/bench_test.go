package nvmelike_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/umdkit/umd/internal/cycles"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// The benchmarks measure the host's cost per I/O against the software
// controller in instant mode: the figure includes the simulator's own work
// (a 4 KiB copy, a lock, a binary search per PRP) and no device latency.

func benchRig(b *testing.B, depth int) (*rig, *nvmelike.QueuePair, nvmelike.Buffer) {
	r := newRig(b, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 4096, LBASize: 4096}}}, nil)
	q := r.queue(b, depth)
	return r, q, r.alloc(b, 256*4096)
}

// BenchmarkExec4KiBRead: one synchronous 4 KiB read per op.
func BenchmarkExec4KiBRead(b *testing.B) {
	_, q, buf := benchRig(b, 64)
	ctx := context.Background()
	c := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 4096))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.Exec(ctx, &c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSubmitPoll4KiBRead: one async 4 KiB read per op, submitted and
// polled one at a time (two doorbell writes per I/O).
func BenchmarkSubmitPoll4KiBRead(b *testing.B) {
	_, q, buf := benchRig(b, 64)
	c := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 4096))
	cb := nvmelike.Callback(func(*nvmelike.Command, nvmelike.Completion, error) {})
	b.ReportAllocs()
	for b.Loop() {
		if err := q.Submit(&c, cb); err != nil {
			b.Fatal(err)
		}
		q.Ring()
		if _, err := q.Poll(0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBatch32x4KiBRead: 32 reads per doorbell and per poll; ns/op is
// per I/O.
func BenchmarkBatch32x4KiBRead(b *testing.B) {
	_, q, buf := benchRig(b, 64)
	var cmds [32]nvmelike.Command
	for i := range cmds {
		cmds[i] = nvmelike.ReadCommand(1, uint64(i), 1, buf.Slice(i*4096, 4096))
	}
	cb := nvmelike.Callback(func(*nvmelike.Command, nvmelike.Completion, error) {})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := q.Submit(&cmds[i], cb); err != nil {
			b.Fatal(err)
		}
		if i++; i == len(cmds) {
			i = 0
			q.Ring()
			if _, err := q.Poll(0); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkExecFlush: a command with no data: the engine's and the
// simulator's fixed cost.
func BenchmarkExecFlush(b *testing.B) {
	_, q, _ := benchRig(b, 64)
	ctx := context.Background()
	c := nvmelike.FlushCommand(1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.Exec(ctx, &c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExec1MiBReadSplit: one synchronous 1 MiB read per op on a
// controller with a 128 KiB MDTS, split by the engine into 8 commands.
func BenchmarkExec1MiBReadSplit(b *testing.B) {
	r := newRig(b, sim.Config{MDTS: 5, Namespaces: []sim.NamespaceConfig{{Blocks: 4096, LBASize: 4096}}}, nil)
	q := r.queue(b, 64)
	buf := r.alloc(b, 1<<20)
	c := nvmelike.ReadCommand(1, 0, 256, buf)
	ctx := context.Background()
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.Exec(ctx, &c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSubmitPoll4KiBReadTimeout: BenchmarkSubmitPoll4KiBRead with a
// per-queue timeout, so each Submit and Poll reads the clock.
func BenchmarkSubmitPoll4KiBReadTimeout(b *testing.B) {
	_, q, buf := benchRig(b, 64)
	q.SetTimeout(30 * time.Second)
	c := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 4096))
	cb := nvmelike.Callback(func(*nvmelike.Command, nvmelike.Completion, error) {})
	b.ReportAllocs()
	for b.Loop() {
		if err := q.Submit(&c, cb); err != nil {
			b.Fatal(err)
		}
		q.Ring()
		if _, err := q.Poll(0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBatch32x4KiBReadIO is BenchmarkBatch32x4KiBRead through
// SubmitIO and an IOCallback: no Command built, copied or handed back.
func BenchmarkBatch32x4KiBReadIO(b *testing.B) {
	_, q, buf := benchRig(b, 64)
	q.SetIOCallback(func(uint64, nvmelike.Completion, error) {})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := q.SubmitIO(nvmelike.CmdRead, 1, uint64(i), 1, buf.Slice(i*4096, 4096), uint64(i)); err != nil {
			b.Fatal(err)
		}
		if i++; i == 32 {
			i = 0
			q.Ring()
			if _, err := q.Poll(0); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// nullDevice is a controller that does nothing but complete: each SQ tail
// doorbell write completes the new entries at once, successfully, reading
// only their CIDs and moving no data, so that a benchmark over it measures
// the engine (and the loop driving it) alone. It serves one queue pair,
// attached with AttachQueuePair.
type nullDevice struct {
	sq, cq []byte
	depth  uint16
	sqDB   uint64
	head   uint16 // next SQ entry to complete
	tail   uint16 // next CQ slot
	phase  bool
	spent  uint64 // time-stamp counter cycles inside Write32: the device's share
}

func (d *nullDevice) Read64(off uint64) uint64 { return 0xffff } // CAP: MQES 65535, DSTRD 0
func (d *nullDevice) Read32(off uint64) uint32 { return 1 }      // CSTS: ready
func (d *nullDevice) Write64(off, v uint64)    {}

func (d *nullDevice) Write32(off uint64, v uint32) {
	start := cycles.Now()
	defer func() { d.spent += cycles.Now() - start }()
	if off != d.sqDB {
		return // the CQ head doorbell: the CQ never fills, as the engine has at most depth-1 commands in flight
	}
	for d.head != uint16(v) {
		cid := binary.LittleEndian.Uint16(d.sq[int(d.head)*64+2:])
		if d.head++; d.head == d.depth {
			d.head = 0
		}
		nvmelike.PutCQE(d.cq[int(d.tail)*16:], nvmelike.Completion{CID: cid, SQHead: d.head, SQID: 1, Phase: d.phase})
		if d.tail++; d.tail == d.depth {
			d.tail, d.phase = 0, !d.phase
		}
	}
}

// nullQueue is a queue pair of depth entries on a nullDevice, with 4 KiB
// blocks in namespace 1, and a buffer of 64 pages.
func nullQueue(b *testing.B, depth int) (*nvmelike.QueuePair, *nullDevice, nvmelike.Buffer) {
	mem := sim.NewMemory()
	sq, err := mem.Alloc(depth*64, 4096)
	if err != nil {
		b.Fatal(err)
	}
	cq, err := mem.Alloc(depth*16, 4096)
	if err != nil {
		b.Fatal(err)
	}
	buf, err := mem.Alloc(64*4096, 4096)
	if err != nil {
		b.Fatal(err)
	}
	d := &nullDevice{sq: sq.Bytes, cq: cq.Bytes, depth: uint16(depth), sqDB: nvmelike.SQTailDoorbell(1, 0), phase: true}
	q, err := nvmelike.AttachQueuePair(nvmelike.AttachOptions{
		ID: 1, Depth: depth, SQ: sq, CQ: cq, Registers: d, DMA: mem,
		PageSize: 4096, MaxTransfer: 128 << 10, LBASizes: map[uint32]int{1: 4096},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = q.Detach() })
	return q, d, buf
}

// BenchmarkEngine is the engine's own cost per I/O, against nullDevice:
// 4 KiB reads, 32 per doorbell and per Poll, each completion's callback
// submitting the next (as umdbench does). Submit builds a Command per
// read and gets it back in a Callback; SubmitIO passes the fields and
// gets the tag back in an IOCallback. Besides ns/op it reports
// time-stamp-counter cycles per op (reference cycles, see internal/cycles):
// all of them, and the host's, without those spent inside the device's
// doorbell writes (as umdbench --sim splits HOST and DEVICE).
func BenchmarkEngine(b *testing.B) {
	const batch = 32
	// run submits the first batch with first and polls until the
	// callbacks, which submit the rest, are done; then it reports.
	run := func(b *testing.B, q *nvmelike.QueuePair, d *nullDevice, first func(i uint64) error) {
		b.ReportAllocs()
		d.spent = 0
		start := cycles.Now()
		for i := range uint64(batch) {
			if err := first(i); err != nil {
				b.Fatal(err)
			}
		}
		for q.Outstanding() > 0 {
			q.Ring()
			if _, err := q.Poll(0); err != nil {
				b.Fatal(err)
			}
		}
		total := cycles.Now() - start
		b.ReportMetric(float64(total)/float64(b.N), "tsc-cycles/op")
		b.ReportMetric(float64(total-d.spent)/float64(b.N), "host-tsc-cycles/op")
	}
	b.Run("Submit", func(b *testing.B) {
		q, d, buf := nullQueue(b, 2*batch)
		var cmds [batch]nvmelike.Command
		var cb nvmelike.Callback
		left := 0
		cb = func(c *nvmelike.Command, _ nvmelike.Completion, err error) {
			if left <= 0 {
				return
			}
			left--
			i := c.Tag
			cmds[i] = nvmelike.ReadCommand(1, i, 1, buf.Slice(int(i)*4096, 4096))
			cmds[i].Tag = i
			if err := q.Submit(&cmds[i], cb); err != nil {
				b.Fatal(err)
			}
		}
		left = b.N - batch
		run(b, q, d, func(i uint64) error {
			cmds[i] = nvmelike.ReadCommand(1, i, 1, buf.Slice(int(i)*4096, 4096))
			cmds[i].Tag = i
			return q.Submit(&cmds[i], cb)
		})
	})
	b.Run("SubmitIO", func(b *testing.B) {
		q, d, buf := nullQueue(b, 2*batch)
		left := 0
		q.SetIOCallback(func(tag uint64, _ nvmelike.Completion, err error) {
			if left <= 0 {
				return
			}
			left--
			if err := q.SubmitIO(nvmelike.CmdRead, 1, tag, 1, buf.Slice(int(tag)*4096, 4096), tag); err != nil {
				b.Fatal(err)
			}
		})
		left = b.N - batch
		run(b, q, d, func(i uint64) error {
			return q.SubmitIO(nvmelike.CmdRead, 1, i, 1, buf.Slice(int(i)*4096, 4096), i)
		})
	})
}
