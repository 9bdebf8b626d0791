package nvmelike

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"time"
)

// Callback receives a command's completion. cmd is a copy of the command as
// submitted (with its Tag and Data), valid only until the callback returns.
// err is nil for success, a *StatusError for a non-zero NVMe status, or an
// engine error (ErrClosed when the queue pair was deleted with the command
// outstanding).
//
// Callbacks run on the goroutine that called Poll (or Exec, which polls).
// A callback may Submit and Ring, but not Poll or Exec
// (ErrReentrantPoll). The command's tracker is free again when the callback
// runs, so a callback can resubmit even on a full queue.
type Callback func(cmd *Command, c Completion, err error)

// QueueStats counts what a queue pair did.
type QueueStats struct {
	Submitted   uint64 // commands written into the SQ (each part of a split command)
	Completed   uint64 // completions delivered to a waiter or callback (each part of a split command)
	SQDoorbells uint64 // SQ tail doorbell writes
	CQDoorbells uint64 // CQ head doorbell writes
	ShadowOnly  uint64 // doorbell updates written to a shadow doorbell only
	Dropped     uint64 // completions consumed and dropped: invalid or stale CID
	BadSQHead   uint64 // completions whose SQ head was out of range (ignored)
	Orphaned    uint64 // late completions of commands whose Exec gave up (or that were failed)
	DMAFaults   uint64 // commands failed by FailInFlight or a reported DMA fault
	Timeouts    uint64 // commands failed with ErrTimeout
	Split       uint64 // commands larger than the transfer limit split into several
	Backlogged  uint64 // commands Submit queued in software while the queue was full (SetBacklog)
}

// Add adds o's counters to s, every field: totals over several queue
// pairs (umdbench's summary of its jobs) are sums of them.
func (s *QueueStats) Add(o QueueStats) {
	s.Submitted += o.Submitted
	s.Completed += o.Completed
	s.SQDoorbells += o.SQDoorbells
	s.CQDoorbells += o.CQDoorbells
	s.ShadowOnly += o.ShadowOnly
	s.Dropped += o.Dropped
	s.BadSQHead += o.BadSQHead
	s.Orphaned += o.Orphaned
	s.DMAFaults += o.DMAFaults
	s.Timeouts += o.Timeouts
	s.Split += o.Split
	s.Backlogged += o.Backlogged
}

type trackerState uint8

const (
	trackerFree     trackerState = iota
	trackerBusy                  // submitted, completion delivered to cb
	trackerSync                  // submitted by Exec, which waits for done
	trackerOrphaned              // Exec gave up; the completion frees it
	trackerChild                 // a part of a split command after the first; see head
	// trackerDelivering: completed, its callback running with a pointer
	// to the tracker's command; freed when the callback returns.
	trackerDelivering
)

// tracker follows one outstanding command. There is one per usable SQ slot
// and a spare (see QueuePair.reserve), allocated with the queue pair; its
// index is the low bits of the CID.
type tracker struct {
	cmd Command // copy of the command, for callbacks (handed &cmd) and errors
	cb  Callback
	// io: submitted by SubmitIO (or submitTagged), completes through the
	// queue's IOCallback with cmd.Tag instead of cb.
	io    bool
	list  Buffer // this tracker's PRP list pages
	cid   uint16 // CID of the command in flight: generation<<idxBits | index
	state trackerState
	done  bool // for trackerSync: the completion arrived
	cpl   Completion
	// failed is the error FailInFlight completed the command with; the
	// tracker stays held (orphaned) until the device completes it.
	failed error

	// A command split at the transfer limit (split.go) takes one tracker
	// per part. The first part's tracker is the head: it holds the
	// caller's command and callback, counts the parts the device has not
	// completed yet (parts), and keeps in cpl the completion to report.
	// The others are trackerChild, with the head's index in head.
	parts    uint16 // head: parts outstanding on the device; 0 if not split
	head     uint16 // trackerChild: index of the head tracker
	partDone bool   // head: its own part's completion arrived

	// deadline is when an asynchronous command times out, in clock()
	// nanoseconds; 0 for none.
	deadline int64
}

