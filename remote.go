package umd

import (
	"context"
	"errors"
	"fmt"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/vfio"
)

// Queue pairs can be split between two processes: the device's owner (a
// broker) creates a RemoteQueue over rings in memory it shares with
// another process, wires an MSI-X vector to an eventfd and sends that
// process the ring memory, the eventfd and the VFIO device descriptor
// (DupDeviceFd); the other process maps BAR0 and calls AttachQueuePair,
// and from then on does its I/O with no help from the owner. See package
// broker for the whole protocol.

// RemoteQueueOptions configure CreateRemoteQueue.
type RemoteQueueOptions struct {
	// Depth is the number of entries per ring.
	Depth int
	// SQ and CQ are the rings' IOVAs, in memory mapped into the device's
	// IOMMU domain and aligned to the controller's page size. The CQ must
	// be zeroed.
	SQ, CQ uint64
	// Interrupt wires an MSI-X vector of its own to the completion
	// queue, signalling the eventfd Interrupt returns.
	Interrupt bool
}

// RemoteQueue is an I/O queue pair created on the device for rings that
// someone else drives.
type RemoteQueue struct {
	dev    *Device
	rq     *nvmelike.RemoteQueue
	vector int
	irq    *vfio.Interrupt
	closed bool // under dev.mu
}

// CreateRemoteQueue creates an I/O queue pair over rings the caller placed
// (nvmelike.Controller.CreateRemoteQueue), with an interrupt vector of its
// own when asked.
func (d *Device) CreateRemoteQueue(ctx context.Context, o RemoteQueueOptions) (*RemoteQueue, error) {
	r := &RemoteQueue{dev: d}
	create := func(v int) (err error) {
		r.rq, err = d.ctrl.CreateRemoteQueue(ctx, nvmelike.RemoteQueueOptions{
			Depth: o.Depth, SQ: o.SQ, CQ: o.CQ, Interrupts: o.Interrupt, Vector: uint16(v),
		})
		return err
	}
	var err error
	if o.Interrupt {
		r.vector, r.irq, err = d.withVector(false, create)
	} else {
		err = create(0)
	}
	if err != nil {
		return nil, fmt.Errorf("creating a remote queue on %s: %w", d.bdf, err)
	}
	return r, nil
}

// ID returns the queue identifier.
func (r *RemoteQueue) ID() uint16 { return r.rq.ID() }

// Depth returns the number of entries per ring.
func (r *RemoteQueue) Depth() int { return r.rq.Depth() }

// Vector returns the MSI-X vector of the completion interrupt, 0 for none
// (or for the admin queue's vector, shared: see QueuePair.Vector).
func (r *RemoteQueue) Vector() int { return r.vector }

// Interrupt returns the completion interrupt's eventfd, nil for none.
func (r *RemoteQueue) Interrupt() *vfio.Interrupt { return r.irq }

// Lost reports whether a controller reset removed the queue.
func (r *RemoteQueue) Lost() bool { return r.dev.ctrl.Lost(r.rq) }

// Close deletes the queue pair on the controller (which aborts what its
// SQ still held) and frees its vector. Once it returns nil the device no
// longer uses the rings.
func (r *RemoteQueue) Close() error {
	err := r.dev.ctrl.DeleteRemoteQueue(context.Background(), r.rq)
	d := r.dev
	d.mu.Lock()
	defer d.mu.Unlock()
	if r.closed {
		return err // its vector may be another queue's by now
	}
	r.closed = true
	return errors.Join(err, d.unwireVectorLocked(r.vector, r.irq))
}

// DupDeviceFd returns a new descriptor of the device's VFIO device file,
// for a process that is to map BAR0 and drive attached queue pairs. That
// process can then do anything with the device (see vfio.DeviceFromFD):
// give it only to processes trusted that far. The caller owns the fd.
func (d *Device) DupDeviceFd() (int, error) { return d.dev.DupFd() }

// SetVFToken sets the VF token of the device, an SR-IOV physical function
// (vfio.Device.SetVFToken): opening its VFs then needs the token.
func (d *Device) SetVFToken(t vfio.VFToken) error { return d.dev.SetVFToken(t) }

// AttachQueuePair wraps a queue pair attached to a device this process
// does not own (nvmelike.AttachQueuePair) as a QueuePair, with the eventfd
// of its completion interrupt (nil for none) on MSI-X vector vector. Its
// I/O methods, Wait and WaitThread are those of a local QueuePair; Close
// detaches it and closes irq; MaskInterrupt and UnmaskInterrupt are
// refused (the device's owner wires vectors).
func AttachQueuePair(o nvmelike.AttachOptions, irq *vfio.Interrupt, vector int) (*QueuePair, error) {
	q, err := nvmelike.AttachQueuePair(o)
	if err != nil {
		return nil, err
	}
	return &QueuePair{QueuePair: q, irq: irq, vector: vector}, nil
}

func (q *QueuePair) closeAttached() error {
	err := q.Detach()
	if q.waiter != nil {
		err = errors.Join(err, q.waiter.Close())
	}
	if q.irq != nil {
		err = errors.Join(err, q.irq.Close())
	}
	return err
}
