package nvmelike

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrDMAFault is what a command fails with when its device faulted on a
// page the command referenced (reported with Controller.ReportDMAFault).
// Package dmatrace's ErrDMAFault is this same value.
var ErrDMAFault = errors.New("DMA fault")

// faultPage is the granule faults are matched at: VT-d, AMD-Vi and the
// Arm SMMU report the faulting address page-aligned, at 4 KiB.
const faultPage = 4096

// InFlightCommand names a command in flight that references an IOVA.
type InFlightCommand struct {
	QID    uint16
	CID    uint16
	Opcode uint8
	// Ref says what of the command references the IOVA: "data" (its data
	// buffer), "PRP list" (the tracker's PRP list pages) or "PRP1" /
	// "PRP2" (an address passed as is, such as a queue's base address).
	Ref string
}

// DMAFault is a DMA fault a tracer saw on the controller's device, handed
// to the engine so that the command behind it fails instead of timing out
// (or, as under QEMU, succeeding with its data gone nowhere).
type DMAFault struct {
	// IOVA is the faulting address; the 4 KiB page holding it is matched
	// against every command in flight.
	IOVA uint64
	// Err returns the error a matching command fails with. It runs on
	// the queue pair's goroutine, once per matching command; nil means
	// ErrDMAFault wrapped with the IOVA.
	Err func(InFlightCommand) error
}

// faultLogSize is how many reported faults a queue pair can fall behind
// by before it misses the oldest.
const faultLogSize = 16

// faultLog holds the latest faults reported to a controller, for its
// queue pairs to pick up on their own goroutines. Reporting takes a lock;
// a queue pair's Poll costs one atomic load (seq) while nothing is
// reported.
type faultLog struct {
	seq  atomic.Uint64 // faults reported so far; fault n is ring[(n-1)%faultLogSize]
	mu   sync.Mutex
	ring [faultLogSize]DMAFault
}

func (l *faultLog) post(f DMAFault) {
	l.mu.Lock()
	n := l.seq.Load() + 1
	l.ring[(n-1)%faultLogSize] = f
	l.seq.Store(n)
	l.mu.Unlock()
}

// since copies the faults reported after fault number seen into dst and
// returns how many, and the number of the latest.
func (l *faultLog) since(seen uint64, dst *[faultLogSize]DMAFault) (int, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.seq.Load()
	from := seen
	if now-from > faultLogSize {
		from = now - faultLogSize
	}
	n := 0
	for s := from + 1; s <= now; s++ {
		dst[n] = l.ring[(s-1)%faultLogSize]
		n++
	}
	return n, now
}

// ReportDMAFault tells the controller's queue pairs (the admin queue and
// every I/O queue pair) that the device faulted at f.IOVA. Each queue
// pair looks at it on its own goroutine, at its next Poll (which Exec
// runs while it waits): every command in flight there whose data buffer,
// PRP list pages or raw PRP1/PRP2 lie in the faulting 4 KiB page fails
// with f.Err, as FailInFlight does.
//
// It is safe to call from any goroutine (a tracer's) and never blocks on
// the queue pairs. Limits: a command submitted between the fault and the
// queue pair's next Poll that uses the same page fails too; a queue pair
// that does not poll while more than 16 faults are reported misses the
// oldest; a command that already completed is not touched (under QEMU,
// whose nvme completes a faulting command with status 0 before the fault
// interrupt arrives, that is the usual case).
func (c *Controller) ReportDMAFault(f DMAFault) { c.faults.post(f) }

// InFlight returns the command in flight on q whose data buffer, PRP list
// pages or raw data pointers lie in the 4 KiB page holding iova (the
// first one found, in tracker order), including commands given up on or
// already failed whose device may still DMA. It is a control-path call,
// O(depth), and like every QueuePair method belongs to q's goroutine.
func (q *QueuePair) InFlight(iova uint64) (InFlightCommand, bool) {
	page := iova &^ (faultPage - 1)
	for i := range q.trackers {
		t := &q.trackers[i]
		if t.state == trackerFree {
			continue
		}
		if ref := q.references(t, page); ref != "" {
			return InFlightCommand{QID: q.id, CID: t.cid, Opcode: t.cmd.Opcode, Ref: ref}, true
		}
	}
	return InFlightCommand{}, false
}

