package nvmelike

import "fmt"

// Splitting at the transfer limit.
//
// An LBA command (an opcode the registry marks LBAData: Read, Write,
// Compare) whose data exceeds the queue's transfer limit is submitted as
// several commands of at most the limit each, over consecutive LBA ranges
// and consecutive slices of the data buffer, written into the SQ together
// and rung with the same doorbell. Each part takes a tracker (and its PRP
// list pages), so a split costs no allocation: a command that needs k
// parts waits for k free trackers and SQ slots (ErrQueueFull, as for any
// command, until they are), and one that needs more than the queue has
// trackers fails with ErrTransferTooLarge. Each part gets the data
// pointer the queue pair's mode gives its slice (PRPs, or one SGL Data
// Block). Only a command with its data in one Buffer is split: one with
// several (Command.Buffers) above the limit fails with
// ErrTransferTooLarge.
//
// The caller sees one command: its callback runs once (or Exec returns
// once), when every part has completed, with the first part's completion
// on success and otherwise the first failed part's completion and status.
// Giving up on, or failing, a split command holds all its trackers until
// the device has completed every part.

// splittable reports whether cmd, larger than the transfer limit, can be
// split: an LBA opcode on a namespace of known LBA size, not fused and
// without a metadata pointer (whose per-block offsets the engine does not
// know), with its data in one Buffer (not Buffers).
func (q *QueuePair) splittable(cmd *Command) bool {
	return len(cmd.Buffers) == 0 && q.ops[cmd.Opcode].LBAData &&
		int(cmd.NSID) < len(q.lbaShift) && q.lbaShift[cmd.NSID] != 0 &&
		cmd.Flags&0x3 == 0 && cmd.MPTR == 0
}

// sqFree returns the number of SQ slots free for new entries.
func (q *QueuePair) sqFree() int {
	return int(q.depth) - 1 - q.dist(q.sqHead, q.sqTail)
}

// submitSplit writes cmd into the SQ as consecutive parts of at most the
// transfer limit each, one tracker per part, and returns the head's
// tracker. submit has checked the data length against the block count.
func (q *QueuePair) submitSplit(cmd *Command, cb Callback, state trackerState) (*tracker, error) {
	shift := q.lbaShift[cmd.NSID]
	n := len(cmd.Data.Bytes)
	chunk := q.maxTransfer >> shift << shift
	if chunk == 0 {
		return nil, fmt.Errorf("queue %d: opcode 0x%02x: transfer limit %d below one block of %d bytes: %w", q.id, cmd.Opcode, q.maxTransfer, 1<<shift, ErrTransferTooLarge)
	}
	parts := (n + chunk - 1) / chunk
	if parts > len(q.trackers)-1 {
		return nil, fmt.Errorf("queue %d: opcode 0x%02x with %d bytes of data: %d commands of at most %d bytes, the queue holds %d: %w",
			q.id, cmd.Opcode, n, parts, q.maxTransfer, len(q.trackers)-1, ErrTransferTooLarge)
	}
	if cmd.Data.IOVA&3 != 0 && !q.unalignedOK() {
		// Every part starts a multiple of the block size further on, so
		// it would be unaligned too (only SGLs describe that).
		return nil, fmt.Errorf("queue %d: opcode 0x%02x: building PRPs for %d bytes at IOVA 0x%x: %w", q.id, cmd.Opcode, n, cmd.Data.IOVA, ErrUnalignedBuffer)
	}
	if len(q.free)-q.reserve < parts || q.sqFree() < parts {
		return nil, ErrQueueFull
	}
	slba := uint64(cmd.CDW10) | uint64(cmd.CDW11)<<32
	headIdx := q.free[len(q.free)-1]
	slot := q.sqTail
	for j := 0; j < parts; j++ {
		idx := q.free[len(q.free)-1-j]
		t := &q.trackers[idx]
		off := j * chunk
		size := min(chunk, n-off)
		data := cmd.Data.Slice(off, size)
		prp1, prp2, psdt, err := q.bufferPointer(data, t.list)
		if err != nil {
			// Nothing is committed: the trackers are still on the free
			// stack and the SQ tail has not moved.
			for k := 0; k < j; k++ {
				q.unclaim(q.free[len(q.free)-1-k])
			}
			return nil, fmt.Errorf("queue %d: opcode 0x%02x: part %d of %d: %w", q.id, cmd.Opcode, j+1, parts, err)
		}
		q.newCID(t)
		t.io = false
		t.done = false
		t.partDone = false
		t.failed = nil
		t.deadline = 0
		// Each tracker holds its own part, so that DMA faults and
		// InFlight match the part's memory; the head holds the
		// caller's command, for the callback.
		t.cmd = *cmd
		part := &t.cmd
		if j == 0 {
			t.cb = cb
			t.state = state
			t.parts = uint16(parts)
			t.cpl = Completion{}
			part = &q.splitCmd // the head's entry is built from a copy
			*part = *cmd
		} else {
			t.cb = nil
			t.state = trackerChild
			t.head = headIdx
			t.parts = 0
		}
		lba := slba + uint64(off>>shift)
		part.Data = data
		part.Flags = cmd.Flags&^FlagsPSDTMask | psdt
		part.CDW10 = uint32(lba)
		part.CDW11 = uint32(lba >> 32)
		part.CDW12 = cmd.CDW12&^0xffff | uint32(size>>shift-1)
		q.encode(slot, part, t.cid, prp1, prp2)
		slot = q.next(slot)
	}
	q.free = q.free[:len(q.free)-parts]
	q.sqTail = slot
	q.stats.Submitted += uint64(parts)
	q.stats.Split++
	return &q.trackers[headIdx], nil
}

// unclaim undoes submitSplit's set-up of a tracker that is still on the
// free stack.
func (q *QueuePair) unclaim(idx uint16) {
	t := &q.trackers[idx]
	t.state = trackerFree
	t.parts = 0
	t.cb = nil
	t.cmd = Command{}
}

// partCompleted records the completion c of a part of the split command
// whose head tracker is h, and completes the command once every part has.
func (q *QueuePair) partCompleted(h uint16, c *Completion) {
	t := &q.trackers[h]
	// Report the first failure, or else the first part's completion.
	if t.cpl.Status == 0 && (c.Status != 0 || c.CID == t.cid) {
		t.cpl = *c
	}
	t.parts--
	if t.state == trackerOrphaned {
		q.stats.Orphaned++
	} else {
		q.stats.Completed++
	}
	if t.parts > 0 {
		return
	}
	switch t.state {
	case trackerSync:
		t.done = true // Exec releases the tracker
	case trackerOrphaned:
		q.release(h)
	default:
		cb := t.cb
		cpl := t.cpl
		q.cbCmd = t.cmd
		q.release(h)
		if cb != nil {
			var err error
			if cpl.Status != 0 {
				err = q.statusError(&cpl, q.cbCmd.Opcode)
			}
			cb(&q.cbCmd, cpl, err)
		}
	}
}
