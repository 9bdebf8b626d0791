package nvmelike

import (
	"context"
	"errors"
	"fmt"
)

// ErrReset completes commands that were outstanding when the controller
// was reset under ResetFail.
var ErrReset = errors.New("controller reset")

// ResetPolicy says what Reset does with commands outstanding on I/O queue
// pairs.
type ResetPolicy int

const (
	// ResetFail completes every outstanding command with ErrReset.
	ResetFail ResetPolicy = iota
	// ResetRetry submits every outstanding command again once the queues
	// are back; their callbacks run when they complete. Commands whose
	// Exec had given up are dropped, not retried.
	ResetRetry
)

// Reset recovers the controller: disable (CC.EN=0, which stops all DMA and
// clears a fatal status), set the admin queue up again, enable, and
// re-create every I/O queue pair with its queue ID and memory, so the
// QueuePair values stay valid. Outstanding commands are failed or retried
// as policy says; callbacks of failed commands run on the calling
// goroutine, retried commands are rung and complete through the queue
// pair's Poll as usual.
//
// The caller must quiesce first: no goroutine may use any of the
// controller's queue pairs while Reset runs. A device that is gone returns
// ErrDeviceGone; a failure leaves the controller unusable except for Close
// and another Reset.
func (c *Controller) Reset(ctx context.Context, policy ResetPolicy) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if err := c.disable(ctx); err != nil {
		return fmt.Errorf("resetting: %w", err)
	}
	// The device no longer touches our memory: rewind every ring. Aborts
	// not sent yet name commands that no longer exist.
	c.aborts.clear()
	c.admin.abortAll(ErrReset)
	c.admin.rewind()
	type retry struct {
		q    *QueuePair
		cmds []pendingCommand
	}
	var retries []retry
	c.loseRemoteQueues()
	for _, q := range c.pairs {
		if q == nil {
			continue
		}
		if policy == ResetRetry {
			retries = append(retries, retry{q, q.takeOutstanding()})
		} else {
			q.abortAll(fmt.Errorf("queue %d: %w", q.id, ErrReset))
		}
		q.rewind()
	}
	// Memory held back from a lost command is safe to reuse now.
	for _, b := range c.unfreed {
		if b.Bytes != nil {
			_ = c.dma.Free(b)
		}
	}
	c.unfreed = nil

	if err := c.enable(ctx); err != nil {
		return fmt.Errorf("resetting: %w", err)
	}
	cmd := SetFeaturesCommand(NVME_FEAT_NUM_QUEUES, uint32(c.maxIOQueues-1)<<16|uint32(c.maxIOQueues-1))
	cpl, err := c.adminExec(ctx, &cmd)
	if err != nil {
		return fmt.Errorf("resetting: set features number of queues: %w", err)
	}
	if granted := min(int(cpl.DW0&0xffff), int(cpl.DW0>>16)) + 1; granted < c.maxIOQueues {
		return fmt.Errorf("resetting: the controller grants %d I/O queues, down from %d", granted, c.maxIOQueues)
	}
	if c.dbs.Bytes != nil {
		// A reset forgets the buffers: hand them over again, zeroed,
		// before the queues exist.
		if err := c.setUpShadowDoorbells(ctx); err != nil {
			return fmt.Errorf("resetting: %w", err)
		}
	}
	for i, q := range c.pairs {
		if q == nil {
			continue
		}
		if err := c.createRings(ctx, q); err != nil {
			q.markClosed()
			c.pairs[i] = nil
			q.abortAll(fmt.Errorf("queue %d: %w", q.id, ErrReset))
			return fmt.Errorf("resetting: %w", err)
		}
	}
	if err := c.armAsyncEvents(); err != nil {
		return fmt.Errorf("resetting: asynchronous event requests: %w", err)
	}
	for _, r := range retries {
		for i := range r.cmds {
			p := &r.cmds[i]
			var err error
			if p.io {
				err = r.q.submitTagged(&p.cmd)
			} else {
				err = r.q.SubmitTimeout(&p.cmd, p.cb, r.q.timeout)
			}
			if err != nil {
				r.q.notify(p.io, p.cb, &p.cmd, Completion{SQID: r.q.id}, fmt.Errorf("queue %d: resubmitting after reset: %w", r.q.id, err))
			}
		}
		r.q.Ring()
	}
	return nil
}

// pendingCommand is an outstanding command taken off its tracker to be
// submitted again.
type pendingCommand struct {
	cmd Command
	cb  Callback
	io  bool // SubmitIO's: completes through the IOCallback
}

// takeOutstanding frees every tracker and returns the callback commands
// that were outstanding, in CID order; commands whose Exec gave up are
// dropped.
func (q *QueuePair) takeOutstanding() []pendingCommand {
	var out []pendingCommand
	for i := range q.trackers {
		t := &q.trackers[i]
		if t.state == trackerBusy {
			out = append(out, pendingCommand{cmd: t.cmd, cb: t.cb, io: t.io})
		}
		if t.state != trackerFree {
			q.release(uint16(i))
		}
	}
	return out
}

// rewind puts the rings back to their state at creation: empty, head and
// tail at 0, expecting phase 1. The device must not be using them.
func (q *QueuePair) rewind() {
	clear(q.cq.Bytes)
	q.sqTail, q.rungTail, q.sqHead, q.cqHead = 0, 0, 0, 0
	q.phase = true
}