// QueuePair is an SQ and its CQ, with the trackers of the commands in
// flight on them.
//
// A QueuePair belongs to one goroutine at a time: its methods take no locks
// and must not be called concurrently. To share one between goroutines,
// guard it with a mutex (every method, including Poll); the cost is a lock
// per call, which is why the engine does not impose one. Queue pairs are
// independent of each other: use one per goroutine (per core) for I/O.
//
// The path of one I/O:
//
//	Submit: tracker from the free stack → PRPs into the tracker's list →
//	        Format.EncodeSQE into the SQ slot at the tail → tail++
//	Ring:   one SQ tail doorbell write for everything submitted since the last
//	Poll:   CQ slot at the head with the expected phase → tracker by CID
//	        (generation checked) → callback or waiting Exec → one CQ head
//	        doorbell write for the batch
type QueuePair struct {
	id     uint16
	format Format
	regs   Registers
	ops    *[256]OpcodeInfo // the registry's table for this queue's opcodes
	// lbaShift is log2 of the LBA size by NSID (0: unknown, or a
	// namespace with metadata), to check the data length of LBA commands
	// on the short path; metaFormat, as long, holds the block format of
	// the namespaces formatted with metadata (zero elsewhere), checked on
	// the general path. Read-only, shared by all queue pairs.
	lbaShift   []uint8
	metaFormat []BlockFormat
	health     func() error // reads CSTS: device gone, controller fatal, reset from outside

	sqDB, cqDB uint64 // doorbell offsets in BAR0
	sq, cq     Buffer // ring memory
	lists      Buffer // PRP list pages of all trackers
	sqeSize    int
	cqeSize    int
	nvme       bool   // format is NVMe's: encoded and decoded without interface calls
	depth      uint16 // entries in each ring

	sqTail   uint16 // next slot to fill
	rungTail uint16 // tail value last written to the doorbell
	sqHead   uint16 // from the latest completion's SQHD
	cqHead   uint16 // next CQ slot to look at
	phase    bool   // phase tag of a new entry at cqHead

	pageSize    int
	maxTransfer int
	interrupts  bool   // CQ created with interrupts enabled
	vector      uint16 // on this MSI-X vector

	// Data pointer (sgl.go): the mode, the controller's Identify SGLS,
	// and whether its SGL Data Blocks must be dword aligned.
	dptr     DataPointer
	sgls     uint32
	sglDword bool

	// Shadow doorbells, when the controller has them configured.
	shadow             bool
	sqShadow, cqShadow shadowDoorbell

	trackers []tracker
	free     []uint16 // stack of free tracker indexes
	// reserve is how many free trackers Submit leaves alone: 1, the
	// spare, except while a callback runs, when its own tracker is
	// held (not free) until it returns, so that the callback can use
	// the command it was handed in place and still submit the next.
	// Submit finds the queue full when len(free) <= reserve.
	reserve int
	idxBits uint
	idxMask uint16
	genStep uint16 // 1<<idxBits: the CID's generation counts in the bits above

	ioCB   IOCallback // SubmitIO's commands complete through it
	ioFast bool       // SubmitIO may take its short path (updateIOPath)
	inPoll bool
	// cbCmd is the command handed to a callback that has no tracker
	// to point into: backlog entries failed, split commands.
	cbCmd Command
	// splitCmd is scratch for the first part of a split command, whose
	// tracker keeps the caller's command.
	splitCmd Command
	closed   bool
	// The software backlog (backlog.go): a ring of blLen entries from
	// blHead.
	backlog []backlogEntry
	blHead  int
	blLen   int

	// attached: made by AttachQueuePair over rings it does not own,
	// for a controller driven elsewhere (attachDMA frees its lists).
	attached  bool
	attachDMA DMA

	// DMA faults reported to the controller (ReportDMAFault), taken up
	// by Poll on this queue pair's goroutine.
	faults    *faultLog
	seenFault uint64
	faultBuf  [faultLogSize]DMAFault

	// Timeouts of asynchronous commands (timeout.go).
	timeout      time.Duration          // default for Submit; 0: none
	nextDeadline int64                  // earliest deadline of a command in flight, or earlier; 0: none
	abort        func(sqid, cid uint16) // asks the controller to send an Abort
	stats        QueueStats
}

// queueParams are what newQueuePair needs from the controller.
type queueParams struct {
	id          uint16
	depth       int
	format      Format
	regs        Registers
	dma         DMA
	ops         *[256]OpcodeInfo
	health      func() error
	dstrd       uint8
	pageSize    int
	maxTransfer int
	lbaShift    []uint8
	metaFormat  []BlockFormat
	faults      *faultLog
	abort       func(sqid, cid uint16)
	// sgls is Identify Controller SGLS and dataPointer the mode asked
	// for (sgl.go); zero for PRPs.
	sgls        uint32
	dataPointer DataPointer
	// sq and cq are rings placed by someone else (AttachQueuePair);
	// zero Buffers mean newQueuePair allocates them from dma.
	sq, cq Buffer
}

