package nvmelike

import (
	"context"
	"fmt"
)

// Shadow doorbells (Doorbell Buffer Config, NVMe 1.3): the host writes each
// new SQ tail and CQ head to a shadow doorbell in memory, and writes the
// MMIO doorbell only when the controller asked to hear about it through
// its EventIdx buffer. An emulated controller (QEMU's) that is busy
// processing a queue reads the shadow itself, saving MMIO writes, each a
// VM exit. The two buffers are one memory page each, laid out like the
// doorbell registers: queue y's SQ tail at (2y)×(4<<DSTRD), its CQ head at
// (2y+1)×(4<<DSTRD). The admin queue never uses them.

// shadowDoorbell is one queue doorbell's shadow and event index.
type shadowDoorbell struct {
	db []byte // 4 bytes of the shadow doorbell buffer
	ei []byte // 4 bytes of the EventIdx buffer
}

// needEvent reports whether a doorbell moving from old to new has passed
// the controller's event index ei, all modulo 2^16 (the virtio rule
// vring_need_event, which NVMe's shadow doorbells adopt).
func needEvent(ei, new, old uint16) bool {
	return new-ei-1 < new-old
}

// update writes value to the shadow doorbell and reports whether the MMIO
// doorbell must be written too. The store and the load of the event index
// are ordered by a full barrier: the controller must either see the new
// value or have published an event index that makes us write the MMIO
// doorbell.
func (s *shadowDoorbell) update(value, old uint16) bool {
	storeSeqCst32(s.db, uint32(value))
	return needEvent(uint16(AcquireLoad32(s.ei)), value, old)
}

// setUpShadowDoorbells allocates the two buffers and hands them to the
// controller with Doorbell Buffer Config. The caller holds c.mu or owns c.
func (c *Controller) setUpShadowDoorbells(ctx context.Context) error {
	if c.dbs.Bytes == nil {
		var err error
		if c.dbs, err = c.dma.Alloc(c.pageSize, c.pageSize); err != nil {
			return fmt.Errorf("allocating shadow doorbells: %w", err)
		}
		if c.eis, err = c.dma.Alloc(c.pageSize, c.pageSize); err != nil {
			_ = c.dma.Free(c.dbs)
			c.dbs = Buffer{}
			return fmt.Errorf("allocating event indexes: %w", err)
		}
	}
	clear(c.dbs.Bytes)
	clear(c.eis.Bytes)
	cmd := Command{Opcode: AdminDBBufConfig, PRP1: c.dbs.IOVA, PRP2: c.eis.IOVA}
	if _, err := c.adminExec(ctx, &cmd); err != nil {
		return fmt.Errorf("doorbell buffer config: %w", err)
	}
	return nil
}

// shadowFor returns the shadow doorbells of queue qid, or false if shadow
// doorbells are off or the queue's fall outside the page.
func (c *Controller) shadowFor(qid uint16) (sq, cq shadowDoorbell, ok bool) {
	if c.dbs.Bytes == nil || qid == 0 {
		return sq, cq, false
	}
	s := SQTailDoorbell(qid, c.dstrd) - NVME_REG_DBS
	h := CQHeadDoorbell(qid, c.dstrd) - NVME_REG_DBS
	if h+4 > uint64(c.pageSize) {
		return sq, cq, false
	}
	sq = shadowDoorbell{db: c.dbs.Bytes[s : s+4 : s+4], ei: c.eis.Bytes[s : s+4 : s+4]}
	cq = shadowDoorbell{db: c.dbs.Bytes[h : h+4 : h+4], ei: c.eis.Bytes[h : h+4 : h+4]}
	return sq, cq, true
}
