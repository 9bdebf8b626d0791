package nvmelike

import "fmt"

// IOCallback receives the completion of a command submitted with
// SubmitIO: the tag it was submitted with, its completion, and err as for
// a Callback (nil, a *StatusError, or an engine error such as ErrClosed or
// ErrTimeout). It runs where a Callback would, with the same rules: it may
// Submit, SubmitIO and Ring, but not Poll.
type IOCallback func(tag uint64, c Completion, err error)

// SetIOCallback sets the callback of the commands SubmitIO submits on q.
// Set it once, before the first SubmitIO: commands in flight complete
// through the callback set when they complete (none: they complete
// unheard).
func (q *QueuePair) SetIOCallback(cb IOCallback) {
	q.ioCB = cb
	q.updateIOPath()
}

// updateIOPath works out whether SubmitIO may take its short path on q;
// whatever changes one of the conditions calls it.
func (q *QueuePair) updateIOPath() {
	// The short path takes only buffers within one page, which PRPs and
	// DataPointerAuto both describe with PRP1 alone.
	q.ioFast = !q.closed && q.nvme && q.dptr != DataPointerSGL && q.timeout == 0 && q.ioCB != nil
}

// markClosed marks q deleted (or detached): no more submissions.
func (q *QueuePair) markClosed() {
	q.closed = true
	q.updateIOPath()
}

// SubmitIO submits a command that moves nlb logical blocks (1 to 65536)
// starting at slba of namespace nsid to or from buf: Read, Write, or any
// opcode registered with LBAData and a direction. It is Submit without a
// Command: the caller passes the fields and a tag, the engine writes the
// SQ entry straight from them and keeps only what it needs to deliver the
// completion, which goes to the queue's IOCallback (SetIOCallback) with
// the tag. It is the engine's shortest path, for callers that issue many
// reads and writes (umdbench uses it).
//
// It checks what Submit checks (the opcode, the buffer against nlb and
// the namespace's LBA size), times out after the queue's default timeout,
// and returns ErrQueueFull, unwrapped, on a full queue. Unlike Submit it
// never splits (a buffer above the transfer limit is ErrTransferTooLarge)
// and never queues in the software backlog.
func (q *QueuePair) SubmitIO(opcode uint8, nsid uint32, slba uint64, nlb uint32, buf Buffer, tag uint64) error {
	n := len(buf.Bytes)
	op := &q.ops[opcode]
	// The common case in one test: a queue pair that is open, with PRPs
	// or DataPointerAuto, the NVMe entry layout and no timeout (ioFast), a buffer within one
	// memory page, and a length that matches nlb blocks of a namespace
	// whose LBA size is known. Anything else goes through Submit's
	// general path.
	if !q.ioFast || n == 0 || !op.LBAData || op.Dir == DirNone || !q.onePage(buf) ||
		int(nsid) >= len(q.lbaShift) || q.lbaShift[nsid] == 0 || nlb-1 > 0xffff ||
		int(nlb)<<q.lbaShift[nsid] != n {
		return q.submitIOSlow(opcode, nsid, slba, nlb, buf, tag)
	}
	tail := q.sqTail + 1
	if tail == q.depth {
		tail = 0
	}
	if len(q.free) <= q.reserve || tail == q.sqHead {
		return ErrQueueFull
	}
	idx := q.free[len(q.free)-1]
	q.free = q.free[:len(q.free)-1]
	t := &q.trackers[idx]
	q.newCID(t)
	// The tracker's copy of the command, for the paths that need one
	// (faults, timeouts, reset); field by field, without a copy of a
	// caller's Command. release left Buffers and Ext nil.
	t.cmd.Opcode, t.cmd.Flags, t.cmd.NSID = opcode, 0, nsid
	t.cmd.CDW2, t.cmd.CDW3, t.cmd.MPTR = 0, 0, 0
	t.cmd.CDW10, t.cmd.CDW11, t.cmd.CDW12 = uint32(slba), uint32(slba>>32), nlb-1
	t.cmd.CDW13, t.cmd.CDW14, t.cmd.CDW15 = 0, 0, 0
	t.cmd.PRP1, t.cmd.PRP2 = 0, 0
	t.cmd.Data = buf
	t.cmd.Tag = tag
	t.cb = nil
	t.io = true
	t.state = trackerBusy
	t.done = false
	t.deadline = 0

	putSQE((*[64]byte)(q.sq.Bytes[int(q.sqTail)*64:]), uint64(opcode)|uint64(t.cid)<<16|uint64(nsid)<<32,
		0, 0, buf.IOVA, 0, slba, uint64(nlb-1), 0)
	q.sqTail = tail
	q.stats.Submitted++
	return nil
}

// submitIOSlow is SubmitIO's general path: the command built whole and
// submitted as Submit would, then marked for the IOCallback.
func (q *QueuePair) submitIOSlow(opcode uint8, nsid uint32, slba uint64, nlb uint32, buf Buffer, tag uint64) error {
	if q.ioCB == nil {
		return fmt.Errorf("queue %d: SubmitIO without an IOCallback (SetIOCallback)", q.id)
	}
	if nlb == 0 || nlb > 0x10000 {
		return fmt.Errorf("queue %d: opcode 0x%02x: %d blocks, outside 1..65536: %w", q.id, opcode, nlb, ErrDataLength)
	}
	if !q.ops[opcode].LBAData {
		return fmt.Errorf("queue %d: opcode 0x%02x does not move LBA data: use Submit", q.id, opcode)
	}
	cmd := Command{Opcode: opcode, NSID: nsid, CDW10: uint32(slba), CDW11: uint32(slba >> 32), CDW12: nlb - 1, Data: buf, Tag: tag}
	return q.submitTagged(&cmd)
}

// submitTagged submits cmd to complete through the IOCallback with
// cmd.Tag, with the queue's default timeout; never split.
func (q *QueuePair) submitTagged(cmd *Command) error {
	if n := cmd.DataLen(); n > q.maxTransfer {
		return fmt.Errorf("queue %d: opcode 0x%02x with %d bytes of data, limit %d (SubmitIO does not split; Submit does): %w",
			q.id, cmd.Opcode, n, q.maxTransfer, ErrTransferTooLarge)
	}
	t, err := q.submit(cmd, nil, trackerBusy)
	if err != nil {
		return err
	}
	t.io = true
	q.setDeadline(t, deadlineAfter(q.timeout))
	return nil
}
