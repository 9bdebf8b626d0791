package nvmelike

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure Open. The zero value is usable.
type Options struct {
	// AdminDepth is the admin queue's depth; 0 means 32.
	AdminDepth int
	// IOQueues is the number of I/O queue pairs to ask for with Set
	// Features (Number of Queues); 0 means 16. The controller may grant
	// fewer.
	IOQueues int
	// MaxTransfer caps the data size of one command, in bytes, below the
	// controller's MDTS; 0 means 1 MiB. It sizes the PRP list pages
	// preallocated per tracker.
	MaxTransfer int
	// PageSize is the memory page size for CC.MPS; 0 means CAP.MPSMIN.
	PageSize int
	// Registry describes the opcodes; nil means NewRegistry().
	Registry *Registry
	// AdminTimeout bounds each admin command whose context has no
	// deadline; 0 means 60 s (the Linux driver's default).
	AdminTimeout time.Duration
	// ShadowDoorbells uses Doorbell Buffer Config when the controller
	// offers it (OACS bit 8): I/O queues then write doorbells to memory
	// and MMIO only when the controller asks.
	ShadowDoorbells bool
	// IOFormat is the I/O queues' entry format (admin queues are always
	// NVMe); nil means NVMe. It sets CC.IOSQES and CC.IOCQES.
	IOFormat Format
	// DataPointer is how I/O queue pairs describe command data: PRPs
	// (the zero value), SGLs, or each command's better fit (see
	// DataPointer; QueuePair.SetDataPointer changes it per queue pair).
	// The admin queue always uses PRPs.
	DataPointer DataPointer
}

// Controller is an NVMe-like controller brought up by Open: its admin queue
// and the I/O queue pairs created on it. Its methods are safe for
// concurrent use; admin commands are serialised.
type Controller struct {
	regs Registers
	dma  DMA
	reg  *Registry

	cap          CAP
	vs           Version
	pageSize     int
	dstrd        uint8
	readyTimeout time.Duration
	adminTimeout time.Duration
	ioFormat     Format
	dataPointer  DataPointer // for I/O queue pairs (sgl.go)

	id          *IdentifyController
	nsids       []uint32
	lbaShift    []uint8       // by NSID, for NSIDs below maxCheckedNSID: log2 LBA size, 0 if unknown or with metadata
	metaFormat  []BlockFormat // by NSID, as long: the block format of namespaces with metadata
	maxTransfer int
	maxIOQueues int // granted by Set Features, min of SQs and CQs

	mu      sync.Mutex // admin queue, CC, the queue pair table
	admin   *QueuePair
	scratch Buffer       // a 4 KiB identify buffer, used under mu
	dbs     Buffer       // shadow doorbells, when in use
	eis     Buffer       // their event indexes
	pairs   []*QueuePair // indexed by QID; nil when free
	// remote holds the queues other code drives (remote.go), by QID;
	// a QID is free when both pairs and remote have nil there.
	remote []*RemoteQueue
	closed bool
	// enabled is set while the engine holds the controller enabled (from
	// CSTS.RDY 1 after enabling until it disables or shuts it down), so
	// that Check can tell a reset from outside (CSTS.RDY 0) from its own.
	// Read by Check from any goroutine.
	enabled atomic.Bool
	// unfreed holds memory the device may still write to (queues whose
	// deletion it did not confirm, the buffer of an admin command given up
	// on): freed only once a shutdown or reset stops all DMA.
	unfreed []Buffer

	faults *faultLog // DMA faults reported by a tracer; no lock of mu's

	aborts abortQueue  // Aborts asked for by timed-out commands (abort.go)
	aer    asyncEvents // Asynchronous Event Requests (events.go)
}

