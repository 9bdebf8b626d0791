package nvmelike

import (
	"sync"
	"sync/atomic"
)

// Aborts of timed-out commands.
//
// A queue pair's Poll finds a command past its deadline on the queue
// pair's goroutine, which must not wait for the admin queue (its owner
// may be inside DeleteQueuePair, holding the controller's lock, when
// Poll runs). So the request goes into a small queue here; Poll then
// tries the controller's lock and, if it is free, submits the Aborts on
// the admin queue and rings, without waiting for their completions
// (which the next admin command reaps). If the lock is held, whoever
// holds it sends them with its next admin command.

// abortBacklog bounds the Aborts waiting to be sent; more are dropped
// and counted.
const abortBacklog = 64

type abortRequest struct{ sqid, cid uint16 }

type abortQueue struct {
	mu      sync.Mutex
	pending [abortBacklog]abortRequest
	n       int

	requested atomic.Uint64
	sent      atomic.Uint64
	dropped   atomic.Uint64
	aborted   atomic.Uint64
}

func (a *abortQueue) clear() {
	a.mu.Lock()
	a.dropped.Add(uint64(a.n))
	a.n = 0
	a.mu.Unlock()
}

// AbortStats counts the Aborts the engine sent for timed-out commands.
type AbortStats struct {
	Requested uint64 // commands timed out and to be aborted
	Sent      uint64 // Abort commands submitted on the admin queue
	Dropped   uint64 // requests not sent: backlog or admin queue full, queue deleted, reset
	Aborted   uint64 // Aborts the controller completed saying it aborted the command
}

// AbortStats returns the counts of Aborts sent for timed-out commands.
func (c *Controller) AbortStats() AbortStats {
	return AbortStats{
		Requested: c.aborts.requested.Load(),
		Sent:      c.aborts.sent.Load(),
		Dropped:   c.aborts.dropped.Load(),
		Aborted:   c.aborts.aborted.Load(),
	}
}

// requestAbort queues an Abort of command cid on SQ sqid and sends it
// now if the admin queue is free. It is the I/O queue pairs' abort hook:
// it runs on their goroutines and never waits for a command.
func (c *Controller) requestAbort(sqid, cid uint16) {
	a := &c.aborts
	a.requested.Add(1)
	a.mu.Lock()
	if a.n < len(a.pending) {
		a.pending[a.n] = abortRequest{sqid, cid}
		a.n++
	} else {
		a.dropped.Add(1)
	}
	a.mu.Unlock()
	if c.mu.TryLock() {
		c.sendAborts()
		c.mu.Unlock()
	}
}

// sendAborts reaps the completions of earlier Aborts and submits the
// pending ones on the admin queue, ringing once. The caller holds c.mu.
func (c *Controller) sendAborts() {
	a := &c.aborts
	a.mu.Lock()
	n := a.n
	if n == 0 {
		a.mu.Unlock()
		return
	}
	var reqs [abortBacklog]abortRequest
	copy(reqs[:], a.pending[:n])
	a.n = 0
	a.mu.Unlock()
	if c.closed || c.admin.closed {
		a.dropped.Add(uint64(n))
		return
	}
	_, _ = c.admin.Poll(0) // earlier Aborts' completions
	for _, r := range reqs[:n] {
		if int(r.sqid) >= len(c.pairs) || c.pairs[r.sqid] == nil {
			a.dropped.Add(1) // the queue was deleted: nothing to abort
			continue
		}
		cmd := AbortCommand(r.sqid, r.cid)
		if _, err := c.admin.submit(&cmd, c.abortDone, trackerBusy); err != nil {
			a.dropped.Add(1)
			continue
		}
		a.sent.Add(1)
	}
	c.admin.Ring()
}

// abortDone counts an Abort's completion: DW0 bit 0 clear means the
// controller aborted the command.
func (c *Controller) abortDone(_ *Command, cpl Completion, err error) {
	if err == nil && cpl.DW0&1 == 0 {
		c.aborts.aborted.Add(1)
	}
}