// maxQueueDepth bounds queue depth so that at least 4 CID bits remain for
// the tracker generation.
const maxQueueDepth = 4096

func newQueuePair(p queueParams) (*QueuePair, error) {
	if p.depth < 2 || p.depth > maxQueueDepth {
		return nil, fmt.Errorf("queue %d: depth %d outside 2..%d", p.id, p.depth, maxQueueDepth)
	}
	q := &QueuePair{
		id:          p.id,
		format:      p.format,
		regs:        p.regs,
		ops:         p.ops,
		health:      p.health,
		lbaShift:    p.lbaShift,
		metaFormat:  p.metaFormat,
		sqDB:        SQTailDoorbell(p.id, p.dstrd),
		cqDB:        CQHeadDoorbell(p.id, p.dstrd),
		sqeSize:     p.format.SQESize(),
		cqeSize:     p.format.CQESize(),
		depth:       uint16(p.depth),
		phase:       true,
		pageSize:    p.pageSize,
		maxTransfer: p.maxTransfer,
		faults:      p.faults,
		abort:       p.abort,
		attached:    p.sq.Bytes != nil,
	}
	_, q.nvme = p.format.(nvmeFormat)
	if q.faults != nil {
		q.seenFault = q.faults.seq.Load() // faults reported before it existed are not its
	}
	if err := q.setSGLSupport(p.sgls, p.dataPointer); err != nil {
		return nil, err
	}
	n := p.depth - 1 // a full ring keeps one slot empty
	// n trackers for the commands in flight, and the spare (reserve).
	q.idxBits = uint(bits.Len(uint(n)))
	if q.idxBits == 0 {
		q.idxBits = 1
	}
	q.idxMask = uint16(1)<<q.idxBits - 1
	q.genStep = uint16(1) << q.idxBits

	var err error
	if p.sq.Bytes != nil {
		q.sq, q.cq = p.sq, p.cq
	} else {
		if q.sq, err = p.dma.Alloc(p.depth*q.sqeSize, p.pageSize); err != nil {
			return nil, fmt.Errorf("queue %d: allocating SQ: %w", p.id, err)
		}
		if q.cq, err = p.dma.Alloc(p.depth*q.cqeSize, p.pageSize); err != nil {
			q.freeMemory(p.dma)
			return nil, fmt.Errorf("queue %d: allocating CQ: %w", p.id, err)
		}
	}
	listPages := prpListPages(p.maxTransfer, p.pageSize)
	if listPages > 0 {
		if q.lists, err = p.dma.Alloc((n+1)*listPages*p.pageSize, p.pageSize); err != nil {
			q.freeMemory(p.dma)
			return nil, fmt.Errorf("queue %d: allocating PRP lists: %w", p.id, err)
		}
	}
	q.trackers = make([]tracker, n+1)
	q.free = make([]uint16, n+1)
	q.reserve = 1
	for i := range q.trackers {
		q.trackers[i].list = q.lists.Slice(i*listPages*p.pageSize, listPages*p.pageSize)
		q.trackers[i].cid = uint16(i) // generation 0; newCID starts each at 1
		q.free[i] = uint16(n - i)     // pop order 0, 1, 2, …
	}
	return q, nil
}

func (q *QueuePair) freeMemory(dma DMA) {
	for _, b := range []*Buffer{&q.sq, &q.cq, &q.lists} {
		if q.attached && b != &q.lists {
			continue // the rings are the attacher's
		}
		if b.Bytes != nil {
			_ = dma.Free(*b)
			*b = Buffer{}
		}
	}
}

// ID returns the queue identifier (0 for the admin queue).
func (q *QueuePair) ID() uint16 { return q.id }

// Depth returns the number of entries in each ring; at most Depth()-1
// commands are outstanding at once.
func (q *QueuePair) Depth() int { return int(q.depth) }

// CheckInterval is how often code that waits for completions and gets
// none should read the controller's status (Check): a device gone, fatal
// or reset from outside then ends the wait within about that long, at the
// cost of one register read per interval. umd's QueuePair.Wait, umdbench's
// jobs and the broker's device watch use it.
const CheckInterval = time.Second