// Open brings a controller up: reset (CC.EN=0, wait CSTS.RDY=0), admin
// queue set up (AQA, ASQ, ACQ), enable (CC.EN=1, wait CSTS.RDY=1), then
// Identify Controller, the active namespace list and Set Features (Number of
// Queues). Waits for CSTS.RDY are bounded by CAP.TO and by ctx.
func Open(ctx context.Context, regs Registers, dma DMA, o *Options) (*Controller, error) {
	if o == nil {
		o = &Options{}
	}
	c := &Controller{regs: regs, dma: dma, reg: o.Registry, ioFormat: o.IOFormat, adminTimeout: o.AdminTimeout, faults: new(faultLog)}
	c.dataPointer = o.DataPointer
	if c.adminTimeout == 0 {
		c.adminTimeout = 60 * time.Second
	}
	if c.reg == nil {
		c.reg = NewRegistry()
	}
	if c.ioFormat == nil {
		c.ioFormat = NVMe
	}
	raw := regs.Read64(NVME_REG_CAP)
	if raw == ^uint64(0) {
		return nil, fmt.Errorf("reading CAP: %w", ErrDeviceGone)
	}
	c.cap = CAP(raw)
	c.vs = Version(regs.Read32(NVME_REG_VS))
	c.dstrd = c.cap.DSTRD()
	c.readyTimeout = time.Duration(max(c.cap.TO(), 1)) * 500 * time.Millisecond
	if c.cap.CSS()&1 == 0 {
		return nil, fmt.Errorf("CAP.CSS 0x%x: the NVM command set is not supported", c.cap.CSS())
	}
	c.pageSize = o.PageSize
	if c.pageSize == 0 {
		c.pageSize = c.cap.MPSMIN()
	}
	if c.pageSize&(c.pageSize-1) != 0 || c.pageSize < c.cap.MPSMIN() || c.pageSize > c.cap.MPSMAX() {
		return nil, fmt.Errorf("page size %d: the controller supports %d to %d", c.pageSize, c.cap.MPSMIN(), c.cap.MPSMAX())
	}
	sqes, cqes := c.ioFormat.SQESize(), c.ioFormat.CQESize()
	if sqes < 4 || sqes&(sqes-1) != 0 || cqes < 4 || cqes&(cqes-1) != 0 {
		return nil, fmt.Errorf("I/O entry sizes %d and %d: not powers of two", sqes, cqes)
	}

	if err := c.disable(ctx); err != nil {
		return nil, err
	}
	adminDepth := o.AdminDepth
	if adminDepth == 0 {
		adminDepth = 32
	}
	adminDepth = min(adminDepth, c.cap.MQES(), 4096)
	var err error
	c.admin, err = newQueuePair(queueParams{
		id: 0, depth: adminDepth, format: NVMe, regs: regs, dma: dma,
		ops: &c.reg.admin, health: c.Check, dstrd: c.dstrd,
		pageSize: c.pageSize, maxTransfer: IdentifyDataSize, faults: c.faults,
	})
	if err != nil {
		return nil, fmt.Errorf("admin queue: %w", err)
	}
	if c.scratch, err = dma.Alloc(IdentifyDataSize, c.pageSize); err != nil {
		c.admin.freeMemory(dma)
		return nil, fmt.Errorf("allocating identify buffer: %w", err)
	}
	if err := c.enable(ctx); err != nil {
		c.abandon()
		return nil, err
	}
	err = c.identifyController(ctx, o)
	if err == nil {
		err = c.readNamespaces(ctx)
	}
	if err == nil {
		err = c.setNumQueues(ctx, o)
	}
	if err == nil && o.ShadowDoorbells && c.id.DoorbellBufferConfig() {
		err = c.setUpShadowDoorbells(ctx)
	}
	if err != nil {
		c.abandon()
		return nil, err
	}
	return c, nil
}

// enable points the controller at the admin queue (AQA, ASQ, ACQ), sets
// CC and waits for CSTS.RDY.
func (c *Controller) enable(ctx context.Context) error {
	depth := uint32(c.admin.depth - 1)
	c.regs.Write32(NVME_REG_AQA, depth<<16|depth)
	c.regs.Write64(NVME_REG_ASQ, c.admin.sq.IOVA)
	c.regs.Write64(NVME_REG_ACQ, c.admin.cq.IOVA)
	cc := uint32(NVME_CC_CSS_NVM) |
		uint32(bits.TrailingZeros(uint(c.pageSize))-12)<<NVME_CC_MPS_SHIFT |
		uint32(bits.TrailingZeros(uint(c.ioFormat.SQESize())))<<NVME_CC_IOSQES_SHIFT |
		uint32(bits.TrailingZeros(uint(c.ioFormat.CQESize())))<<NVME_CC_IOCQES_SHIFT |
		NVME_CC_ENABLE
	c.regs.Write32(NVME_REG_CC, cc)
	if err := c.waitReady(ctx, true); err != nil {
		return fmt.Errorf("enabling: %w", err)
	}
	c.enabled.Store(true)
	return nil
}

