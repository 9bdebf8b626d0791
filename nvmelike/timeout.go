package nvmelike

import (
	"fmt"
	"time"
)

// Timeouts of asynchronous commands.
//
// A command submitted with a timeout (SubmitTimeout, or Submit on a queue
// pair with a default: QueueOptions.Timeout, SetTimeout) carries a
// deadline in its tracker. Poll reads the clock once per call, and only
// while some timed command may be outstanding; it looks at the trackers
// only when the earliest deadline has passed. A command past its deadline
// completes with ErrTimeout, the controller is asked to send an Abort for
// it (admin opcode 0x08 naming its SQ ID and CID; for a split command,
// one per part still on the device), and its tracker, PRP list and data
// buffer stay held until its late completion arrives (dropped and counted
// in Stats().Orphaned), the controller is reset or the queue pair is
// deleted, as for a command whose Exec gave up.
//
// Exec is bounded by its context, not by these timeouts.

// clockEpoch anchors clock: readings are monotonic nanoseconds since
// package initialisation, so a deadline of 0 can mean none.
var clockEpoch = time.Now()

// clock returns monotonic nanoseconds since clockEpoch, at least 1. It
// makes no system call (the vDSO serves it on Linux) and does not
// allocate.
func clock() int64 { return max(int64(time.Since(clockEpoch)), 1) }

// SetTimeout sets the default timeout of commands submitted with Submit,
// SubmitBatch and SubmitWait from now on; 0 means none. Commands already
// submitted keep theirs.
func (q *QueuePair) SetTimeout(d time.Duration) {
	q.timeout = max(d, 0)
	q.updateIOPath()
}

// Timeout returns the default timeout of asynchronous commands (0: none).
func (q *QueuePair) Timeout() time.Duration { return q.timeout }

// SubmitTimeout is Submit with a timeout of its own: if cmd has not
// completed d after it was submitted, a Poll after that completes it
// through cb with an error wrapping ErrTimeout and has the controller
// send an Abort for it. d <= 0 means no timeout. Submitting reads the
// clock once when d > 0.
func (q *QueuePair) SubmitTimeout(cmd *Command, cb Callback, d time.Duration) error {
	if q.blLen > 0 && !q.closed {
		// Behind commands already waiting: keep the order.
		return q.enqueue(cmd, cb, deadlineAfter(d))
	}
	t, err := q.submit(cmd, cb, trackerBusy)
	if err == ErrQueueFull && len(q.backlog) > 0 {
		return q.enqueue(cmd, cb, deadlineAfter(d))
	}
	if err != nil {
		return err
	}
	q.setDeadline(t, deadlineAfter(d))
	return nil
}

// deadlineAfter returns the deadline d from now, 0 for none.
func deadlineAfter(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return clock() + int64(d)
}

// setDeadline gives t a deadline (0: none) and keeps nextDeadline at or
// before it.
func (q *QueuePair) setDeadline(t *tracker, deadline int64) {
	t.deadline = deadline
	if deadline != 0 && (q.nextDeadline == 0 || deadline < q.nextDeadline) {
		q.nextDeadline = deadline
	}
}

// expire times out every command whose deadline is at or before now and
// recomputes nextDeadline. Poll calls it, with inPoll set.
func (q *QueuePair) expire(now int64) {
	q.nextDeadline = 0 // rebuilt below, and by submissions from callbacks
	for i := range q.trackers {
		t := &q.trackers[i]
		if t.deadline == 0 {
			continue
		}
		if t.state != trackerBusy || t.failed != nil {
			t.deadline = 0 // failed or given up on already: nothing to time
			continue
		}
		if t.deadline > now {
			q.setDeadline(t, t.deadline)
			continue
		}
		t.deadline = 0
		q.timeOut(uint16(i))
	}
}

// timeOut fails the command on tracker idx with ErrTimeout and asks for
// an Abort of each of its parts still on the device.
func (q *QueuePair) timeOut(idx uint16) {
	t := &q.trackers[idx]
	cid := t.cid
	if q.abort != nil {
		if t.parts == 0 || !t.partDone {
			q.abort(q.id, cid)
		}
		if t.parts > 0 {
			for j := range q.trackers {
				if p := &q.trackers[j]; p.state == trackerChild && p.head == idx {
					q.abort(q.id, p.cid)
				}
			}
		}
	}
	q.stats.Timeouts++
	q.failCommand(cid, fmt.Errorf("queue %d: opcode 0x%02x cid 0x%04x: %w", q.id, t.cmd.Opcode, cid, ErrTimeout))
}
