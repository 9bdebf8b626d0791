package nvmelike

import (
	"context"
	"errors"
	"fmt"
)

// Op is a typed command: an opcode with its registry description, an
// encoder from a request of type Req to a Command and a decoder from the
// completion to a result of type Resp. Vendor-specific and computational
// commands are defined as Ops in the packages that own them, register
// themselves into a Registry (Register) and then run through a QueuePair
// or the admin queue like Read and Write:
//
//	var Checksum = &nvmelike.Op[ChecksumRequest, uint32]{
//		Name: "checksum", Opcode: 0x90, Dir: nvmelike.DirNone,
//		Encode: func(r ChecksumRequest) nvmelike.Command { ... },
//		Decode: func(_ nvmelike.Command, c nvmelike.Completion) (uint32, error) { return c.DW0, nil },
//	}
//	sum, err := Checksum.Exec(ctx, q, ChecksumRequest{...})
//
// For asynchronous use, Command encodes a request for Submit, and the
// callback hands what it got to Result. None of them allocates, except
// to build an error.
//
// An Op is immutable once registered; share it by pointer.
type Op[Req, Resp any] struct {
	// Name names the command in errors and tools.
	Name string
	// Opcode is the command's opcode: vendor-specific I/O opcodes are
	// 0x80-0xff, admin ones 0xc0-0xff.
	Opcode uint8
	// Admin says the command runs on the admin queue.
	Admin bool
	// Dir is the direction of the command's data, if it has any.
	Dir Direction
	// LBAData says the command moves NLB logical blocks like Read (see
	// OpcodeInfo.LBAData): its data length is then checked, and a command
	// above the transfer limit is split.
	LBAData bool
	// Encode builds the command for a request; the Op sets the opcode.
	Encode func(req Req) Command
	// Decode turns a successful completion c of cmd (as submitted, data
	// included) into the result; it may still fail, e.g. on a result the
	// command's definition rules out. Nil means the zero Resp. (It takes
	// values, not pointers: a pointer passed to a function value escapes,
	// which would cost an allocation per command.)
	Decode func(cmd Command, c Completion) (Resp, error)
}

// OpError is the error of a typed command: its name and opcode, and what
// went wrong (usually a *StatusError, which errors.As and errors.Is with
// the status sentinels such as ErrInvalidOpcode see through it).
type OpError struct {
	Name   string
	Opcode uint8
	Admin  bool
	Err    error
}

func (e *OpError) Error() string {
	kind := "I/O"
	if e.Admin {
		kind = "admin"
	}
	return fmt.Sprintf("%s (%s opcode 0x%02x): %v", e.Name, kind, e.Opcode, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// Info returns the registry description of the Op.
func (o *Op[Req, Resp]) Info() OpcodeInfo {
	return OpcodeInfo{Name: o.Name, Dir: o.Dir, LBAData: o.LBAData}
}

// Register describes the Op's opcode in r, with RegisterIO or
// RegisterAdmin. Register it before handing r to a controller (Open).
func (o *Op[Req, Resp]) Register(r *Registry) error {
	if o.Encode == nil {
		return fmt.Errorf("registering %s: no encoder", o.Name)
	}
	if o.Admin {
		return r.RegisterAdmin(o.Opcode, o.Info())
	}
	return r.RegisterIO(o.Opcode, o.Info())
}

// Command encodes req as a Command, for Submit or SubmitBatch.
func (o *Op[Req, Resp]) Command(req Req) Command {
	cmd := o.Encode(req)
	cmd.Opcode = o.Opcode
	return cmd
}

// Result decodes what a completion callback (or Exec) got for a command
// of this Op: err as it came, wrapped in an *OpError naming the command,
// or else the decoded result.
func (o *Op[Req, Resp]) Result(cmd *Command, c Completion, err error) (Resp, error) {
	var resp Resp
	if err != nil {
		return resp, &OpError{Name: o.Name, Opcode: o.Opcode, Admin: o.Admin, Err: err}
	}
	if o.Decode == nil {
		return resp, nil
	}
	if resp, err = o.Decode(*cmd, c); err != nil {
		return resp, &OpError{Name: o.Name, Opcode: o.Opcode, Admin: o.Admin, Err: err}
	}
	return resp, nil
}

// Exec runs req on the I/O queue pair q and waits for its result (see
// QueuePair.Exec).
func (o *Op[Req, Resp]) Exec(ctx context.Context, q *QueuePair, req Req) (Resp, error) {
	if o.Admin {
		var resp Resp
		return resp, &OpError{Name: o.Name, Opcode: o.Opcode, Admin: true, Err: errAdminOnIOQueue}
	}
	cmd := o.Command(req)
	c, err := q.Exec(ctx, &cmd)
	return o.Result(&cmd, c, err)
}

// ExecAdmin runs req on c's admin queue and waits for its result (see
// Controller.Admin).
func (o *Op[Req, Resp]) ExecAdmin(ctx context.Context, c *Controller, req Req) (Resp, error) {
	if !o.Admin {
		var resp Resp
		return resp, &OpError{Name: o.Name, Opcode: o.Opcode, Err: errIOOnAdminQueue}
	}
	cmd := o.Command(req)
	cpl, err := c.Admin(ctx, &cmd)
	return o.Result(&cmd, cpl, err)
}

var (
	errAdminOnIOQueue = errors.New("an admin command on an I/O queue")
	errIOOnAdminQueue = errors.New("an I/O command on the admin queue")
)
