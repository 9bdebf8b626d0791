package broker

import (
	"encoding/binary"
	"slices"

	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
)

// mediatedOpcodes are the I/O opcodes a mediated client may send with
// OpCmd, and whether each moves LBA data through PRPs.
var mediatedOpcodes = map[uint8]bool{
	nvmelike.CmdRead:        true,
	nvmelike.CmdWrite:       true,
	nvmelike.CmdCompare:     true,
	nvmelike.CmdFlush:       false,
	nvmelike.CmdWriteZeroes: false,
}

// cdw12Allowed are the CDW12 bits a mediated client may set besides NLB:
// Limited Retry (31), Force Unit Access (30) and, for Write Zeroes,
// Deallocate (25). Protection information (PRINFO) needs metadata the
// broker does not check, so it is refused.
const (
	cdw12LRFUA   = 1<<31 | 1<<30
	cdw12Deac    = 1 << 25
	cdw12NLBMask = 0xffff
)

// cmd checks a command a mediated client encoded and, if every field holds,
// runs it on the client's queue pair. Nothing reaches the device unless
// all checks pass.
func (c *conn) cmd(r *CommandRequest) (nvmelike.Completion, *Error) {
	sess, e := c.mediated("cmd", r.Queue)
	if e != nil {
		return nvmelike.Completion{}, e
	}
	cmd, e := sess.check(r)
	if e != nil {
		return nvmelike.Completion{}, e
	}
	cpl, err := c.exec(sess, r.Queue, &cmd)
	if err != nil {
		// With an NVMe status, the response carries it too.
		return cpl, errorf(CodeDevice, "cmd: opcode 0x%02x: %v", r.Opcode, err)
	}
	return cpl, nil
}

// check validates r against the session and builds the command the broker
// submits. The data buffer is rebuilt from the validated PRPs, so the
// engine writes PRPs of its own (and any PRP list into the broker's
// memory): what the device reads is what was checked, whatever the client
// writes into its pool afterwards.
func (s *session) check(r *CommandRequest) (nvmelike.Command, *Error) {
	lbaData := mediatedOpcodes[r.Opcode]
	cmd := nvmelike.Command{Opcode: r.Opcode, NSID: r.NSID}
	if r.Opcode == nvmelike.CmdFlush {
		if e := s.flushable("cmd", r.NSID); e != nil {
			return cmd, e
		}
		if r.PRP1 != 0 || r.PRP2 != 0 || r.CDW != [6]uint32{} {
			return cmd, errorf(CodeBadRequest, "cmd: flush with a data pointer or command dwords set")
		}
		return cmd, nil
	}
	slba := uint64(r.CDW[0]) | uint64(r.CDW[1])<<32
	nlb := uint64(r.CDW[2]&cdw12NLBMask) + 1
	allowed := uint32(cdw12NLBMask | cdw12LRFUA)
	if r.Opcode == nvmelike.CmdWriteZeroes {
		allowed |= cdw12Deac
	}
	switch {
	case r.CDW[2]&^allowed != 0:
		return cmd, errorf(CodeBadRequest, "cmd: CDW12 0x%08x sets bits the broker does not allow (protection information, directives)", r.CDW[2])
	case r.CDW[4] != 0 || r.CDW[5] != 0:
		return cmd, errorf(CodeBadRequest, "cmd: CDW14-15 (protection information) must be 0")
	}
	ns, e := s.lbaRange("cmd", r.NSID, slba, nlb)
	if e != nil {
		return cmd, e
	}
	cmd.CDW10, cmd.CDW11, cmd.CDW12, cmd.CDW13 = r.CDW[0], r.CDW[1], r.CDW[2], r.CDW[3]
	if !lbaData {
		if r.PRP1 != 0 || r.PRP2 != 0 {
			return cmd, errorf(CodeBadRequest, "cmd: opcode 0x%02x moves no data but has a data pointer", r.Opcode)
		}
		return cmd, nil
	}
	if ns.MetadataSize != 0 {
		// The controller would move the metadata too, through a
		// metadata pointer (or PRPs past the data) nobody checked: with
		// MPTR 0, to or from the lowest IOVAs of the broker's space.
		return cmd, errorf(CodeBadRequest, "cmd: namespace %d is formatted with %d bytes of metadata per block, which the broker does not mediate", r.NSID, ns.MetadataSize)
	}
	n := nlb * uint64(ns.LBASize)
	if n > uint64(s.dev.b.maxTransfer()) {
		return cmd, errorf(CodeBadRequest, "cmd: %d bytes, the transfer limit is %d", n, s.dev.b.maxTransfer())
	}
	off, e := s.checkPRPs(r.PRP1, r.PRP2, n)
	if e != nil {
		return cmd, e
	}
	cmd.Data = nvmelike.Buffer{Bytes: s.pool.Bytes()[off : off+n : off+n], IOVA: r.PRP1}
	return cmd, nil
}

// mediated returns the connection's session for a mediated request (op
// "io" or "cmd") on queue pair queue, or why there is none.
func (c *conn) mediated(op string, queue int) (*session, *Error) {
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	switch {
	case sess == nil:
		return nil, errorf(CodeState, "%s before open", op)
	case sess.mode == ModeTrusted:
		return nil, errorf(CodeState, "%s on a trusted session: the client submits itself", op)
	case queue >= len(sess.queues):
		return nil, errorf(CodeBadRequest, "%s: queue %d, the session has %d", op, queue, len(sess.queues))
	}
	return sess, nil
}

