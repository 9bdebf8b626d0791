package nvmelike_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

func TestBringUpAndIdentify(t *testing.T) {
	r := newRig(t, sim.Config{
		MDTS:                 5,
		ReadyDelay:           3,
		DSTRD:                2,
		Namespaces:           []sim.NamespaceConfig{{Blocks: 1024, LBASize: 512}, {Blocks: 256, LBASize: 4096}},
		VolatileWriteCache:   true,
		DoorbellBufferConfig: true,
	}, nil)
	c := r.ctrl
	if got := c.Version().String(); got != "1.4.0" {
		t.Errorf("version %s", got)
	}
	if c.PageSize() != 4096 {
		t.Errorf("page size %d", c.PageSize())
	}
	if c.MaxTransfer() != 4096<<5 {
		t.Errorf("max transfer %d, want %d", c.MaxTransfer(), 4096<<5)
	}
	if c.MaxIOQueues() != 16 {
		t.Errorf("granted %d I/O queues, want the 16 asked for", c.MaxIOQueues())
	}
	id := c.IdentifyController()
	if id.VID != 0x1b36 || id.SN != "UMDSIM0001" || id.MN != "umd software controller" || id.FR != "1.0" {
		t.Errorf("identify: %+v", id)
	}
	if id.MDTS != 5 || id.NN != 2 || id.SQES != 0x66 || id.CQES != 0x44 {
		t.Errorf("identify: %+v", id)
	}
	if !id.VolatileWriteCache() || !id.DoorbellBufferConfig() {
		t.Errorf("VWC %v, DBBUF %v", id.VolatileWriteCache(), id.DoorbellBufferConfig())
	}
	if got := c.Namespaces(); !slices.Equal(got, []uint32{1, 2}) {
		t.Errorf("namespaces %v", got)
	}
	for _, want := range []struct {
		nsid   uint32
		blocks uint64
		lbs    int
	}{{1, 1024, 512}, {2, 256, 4096}} {
		ns, err := c.IdentifyNamespace(testContext(t), want.nsid)
		if err != nil {
			t.Fatal(err)
		}
		if ns.NSZE != want.blocks || ns.NCAP != want.blocks || ns.LBASize != want.lbs {
			t.Errorf("namespace %d: %+v", want.nsid, ns)
		}
	}
	_, err := c.IdentifyNamespace(testContext(t), 9)
	if !errors.Is(err, nvmelike.ErrInvalidNamespace) {
		t.Errorf("identify namespace 9: %v, want ErrInvalidNamespace", err)
	}
	var se *nvmelike.StatusError
	if !errors.As(err, &se) || !se.DNR || se.Opcode != nvmelike.AdminIdentify {
		t.Errorf("identify namespace 9: %#v", se)
	}
}