// references says what of t's command lies in the fault page at page, or
// "" if nothing does.
func (q *QueuePair) references(t *tracker, page uint64) string {
	overlaps := func(start, n uint64) bool {
		return n > 0 && start < page+faultPage && page < start+n
	}
	if len(t.cmd.Buffers) > 0 {
		for _, b := range t.cmd.Buffers {
			if overlaps(b.IOVA, uint64(len(b.Bytes))) {
				return "data"
			}
		}
		// A scatter list is described in the tracker's list page(s).
		if overlaps(t.list.IOVA, uint64(len(t.list.Bytes))) {
			return "SGL or PRP list"
		}
		return ""
	}
	d := t.cmd.Data
	n := uint64(len(d.Bytes))
	if n == 0 {
		switch {
		case t.cmd.PRP1 != 0 && overlaps(t.cmd.PRP1, 1):
			return "PRP1"
		case t.cmd.PRP2 != 0 && overlaps(t.cmd.PRP2, 1):
			return "PRP2"
		}
		return ""
	}
	if overlaps(d.IOVA, n) {
		return "data"
	}
	// buildPRP wrote a list when the data runs past the page after PRP1's.
	ps := uint64(q.pageSize)
	if first := ps - d.IOVA&(ps-1); n > first+ps && overlaps(t.list.IOVA, uint64(len(t.list.Bytes))) {
		return "PRP list"
	}
	return ""
}

// FailInFlight completes command cid on q with err now, instead of
// waiting for the device: a callback runs with err (on this goroutine,
// before FailInFlight returns), a waiting Exec returns err. It reports
// whether cid named a command in flight that had not yet been failed or
// given up on.
//
// The device may still be working on the command and DMA into its
// memory, so its tracker and PRP list stay held until its completion
// arrives (which is then dropped and counted in Stats().Orphaned), the
// controller is reset or q is deleted. The caller must not reuse the
// command's data buffer before that either.
//
// It belongs to q's goroutine, and may be called from a callback.
func (q *QueuePair) FailInFlight(cid uint16, err error) bool {
	if !q.failCommand(cid, err) {
		return false
	}
	q.stats.DMAFaults++
	return true
}

// failCommand is FailInFlight without the count.
func (q *QueuePair) failCommand(cid uint16, err error) bool {
	idx := cid & q.idxMask
	if int(idx) >= len(q.trackers) {
		return false
	}
	t := &q.trackers[idx]
	if t.cid != cid || t.state == trackerFree {
		return false
	}
	if t.state == trackerChild {
		// A part of a split command: the whole command fails.
		t = &q.trackers[t.head]
		cid = t.cid
	}
	if t.failed != nil {
		return false
	}
	switch t.state {
	case trackerSync:
		// Exec returns err at its next look. If the completion already
		// arrived (t.done), the device is done and Exec frees the
		// tracker; otherwise it leaves it orphaned.
		t.failed = err
	case trackerBusy:
		cb, io := t.cb, t.io
		t.state = trackerOrphaned
		t.failed = err
		t.cb, t.io = nil, false
		if cb != nil || io {
			cmd := t.cmd
			wasIn := q.inPoll
			q.inPoll = true // the callback may Submit, not Poll
			q.notify(io, cb, &cmd, Completion{CID: cid, SQID: q.id}, err)
			q.inPoll = wasIn
		}
	default:
		return false
	}
	return true
}

// applyFaults fails the commands that reported faults hit. Poll calls it
// when the controller's fault log moved.
func (q *QueuePair) applyFaults() {
	n, now := q.faults.since(q.seenFault, &q.faultBuf)
	q.seenFault = now
	for i := 0; i < n; i++ {
		f := &q.faultBuf[i]
		page := f.IOVA &^ (faultPage - 1)
		for j := range q.trackers {
			t := &q.trackers[j]
			if t.state == trackerFree || t.state == trackerOrphaned || t.failed != nil {
				continue
			}
			ref := q.references(t, page)
			if ref == "" {
				continue
			}
			c := InFlightCommand{QID: q.id, CID: t.cid, Opcode: t.cmd.Opcode, Ref: ref}
			var err error
			if f.Err != nil {
				err = f.Err(c)
			}
			if err == nil {
				err = fmt.Errorf("device faulted at IOVA 0x%x (%s of the command): %w", f.IOVA, ref, ErrDMAFault)
			}
			q.FailInFlight(c.CID, err)
		}
		*f = DMAFault{}
	}
}