// Check reads the controller's status: ErrDeviceGone, ErrControllerFatal
// or ErrNotReady (reset from outside), nil if it is working. One register
// read, the cost of an MMIO round trip: for a loop that drives the queue
// pair itself to call when completions stop coming, not per I/O. Exec and
// SubmitWait call it while they wait.
func (q *QueuePair) Check() error {
	if q.health == nil {
		return nil
	}
	return q.health()
}

// Outstanding returns the number of commands submitted and not yet
// completed (including ones whose Exec gave up), counted as the device
// sees them: a split command counts once per part not yet completed (its
// first part's tracker until all have).
func (q *QueuePair) Outstanding() int {
	// Inside a callback (reserve 0) its tracker is neither free nor
	// outstanding.
	return len(q.trackers) - len(q.free) - (1 - q.reserve)
}

// Stats returns the queue pair's counters.
func (q *QueuePair) Stats() QueueStats { return q.stats }

// Submit writes cmd into the next SQ slot, to complete through cb (which
// may be nil). The device does not see it until Ring. A full queue returns
// ErrQueueFull, unwrapped and without allocating: poll and retry, or use
// SubmitWait; or, after SetBacklog, the command waits in software and a
// later Poll submits it and rings.
//
// An LBA command (Registry OpcodeInfo.LBAData) with more data than the
// transfer limit (Controller.MaxTransfer) is split into consecutive
// commands of at most the limit, written into the SQ together, one
// tracker each; it is ErrQueueFull until that many trackers and SQ slots
// are free. cb runs once, when every part has completed: with the first
// part's completion, or the first failed part's completion and error.
//
// The command times out after the queue's default timeout
// (QueueOptions.Timeout, SetTimeout), if there is one; see SubmitTimeout.
func (q *QueuePair) Submit(cmd *Command, cb Callback) error {
	return q.SubmitTimeout(cmd, cb, q.timeout)
}

// SubmitBatch submits cmds in order, all completing through cb, and rings
// the doorbell once for them. It stops at the first command it cannot
// submit and returns how many it submitted with that error (ErrQueueFull
// when the queue filled up); the ones submitted are rung either way.
func (q *QueuePair) SubmitBatch(cmds []Command, cb Callback) (int, error) {
	var err error
	deadline := deadlineAfter(q.timeout) // one clock read for the batch
	n := 0
	for ; n < len(cmds); n++ {
		var t *tracker
		if t, err = q.submit(&cmds[n], cb, trackerBusy); err != nil {
			break
		}
		q.setDeadline(t, deadline)
	}
	q.Ring()
	return n, err
}