// flushable checks that a Flush may name nsid: one of the device's
// namespaces, or all of them (FFFFFFFFh).
func (s *session) flushable(op string, nsid uint32) *Error {
	if nsid != 0xffffffff && !slices.ContainsFunc(s.dev.info.Namespaces, func(n NamespaceInfo) bool { return n.NSID == nsid }) {
		return errorf(CodeBadRequest, "%s: no namespace %d on %s", op, nsid, s.dev.info.BDF)
	}
	return nil
}

// lbaRange checks that nlb blocks from slba lie in namespace nsid of the
// device and returns the namespace.
func (s *session) lbaRange(op string, nsid uint32, slba, nlb uint64) (NamespaceInfo, *Error) {
	i := slices.IndexFunc(s.dev.info.Namespaces, func(n NamespaceInfo) bool { return n.NSID == nsid })
	if i < 0 {
		return NamespaceInfo{}, errorf(CodeBadRequest, "%s: no namespace %d on %s", op, nsid, s.dev.info.BDF)
	}
	ns := s.dev.info.Namespaces[i]
	if slba >= ns.Blocks || nlb > ns.Blocks-slba {
		return NamespaceInfo{}, errorf(CodeBadRequest, "%s: blocks %d..%d beyond namespace %d's %d", op, slba, slba+nlb, nsid, ns.Blocks)
	}
	return ns, nil
}

// checkPRPs checks that PRP1 and PRP2 describe n bytes inside the client's
// window, by the PRP rules at the controller's page size, and returns the
// offset in the pool where they start. A PRP list is read once, from the
// client's pool, and must fit in the rest of its page (no chaining). Every
// entry must continue the buffer where the previous page ended: scattered
// pages are refused, since the broker rebuilds the PRPs for one contiguous
// range.
func (s *session) checkPRPs(prp1, prp2, n uint64) (uint64, *Error) {
	base, size := s.mapping.IOVA(), uint64(s.pool.Size())
	in := func(a, l uint64) bool { return a >= base && a-base <= size && l <= size-(a-base) }
	ps := uint64(s.dev.b.pageSize())
	if prp1&3 != 0 {
		return 0, errorf(CodeBadRequest, "cmd: PRP1 0x%x is not dword-aligned", prp1)
	}
	first := ps - prp1%ps
	if !in(prp1, min(n, first)) {
		return 0, errorf(CodeBadRequest, "cmd: PRP1 0x%x is outside the client's window 0x%x-0x%x", prp1, base, base+size)
	}
	off := prp1 - base
	if n <= first {
		if prp2 != 0 {
			return 0, errorf(CodeBadRequest, "cmd: PRP2 0x%x set for data within PRP1's page", prp2)
		}
		return off, nil
	}
	next := prp1 - prp1%ps + ps
	rest := n - first
	if rest <= ps {
		switch {
		case !in(prp2, rest):
			return 0, errorf(CodeBadRequest, "cmd: PRP2 0x%x is outside the client's window 0x%x-0x%x", prp2, base, base+size)
		case prp2 != next:
			return 0, errorf(CodeBadRequest, "cmd: PRP2 0x%x does not continue PRP1's buffer at 0x%x (scattered pages are not accepted)", prp2, next)
		}
		return off, nil
	}
	entries := (rest + ps - 1) / ps
	switch {
	case prp2&7 != 0:
		return 0, errorf(CodeBadRequest, "cmd: PRP list 0x%x is not qword-aligned", prp2)
	case entries > (ps-prp2%ps)/8:
		return 0, errorf(CodeBadRequest, "cmd: a PRP list of %d entries at 0x%x would cross its page (chained lists are not accepted)", entries, prp2)
	case !in(prp2, entries*8):
		return 0, errorf(CodeBadRequest, "cmd: PRP list 0x%x is outside the client's window 0x%x-0x%x", prp2, base, base+size)
	}
	list := s.pool.Bytes()[prp2-base:]
	for i := range entries {
		e := binary.LittleEndian.Uint64(list[i*8:])
		want := next + i*ps
		switch {
		case !in(e, min(ps, rest-i*ps)):
			return 0, errorf(CodeBadRequest, "cmd: PRP list entry %d, 0x%x, is outside the client's window 0x%x-0x%x", i, e, base, base+size)
		case e != want:
			return 0, errorf(CodeBadRequest, "cmd: PRP list entry %d is 0x%x, not the next page 0x%x (scattered pages are not accepted)", i, e, want)
		}
	}
	return off, nil
}

// makeRings makes a trusted session's ring memory (a shared pool of its
// own, mapped into the client's part of the IOMMU domain) and places each
// queue's SQ and CQ in it on controller-page boundaries. It returns the
// offsets, SQ then CQ, by queue.
func (c *conn) makeRings(sess *session, spec sessionSpec, owner iommu.Owner, layout *Layout) ([][2]int64, *Error) {
	ps := int64(sess.dev.b.pageSize())
	round := func(n int64) int64 { return (n + ps - 1) / ps * ps }
	var offs [][2]int64
	total := int64(0)
	for range spec.queues {
		sq := total
		total += round(int64(spec.depth) * 64)
		cq := total
		total += round(int64(spec.depth) * 16)
		offs = append(offs, [2]int64{sq, cq})
	}
	page := int64(c.s.poolPageSize(sess.dev))
	size := (total + page - 1) / page * page
	var e *Error
	if sess.rings, e = c.newPool("queue rings", "umdd rings", int(size), int(page)); e != nil {
		return nil, e
	}
	var err error
	if sess.ringsMap, err = sess.dev.b.mapPool(sess.rings.Bytes(), owner, uint64(page)); err != nil {
		return nil, errorf(CodeDevice, "open: mapping the queue rings: %v", err)
	}
	layout.RingsBytes, layout.RingsIOVA = size, sess.ringsMap.IOVA()
	return offs, nil
}
