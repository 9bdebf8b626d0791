package nvmelike_test

import (
	"context"
	"testing"
	"time"

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