// abandon undoes a failed Open: disable the controller and free what it no
// longer touches.
func (c *Controller) abandon() {
	ctx, cancel := context.WithTimeout(context.Background(), c.readyTimeout)
	defer cancel()
	if c.disable(ctx) == nil {
		c.admin.freeMemory(c.dma)
		_ = c.dma.Free(c.scratch)
		if c.dbs.Bytes != nil {
			_ = c.dma.Free(c.dbs)
			_ = c.dma.Free(c.eis)
		}
	}
	// Otherwise the device may still write to that memory: leak it.
}

// identifyController reads Identify Controller and derives the transfer
// limit from MDTS.
func (c *Controller) identifyController(ctx context.Context, o *Options) error {
	cmd := IdentifyCommand(IdentifyCNSController, 0, c.scratch)
	if _, err := c.adminExec(ctx, &cmd); err != nil {
		return fmt.Errorf("identify controller: %w", err)
	}
	id, err := ParseIdentifyController(c.scratch.Bytes)
	if err != nil {
		return err
	}
	c.id = id
	sqes := bits.TrailingZeros(uint(c.ioFormat.SQESize()))
	cqes := bits.TrailingZeros(uint(c.ioFormat.CQESize()))
	if sqes < int(id.SQES&0xf) || sqes > int(id.SQES>>4) || cqes < int(id.CQES&0xf) || cqes > int(id.CQES>>4) {
		return fmt.Errorf("I/O entries of %d and %d bytes: the controller supports SQ entries of 2^%d to 2^%d bytes and CQ entries of 2^%d to 2^%d",
			c.ioFormat.SQESize(), c.ioFormat.CQESize(), id.SQES&0xf, id.SQES>>4, id.CQES&0xf, id.CQES>>4)
	}
	c.maxTransfer = o.MaxTransfer
	if c.maxTransfer == 0 {
		c.maxTransfer = 1 << 20
	}
	if m := id.MaxTransfer(c.cap.MPSMIN()); m != 0 && m < c.maxTransfer {
		c.maxTransfer = m
	}
	return nil
}

// readNamespaces reads the active namespace list and each namespace's LBA
// size.
func (c *Controller) readNamespaces(ctx context.Context) error {
	if c.vs >= 0x10100 { // the active namespace list is NVMe 1.1
		if err := c.identify(ctx, IdentifyCNSActiveNSList, 0); err != nil {
			return fmt.Errorf("identify active namespace list: %w", err)
		}
		var err error
		if c.nsids, err = ParseActiveNamespaces(c.scratch.Bytes); err != nil {
			return err
		}
	} else {
		for i := uint32(1); i <= c.id.NN && i <= 1024; i++ {
			c.nsids = append(c.nsids, i)
		}
	}
	return c.readLBASizes(ctx)
}

// setNumQueues asks for o.IOQueues I/O queue pairs and records how many
// the controller granted and the register file has doorbells for.
func (c *Controller) setNumQueues(ctx context.Context, o *Options) error {
	want := o.IOQueues
	if want == 0 {
		want = 16
	}
	want = min(want, 65535)
	cmd := SetFeaturesCommand(NVME_FEAT_NUM_QUEUES, uint32(want-1)<<16|uint32(want-1))
	cpl, err := c.adminExec(ctx, &cmd)
	if err != nil {
		return fmt.Errorf("set features number of queues %d: %w", want, err)
	}
	// The controller may grant more than asked; use what was asked.
	nsq, ncq := int(cpl.DW0&0xffff)+1, int(cpl.DW0>>16)+1
	c.maxIOQueues = min(nsq, ncq, want)
	// Registers that know their size (a mapped BAR0) bound the doorbells.
	if l, ok := c.regs.(interface{ Len() int }); ok {
		pair := 2 * (4 << c.dstrd)
		fit := (l.Len()-NVME_REG_DBS)/pair - 1 // queue pairs past the admin one
		if fit < 1 {
			return fmt.Errorf("register file of %d bytes: no room for I/O queue doorbells", l.Len())
		}
		c.maxIOQueues = min(c.maxIOQueues, fit)
	}
	c.pairs = make([]*QueuePair, c.maxIOQueues+1)
	c.remote = make([]*RemoteQueue, c.maxIOQueues+1)
	return nil
}