func (q *QueuePair) submit(cmd *Command, cb Callback, state trackerState) (*tracker, error) {
	if q.closed {
		return nil, ErrClosed
	}
	n := len(cmd.Data.Bytes)
	if len(cmd.Buffers) != 0 {
		n = cmd.DataLen()
	}
	if n > 0 {
		op := &q.ops[cmd.Opcode]
		if op.Dir == DirNone {
			return nil, fmt.Errorf("queue %d: opcode 0x%02x with %d bytes of data: %w", q.id, cmd.Opcode, n, ErrDirection)
		}
		if op.LBAData && int(cmd.NSID) < len(q.lbaShift) {
			// The device moves NLB blocks: the buffer must hold exactly that,
			// or it would read or write memory past the buffer's PRPs.
			nlb := int(cmd.CDW12&0xffff) + 1
			want := 0
			if shift := q.lbaShift[cmd.NSID]; shift != 0 {
				want = nlb << shift
			} else if f := q.metaFormat[cmd.NSID]; f.Metadata != 0 {
				want = f.dataBytes(nlb)
				if !f.Extended && cmd.MPTR == 0 {
					return nil, fmt.Errorf("queue %d: opcode 0x%02x on namespace %d (%d bytes of metadata per block, in a buffer of their own): %w", q.id, cmd.Opcode, cmd.NSID, f.Metadata, ErrNoMetadataPointer)
				}
			}
			if want != 0 && want != n {
				return nil, fmt.Errorf("queue %d: opcode 0x%02x moves %d bytes, the data buffer holds %d: %w", q.id, cmd.Opcode, want, n, ErrDataLength)
			}
		}
		if n > q.maxTransfer {
			if q.splittable(cmd) {
				return q.submitSplit(cmd, cb, state)
			}
			return nil, fmt.Errorf("queue %d: opcode 0x%02x with %d bytes of data, limit %d: %w", q.id, cmd.Opcode, n, q.maxTransfer, ErrTransferTooLarge)
		}
	}
	tail := q.sqTail + 1
	if tail == q.depth {
		tail = 0
	}
	if len(q.free) <= q.reserve || tail == q.sqHead {
		return nil, ErrQueueFull
	}
	idx := q.free[len(q.free)-1]
	t := &q.trackers[idx]

	// The data pointer: PRPs or an SGL (sgl.go), and PSDT to match.
	prp1, prp2, flags := cmd.PRP1, cmd.PRP2, cmd.Flags
	if n > 0 {
		switch {
		case len(cmd.Buffers) == 0 && q.dptr != DataPointerSGL && q.onePage(cmd.Data):
			// Within one memory page, the common case: PRP1 alone, with
			// PRPs and with DataPointerAuto alike (as SubmitIO's ioFast).
			prp1, prp2 = cmd.Data.IOVA, 0
			flags &^= FlagsPSDTMask
		case q.dptr != DataPointerPRP || len(cmd.Buffers) != 0:
			var err error
			if prp1, prp2, flags, err = q.dataPointer(cmd, n, t.list); err != nil {
				return nil, fmt.Errorf("queue %d: opcode 0x%02x: %w", q.id, cmd.Opcode, err)
			}
		default:
			var err error
			if prp1, prp2, err = buildPRP(cmd.Data, q.pageSize, t.list); err != nil {
				return nil, fmt.Errorf("queue %d: opcode 0x%02x: %w", q.id, cmd.Opcode, prpError(cmd.Data, err))
			}
			flags &^= FlagsPSDTMask
		}
	}
	q.free = q.free[:len(q.free)-1]

	q.newCID(t)
	t.cmd = *cmd
	t.cmd.Flags = flags
	t.cb = cb
	t.io = false
	t.state = state
	t.done = false
	t.deadline = 0

	if q.nvme { // q.encode's fast case, spelled out: encode is too big to inline
		nvmeFormat{}.EncodeSQE(q.sq.Bytes[int(q.sqTail)*64:], &t.cmd, t.cid, prp1, prp2)
	} else {
		q.encode(q.sqTail, &t.cmd, t.cid, prp1, prp2)
	}
	q.sqTail = tail
	q.stats.Submitted++
	return t, nil
}

// newCID gives tracker t the CID of its next use: the next generation in
// the bits above the index (adding genStep wraps within 16 bits and
// leaves the index alone); never the reserved FFFFh.
func (q *QueuePair) newCID(t *tracker) {
	c := t.cid + q.genStep
	if c == 0xffff {
		c += q.genStep
	}
	t.cid = c
}

// encode writes cmd into SQ slot with its CID and data pointer: NVMe
// entries with a static call, other formats through the Format.
func (q *QueuePair) encode(slot uint16, cmd *Command, cid uint16, prp1, prp2 uint64) {
	off := int(slot) * q.sqeSize
	if q.nvme {
		nvmeFormat{}.EncodeSQE(q.sq.Bytes[off:off+64], cmd, cid, prp1, prp2)
	} else {
		q.format.EncodeSQE(q.sq.Bytes[off:off+q.sqeSize], cmd, cid, prp1, prp2)
	}
}

func (q *QueuePair) next(i uint16) uint16 {
	i++
	if i == q.depth {
		i = 0
	}
	return i
}

// Ring tells the device about every entry submitted since the last Ring: one
// SQ tail doorbell write, and none if nothing was submitted.
//
// With shadow doorbells the new tail goes to the shadow doorbell, and the
// MMIO write happens only if the controller's event index asks for it.
func (q *QueuePair) Ring() {
	if q.sqTail == q.rungTail || q.closed {
		return
	}
	if !q.shadow || q.sqShadow.update(q.sqTail, q.rungTail) {
		q.regs.Write32(q.sqDB, uint32(q.sqTail))
		q.stats.SQDoorbells++
	} else {
		q.stats.ShadowOnly++
	}
	q.rungTail = q.sqTail
}

