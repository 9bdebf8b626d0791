package nvmelike_test

import (
	"errors"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// recvEvent returns the next event on ch, polling the admin queue.
func recvEvent(t *testing.T, r *rig, ch <-chan nvmelike.AsyncEvent) nvmelike.AsyncEvent {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("event channel closed")
			}
			return ev
		default:
		}
		if _, err := r.ctrl.PollAdmin(); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("no event")
	return nvmelike.AsyncEvent{}
}

// TestAsyncEvents: the engine keeps N Asynchronous Event Requests
// outstanding and delivers the events the controller posts, in order,
// through a reset and until Close.
func TestAsyncEvents(t *testing.T) {
	r := newRig(t, sim.Config{AERL: 3}, nil)
	if _, err := r.ctrl.EnableAsyncEvents(0); err == nil {
		t.Error("0 requests accepted")
	}
	if _, err := r.ctrl.EnableAsyncEvents(5); err == nil {
		t.Error("5 requests accepted with AERL 3")
	}
	ch, err := r.ctrl.EnableAsyncEvents(2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ctrl.EnableAsyncEvents(2); err == nil {
		t.Error("enabled twice")
	}
	if n := r.dev.AsyncEventRequests(); n != 2 {
		t.Fatalf("%d requests outstanding on the controller", n)
	}
	if !r.dev.PostAsyncEvent(nvmelike.AsyncEventSMART, 0x01, nvmelike.NVME_LOG_SMART) {
		t.Fatal("no request took the event")
	}
	ev := recvEvent(t, r, ch)
	if ev.Type != nvmelike.AsyncEventSMART || ev.Info != 0x01 || ev.LogPage != nvmelike.NVME_LOG_SMART {
		t.Errorf("event %+v (%v)", ev, ev)
	}
	if n := r.dev.AsyncEventRequests(); n != 2 {
		t.Errorf("%d requests outstanding after an event, want 2 again", n)
	}
	// More events than requests: the controller keeps the third for the
	// next request, which the engine submits as it takes the first two.
	for i := range 3 {
		r.dev.PostAsyncEvent(nvmelike.AsyncEventNotice, uint8(i), 0x04)
	}
	for i := range 3 {
		if ev := recvEvent(t, r, ch); ev.Type != nvmelike.AsyncEventNotice || ev.Info != uint8(i) {
			t.Errorf("event %d: %v", i, ev)
		}
	}
	// An admin command delivers events too.
	r.dev.PostAsyncEvent(nvmelike.AsyncEventError, 0x02, nvmelike.NVME_LOG_ERROR)
	if _, err := r.ctrl.IdentifyNamespace(testContext(t), 1); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if ev.Type != nvmelike.AsyncEventError || ev.LogPage != nvmelike.NVME_LOG_ERROR {
			t.Errorf("event %v", ev)
		}
	default:
		t.Error("the event did not arrive with the admin command")
	}
	// A reset aborts the requests; the engine submits them again.
	if err := r.ctrl.Reset(testContext(t), nvmelike.ResetFail); err != nil {
		t.Fatal(err)
	}
	if n := r.dev.AsyncEventRequests(); n != 2 {
		t.Errorf("%d requests outstanding after the reset", n)
	}
	r.dev.PostAsyncEvent(nvmelike.AsyncEventVendor, 9, 0xc0)
	if ev := recvEvent(t, r, ch); ev.Type != nvmelike.AsyncEventVendor || ev.Info != 9 || ev.LogPage != 0xc0 {
		t.Errorf("event after the reset: %v", ev)
	}
	if r.ctrl.AsyncEventsDropped() != 0 {
		t.Errorf("%d dropped", r.ctrl.AsyncEventsDropped())
	}
	if err := r.ctrl.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Error("event channel still open after Close")
	}
	if _, err := r.ctrl.PollAdmin(); !errors.Is(err, nvmelike.ErrClosed) {
		t.Errorf("PollAdmin after Close: %v", err)
	}
}

// TestAsyncEventsOverflow: events past the channel's capacity are
// dropped and counted, and requests keep being resubmitted.
func TestAsyncEventsOverflow(t *testing.T) {
	r := newRig(t, sim.Config{}, nil) // AERL 0: one request
	ch, err := r.ctrl.EnableAsyncEvents(1)
	if err != nil {
		t.Fatal(err)
	}
	const n = 70
	for range n {
		r.dev.PostAsyncEvent(nvmelike.AsyncEventNotice, 0, 0x04)
		if _, err := r.ctrl.PollAdmin(); err != nil {
			t.Fatal(err)
		}
	}
	if got, dropped := len(ch), r.ctrl.AsyncEventsDropped(); got != 64 || dropped != n-64 {
		t.Errorf("%d events queued, %d dropped", got, dropped)
	}
	if r.dev.AsyncEventRequests() != 1 {
		t.Errorf("%d requests outstanding", r.dev.AsyncEventRequests())
	}
}

// TestErrorLog: failed commands show up in the Error Information log,
// newest first, with their queue, CID, status, namespace and LBA.
func TestErrorLog(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 64}}}, nil)
	if id := r.ctrl.IdentifyController(); id.ELPE != 15 {
		t.Errorf("ELPE %d", id.ELPE)
	}
	entries, err := r.ctrl.ErrorLog(testContext(t))
	if err != nil || len(entries) != 0 {
		t.Fatalf("error log of a fresh controller: %v, %v", entries, err)
	}
	q := r.queue(t, 8)
	buf := r.alloc(t, 4096)
	var cids []uint16
	for i := range 3 {
		c := nvmelike.ReadCommand(1, uint64(60+i), 8, buf)
		if err := q.Submit(&c, nil); err != nil {
			t.Fatal(err)
		}
		in, _ := q.InFlight(buf.IOVA)
		cids = append(cids, in.CID)
		q.Ring()
		if _, err := q.Poll(0); err != nil {
			t.Fatal(err)
		}
	}
	entries, err = r.ctrl.ErrorLog(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("%d entries: %+v", len(entries), entries)
	}
	for i, e := range entries {
		want := 2 - i // newest first
		if e.ErrorCount != uint64(want+1) || e.SQID != q.ID() || e.CID != cids[want] || e.NSID != 1 || e.LBA != uint64(60+want) {
			t.Errorf("entry %d: %+v, want cid 0x%04x", i, e, cids[want])
		}
		if err := e.Err(); !errors.Is(err, nvmelike.ErrLBAOutOfRange) {
			t.Errorf("entry %d: status %v", i, err)
		}
	}
	if _, err := nvmelike.ParseErrorLog(make([]byte, 65)); !errors.Is(err, nvmelike.ErrMalformed) {
		t.Errorf("a 65-byte page: %v", err)
	}
	if e := (nvmelike.ErrorLogEntry{}); e.Err() != nil {
		t.Errorf("empty entry: %v", e.Err())
	}
}
