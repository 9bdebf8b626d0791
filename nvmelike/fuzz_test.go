package nvmelike_test

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// FuzzCompletions feeds a queue pair with commands in flight arbitrary
// completions: the engine must never panic, must deliver each command at
// most once and only to its own callback, and must keep its tracker
// accounting straight.
func FuzzCompletions(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 0, 2, 0, 0, 0, 0x41, 0, 3, 0, 2, 0, 9, 9, 9, 9, 2, 0, 5, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		wd := time.AfterFunc(10*time.Second, func() {
			buf := make([]byte, 1<<20)
			panic(string(buf[:runtime.Stack(buf, true)]))
		})
		defer wd.Stop()
		r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 8}}}, nil)
		q := r.queue(t, 16)
		const inFlight = 10
		delivered := make(map[uint64]int)
		cb := func(cmd *nvmelike.Command, c nvmelike.Completion, err error) {
			delivered[cmd.Tag]++
			if c.CID&0xf >= 15 {
				t.Errorf("delivered a completion with CID 0x%x", c.CID)
			}
		}
		// Commands whose real completions are dropped: they wait for
		// whatever the fuzzer sends.
		r.dev.DropCompletions(inFlight)
		for i := range inFlight {
			c := nvmelike.FlushCommand(1)
			c.Tag = uint64(i)
			if err := q.Submit(&c, cb); err != nil {
				t.Fatal(err)
			}
		}
		q.Ring()
		for len(data) >= 12 {
			e := data[:12]
			data = data[12:]
			cpl := nvmelike.Completion{
				CID:    binary.LittleEndian.Uint16(e[0:]),
				SQHead: binary.LittleEndian.Uint16(e[2:]),
				SQID:   binary.LittleEndian.Uint16(e[4:]),
				Status: binary.LittleEndian.Uint16(e[6:]) & 0x7fff,
				DW0:    binary.LittleEndian.Uint32(e[8:]),
			}
			if !r.dev.PostRaw(q.ID(), cpl) {
				_, _ = q.Poll(0)
				continue
			}
			if e[6]&0x80 != 0 { // sometimes batch several before polling
				continue
			}
			_, _ = q.Poll(int(e[7] % 4))
		}
		_, _ = q.Poll(0)
		total := 0
		for tag, n := range delivered {
			if n != 1 || tag >= inFlight {
				t.Fatalf("tag %d delivered %d times", tag, n)
			}
			total++
		}
		if q.Outstanding() != inFlight-total {
			t.Fatalf("%d outstanding, %d delivered of %d", q.Outstanding(), total, inFlight)
		}
		st := q.Stats()
		if st.Completed != uint64(total) {
			t.Fatalf("stats %+v, %d delivered", st, total)
		}
	})
}

// FuzzSplitCompletions feeds arbitrary completions to a queue pair with
// split commands in flight: each command is delivered at most once before
// the queue is deleted and exactly once counting the deletion, and no
// tracker is left behind.
func FuzzSplitCompletions(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{2, 0, 3, 0, 1, 0, 0x80, 0x01, 0, 0, 0, 0, 0x11, 0, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newRig(t, sim.Config{MDTS: 1, Namespaces: []sim.NamespaceConfig{{Blocks: 256, LBASize: 512}}}, nil)
		q := r.queue(t, 16)
		buf := r.alloc(t, 3*24<<10)
		const cmds = 3 // of 3 parts each
		delivered := make(map[uint64]int)
		cb := func(cmd *nvmelike.Command, c nvmelike.Completion, err error) {
			delivered[cmd.Tag]++
			if cmd.Data.Len() != 24<<10 {
				t.Errorf("delivered a part: %+v", cmd)
			}
		}
		r.dev.DropCompletions(3 * cmds)
		for i := range cmds {
			c := nvmelike.ReadCommand(1, uint64(48*i), 48, buf.Slice(i*24<<10, 24<<10))
			c.Tag = uint64(i)
			if err := q.Submit(&c, cb); err != nil {
				t.Fatal(err)
			}
		}
		q.Ring()
		for len(data) >= 12 {
			e := data[:12]
			data = data[12:]
			cpl := nvmelike.Completion{
				CID:    binary.LittleEndian.Uint16(e[0:]) & 0x3ff,
				SQHead: binary.LittleEndian.Uint16(e[2:]),
				SQID:   binary.LittleEndian.Uint16(e[4:]),
				Status: binary.LittleEndian.Uint16(e[6:]) & 0x7fff,
			}
			if !r.dev.PostRaw(q.ID(), cpl) {
				_, _ = q.Poll(0)
				continue
			}
			if e[8]&1 != 0 {
				if in, ok := q.InFlight(buf.IOVA + uint64(e[9])*512); ok {
					q.FailInFlight(in.CID, nvmelike.ErrDMAFault)
				}
			}
			_, _ = q.Poll(int(e[10] % 4))
		}
		_, _ = q.Poll(0)
		for tag, n := range delivered {
			if n != 1 || tag >= cmds {
				t.Fatalf("tag %d delivered %d times", tag, n)
			}
		}
		if err := r.ctrl.DeleteQueuePair(testContext(t), q); err != nil {
			t.Fatal(err)
		}
		for tag := range uint64(cmds) {
			if delivered[tag] != 1 {
				t.Fatalf("tag %d delivered %d times in all", tag, delivered[tag])
			}
		}
		if q.Outstanding() != 0 {
			t.Fatalf("%d outstanding after delete", q.Outstanding())
		}
	})
}
