package sim

import (
	"fmt"

	"github.com/umdkit/umd/nvmelike"
)

// IOHandler executes a vendor-specific I/O command on the software
// controller, installed with HandleIO: the way a package that defines its
// own (computational) commands gives them a software model, without
// changing this package. It returns completion DW0 and a status field (0
// for success; nvmelike.StatusField builds others).
//
// It runs with the controller's lock held, inside the doorbell write that
// announced the command: it must not call the Controller's methods, and
// must use r only until it returns.
type IOHandler func(r *Request) (dw0 uint32, status uint16)

// Request is the vendor command an IOHandler executes.
type Request struct {
	// SQE is the submission entry, as the host wrote it.
	SQE nvmelike.SQE
	c   *Controller
}

// Namespace returns the backing store of namespace nsid and its LBA size
// as a power of two, or false if there is no such namespace.
func (r *Request) Namespace(nsid uint32) (data []byte, lbaShift uint, ok bool) {
	if nsid == 0 || int(nsid) > len(r.c.ns) {
		return nil, 0, false
	}
	ns := r.c.ns[nsid-1]
	return ns.data, ns.lbaShift, true
}

// FromHost fills dst with the command's data, read from host memory
// through its data pointer (PRPs or an SGL, as PSDT says). It returns a
// status field, 0 for success.
func (r *Request) FromHost(dst []byte) uint16 { return r.c.transferData(r.SQE, dst, false) }

// ToHost writes src to host memory through the command's data pointer. It
// returns a status field, 0 for success.
func (r *Request) ToHost(src []byte) uint16 { return r.c.transferData(r.SQE, src, true) }

// HandleIO makes h execute I/O opcode op (vendor-specific: 0x80-0xff);
// nil removes it. A handler takes precedence over the controller's own
// vendor commands (OpcodeCRC32C, OpcodeInlineCRC32C). An opcode nothing
// handles completes with Invalid Opcode.
func (c *Controller) HandleIO(op uint8, h IOHandler) error {
	if op < 0x80 {
		return fmt.Errorf("handling I/O opcode 0x%02x: not in the vendor-specific range 0x80-0xff", op)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.vendor[op-0x80] = h
	return nil
}

// vendorIO runs the handler of a vendor opcode, if there is one.
func (c *Controller) vendorIO(e nvmelike.SQE) (dw0 uint32, status uint16, ok bool) {
	h := c.vendor[e.Opcode()-0x80]
	if h == nil {
		return 0, 0, false
	}
	c.req = Request{SQE: e, c: c}
	dw0, status = h(&c.req)
	c.req = Request{}
	return dw0, status, true
}