// Poll processes up to max new completions (all there are if max <= 0),
// delivering each to its callback or waiting Exec, then writes the CQ head
// doorbell once if it consumed any. It returns the number delivered (each
// part of a split command counts as one).
//
// While commands with a timeout may be outstanding, Poll also reads the
// clock once and fails the ones past their deadline (see SubmitTimeout).
//
// A completion that cannot be delivered (invalid or stale CID) is consumed
// and dropped, never handed to another command: Poll counts it in
// Stats().Dropped and returns a *CQEError for the first one, after
// processing the rest of the batch.
func (q *QueuePair) Poll(max int) (int, error) {
	if q.inPoll {
		return 0, ErrReentrantPoll
	}
	if q.closed {
		return 0, ErrClosed
	}
	q.inPoll = true
	if q.faults != nil && q.faults.seq.Load() != q.seenFault {
		q.applyFaults()
	}
	oldHead := q.cqHead
	n, consumed := 0, 0
	if max <= 0 {
		max = -1 // n never reaches it
	}
	var bad error
	// At most one ring's worth per call: a controller flooding the CQ
	// cannot keep Poll here forever.
	for consumed < int(q.depth) && n != max {
		var c Completion
		if q.nvme {
			// The NVMe layout without an interface call per entry: the
			// dword with the phase tag once, with acquire ordering,
			// then the rest, and SubmitIO's successes delivered inline.
			e := (*[16]byte)(q.cq.Bytes[int(q.cqHead)*16:])
			dw3 := AcquireLoad32(e[12:16])
			if dw3>>16&1 == 1 != q.phase {
				break
			}
			q.advanceCQ()
			consumed++
			if q.completeIO(e, dw3) {
				n++
				continue
			}
			c = decodeNVMeCQE(e, dw3)
		} else {
			off := int(q.cqHead) * q.cqeSize
			e := q.cq.Bytes[off : off+q.cqeSize]
			if q.format.CQEPhase(e) != q.phase {
				break
			}
			c = q.format.DecodeCQE(e)
			q.advanceCQ()
			consumed++
		}
		if err := q.complete(&c); err != nil {
			q.stats.Dropped++
			if bad == nil {
				bad = &CQEError{QID: q.id, CID: c.CID, SQHead: c.SQHead, Err: err}
			}
			continue
		}
		n++
	}
	if q.nextDeadline != 0 {
		// One clock read per Poll, and a look at the trackers only when
		// the earliest deadline has passed.
		if now := clock(); now >= q.nextDeadline {
			q.expire(now)
		}
	}
	if q.blLen > 0 {
		q.drainBacklog()
	}
	if consumed > 0 {
		if !q.shadow || q.cqShadow.update(q.cqHead, oldHead) {
			q.regs.Write32(q.cqDB, uint32(q.cqHead))
			q.stats.CQDoorbells++
		} else {
			q.stats.ShadowOnly++
		}
	}
	q.inPoll = false
	return n, bad
}

// advanceCQ moves the CQ head past the entry just read.
func (q *QueuePair) advanceCQ() {
	if q.cqHead++; q.cqHead == q.depth {
		q.cqHead = 0
		q.phase = !q.phase
	}
}

// completeIO is complete for the common case, inline in Poll's loop: the
// successful completion (NVMe entry e, its last dword dw3 already loaded)
// of a SubmitIO command in flight, delivered straight to the IOCallback.
// It reports false, having changed nothing, for anything else, which
// complete then routes.
func (q *QueuePair) completeIO(e *[16]byte, dw3 uint32) bool {
	cid := uint16(dw3)
	idx := cid & q.idxMask
	if dw3>>17 != 0 || int(idx) >= len(q.trackers) {
		return false
	}
	t := &q.trackers[idx]
	if t.cid != cid || t.state != trackerBusy || !t.io || q.ioCB == nil {
		return false
	}
	c := decodeNVMeCQE(e, dw3)
	q.ackSQHead(c.SQHead)
	q.stats.Completed++
	// Held while the callback runs, as deliver does.
	t.state = trackerDelivering
	reserve := q.reserve
	q.reserve = 0
	q.ioCB(t.cmd.Tag, c, nil)
	q.reserve = reserve
	if t.state == trackerDelivering { // not taken by a reset meanwhile
		t.state = trackerFree
		t.deadline = 0
		q.free = append(q.free, idx)
	}
	return true
}

