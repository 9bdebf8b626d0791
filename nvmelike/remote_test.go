package nvmelike_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// remotePair creates a remote queue on r's controller over rings from r's
// memory and attaches a queue pair to them, as a broker and its client
// would in two processes.
func (r *rig) remotePair(t *testing.T, depth int) (*nvmelike.RemoteQueue, *nvmelike.QueuePair, nvmelike.Buffer, nvmelike.Buffer) {
	t.Helper()
	sq := r.alloc(t, depth*64)
	cq := r.alloc(t, depth*16)
	rq, err := r.ctrl.CreateRemoteQueue(testContext(t), nvmelike.RemoteQueueOptions{Depth: depth, SQ: sq.IOVA, CQ: cq.IOVA})
	if err != nil {
		t.Fatalf("CreateRemoteQueue: %v", err)
	}
	formats := map[uint32]nvmelike.BlockFormat{}
	for _, nsid := range r.ctrl.Namespaces() {
		ns, err := r.ctrl.IdentifyNamespace(testContext(t), nsid)
		if err != nil {
			t.Fatal(err)
		}
		formats[nsid] = ns.BlockFormat()
	}
	q, err := nvmelike.AttachQueuePair(nvmelike.AttachOptions{
		ID: rq.ID(), Depth: depth, SQ: sq, CQ: cq, Registers: r.dev, DMA: r.mem,
		PageSize: r.ctrl.PageSize(), MaxTransfer: r.ctrl.MaxTransfer(), Formats: formats,
		Registry: r.ctrl.Registry(),
	})
	if err != nil {
		t.Fatalf("AttachQueuePair: %v", err)
	}
	return rq, q, sq, cq
}

func TestRemoteQueueIO(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	local := r.queue(t, 16) // takes QID 1
	rq, q, _, _ := r.remotePair(t, 32)
	if rq.ID() != 2 || q.ID() != 2 {
		t.Fatalf("remote queue ID %d, attached %d; want 2 after a local pair on 1", rq.ID(), q.ID())
	}
	// A second local pair must skip the remote queue's ID.
	local2 := r.queue(t, 16)
	if local2.ID() != 3 {
		t.Fatalf("local queue pair after a remote queue got ID %d, want 3", local2.ID())
	}
	if n := r.ctrl.QueuesInUse(); n != 3 {
		t.Fatalf("QueuesInUse %d with two local pairs and a remote queue", n)
	}

	// Write through the attached pair, read back through the local one:
	// both reach the same controller.
	const blocks = 24 // 12 KiB: PRP list from the attached pair's own list pages
	w := r.alloc(t, blocks*512)
	fill(w.Bytes, 0x5a)
	cmd := nvmelike.WriteCommand(1, 100, blocks, w)
	if _, err := q.Exec(testContext(t), &cmd); err != nil {
		t.Fatalf("write through the attached pair: %v", err)
	}
	rd := r.alloc(t, blocks*512)
	cmd = nvmelike.ReadCommand(1, 100, blocks, rd)
	if _, err := local.Exec(testContext(t), &cmd); err != nil {
		t.Fatalf("read through the local pair: %v", err)
	}
	if !bytes.Equal(rd.Bytes, w.Bytes) {
		t.Fatal("data written through the attached pair reads back different")
	}
	// The LBA sizes given to the attached pair are checked.
	bad := nvmelike.ReadCommand(1, 0, 2, r.alloc(t, 512))
	if err := q.Submit(&bad, nil); !errors.Is(err, nvmelike.ErrDataLength) {
		t.Fatalf("2 blocks into 512 bytes on the attached pair: %v, want ErrDataLength", err)
	}

	// Asynchronous: many in flight, completed by Poll.
	done := 0
	for i := range 20 {
		c := nvmelike.ReadCommand(1, uint64(i), 1, r.alloc(t, 512))
		if err := q.Submit(&c, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
			if err != nil {
				t.Errorf("async read: %v", err)
			}
			done++
		}); err != nil {
			t.Fatal(err)
		}
	}
	q.Ring()
	for done < 20 {
		if _, err := q.Poll(0); err != nil {
			t.Fatal(err)
		}
	}

	if err := local.Detach(); err == nil {
		t.Fatal("Detach of a controller's own queue pair succeeded")
	}
	if err := q.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := q.Detach(); err != nil {
		t.Fatalf("second Detach: %v", err)
	}
	c := nvmelike.FlushCommand(1)
	if err := q.Submit(&c, nil); err == nil {
		t.Fatal("Submit on a detached queue pair succeeded")
	}
	if err := r.ctrl.DeleteRemoteQueue(testContext(t), rq); err != nil {
		t.Fatalf("DeleteRemoteQueue: %v", err)
	}
	// Its ID is free again.
	again := r.queue(t, 16)
	if again.ID() != 2 {
		t.Fatalf("queue pair after deleting the remote queue got ID %d, want 2", again.ID())
	}
}

