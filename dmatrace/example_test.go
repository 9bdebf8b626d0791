package dmatrace_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/umdkit/umd/dmatrace"
	"github.com/umdkit/umd/iommu"
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