func TestCloseShutsDownAndFreesMemory(t *testing.T) {
	mem := sim.NewMemory()
	dev := sim.New(mem, sim.Config{})
	c, err := nvmelike.Open(testContext(t), dev, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	q, err := c.CreateQueuePair(testContext(t), nvmelike.QueueOptions{Depth: 8})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateQueuePair(testContext(t), nvmelike.QueueOptions{Depth: 8}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteQueuePair(testContext(t), q); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := dev.Read32(nvmelike.NVME_REG_CSTS) & nvmelike.NVME_CSTS_SHST_MASK; got != nvmelike.NVME_CSTS_SHST_CMPLT {
		t.Errorf("CSTS.SHST 0x%x after Close", got)
	}
	if n := mem.Regions(); n != 0 {
		t.Errorf("%d DMA regions left after Close", n)
	}
	cmd := nvmelike.FlushCommand(1)
	if _, err := q.Exec(testContext(t), &cmd); !errors.Is(err, nvmelike.ErrClosed) {
		t.Errorf("Exec on a deleted queue: %v", err)
	}
	if err := q.Submit(&cmd, nil); !errors.Is(err, nvmelike.ErrClosed) {
		t.Errorf("Submit on a deleted queue: %v", err)
	}
	q.Ring()
	if _, err := q.Poll(0); !errors.Is(err, nvmelike.ErrClosed) {
		t.Errorf("Poll on a deleted queue: %v", err)
	}
	if _, err := c.CreateQueuePair(testContext(t), nvmelike.QueueOptions{}); !errors.Is(err, nvmelike.ErrClosed) {
		t.Errorf("CreateQueuePair after Close: %v", err)
	}
}

func TestReadyTimeout(t *testing.T) {
	mem := sim.NewMemory()
	dev := sim.New(mem, sim.Config{NeverReady: true, TO: 1})
	start := time.Now()
	_, err := nvmelike.Open(testContext(t), dev, mem, nil)
	if !errors.Is(err, nvmelike.ErrReadyTimeout) {
		t.Fatalf("Open: %v, want ErrReadyTimeout", err)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("gave up after %v, before CAP.TO's 500 ms", d)
	}
	// The context bounds the wait too.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	dev = sim.New(mem, sim.Config{NeverReady: true, TO: 255})
	if _, err := nvmelike.Open(ctx, dev, mem, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open with a short context: %v", err)
	}
}

func TestOpenDeviceGone(t *testing.T) {
	mem := sim.NewMemory()
	dev := sim.New(mem, sim.Config{})
	dev.Remove()
	if _, err := nvmelike.Open(testContext(t), dev, mem, nil); !errors.Is(err, nvmelike.ErrDeviceGone) {
		t.Fatalf("Open: %v, want ErrDeviceGone", err)
	}
}

func TestQueueLimits(t *testing.T) {
	r := newRig(t, sim.Config{MaxQueues: 2, MQES: 64}, &nvmelike.Options{IOQueues: 8})
	if r.ctrl.MaxIOQueues() != 2 {
		t.Fatalf("granted %d queues, want 2", r.ctrl.MaxIOQueues())
	}
	q1 := r.queue(t, 1000) // capped at MQES
	if q1.Depth() != 64 || q1.ID() != 1 {
		t.Errorf("queue %d depth %d", q1.ID(), q1.Depth())
	}
	q2 := r.queue(t, 16)
	if q2.ID() != 2 {
		t.Errorf("second queue id %d", q2.ID())
	}
	if _, err := r.ctrl.CreateQueuePair(testContext(t), nvmelike.QueueOptions{}); !errors.Is(err, nvmelike.ErrQueueFull) {
		t.Errorf("third queue: %v", err)
	}
	if err := r.ctrl.DeleteQueuePair(testContext(t), q1); err != nil {
		t.Fatal(err)
	}
	if q := r.queue(t, 16); q.ID() != 1 {
		t.Errorf("reused id %d", q.ID())
	}
}

// smallBAR is a register file of limited size, like a mapped BAR0.
type smallBAR struct {
	*sim.Controller
	n int
}

func (b smallBAR) Len() int { return b.n }

func TestDoorbellsBoundedByBARSize(t *testing.T) {
	mem := sim.NewMemory()
	dev := sim.New(mem, sim.Config{DSTRD: 0})
	c, err := nvmelike.Open(testContext(t), smallBAR{dev, 0x1000 + 4*8}, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.MaxIOQueues() != 3 {
		t.Errorf("%d I/O queues for doorbells of 4 queue pairs", c.MaxIOQueues())
	}
}

func TestQueueInterruptVector(t *testing.T) {
	r := newRig(t, sim.Config{Vectors: 4}, nil)
	ctx := testContext(t)
	q, err := r.ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: 8, Interrupts: true, Vector: 3})
	if err != nil {
		t.Fatal(err)
	}
	c := nvmelike.FlushCommand(1)
	if _, err := q.Exec(ctx, &c); err != nil {
		t.Fatal(err)
	}
	_, err = r.ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: 8, Interrupts: true, Vector: 4})
	if !errors.Is(err, nvmelike.ErrInvalidInterruptVector) {
		t.Fatalf("vector past the controller's: %v", err)
	}
	if n := r.mem.Regions(); n != 3+3 { // admin (3) and the first queue pair (SQ, CQ, PRP lists)
		t.Errorf("%d DMA regions: the failed queue's memory leaked", n)
	}
}