func TestRemoteQueueChecks(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	ring := r.alloc(t, 4096)
	for _, o := range []nvmelike.RemoteQueueOptions{
		{Depth: 1, SQ: ring.IOVA, CQ: ring.IOVA},
		{Depth: 1 << 20, SQ: ring.IOVA, CQ: ring.IOVA},
		{Depth: 16, SQ: ring.IOVA + 8, CQ: ring.IOVA},
		{Depth: 16, SQ: ring.IOVA, CQ: 0},
	} {
		if _, err := r.ctrl.CreateRemoteQueue(testContext(t), o); err == nil {
			t.Errorf("CreateRemoteQueue(%+v) succeeded", o)
		}
	}
	sq, cq := r.alloc(t, 4096), r.alloc(t, 4096)
	for _, o := range []nvmelike.AttachOptions{
		{ID: 1, Depth: 16, SQ: sq, CQ: cq, DMA: r.mem, PageSize: 4096, MaxTransfer: 1 << 20},                                                     // no registers
		{ID: 0, Depth: 16, SQ: sq, CQ: cq, Registers: r.dev, DMA: r.mem, PageSize: 4096, MaxTransfer: 1 << 20},                                   // admin queue
		{ID: 1, Depth: 512, SQ: sq, CQ: cq, Registers: r.dev, DMA: r.mem, PageSize: 4096, MaxTransfer: 1 << 20},                                  // rings too small
		{ID: 1, Depth: 16, SQ: sq, CQ: cq, Registers: r.dev, DMA: r.mem, PageSize: 3000, MaxTransfer: 1 << 20},                                   // page size
		{ID: 1, Depth: 16, SQ: sq, CQ: cq, Registers: r.dev, DMA: r.mem, PageSize: 4096, MaxTransfer: 512},                                       // transfer limit
		{ID: 1, Depth: 16, SQ: sq, CQ: cq, Registers: r.dev, DMA: r.mem, PageSize: 4096, MaxTransfer: 1 << 20, LBASizes: map[uint32]int{1: 100}}, // LBA size
	} {
		if q, err := nvmelike.AttachQueuePair(o); err == nil {
			q.Detach()
			t.Errorf("AttachQueuePair(ID %d depth %d page %d) succeeded", o.ID, o.Depth, o.PageSize)
		}
	}
	// Shadow doorbells: the rings' owner could not keep them, so no
	// remote queues.
	rs := newRig(t, sim.Config{DoorbellBufferConfig: true}, &nvmelike.Options{ShadowDoorbells: true})
	ring = rs.alloc(t, 4096)
	if _, err := rs.ctrl.CreateRemoteQueue(testContext(t), nvmelike.RemoteQueueOptions{Depth: 16, SQ: ring.IOVA, CQ: ring.IOVA}); err == nil {
		t.Error("CreateRemoteQueue with shadow doorbells on succeeded")
	}
}

