//go:build guest

package nvmelike_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/qemu/guest/guestdev"
)

// TestGuestTimeoutAbortLateCompletion times a command out on a real
// controller deterministically: it is written into the SQ but its doorbell
// is not rung, so the device cannot have seen it when its deadline passes.
// Poll fails it with ErrTimeout and the engine sends a real Abort on the
// admin queue (the controller cannot abort what it never fetched). The
// command's tracker and buffer stay held; once the doorbell is rung the
// device runs it, and its late completion is dropped and counted, never
// delivered twice, and the queue pair goes on working.
func TestGuestTimeoutAbortLateCompletion(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev := guestdev.Open(t, nil)
	ctrl := dev.Controller()
	nsid := ctrl.Namespaces()[0]
	ns, err := ctrl.IdentifyNamespace(ctx, nsid)
	if err != nil {
		t.Fatal(err)
	}
	q := guestdev.QueuePair(t, dev, umd.QueueOptions{Depth: 8})
	buf := guestdev.Alloc(t, dev, ns.LBASize)
	// Known contents at the LBA, written with a plain Exec.
	fill(buf.Bytes, 0x3c)
	want := bytes.Clone(buf.Bytes)
	w := nvmelike.WriteCommand(nsid, 5, 1, buf)
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}

	before := ctrl.AbortStats()
	var got []error
	clear(buf.Bytes)
	r := nvmelike.ReadCommand(nsid, 5, 1, buf)
	if err := q.SubmitTimeout(&r, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) { got = append(got, err) }, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// No Ring: the device does not know of the read.
	time.Sleep(5 * time.Millisecond)
	if _, err := q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !errors.Is(got[0], nvmelike.ErrTimeout) {
		t.Fatalf("after the deadline: callbacks %v, want one ErrTimeout", got)
	}
	if q.Outstanding() != 1 {
		t.Fatalf("%d trackers held after the timeout, want 1 (the read's, until its completion)", q.Outstanding())
	}
	// The Abort goes out on the admin queue; the next admin command reaps
	// its completion.
	if _, err := ctrl.IdentifyNamespace(ctx, nsid); err != nil {
		t.Fatal(err)
	}
	st := ctrl.AbortStats()
	if st.Requested != before.Requested+1 || st.Sent != before.Sent+1 {
		t.Fatalf("abort stats %+v after one timeout, before %+v", st, before)
	}
	if st.Aborted != before.Aborted {
		t.Errorf("the controller says it aborted a command it never fetched: %+v", st)
	}
	// Now the device runs the read; its completion is late and dropped.
	q.Ring()
	deadline := time.Now().Add(5 * time.Second)
	for q.Outstanding() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the late completion never came")
		}
		if _, err := q.Poll(0); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 1 {
		t.Fatalf("the late completion reached the callback again: %v", got)
	}
	if q.Stats().Orphaned == 0 {
		t.Errorf("stats %+v: the late completion was not counted", q.Stats())
	}
	if !bytes.Equal(buf.Bytes, want) {
		t.Error("the late read did not fill the buffer the engine kept for it")
	}
	// The queue pair works on.
	if _, err := q.Exec(ctx, &r); err != nil {
		t.Fatalf("a read after the late completion: %v", err)
	}
}
