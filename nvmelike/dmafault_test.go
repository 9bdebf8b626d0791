package nvmelike_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// errTraced stands in for the tracer's error (dmatrace's *DMAFaultError).
var errTraced = errors.New("traced fault")

func tracedFault(iova uint64) nvmelike.DMAFault {
	return nvmelike.DMAFault{IOVA: iova, Err: func(c nvmelike.InFlightCommand) error {
		return fmt.Errorf("%w at 0x%x, %s of queue %d CID %d: %w", errTraced, iova, c.Ref, c.QID, c.CID, nvmelike.ErrDMAFault)
	}}
}

// TestInFlight finds the command behind a page: its data buffer, its PRP
// list page, and nothing elsewhere.
func TestInFlight(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 1024, LBASize: 4096}}}, nil)
	q := r.queue(t, 8)
	small := r.alloc(t, 4096)
	big := r.alloc(t, 64<<10)
	r.dev.DropCompletions(2)
	a := nvmelike.ReadCommand(1, 0, 1, small)
	b := nvmelike.WriteCommand(1, 0, 16, big)
	for _, c := range []*nvmelike.Command{&a, &b} {
		if err := q.Submit(c, nil); err != nil {
			t.Fatal(err)
		}
	}
	q.Ring()
	if c, ok := q.InFlight(small.IOVA + 100); !ok || c.Opcode != nvmelike.CmdRead || c.Ref != "data" || c.QID != q.ID() {
		t.Errorf("InFlight(small buffer) = %+v, %t; want the read's data", c, ok)
	}
	if c, ok := q.InFlight(big.IOVA + 40<<10); !ok || c.Opcode != nvmelike.CmdWrite || c.Ref != "data" {
		t.Errorf("InFlight(big buffer) = %+v, %t; want the write's data", c, ok)
	}
	// The write spans 16 pages: its PRP list is in a page of the queue's
	// own, found only through the trackers. Look for it among the pages
	// the sim handed out, outside both buffers.
	found := false
	for iova := uint64(0); iova < 1<<32 && !found; iova += 4096 {
		if c, ok := q.InFlight(iova); ok && c.Ref == "PRP list" {
			found = c.Opcode == nvmelike.CmdWrite
		}
	}
	if !found {
		t.Error("no page is the write's PRP list")
	}
	if c, ok := q.InFlight(1 << 40); ok {
		t.Errorf("InFlight(unused IOVA) = %+v", c)
	}
}

// TestReportDMAFaultCallback: a reported fault fails a callback's command
// at the next Poll, its tracker is held until its late completion.
func TestReportDMAFaultCallback(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	buf := r.alloc(t, 4096)
	other := r.alloc(t, 4096)
	r.dev.DropCompletions(2)
	var got []error
	cb := func(_ *nvmelike.Command, _ nvmelike.Completion, err error) { got = append(got, err) }
	c := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
	d := nvmelike.ReadCommand(1, 1, 1, other.Slice(0, 512))
	for _, cmd := range []*nvmelike.Command{&c, &d} {
		if err := q.Submit(cmd, cb); err != nil {
			t.Fatal(err)
		}
	}
	q.Ring()
	failed, ok := q.InFlight(buf.IOVA)
	if !ok {
		t.Fatal("the read is not in flight")
	}
	r.ctrl.ReportDMAFault(tracedFault(buf.IOVA + 0x200)) // any byte of the page
	if n, err := q.Poll(0); n != 0 || err != nil {
		t.Fatalf("poll %d, %v", n, err)
	}
	if len(got) != 1 || !errors.Is(got[0], nvmelike.ErrDMAFault) || !errors.Is(got[0], errTraced) {
		t.Fatalf("callbacks got %v; want one traced DMA fault", got)
	}
	t.Log(got[0])
	if q.Outstanding() != 2 || q.Stats().DMAFaults != 1 {
		t.Errorf("%d outstanding, %d failed; want both held, one failed", q.Outstanding(), q.Stats().DMAFaults)
	}
	// Failing it again does nothing.
	if q.FailInFlight(failed.CID, errTraced) {
		t.Error("FailInFlight on a failed command reported true")
	}
	// Its late completion frees the tracker without a second callback.
	if !r.dev.PostRaw(q.ID(), nvmelike.Completion{CID: failed.CID, SQID: q.ID(), SQHead: 2}) {
		t.Fatal("PostRaw")
	}
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || q.Outstanding() != 1 || q.Stats().Orphaned != 1 {
		t.Errorf("after the late completion: %d callbacks, %d outstanding, %d orphaned", len(got), q.Outstanding(), q.Stats().Orphaned)
	}
}

// TestReportDMAFaultExec: a fault reported from another goroutine ends an
// Exec whose completion never comes, with the tracer's error, long before
// its context would.
func TestReportDMAFaultExec(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	q := r.queue(t, 8)
	buf := r.alloc(t, 8192)
	r.dev.DropCompletions(1)
	go func() {
		time.Sleep(20 * time.Millisecond)
		r.ctrl.ReportDMAFault(tracedFault(buf.IOVA + 4096))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c := nvmelike.ReadCommand(1, 0, 16, buf)
	_, err := q.Exec(ctx, &c)
	if !errors.Is(err, nvmelike.ErrDMAFault) || !errors.Is(err, errTraced) || time.Since(start) > 5*time.Second {
		t.Fatalf("Exec: %v after %v; want the traced DMA fault", err, time.Since(start))
	}
	t.Log(err)
	if q.Outstanding() != 1 {
		t.Errorf("%d outstanding; want the failed command held", q.Outstanding())
	}
	// The queue goes on working; deleting it frees the held tracker.
	ok := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
	if _, err := q.Exec(testContext(t), &ok); err != nil {
		t.Fatal(err)
	}
	if err := r.ctrl.DeleteQueuePair(testContext(t), q); err != nil {
		t.Fatal(err)
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d outstanding after delete", q.Outstanding())
	}
}

// TestReportDMAFaultAdmin: an admin command (Identify) whose completion
// never comes fails with the fault.
func TestReportDMAFaultAdmin(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	buf := r.alloc(t, 4096)
	r.dev.DropAdminCompletions(1)
	go func() {
		time.Sleep(20 * time.Millisecond)
		r.ctrl.ReportDMAFault(tracedFault(buf.IOVA))
	}()
	c := nvmelike.IdentifyCommand(nvmelike.IdentifyCNSController, 0, buf)
	if _, err := r.ctrl.Admin(testContext(t), &c); !errors.Is(err, nvmelike.ErrDMAFault) {
		t.Fatalf("Admin: %v; want a DMA fault", err)
	}
}

// TestReportDMAFaultNotOurs: faults at pages no command uses, or reported
// before a queue pair existed, fail nothing.
func TestReportDMAFaultNotOurs(t *testing.T) {
	r := newRig(t, sim.Config{}, nil)
	buf := r.alloc(t, 4096)
	r.ctrl.ReportDMAFault(tracedFault(buf.IOVA))
	q := r.queue(t, 8)
	r.ctrl.ReportDMAFault(nvmelike.DMAFault{IOVA: 1 << 40})
	c := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
	if _, err := q.Exec(testContext(t), &c); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if s := q.Stats(); s.DMAFaults != 0 || q.Outstanding() != 0 {
		t.Errorf("%d failed, %d outstanding", s.DMAFaults, q.Outstanding())
	}
}
