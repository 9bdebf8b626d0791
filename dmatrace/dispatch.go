package dmatrace

import (
	"strings"

	"github.com/umdkit/umd/nvmelike"
)

// Device is a device the calling process owns, as Dispatch needs it.
type Device struct {
	// BDF is its PCI address, domain:bus:device.function (a missing
	// domain means 0000).
	BDF string
	// Book is its DMA address space (an *iommu.Space), nil for none.
	Book Book
	// Engine is its protocol engine, nil for none.
	Engine *nvmelike.Controller
}

// Dispatch finds the device of devs that raised f, attributes f to its
// book, and reports the fault to its engine: every command in flight on
// it whose data buffer, PRP list pages or queue address lie in the
// faulting page then fails with the attribution's *DMAFaultError, naming
// the command (queue, CID, opcode), instead of timing out or, as under
// QEMU, completing with success although its data went nowhere.
//
// The engine's queue pairs belong to one goroutine each, so the command
// is looked up and failed there, at the queue pair's next Poll (Exec polls
// while it waits), not here: the Attribution returned has no command.
// Dispatch never blocks on the engine and is safe to call from the
// goroutine that reads the Tracer. It reports false, with f unattributed,
// when no device of devs raised f; interrupt-remapping faults are
// attributed to no book and reported to no engine.
func Dispatch(f Fault, devs []Device) (Attribution, bool) {
	for _, d := range devs {
		if !sameBDF(d.BDF, f.BDF) {
			continue
		}
		a := Attribute(f, d.Book, nil)
		if d.Engine != nil && !f.IRQRemap {
			d.Engine.ReportDMAFault(nvmelike.DMAFault{IOVA: f.IOVA, Err: a.commandErr})
		}
		return a, true
	}
	return Attribution{Fault: f}, false
}

// commandErr is a's error once the engine named the command.
func (a Attribution) commandErr(c nvmelike.InFlightCommand) error {
	a.Command = Command{Queue: c.QID, CID: c.CID, Opcode: c.Opcode}
	a.HasCommand = true
	return a.Err()
}

// sameBDF compares PCI addresses, a missing domain being 0000.
func sameBDF(a, b string) bool {
	norm := func(s string) string {
		if strings.Count(s, ":") == 1 {
			s = "0000:" + s
		}
		return strings.ToLower(s)
	}
	return norm(a) == norm(b)
}