func TestRemoteQueueLostInReset(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	rq, q, _, _ := r.remotePair(t, 16)
	if r.ctrl.Lost(rq) {
		t.Fatal("a new remote queue is lost")
	}
	if err := r.ctrl.Reset(testContext(t), nvmelike.ResetFail); err != nil {
		t.Fatal(err)
	}
	if !r.ctrl.Lost(rq) {
		t.Fatal("remote queue not lost after a reset")
	}
	// The controller no longer has the queue: a doorbell on it is an
	// invalid doorbell write, and the command never completes. The
	// owner learns of the loss from its creator and detaches.
	q.Detach()
	// Deleting a lost queue sends nothing and frees the ID.
	if err := r.ctrl.DeleteRemoteQueue(testContext(t), rq); err != nil {
		t.Fatalf("deleting a lost remote queue: %v", err)
	}
	if p := r.queue(t, 16); p.ID() != 1 {
		t.Fatalf("after deleting the lost queue, a new pair got ID %d, want 1", p.ID())
	}
	// Close deletes remote queues left behind.
	rq2, q2, _, _ := r.remotePair(t, 16)
	_ = rq2
	q2.Detach()
	if err := r.ctrl.Close(); err != nil {
		t.Fatalf("Close with a remote queue: %v", err)
	}
}

// TestRemoteQueueSGL: an attached queue pair told the controller's SGLS
// describes a scatter list with SGLs, and a DMA fault in one of its
// buffers is attributed to the command.
func TestRemoteQueueSGL(t *testing.T) {
	r := sglRig(t, nil)
	sq, cq := r.alloc(t, 16*64), r.alloc(t, 16*16)
	rq, err := r.ctrl.CreateRemoteQueue(testContext(t), nvmelike.RemoteQueueOptions{Depth: 16, SQ: sq.IOVA, CQ: cq.IOVA})
	if err != nil {
		t.Fatal(err)
	}
	q, err := nvmelike.AttachQueuePair(nvmelike.AttachOptions{
		ID: rq.ID(), Depth: 16, SQ: sq, CQ: cq, Registers: r.dev, DMA: r.mem,
		PageSize: r.ctrl.PageSize(), MaxTransfer: r.ctrl.MaxTransfer(),
		SGLS: r.ctrl.IdentifyController().SGLS, DataPointer: nvmelike.DataPointerSGL,
	})
	if err != nil {
		t.Fatalf("AttachQueuePair with SGLs: %v", err)
	}
	defer q.Detach()
	if q.DataPointer() != nvmelike.DataPointerSGL {
		t.Fatalf("data pointer %v", q.DataPointer())
	}
	parts := []nvmelike.Buffer{r.alloc(t, 4096).Slice(3, 512), r.alloc(t, 4096).Slice(100, 1024), r.alloc(t, 4096).Slice(0, 512)}
	for i, p := range parts {
		fill(p.Bytes, byte(i+1))
	}
	w := nvmelike.WriteCommand(1, 10, 4, nvmelike.Buffer{})
	w.Buffers = parts
	if _, err := q.Exec(testContext(t), &w); err != nil {
		t.Fatalf("a 3-buffer write through SGLs: %v", err)
	}
	back := r.alloc(t, 2048)
	rd := nvmelike.ReadCommand(1, 10, 4, back)
	if _, err := q.Exec(testContext(t), &rd); err != nil {
		t.Fatal(err)
	}
	off := 0
	for i, p := range parts {
		if !bytes.Equal(back.Bytes[off:off+len(p.Bytes)], p.Bytes) {
			t.Fatalf("part %d reads back different", i)
		}
		off += len(p.Bytes)
	}
	// In flight, a fault in the second buffer names the write.
	r.dev.DropCompletions(1)
	if err := q.Submit(&w, nil); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	if c, ok := q.InFlight(parts[1].IOVA + 200); !ok || c.Opcode != nvmelike.CmdWrite || c.Ref != "data" {
		t.Fatalf("InFlight(second buffer) = %+v, %t", c, ok)
	}
}
