package dmatrace_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/umdkit/umd/dmatrace"
	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// A driver traces the faults of its devices and names what each hit. The
// tracer is optional: when the kernel or the process cannot trace, the
// error says what is missing and the driver carries on.
func ExampleOpen() {
	// The driver's DMA address space (over a VFIO container in a real
	// driver; the identity mapper here).
	mapper, err := iommu.NewIdentity(iommu.IdentityOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	space, err := iommu.New(mapper, iommu.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer space.Close()

	tr, err := dmatrace.Open(dmatrace.Options{
		Sources:    dmatrace.SourceDMAR | dmatrace.SourceFaultTracepoint | dmatrace.SourceKmsg,
		BestEffort: true, // the kmsg fallback when no probe attaches
	})
	if errors.Is(err, dmatrace.ErrNotSupported) {
		fmt.Fprintln(os.Stderr, "no DMA-fault tracing:", err)
		return
	} else if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer tr.Close()
	for {
		ev, err := tr.Read(context.Background())
		if err != nil {
			return
		}
		if f, ok := ev.(*dmatrace.Fault); ok {
			fmt.Println(dmatrace.Attribute(*f, space, nil))
		}
	}
}

// A driver that owns a device hands each fault to the device's engine:
// the command in flight at the faulting page fails with a
// *DMAFaultError, naming the command, at its queue pair's next Poll.
func ExampleDispatch() {
	mem := sim.NewMemory()
	ctrl, err := nvmelike.Open(context.Background(), sim.New(mem, sim.Config{}), mem, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer ctrl.Close()
	devs := []dmatrace.Device{{BDF: "0000:03:00.0", Engine: ctrl}} // and Book: the device's *iommu.Space

	tr, err := dmatrace.Open(dmatrace.Options{Sources: dmatrace.SourceDMAR})
	if err != nil {
		fmt.Fprintln(os.Stderr, err) // the driver works on without it
		return
	}
	defer tr.Close()
	for ev := range tr.Events() {
		if f, ok := ev.(*dmatrace.Fault); ok {
			if a, ours := dmatrace.Dispatch(*f, devs); ours {
				fmt.Println(a)
			}
		}
	}
}
