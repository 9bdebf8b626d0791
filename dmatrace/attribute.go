package dmatrace

import (
	"fmt"
	"time"

	"github.com/umdkit/umd/iommu"
)

// Book is where a fault's IOVA is looked up: an *iommu.Space or its
// *iommu.Ledger, or anything that remembers mappings the same way. Lookup
// returns the live mapping holding iova, else the most recently unmapped
// one it still remembers.
type Book interface {
	Lookup(iova uint64) (iommu.Record, bool)
}

// Command identifies a command in flight, as the protocol engine knows it.
type Command struct {
	Queue  uint16 // the submission queue (0: admin)
	CID    uint16 // the command identifier
	Opcode uint8
}

func (c Command) String() string {
	return fmt.Sprintf("queue %d CID %d opcode 0x%02x", c.Queue, c.CID, c.Opcode)
}

// InFlight is the hook an engine that can answer from another goroutine
// implements so that Attribute can pin a fault on a command: the command
// in flight on device bdf whose data pointers (PRP or SGL entries, queue
// addresses) cover iova, if any. It is called from the goroutine that
// attributes faults, so it must be safe for concurrent use with the
// engine's I/O path and must not block.
//
// umd's own engine (package nvmelike) cannot answer that way: its queue
// pairs belong to one goroutine each and take no locks on the I/O path.
// For it, Dispatch hands the fault over and each queue pair looks its
// commands up on its own goroutine (see Dispatch).
type InFlight interface {
	InFlight(bdf string, iova uint64) (Command, bool)
}

// Verdict is what the ledger says about a fault's IOVA.
type Verdict int

// Verdicts.
const (
	// NeverMapped: no mapping the book remembers held the IOVA. The book
	// forgets the oldest unmapped records (iommu.DefaultRecent are kept),
	// so this means "never mapped, or unmapped long ago".
	NeverMapped Verdict = iota
	// Unmapped: the IOVA belonged to a mapping that was unmapped before
	// the fault, Attribution.Since ago: a use after unmap.
	Unmapped
	// Live: the IOVA is mapped. The device did something the mapping's
	// permission does not allow (a write to memory mapped read-only), or
	// the fault raced with the mapping being made or the unmap being
	// recorded.
	Live
)

func (v Verdict) String() string {
	switch v {
	case NeverMapped:
		return "never mapped"
	case Unmapped:
		return "unmapped"
	case Live:
		return "live"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Attribution is a fault joined to the books: whose memory the IOVA is or
// was, and which command referenced it.
type Attribution struct {
	Fault   Fault
	Verdict Verdict
	// Record is the mapping that holds (Live) or held (Unmapped) the
	// IOVA; zero when NeverMapped.
	Record iommu.Record
	// Offset is the IOVA's offset into Record.
	Offset uint64
	// Since is how long before the fault the mapping was unmapped
	// (Unmapped only). It is negative when the fault came before the
	// ledger recorded the unmap: the kernel had already unmapped the
	// IOVA, the Space had not yet stamped its record.
	Since time.Duration
	// Command is the command in flight that referenced the IOVA, when
	// HasCommand.
	Command    Command
	HasCommand bool
}

// Attribute joins f to book (nil: no book) and asks cmds (nil: no
// engine) which command referenced the IOVA.
func Attribute(f Fault, book Book, cmds InFlight) Attribution {
	a := Attribution{Fault: f}
	if book != nil && !f.IRQRemap {
		if r, ok := book.Lookup(f.IOVA); ok {
			a.Record, a.Offset = r, f.IOVA-r.IOVA
			if r.Live() {
				a.Verdict = Live
			} else {
				a.Verdict = Unmapped
				a.Since = f.Time.Sub(r.Unmapped)
			}
		}
	}
	if cmds != nil && !f.IRQRemap {
		a.Command, a.HasCommand = cmds.InFlight(f.BDF, f.IOVA)
	}
	return a
}

// What says in words what the IOVA was.
func (a Attribution) What() string {
	switch a.Verdict {
	case Live:
		return fmt.Sprintf("in %s at offset 0x%x, mapped %s (live)", a.Record.Owner, a.Offset, a.Record.Perm)
	case Unmapped:
		return fmt.Sprintf("in %s at offset 0x%x, unmapped %s ago (use after unmap)", a.Record.Owner, a.Offset, roundSince(a.Since))
	}
	return "never mapped"
}

// roundSince rounds d for printing: to the microsecond under a
// millisecond, else to a tenth of a millisecond.
func roundSince(d time.Duration) time.Duration {
	if d > -time.Millisecond && d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(100 * time.Microsecond)
}

func (a Attribution) String() string {
	s := a.Fault.String() + ": " + a.What()
	if a.HasCommand {
		s += "; command " + a.Command.String()
	}
	return s
}

// Err returns the error the engine fails the faulting command with.
func (a Attribution) Err() error { return &DMAFaultError{Attribution: a} }
