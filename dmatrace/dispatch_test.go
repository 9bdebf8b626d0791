package dmatrace

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// book is a one-record Book.
type book iommu.Record

func (b book) Lookup(iova uint64) (iommu.Record, bool) {
	r := iommu.Record(b)
	return r, r.Contains(iova)
}

// TestDispatchFailsCommand: a fault the tracer saw on a device this
// process owns fails the command in flight at that page with a
// *DMAFaultError that names the command and the buffer, instead of the
// command waiting for a completion that never comes.
func TestDispatchFailsCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mem := sim.NewMemory()
	dev := sim.New(mem, sim.Config{})
	ctrl, err := nvmelike.Open(ctx, dev, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	q, err := ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: 8})
	if err != nil {
		t.Fatal(err)
	}
	buf, err := mem.Alloc(4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	devs := []Device{{
		BDF:    "03:00.0",
		Book:   book{IOVA: buf.IOVA, Size: 4096, Owner: iommu.Owner{Name: "read buffer"}, Perm: iommu.PermRead},
		Engine: ctrl,
	}}
	if _, ok := Dispatch(Fault{BDF: "0000:04:00.0", IOVA: buf.IOVA, Write: true}, devs); ok {
		t.Error("a fault of another device was dispatched")
	}

	dev.DropCompletions(1)
	go func() {
		time.Sleep(20 * time.Millisecond)
		a, ok := Dispatch(Fault{Source: SourceDMAR, BDF: "0000:03:00.0", IOVA: buf.IOVA, Write: true, Reason: 5, Time: time.Now()}, devs)
		if !ok || a.Verdict != Live || a.HasCommand {
			t.Errorf("Dispatch = %v, %t; want a live mapping and no command yet", a, ok)
		}
	}()
	cmd := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
	_, err = q.Exec(ctx, &cmd)
	var fe *DMAFaultError
	if !errors.As(err, &fe) || !errors.Is(err, ErrDMAFault) {
		t.Fatalf("Exec: %v; want a *DMAFaultError", err)
	}
	t.Log(err)
	a := fe.Attribution
	if !a.HasCommand || a.Command.Queue != q.ID() || a.Command.Opcode != nvmelike.CmdRead || a.Record.Owner.Name != "read buffer" {
		t.Errorf("attribution %v; want the read on queue %d, in the read buffer", a, q.ID())
	}
}
