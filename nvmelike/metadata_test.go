package nvmelike_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// TestMetadataFormats checks the data length and metadata pointer of LBA
// commands on namespaces formatted with metadata, on a queue pair of the
// controller and on an attached one: after each block's data (extended
// LBAs) the data buffer holds both, so a buffer of the blocks' data alone
// is refused (the controller would move past its end); in a buffer of its
// own, a command without a metadata pointer is refused (the controller
// would move the metadata to or from IOVA 0). With both right, data and
// metadata go and come back.
func TestMetadataFormats(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{
		{Blocks: 64},
		{Blocks: 64, Metadata: 8},
		{Blocks: 64, Metadata: 8, Extended: true},
	}}, nil)
	for _, f := range []struct {
		nsid uint32
		want nvmelike.BlockFormat
	}{{1, nvmelike.BlockFormat{LBASize: 512}}, {2, nvmelike.BlockFormat{LBASize: 512, Metadata: 8}}, {3, nvmelike.BlockFormat{LBASize: 512, Metadata: 8, Extended: true}}} {
		ns, err := r.ctrl.IdentifyNamespace(testContext(t), f.nsid)
		if err != nil {
			t.Fatal(err)
		}
		if got := ns.BlockFormat(); got != f.want {
			t.Fatalf("namespace %d: %+v, want %+v", f.nsid, got, f.want)
		}
	}
	_, attached, _, _ := r.remotePair(t, 16)
	for _, q := range []*nvmelike.QueuePair{r.queue(t, 16), attached} {
		const nlb = 8
		q.SetIOCallback(func(tag uint64, _ nvmelike.Completion, err error) {
			t.Errorf("queue %d: I/O %d completed (%v), none should reach the controller", q.ID(), tag, err)
		})
		submitted := q.Stats().Submitted
		// Extended: 8 blocks of 512 + 8 bytes.
		short := r.alloc(t, nlb*512)
		w := nvmelike.WriteCommand(3, 0, nlb, short)
		if _, err := q.Exec(testContext(t), &w); !errors.Is(err, nvmelike.ErrDataLength) {
			t.Errorf("queue %d: extended LBAs, a buffer of the data alone: %v, want ErrDataLength", q.ID(), err)
		}
		if err := q.SubmitIO(nvmelike.CmdRead, 3, 0, nlb, short, 1); !errors.Is(err, nvmelike.ErrDataLength) {
			t.Errorf("queue %d: SubmitIO, extended LBAs, a buffer of the data alone: %v, want ErrDataLength", q.ID(), err)
		}
		// Separate: no MPTR.
		data := r.alloc(t, nlb*512)
		rd := nvmelike.ReadCommand(2, 0, nlb, data)
		if _, err := q.Exec(testContext(t), &rd); !errors.Is(err, nvmelike.ErrNoMetadataPointer) {
			t.Errorf("queue %d: separate metadata, no MPTR: %v, want ErrNoMetadataPointer", q.ID(), err)
		}
		if n := q.Stats().Submitted; n != submitted {
			t.Errorf("queue %d: %d commands reached the controller, want none", q.ID(), n-submitted)
		}

		// Right: extended.
		ext := r.alloc(t, nlb*520)
		for i := range ext.Bytes {
			ext.Bytes[i] = byte(i*7 + int(q.ID()))
		}
		w = nvmelike.WriteCommand(3, 8, nlb, ext)
		if _, err := q.Exec(testContext(t), &w); err != nil {
			t.Fatalf("queue %d: extended write: %v", q.ID(), err)
		}
		back := r.alloc(t, nlb*520)
		rd = nvmelike.ReadCommand(3, 8, nlb, back)
		if _, err := q.Exec(testContext(t), &rd); err != nil || !bytes.Equal(back.Bytes, ext.Bytes) {
			t.Errorf("queue %d: extended read back: equal %v, %v", q.ID(), bytes.Equal(back.Bytes, ext.Bytes), err)
		}
		// Right: separate, with MPTR.
		meta := r.alloc(t, nlb*8)
		for i := range meta.Bytes {
			meta.Bytes[i] = byte(i + 100*int(q.ID()))
		}
		for i := range data.Bytes {
			data.Bytes[i] = byte(i*3 + int(q.ID()))
		}
		w = nvmelike.WriteCommand(2, 16, nlb, data)
		w.MPTR = meta.IOVA
		if _, err := q.Exec(testContext(t), &w); err != nil {
			t.Fatalf("queue %d: write with separate metadata: %v", q.ID(), err)
		}
		dback, mback := r.alloc(t, nlb*512), r.alloc(t, nlb*8)
		rd = nvmelike.ReadCommand(2, 16, nlb, dback)
		rd.MPTR = mback.IOVA
		if _, err := q.Exec(testContext(t), &rd); err != nil || !bytes.Equal(dback.Bytes, data.Bytes) || !bytes.Equal(mback.Bytes, meta.Bytes) {
			t.Errorf("queue %d: read with separate metadata: data equal %v, metadata equal %v, %v", q.ID(), bytes.Equal(dback.Bytes, data.Bytes), bytes.Equal(mback.Bytes, meta.Bytes), err)
		}
		// The plain namespace still takes the short path's check.
		if err := q.SubmitIO(nvmelike.CmdRead, 1, 0, nlb, ext, 2); !errors.Is(err, nvmelike.ErrDataLength) {
			t.Errorf("queue %d: plain namespace, 8 blocks into %d bytes: %v", q.ID(), len(ext.Bytes), err)
		}
	}
}