// Check reads CSTS and reports ErrDeviceGone (all ones),
// ErrControllerFatal (CSTS.CFS) or ErrNotReady (CSTS.RDY 0 while the
// engine has the controller enabled: it was reset from outside); nil if
// none. It costs one register read. Exec and the admin commands call it
// while they wait; a loop that drives I/O itself can call it when
// completions stop coming (QueuePair.Check).
func (c *Controller) Check() error { return checkCSTS(c.regs, c.enabled.Load()) }

// disable clears CC.EN and waits for CSTS.RDY to follow.
func (c *Controller) disable(ctx context.Context) error {
	c.enabled.Store(false)
	cc := c.regs.Read32(NVME_REG_CC)
	if cc == 0xffffffff {
		return fmt.Errorf("disabling: reading CC: %w", ErrDeviceGone)
	}
	if cc&NVME_CC_ENABLE != 0 {
		c.regs.Write32(NVME_REG_CC, cc&^NVME_CC_ENABLE)
	}
	if err := c.waitReady(ctx, false); err != nil {
		return fmt.Errorf("disabling: %w", err)
	}
	return nil
}

// waitReady waits for CSTS.RDY to equal ready, within CAP.TO and ctx.
// Waiting for RDY=1 fails early on CSTS.CFS; waiting for RDY=0 does not, as
// disabling is how a fatal controller is recovered.
func (c *Controller) waitReady(ctx context.Context, ready bool) error {
	return c.waitCSTS(ctx, c.readyTimeout, ErrReadyTimeout, ready, func(csts uint32) bool {
		return (csts&NVME_CSTS_RDY != 0) == ready
	})
}

