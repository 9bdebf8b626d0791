package nvmelike

import (
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// AttachOptions describe a queue pair that exists on a controller driven
// elsewhere (see CreateRemoteQueue): where its rings are and what the
// controller's owner knows of the controller.
type AttachOptions struct {
	// ID is the queue identifier the controller created the pair with.
	ID uint16
	// Depth is the number of entries in each ring.
	Depth int
	// SQ and CQ are the rings, in memory mapped both here and into the
	// device's IOMMU domain at their IOVAs. The CQ must still be as the
	// controller got it (zeroed, nothing completed yet).
	SQ, CQ Buffer
	// Registers reach the controller's doorbells (BAR0 mapped in this
	// process). CAP and CSTS are read from them too.
	Registers Registers
	// DMA supplies the queue pair's PRP list pages (one set per tracker),
	// from memory inside the same IOMMU domain; Detach gives them back.
	DMA DMA
	// PageSize is the controller's memory page size (CC.MPS) and
	// MaxTransfer the most bytes one command may move: both as the
	// controller's owner configured and found them.
	PageSize    int
	MaxTransfer int
	// LBASizes gives the LBA size of each namespace, for the data length
	// check of LBA commands; namespaces not in it are not checked.
	LBASizes map[uint32]int
	// Formats gives the block format of namespaces
	// (IdentifyNamespace.BlockFormat), checked as the controller's own
	// queue pairs check them; it covers LBASizes's use, and also
	// namespaces formatted with metadata. For a namespace in both,
	// Formats wins.
	Formats map[uint32]BlockFormat
	// Registry describes the opcodes; nil means NewRegistry().
	Registry *Registry
	// Format is the I/O entry format; nil means NVMe.
	Format Format
	// SGLS is the controller's Identify Controller SGLS field and
	// DataPointer the data pointer mode to use (PRP, the zero value,
	// SGL or Auto, as Options.DataPointer); with SGLS 0 only PRPs work.
	SGLS        uint32
	DataPointer DataPointer
	// Timeout is the default timeout of asynchronous commands; 0 means
	// none. A timed-out command fails with ErrTimeout but is not aborted:
	// only the controller's owner can send an Abort.
	Timeout time.Duration
}

// AttachQueuePair returns a QueuePair over rings whose queues another
// party created on the controller (CreateRemoteQueue). It is the same type,
// with the same submission and completion path, as one from
// Controller.CreateQueuePair; only its lifetime differs: Detach ends it,
// and the queues are deleted by whoever created them.
func AttachQueuePair(o AttachOptions) (*QueuePair, error) {
	if o.Registers == nil || o.DMA == nil {
		return nil, errors.New("attaching queue pair: Registers and DMA are required")
	}
	if o.ID == 0 {
		return nil, errors.New("attaching queue pair: queue 0 is the admin queue")
	}
	if o.PageSize < 4096 || o.PageSize&(o.PageSize-1) != 0 {
		return nil, fmt.Errorf("attaching queue pair %d: page size %d is not a power of two of at least 4096", o.ID, o.PageSize)
	}
	if o.MaxTransfer < o.PageSize {
		return nil, fmt.Errorf("attaching queue pair %d: transfer limit %d below the page size %d", o.ID, o.MaxTransfer, o.PageSize)
	}
	f := o.Format
	if f == nil {
		f = nvmeFormat{}
	}
	if o.Depth < 2 || o.Depth > maxQueueDepth {
		return nil, fmt.Errorf("attaching queue pair %d: depth %d outside 2..%d", o.ID, o.Depth, maxQueueDepth)
	}
	if len(o.SQ.Bytes) < o.Depth*f.SQESize() || len(o.CQ.Bytes) < o.Depth*f.CQESize() {
		return nil, fmt.Errorf("attaching queue pair %d: rings of %d and %d bytes are too small for %d entries", o.ID, len(o.SQ.Bytes), len(o.CQ.Bytes), o.Depth)
	}
	regs := o.Registers
	cap := CAP(regs.Read64(NVME_REG_CAP))
	if err := checkCSTS(regs, true); err != nil {
		return nil, fmt.Errorf("attaching queue pair %d: %w", o.ID, err)
	}
	if o.Depth > cap.MQES() {
		return nil, fmt.Errorf("attaching queue pair %d: depth %d above the controller's %d", o.ID, o.Depth, cap.MQES())
	}
	reg := o.Registry
	if reg == nil {
		reg = NewRegistry()
	}
	top := uint32(0)
	for nsid := range o.LBASizes {
		top = max(top, nsid)
	}
	for nsid := range o.Formats {
		top = max(top, nsid)
	}
	top = min(top, maxCheckedNSID-1)
	lbaShift, metaFormat := make([]uint8, top+1), make([]BlockFormat, top+1)
	for nsid, size := range o.LBASizes {
		if nsid == 0 || nsid >= maxCheckedNSID {
			continue
		}
		if size < 512 || size&(size-1) != 0 {
			return nil, fmt.Errorf("attaching queue pair %d: namespace %d has LBA size %d", o.ID, nsid, size)
		}
		lbaShift[nsid] = uint8(bits.TrailingZeros(uint(size)))
	}
	for nsid, f := range o.Formats {
		if nsid == 0 || nsid >= maxCheckedNSID {
			continue
		}
		if f.LBASize < 512 || f.LBASize&(f.LBASize-1) != 0 || f.Metadata < 0 || f.Metadata > 0xffff {
			return nil, fmt.Errorf("attaching queue pair %d: namespace %d has LBA size %d and %d bytes of metadata", o.ID, nsid, f.LBASize, f.Metadata)
		}
		if f.Metadata != 0 {
			lbaShift[nsid], metaFormat[nsid] = 0, f
		} else {
			lbaShift[nsid] = uint8(bits.TrailingZeros(uint(f.LBASize)))
		}
	}
	q, err := newQueuePair(queueParams{
		id: o.ID, depth: o.Depth, format: f, regs: regs, dma: o.DMA,
		ops: &reg.io, health: func() error { return checkCSTS(regs, true) }, dstrd: cap.DSTRD(),
		pageSize: o.PageSize, maxTransfer: o.MaxTransfer, lbaShift: lbaShift, metaFormat: metaFormat,
		sq: o.SQ, cq: o.CQ, sgls: o.SGLS, dataPointer: o.DataPointer,
	})
	if err != nil {
		return nil, fmt.Errorf("attaching queue pair: %w", err)
	}
	q.attachDMA = o.DMA
	q.SetTimeout(o.Timeout)
	return q, nil
}

// Detach ends a queue pair made by AttachQueuePair: outstanding commands
// complete with ErrClosed (callbacks on the calling goroutine, which must
// be q's owner) and its PRP list pages go back to its DMA. The queues
// themselves stay on the controller until their creator deletes them;
// until then the device may still complete into the rings and read the
// list pages of commands it had fetched, so call Detach after the
// deletion when the memory is to be reused. Detach on a queue pair from
// CreateQueuePair is refused: delete it through its controller.
func (q *QueuePair) Detach() error {
	if !q.attached {
		return fmt.Errorf("detaching queue pair %d: it was not attached; delete it through its controller", q.id)
	}
	if q.closed {
		return nil
	}
	q.markClosed()
	q.abortAll(fmt.Errorf("queue %d detached: %w", q.id, ErrClosed))
	q.freeMemory(q.attachDMA)
	return nil
}

// checkCSTS reads CSTS and reports ErrDeviceGone (all ones),
// ErrControllerFatal (CSTS.CFS) or, when the controller should be
// enabled, ErrNotReady (CSTS.RDY 0); nil if none.
func checkCSTS(regs Registers, enabled bool) error {
	csts := regs.Read32(NVME_REG_CSTS)
	switch {
	case csts == 0xffffffff:
		return ErrDeviceGone
	case csts&NVME_CSTS_CFS != 0:
		return ErrControllerFatal
	case enabled && csts&NVME_CSTS_RDY == 0:
		return ErrNotReady
	}
	return nil
}
