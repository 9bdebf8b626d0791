package nvmelike

import (
	"errors"
	"fmt"
)

// A full SQ (or a queue pair with every tracker in use) makes Submit
// return ErrQueueFull by default: the caller polls and retries, or calls
// SubmitWait, which polls until a slot frees. SetBacklog chooses the other
// behaviour: Submit then queues the command in software, in a ring of
// entries preallocated by SetBacklog, and Poll moves backlogged commands
// into the SQ, in submission order, as completions free slots, ringing the
// doorbell once for those it moved. Nothing is allocated either way.

// ErrBacklogFull is returned by Submit when the SQ and the software
// backlog (SetBacklog) are both full. It wraps ErrQueueFull.
var ErrBacklogFull = fmt.Errorf("software backlog full: %w", ErrQueueFull)

// backlogEntry is a command waiting for a slot: a copy of the caller's
// Command, its callback and its deadline (0: none).
type backlogEntry struct {
	cmd      Command
	cb       Callback
	deadline int64
}

// SetBacklog lets Submit and SubmitTimeout queue up to n commands in
// software while the queue pair is full, instead of returning
// ErrQueueFull; n = 0 (the default) turns it off. It allocates the n
// entries now. It is refused while commands are backlogged. A backlogged
// command's timeout runs from its Submit; Exec, SubmitBatch and
// SubmitWait never backlog.
func (q *QueuePair) SetBacklog(n int) error {
	if n < 0 || n > 1<<20 {
		return fmt.Errorf("queue %d: backlog of %d commands: want 0 to %d", q.id, n, 1<<20)
	}
	if q.blLen > 0 {
		return fmt.Errorf("queue %d: changing the backlog with %d commands in it", q.id, q.blLen)
	}
	q.backlog = make([]backlogEntry, n)
	q.blHead = 0
	return nil
}

// Backlogged returns the number of commands waiting in the software
// backlog.
func (q *QueuePair) Backlogged() int { return q.blLen }

// enqueue puts cmd at the tail of the backlog.
func (q *QueuePair) enqueue(cmd *Command, cb Callback, deadline int64) error {
	if q.blLen == len(q.backlog) {
		return ErrBacklogFull
	}
	i := q.blHead + q.blLen
	if i >= len(q.backlog) {
		i -= len(q.backlog)
	}
	e := &q.backlog[i]
	e.cmd, e.cb, e.deadline = *cmd, cb, deadline
	q.blLen++
	q.stats.Backlogged++
	return nil
}

// drainBacklog moves backlogged commands into the SQ while there is room,
// and rings if it moved any. A command the engine refuses for another
// reason than a full queue completes through its callback with that
// error. Poll calls it, with inPoll set.
func (q *QueuePair) drainBacklog() {
	moved := false
	for q.blLen > 0 {
		e := &q.backlog[q.blHead]
		t, err := q.submit(&e.cmd, e.cb, trackerBusy)
		if errors.Is(err, ErrQueueFull) {
			break
		}
		deadline := e.deadline
		cb := q.popBacklog()
		if err != nil {
			if cb != nil {
				cb(&q.cbCmd, Completion{SQID: q.id}, err)
			}
		} else {
			q.setDeadline(t, deadline)
			moved = true
		}
	}
	if moved {
		q.Ring()
	}
}

// failBacklog completes every backlogged command with err.
func (q *QueuePair) failBacklog(err error) {
	for q.blLen > 0 {
		if cb := q.popBacklog(); cb != nil {
			cb(&q.cbCmd, Completion{SQID: q.id}, err)
		}
	}
}

// popBacklog removes the backlog's head, leaving its command in q.cbCmd
// for a callback, and returns its callback.
func (q *QueuePair) popBacklog() Callback {
	e := &q.backlog[q.blHead]
	q.cbCmd = e.cmd
	cb := e.cb
	*e = backlogEntry{}
	q.blHead++
	if q.blHead == len(q.backlog) {
		q.blHead = 0
	}
	q.blLen--
	return cb
}