func (c *Controller) waitCSTS(ctx context.Context, timeout time.Duration, timeoutErr error, failOnCFS bool, done func(uint32) bool) error {
	deadline := time.Now().Add(timeout)
	delay := 10 * time.Microsecond
	for {
		csts := c.regs.Read32(NVME_REG_CSTS)
		if csts == 0xffffffff {
			return ErrDeviceGone
		}
		if done(csts) {
			return nil
		}
		if failOnCFS && csts&NVME_CSTS_CFS != 0 {
			return ErrControllerFatal
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CSTS 0x%x after %v: %w", csts, timeout, timeoutErr)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
}

// CAP returns the Controller Capabilities register as read at Open.
func (c *Controller) CAP() CAP { return c.cap }

// Version returns the VS register as read at Open.
func (c *Controller) Version() Version { return c.vs }

// PageSize returns the memory page size in use (CC.MPS).
func (c *Controller) PageSize() int { return c.pageSize }

// MaxTransfer returns the largest data size of one command on the device,
// in bytes. Queue pairs split larger LBA commands (Read, Write, Compare)
// into several of at most this size.
func (c *Controller) MaxTransfer() int { return c.maxTransfer }

// MaxIOQueues returns the number of I/O queue pairs the controller granted.
func (c *Controller) MaxIOQueues() int { return c.maxIOQueues }

// Registry returns the controller's opcode registry.
func (c *Controller) Registry() *Registry { return c.reg }

// IdentifyController returns the Identify Controller data read at Open.
func (c *Controller) IdentifyController() IdentifyController { return *c.id }

// Namespaces returns the active namespace IDs found at Open.
func (c *Controller) Namespaces() []uint32 { return append([]uint32(nil), c.nsids...) }

// Admin executes an admin command and waits for it. Data, if any, must be
// DMA memory of at most MaxTransfer bytes.
func (c *Controller) Admin(ctx context.Context, cmd *Command) (Completion, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Completion{}, ErrClosed
	}
	return c.adminExec(ctx, cmd)
}

// IdentifyNamespace reads the Identify Namespace data of nsid.
func (c *Controller) IdentifyNamespace(ctx context.Context, nsid uint32) (*IdentifyNamespace, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.identify(ctx, IdentifyCNSNamespace, nsid); err != nil {
		return nil, fmt.Errorf("identify namespace %d: %w", nsid, err)
	}
	return ParseIdentifyNamespace(nsid, c.scratch.Bytes)
}

// NamespaceIDs reads the Namespace Identification Descriptor list of
// nsid (Identify CNS 03h): its EUI-64, NGUID, UUID and command set. A
// controller older than NVMe 1.3 has no such list and refuses the command
// with Invalid Field: NamespaceIDs then returns empty identifiers (the NVM
// command set: other command sets came with NVMe 2.0, which requires the
// list) and no error.
func (c *Controller) NamespaceIDs(ctx context.Context, nsid uint32) (*NamespaceIDs, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.identify(ctx, IdentifyCNSNSDescriptors, nsid); errors.Is(err, ErrInvalidField) {
		return &NamespaceIDs{}, nil
	} else if err != nil {
		return nil, fmt.Errorf("namespace %d identification descriptors: %w", nsid, err)
	}
	return ParseNamespaceDescriptors(nsid, c.scratch.Bytes)
}

// identify reads Identify data structure cns of nsid into c.scratch;
// c.mu is held.
func (c *Controller) identify(ctx context.Context, cns uint8, nsid uint32) error {
	if c.closed {
		return ErrClosed
	}
	clear(c.scratch.Bytes)
	cmd := IdentifyCommand(cns, nsid, c.scratch)
	if _, err := c.adminExec(ctx, &cmd); err != nil {
		c.retireScratch(err)
		return err
	}
	return nil
}

// QueueOptions configure an I/O queue pair.
type QueueOptions struct {
	// Depth is the number of entries in each ring; 0 means 256. It is
	// capped at CAP.MQES and at 4096.
	Depth int
	// Interrupts enables completion interrupts on MSI-X vector Vector
	// for the CQ (CDW11 IEN and IV of Create I/O CQ). The engine itself
	// still completes by polling; waiting on the vector's eventfd is the
	// caller's, through the Interrupts source the VFIO layer provides.
	Interrupts bool
	Vector     uint16
	// Timeout is the default timeout of the queue pair's asynchronous
	// commands (Submit, SubmitBatch, SubmitWait); 0 means none. See
	// QueuePair.SubmitTimeout.
	Timeout time.Duration
}

// CreateQueuePair creates an I/O CQ and SQ on the lowest free queue ID.
func (c *Controller) CreateQueuePair(ctx context.Context, o QueueOptions) (*QueuePair, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	qid := c.freeQID()
	if qid == 0 {
		return nil, fmt.Errorf("creating I/O queue pair: all %d granted queues in use: %w", c.maxIOQueues, ErrQueueFull)
	}
	depth := o.Depth
	if depth == 0 {
		depth = 256
	}
	depth = min(depth, c.cap.MQES(), maxQueueDepth)
	q, err := newQueuePair(queueParams{
		id: uint16(qid), depth: depth, format: c.ioFormat, regs: c.regs, dma: c.dma,
		ops: &c.reg.io, health: c.Check, dstrd: c.dstrd,
		pageSize: c.pageSize, maxTransfer: c.maxTransfer, lbaShift: c.lbaShift, metaFormat: c.metaFormat, faults: c.faults,
		abort: c.requestAbort, sgls: c.id.SGLS, dataPointer: c.dataPointer,
	})
	if err != nil {
		return nil, fmt.Errorf("creating I/O queue pair: %w", err)
	}
	q.interrupts, q.vector = o.Interrupts, o.Vector
	q.SetTimeout(o.Timeout)
	q.sqShadow, q.cqShadow, q.shadow = c.shadowFor(q.id)
	if err := c.createRings(ctx, q); err != nil {
		return nil, err
	}
	c.pairs[qid] = q
	return q, nil
}

// createRings creates q's CQ and then its SQ on the controller. On failure
// q's memory is freed, or kept in c.unfreed if the controller might still
// use it.
func (c *Controller) createRings(ctx context.Context, q *QueuePair) error {
	undone, err := c.createIOQueues(ctx, q.id, int(q.depth), q.sq.IOVA, q.cq.IOVA, q.interrupts, q.vector)
	if err != nil {
		if undone {
			q.freeMemory(c.dma)
		} else {
			c.unfreed = append(c.unfreed, q.sq, q.cq, q.lists)
		}
	}
	return err
}

// createIOQueues sends Create I/O CQ, then Create I/O SQ, for queue id
// over rings at the given IOVAs: physically contiguous (PC=1), with
// interrupts (IEN) on vector if asked for. If the SQ is refused the CQ is
// deleted again. On error, undone says the controller confirmed that it
// holds neither ring (it answered with a status, and the CQ's deletion
// succeeded), so their memory may be reused.
func (c *Controller) createIOQueues(ctx context.Context, id uint16, depth int, sq, cq uint64, interrupts bool, vector uint16) (undone bool, err error) {
	d := uint32(depth - 1) // 0-based
	cdw11 := uint32(1)
	if interrupts {
		cdw11 |= 1<<1 | uint32(vector)<<16
	}
	cmd := Command{Opcode: AdminCreateCQ, PRP1: cq, CDW10: d<<16 | uint32(id), CDW11: cdw11}
	if _, err := c.adminExec(ctx, &cmd); err != nil {
		return isStatus(err), fmt.Errorf("creating I/O CQ %d: %w", id, err)
	}
	cmd = Command{Opcode: AdminCreateSQ, PRP1: sq, CDW10: d<<16 | uint32(id), CDW11: uint32(id)<<16 | 1}
	if _, err := c.adminExec(ctx, &cmd); err != nil {
		del := Command{Opcode: AdminDeleteCQ, CDW10: uint32(id)}
		_, derr := c.adminExec(ctx, &del)
		return derr == nil && isStatus(err), fmt.Errorf("creating I/O SQ %d: %w", id, err)
	}
	return false, nil
}

// deleteIOQueues sends Delete I/O SQ, then Delete I/O CQ, for queue id;
// both are sent whatever the first answers.
func (c *Controller) deleteIOQueues(ctx context.Context, id uint16) error {
	var errs []error
	cmd := Command{Opcode: AdminDeleteSQ, CDW10: uint32(id)}
	if _, err := c.adminExec(ctx, &cmd); err != nil {
		errs = append(errs, fmt.Errorf("deleting I/O SQ %d: %w", id, err))
	}
	cmd = Command{Opcode: AdminDeleteCQ, CDW10: uint32(id)}
	if _, err := c.adminExec(ctx, &cmd); err != nil {
		errs = append(errs, fmt.Errorf("deleting I/O CQ %d: %w", id, err))
	}
	return errors.Join(errs...)
}

// isStatus reports whether err carries an NVMe status: the controller
// completed the command (rather than the host giving up on it).
func isStatus(err error) bool {
	var se *StatusError
	return errors.As(err, &se)
}

// DeleteQueuePair deletes q's SQ and CQ on the controller and frees its
// memory. Commands still outstanding complete with ErrClosed (their
// callbacks run on the calling goroutine, which must be q's owner). If the
// controller cannot confirm the deletion, the rings' memory is leaked
// rather than freed while the device might still use it.
func (c *Controller) DeleteQueuePair(ctx context.Context, q *QueuePair) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deleteQueuePair(ctx, q)
}