// complete routes one completion to its tracker.
func (q *QueuePair) complete(c *Completion) error {
	idx := c.CID & q.idxMask
	if int(idx) >= len(q.trackers) {
		return ErrInvalidCID
	}
	t := &q.trackers[idx]
	if t.cid != c.CID || t.state == trackerFree || t.state == trackerDelivering || t.done || t.partDone {
		// t.done: a second completion for a waiting Exec; t.partDone:
		// for the first part of a split command; trackerDelivering: a
		// second one while the first's callback runs.
		return ErrStaleCID
	}
	q.ackSQHead(c.SQHead)
	if t.state == trackerChild {
		h := t.head
		q.release(idx)
		q.partCompleted(h, c)
		return nil
	}
	if t.parts > 0 {
		t.partDone = true
		q.partCompleted(idx, c)
		return nil
	}
	switch t.state {
	case trackerSync:
		t.cpl = *c
		t.done = true // Exec releases the tracker
	case trackerOrphaned:
		q.release(idx)
		q.stats.Orphaned++
		return nil
	default:
		q.stats.Completed++
		q.deliver(idx, c)
		return nil
	}
	q.stats.Completed++
	return nil
}

// notify hands the outcome of a command taken off its tracker (cmd, a
// copy) to its IOCallback if SubmitIO submitted it (io), else to cb if
// there is one.
func (q *QueuePair) notify(io bool, cb Callback, cmd *Command, c Completion, err error) {
	switch {
	case io:
		if q.ioCB != nil { // SetIOCallback(nil) meanwhile: nobody to tell
			q.ioCB(cmd.Tag, c, err)
		}
	case cb != nil:
		cb(cmd, c, err)
	}
}

// deliver hands the completion c of the command on tracker idx to its
// callback: the IOCallback with the tag for SubmitIO's, else its
// Callback with the tracker's own copy of the command (no copy per
// completion). The tracker is freed when the callback returns; meanwhile
// it is held out of the free stack and the spare stands in for it, so the
// callback can submit a command even when the queue was full.
func (q *QueuePair) deliver(idx uint16, c *Completion) {
	t := &q.trackers[idx]
	if (t.io && q.ioCB == nil) || (!t.io && t.cb == nil) {
		q.release(idx) // nobody to tell (SetIOCallback(nil) meanwhile, or no callback)
		return
	}
	t.state = trackerDelivering
	var err error
	if c.Status != 0 {
		err = q.statusError(c, t.cmd.Opcode)
	}
	reserve := q.reserve
	q.reserve = 0
	if t.io {
		q.ioCB(t.cmd.Tag, *c, err)
	} else {
		t.cb(&t.cmd, *c, err)
	}
	q.reserve = reserve
	if t.state == trackerDelivering { // not taken by a reset meanwhile
		q.release(idx)
	}
}

// ackSQHead takes the SQ head a completion reports. It must lie between
// the last one seen and the tail the device was given; a bad one is
// counted and ignored (the completion itself is still the command's).
func (q *QueuePair) ackSQHead(head uint16) {
	if q.dist(q.sqHead, head) <= q.dist(q.sqHead, q.rungTail) {
		q.sqHead = head
	} else {
		q.stats.BadSQHead++
	}
}

// onePage reports whether buf, dword aligned, lies within one memory
// page: PRP1 alone describes it.
func (q *QueuePair) onePage(buf Buffer) bool {
	return buf.IOVA&3 == 0 && uint64(len(buf.Bytes)) <= uint64(q.pageSize)-buf.IOVA&uint64(q.pageSize-1)
}

func (q *QueuePair) dist(from, to uint16) int {
	d := int(to) - int(from)
	if d < 0 {
		d += int(q.depth)
	}
	return d
}

// release frees tracker idx. It keeps the command's Data and callback,
// which the next Submit overwrites, and drops the references a command
// rarely has (Buffers, Ext, an error).
func (q *QueuePair) release(idx uint16) {
	t := &q.trackers[idx]
	t.state = trackerFree
	t.done = false
	t.parts = 0
	t.partDone = false
	t.deadline = 0
	if t.failed != nil {
		t.failed = nil
	}
	if t.cmd.Buffers != nil || t.cmd.Ext != nil {
		t.cmd.Buffers = nil
		t.cmd.Ext = nil
	}
	q.free = append(q.free, idx)
}

func (q *QueuePair) statusError(c *Completion, opcode uint8) error {
	e := statusFromField(c.Status)
	e.Opcode = opcode
	e.QID = q.id
	e.CID = c.CID
	return &e
}

