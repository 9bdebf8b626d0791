package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf/rlimit"
	"github.com/umdkit/umd/dmatrace"
	"github.com/umdkit/umd/internal/bench"
)

// faultWatch traces DMA faults during a run: it counts those the run's
// devices raise and dispatches each to its device's engine, which fails
// the command behind it.
type faultWatch struct {
	tracer *dmatrace.Tracer
	devs   []dmatrace.Device
	cancel context.CancelFunc
	done   sync.WaitGroup

	mu     sync.Mutex
	report bench.FaultReport
}

// maxExamples is how many faults the report describes.
const maxExamples = 5

func watchFaults(devs []*device) (*faultWatch, error) {
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK: raise it
	// there (nothing changes on later kernels; if it fails, Open says
	// what is missing).
	_ = rlimit.RemoveMemlock()
	t, err := dmatrace.Open(dmatrace.Options{Sources: dmatrace.SourceDMAR})
	if err != nil {
		return nil, fmt.Errorf("--trace_faults: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fw := &faultWatch{tracer: t, cancel: cancel}
	for _, d := range devs {
		fw.devs = append(fw.devs, dmatrace.Device{BDF: d.dev.BDF(), Book: d.dev.Space(), Engine: d.dev.Controller()})
	}
	fw.done.Add(1)
	go fw.read(ctx)
	return fw, nil
}

func (fw *faultWatch) read(ctx context.Context) {
	defer fw.done.Done()
	for {
		ev, err := fw.tracer.Read(ctx)
		if err != nil {
			return
		}
		f, ok := ev.(*dmatrace.Fault)
		if !ok {
			continue
		}
		a, mine := dmatrace.Dispatch(*f, fw.devs)
		if !mine {
			continue
		}
		fw.mu.Lock()
		fw.report.Count++
		if len(fw.report.Examples) < maxExamples {
			fw.report.Examples = append(fw.report.Examples, a.String())
		}
		fw.mu.Unlock()
	}
}

// stop detaches the tracer and returns what it saw.
func (fw *faultWatch) stop() *bench.FaultReport {
	fw.cancel()
	fw.done.Wait()
	err := fw.tracer.Close()
	fw.mu.Lock()
	defer fw.mu.Unlock()
	r := fw.report
	if err != nil && !errors.Is(err, context.Canceled) {
		r.Examples = append(r.Examples, "closing the tracer: "+err.Error())
	}
	return &r
}
