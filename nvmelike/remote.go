package nvmelike

import (
	"context"
	"errors"
	"fmt"
)

// Remote queues split a queue pair's life between two owners. The
// controller's owner (a broker) creates and deletes the I/O SQ and CQ with
// admin commands, since only it has the admin queue; another party (a
// broker's client, in its own process) owns the ring memory and does all
// the I/O on it with a QueuePair made by AttachQueuePair, writing the SQ
// tail and CQ head doorbells itself. The controller's owner never touches
// the rings.
//
//	broker                                client
//	CreateRemoteQueue(rings' IOVAs) ──►   AttachQueuePair(rings, BAR0)
//	                                      Submit / Ring / Poll …
//	DeleteRemoteQueue            ◄──      (exit, crash, or done)

// ErrRemoteQueueLost is returned for a remote queue that a controller reset
// removed: the controller no longer has it and the owner of its rings must
// stop using them.
var ErrRemoteQueueLost = errors.New("remote queue lost in a controller reset")

// RemoteQueueOptions describe the I/O queue pair CreateRemoteQueue makes.
type RemoteQueueOptions struct {
	// Depth is the number of entries in each ring, 2 up to CAP.MQES and
	// 4096.
	Depth int
	// SQ and CQ are the IOVAs of the rings: aligned to the controller's
	// memory page size and contiguous in IOVA space, SQ of Depth entries
	// of the I/O format's SQE size, CQ of Depth CQEs. The CQ must be
	// zeroed (all phase tags 0) before the call.
	SQ, CQ uint64
	// Interrupts enables completion interrupts on MSI-X vector Vector.
	Interrupts bool
	Vector     uint16
}

// RemoteQueue is an I/O queue pair this controller created for rings it
// does not drive. It holds its queue ID until DeleteRemoteQueue.
type RemoteQueue struct {
	id   uint16
	o    RemoteQueueOptions
	lost bool
}

// ID returns the queue identifier, the same for the SQ and the CQ.
func (r *RemoteQueue) ID() uint16 { return r.id }

// Depth returns the number of entries in each ring.
func (r *RemoteQueue) Depth() int { return r.o.Depth }

// freeQID returns the lowest I/O queue ID held by neither a queue pair nor
// a remote queue, or 0 when there is none. The caller holds c.mu.
func (c *Controller) freeQID() int {
	for i := 1; i < len(c.pairs); i++ {
		if c.pairs[i] == nil && c.remote[i] == nil {
			return i
		}
	}
	return 0
}

// CreateRemoteQueue creates an I/O CQ and SQ over rings the caller
// placed, on the lowest free queue ID. The controller only creates and
// deletes it; whoever owns the rings does the I/O, through a QueuePair
// from AttachQueuePair. It is refused while shadow doorbells are in use,
// since the rings' owner could not reach the shadow buffer.
func (c *Controller) CreateRemoteQueue(ctx context.Context, o RemoteQueueOptions) (*RemoteQueue, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.dbs.Bytes != nil {
		return nil, errors.New("creating a remote queue: the controller uses shadow doorbells, which the rings' owner cannot update")
	}
	if o.Depth < 2 || o.Depth > min(c.cap.MQES(), maxQueueDepth) {
		return nil, fmt.Errorf("creating a remote queue: depth %d outside 2..%d", o.Depth, min(c.cap.MQES(), maxQueueDepth))
	}
	ps := uint64(c.pageSize)
	if o.SQ%ps != 0 || o.CQ%ps != 0 || o.SQ == 0 || o.CQ == 0 {
		return nil, fmt.Errorf("creating a remote queue: rings at 0x%x and 0x%x, not both non-zero and aligned to %d bytes", o.SQ, o.CQ, ps)
	}
	qid := c.freeQID()
	if qid == 0 {
		return nil, fmt.Errorf("creating a remote queue: all %d granted queues in use: %w", c.maxIOQueues, ErrQueueFull)
	}
	r := &RemoteQueue{id: uint16(qid), o: o}
	if _, err := c.createIOQueues(ctx, r.id, o.Depth, o.SQ, o.CQ, o.Interrupts, o.Vector); err != nil {
		return nil, fmt.Errorf("creating a remote queue: %w", err)
	}
	c.remote[qid] = r
	return r, nil
}

// DeleteRemoteQueue deletes r's SQ and CQ; the controller aborts the
// commands still in the SQ and then no longer touches the rings, which
// their owner may free once this returns nil. With an error the rings'
// memory must be treated as still in use until a reset or shutdown.
func (c *Controller) DeleteRemoteQueue(ctx context.Context, r *RemoteQueue) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deleteRemoteQueue(ctx, r)
}

func (c *Controller) deleteRemoteQueue(ctx context.Context, r *RemoteQueue) error {
	if int(r.id) >= len(c.remote) || c.remote[r.id] != r {
		return nil // deleted already, or not this controller's
	}
	c.remote[r.id] = nil
	if r.lost {
		return nil // the reset removed it from the controller
	}
	if err := c.deleteIOQueues(ctx, r.id); err != nil {
		return fmt.Errorf("deleting a remote queue: %w", err)
	}
	return nil
}

// QueuesInUse returns how many I/O queue IDs are held: by queue pairs of
// this controller and by remote queues.
func (c *Controller) QueuesInUse() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for i := 1; i < len(c.pairs); i++ {
		if c.pairs[i] != nil || c.remote[i] != nil {
			n++
		}
	}
	return n
}

// Lost reports whether a controller reset removed r. The rings' owner can
// no longer do I/O on it; DeleteRemoteQueue still frees its queue ID.
func (c *Controller) Lost(r *RemoteQueue) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return r.lost
}

// loseRemoteQueues marks every remote queue lost: a reset does not
// re-create them, because their rings' owner keeps ring positions the
// controller no longer shares. The caller holds c.mu.
func (c *Controller) loseRemoteQueues() {
	for _, r := range c.remote {
		if r != nil {
			r.lost = true
		}
	}
}