// How often a waiting Exec or SubmitWait looks at its context and at the
// controller's status register: a context check is cheap, a register read
// is an MMIO round trip.
const (
	ctxCheckEvery    = 64
	healthCheckEvery = 4096
)

// Exec submits cmd, rings the doorbell and polls until its completion
// arrives, ctx is done or the controller fails. Other commands' completions
// found meanwhile are delivered to their callbacks. A full queue is waited
// out. A non-zero NVMe status returns the completion and a *StatusError.
//
// When Exec gives up (ctx, device gone, controller fatal) the command stays
// outstanding: its tracker, PRP list and data buffer may still be used by
// the device, so the tracker is freed only by the command's late completion
// or by deleting the queue pair. The caller must not reuse cmd.Data until
// then.
func (q *QueuePair) Exec(ctx context.Context, cmd *Command) (Completion, error) {
	if q.inPoll {
		return Completion{}, ErrReentrantPoll
	}
	var t *tracker
	for spins := 0; ; spins++ {
		var err error
		t, err = q.submit(cmd, nil, trackerSync)
		if err == nil {
			break
		}
		if err != ErrQueueFull {
			return Completion{}, err
		}
		q.Ring()
		_, _ = q.Poll(0)
		if err := q.wait(ctx, spins); err != nil {
			return Completion{}, fmt.Errorf("queue %d: waiting for a free slot: %w", q.id, err)
		}
	}
	q.Ring()
	for spins := 0; ; spins++ {
		_, _ = q.Poll(0) // undeliverable completions are counted in Stats
		if t.failed != nil {
			ferr := t.failed
			if t.done {
				q.release(t.cid & q.idxMask) // the device is done with it (every part of it)
			} else {
				t.state = trackerOrphaned // its completion frees it
			}
			return Completion{}, fmt.Errorf("queue %d: opcode 0x%02x cid 0x%04x: %w", q.id, cmd.Opcode, t.cid, ferr)
		}
		if t.done {
			c := t.cpl
			q.release(t.cid & q.idxMask) // c.CID may be a failed part's
			if c.Status != 0 {
				return c, q.statusError(&c, cmd.Opcode)
			}
			return c, nil
		}
		if err := q.wait(ctx, spins); err != nil {
			t.state = trackerOrphaned
			return Completion{}, fmt.Errorf("queue %d: opcode 0x%02x cid 0x%04x: %w", q.id, cmd.Opcode, t.cid, err)
		}
	}
}

// wait is one step of a polling loop's back-off: now and then it checks
// ctx and the controller, and lets other goroutines run.
func (q *QueuePair) wait(ctx context.Context, spins int) error {
	if spins%ctxCheckEvery != ctxCheckEvery-1 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if spins%healthCheckEvery == healthCheckEvery-1 && q.health != nil {
		if err := q.health(); err != nil {
			return err
		}
	}
	runtime.Gosched()
	return nil
}

// SubmitWait is Submit that, on a full queue, rings the doorbell and polls
// (delivering completions) until a slot frees up or ctx is done.
func (q *QueuePair) SubmitWait(ctx context.Context, cmd *Command, cb Callback) error {
	for spins := 0; ; spins++ {
		err := q.Submit(cmd, cb)
		if !errors.Is(err, ErrQueueFull) { // ErrBacklogFull too
			return err
		}
		if q.inPoll {
			return ErrQueueFull // in a callback: cannot poll
		}
		q.Ring()
		_, _ = q.Poll(0)
		if err := q.wait(ctx, spins); err != nil {
			return fmt.Errorf("queue %d: waiting for a free slot: %w", q.id, err)
		}
	}
}

// abortAll completes every outstanding command with err, after the queue's
// rings were deleted on the device (or the device is gone). Exec'd commands
// that were given up on are simply freed.
func (q *QueuePair) abortAll(err error) {
	q.inPoll = true
	q.failBacklog(err)
	for i := range q.trackers {
		t := &q.trackers[i]
		switch t.state {
		case trackerBusy:
			cb, io := t.cb, t.io
			q.cbCmd = t.cmd
			q.release(uint16(i))
			q.notify(io, cb, &q.cbCmd, Completion{CID: t.cid, SQID: q.id}, err)
		case trackerSync, trackerOrphaned, trackerChild:
			q.release(uint16(i))
		}
	}
	q.inPoll = false
}