func (c *Controller) deleteQueuePair(ctx context.Context, q *QueuePair) error {
	if q.closed {
		return nil
	}
	if int(q.id) >= len(c.pairs) || c.pairs[q.id] != q {
		return fmt.Errorf("deleting queue pair %d: not this controller's", q.id)
	}
	_, _ = q.Poll(0) // deliver what already completed
	err := c.deleteIOQueues(ctx, q.id)
	q.markClosed()
	c.pairs[q.id] = nil
	q.abortAll(fmt.Errorf("queue %d deleted: %w", q.id, ErrClosed))
	if err == nil {
		q.freeMemory(c.dma)
	} else {
		c.unfreed = append(c.unfreed, q.sq, q.cq, q.lists)
	}
	return err
}

// Close deletes the I/O queue pairs still open, shuts the controller down
// (CC.SHN normal, wait for CSTS.SHST complete) and frees the admin queue.
// Close is safe to call twice. The queue pairs' owners must not use them
// concurrently with Close.
func (c *Controller) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	timeout := 5 * time.Second
	if c.id != nil && c.id.RTD3E != 0 {
		timeout = max(timeout, time.Duration(c.id.RTD3E)*time.Microsecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var errs []error
	for _, q := range c.pairs {
		if q != nil {
			if err := c.deleteQueuePair(ctx, q); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, r := range c.remote {
		if r != nil {
			if err := c.deleteRemoteQueue(ctx, r); err != nil {
				errs = append(errs, err)
			}
		}
	}
	c.closed = true
	c.admin.markClosed()
	if err := c.shutdown(ctx, timeout); err != nil {
		errs = append(errs, fmt.Errorf("shutting down: %w", err))
		if !errors.Is(err, ErrDeviceGone) {
			// Reset instead, so the device stops using our memory.
			dctx, dcancel := context.WithTimeout(context.Background(), c.readyTimeout)
			derr := c.disable(dctx)
			dcancel()
			if derr != nil {
				// It may still write to the admin queue: leak it.
				return errors.Join(errs...)
			}
		}
		// A removed device can no longer reach our memory.
	}
	c.admin.abortAll(ErrClosed)
	c.admin.freeMemory(c.dma)
	for _, b := range c.unfreed {
		if b.Bytes != nil {
			_ = c.dma.Free(b)
		}
	}
	c.unfreed = nil
	_ = c.dma.Free(c.scratch)
	if c.dbs.Bytes != nil {
		_ = c.dma.Free(c.dbs)
		_ = c.dma.Free(c.eis)
	}
	return errors.Join(errs...)
}

// shutdown asks for a normal shutdown (CC.SHN) and waits for CSTS.SHST to
// say it is complete.
func (c *Controller) shutdown(ctx context.Context, timeout time.Duration) error {
	if err := c.Check(); errors.Is(err, ErrNotReady) {
		// Reset from outside: there is nothing left to shut down.
		return err
	}
	c.enabled.Store(false)
	cc := c.regs.Read32(NVME_REG_CC)
	if cc == 0xffffffff {
		return ErrDeviceGone
	}
	c.regs.Write32(NVME_REG_CC, cc&^NVME_CC_SHN_MASK|NVME_CC_SHN_NORMAL)
	return c.waitCSTS(ctx, timeout, ErrShutdownTimeout, false, func(csts uint32) bool {
		return csts&NVME_CSTS_SHST_MASK == NVME_CSTS_SHST_CMPLT
	})
}

// adminExec runs an admin command, bounded by the admin timeout when ctx
// has no deadline of its own. The caller holds c.mu (or owns c during
// Open).
func (c *Controller) adminExec(ctx context.Context, cmd *Command) (Completion, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.adminTimeout)
		defer cancel()
	}
	// One register read, so that a controller that is gone, fatal or was
	// reset from outside fails the command at once rather than after the
	// admin timeout (Exec checks again while it waits).
	if err := c.Check(); err != nil {
		return Completion{}, fmt.Errorf("admin opcode 0x%02x: %w", cmd.Opcode, err)
	}
	c.sendAborts()
	return c.admin.Exec(ctx, cmd)
}

// retireScratch replaces the identify buffer after an admin command that
// used it was given up on (err is not an NVMe status): the device may still
// write to the old one, so it waits in unfreed until the controller is shut
// down.
func (c *Controller) retireScratch(err error) {
	if isStatus(err) {
		return
	}
	b, aerr := c.dma.Alloc(IdentifyDataSize, c.pageSize)
	if aerr != nil {
		return // keep using the old one: the best there is
	}
	c.unfreed = append(c.unfreed, c.scratch)
	c.scratch = b
}

// maxCheckedNSID bounds the table of LBA sizes the queue pairs check data
// lengths against.
const maxCheckedNSID = 1024

// readLBASizes identifies each active namespace (with an NSID below
// maxCheckedNSID) for its block format, so that queue pairs can check
// that a Read or Write moves exactly as many bytes as its data buffer
// holds (with metadata after each block's data, more than the blocks'
// data) and has a metadata pointer where the metadata has a buffer of
// its own.
func (c *Controller) readLBASizes(ctx context.Context) error {
	top := uint32(0)
	for _, id := range c.nsids {
		if id < maxCheckedNSID {
			top = max(top, id)
		}
	}
	c.lbaShift = make([]uint8, top+1)
	c.metaFormat = make([]BlockFormat, top+1)
	for _, id := range c.nsids {
		if id >= maxCheckedNSID {
			continue
		}
		if err := c.identify(ctx, IdentifyCNSNamespace, id); err != nil {
			return fmt.Errorf("identify namespace %d: %w", id, err)
		}
		ns, err := ParseIdentifyNamespace(id, c.scratch.Bytes)
		if err != nil {
			return err
		}
		if f := ns.BlockFormat(); f.Metadata != 0 {
			c.metaFormat[id] = f
		} else {
			c.lbaShift[id] = uint8(bits.TrailingZeros(uint(ns.LBASize)))
		}
	}
	return nil
}
