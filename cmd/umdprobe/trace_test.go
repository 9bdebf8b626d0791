package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/dmatrace"
	"github.com/umdkit/umd/pcie/pcietest"
)

// fakeTracer delivers a fixed list of events, then waits for the end.
type fakeTracer struct {
	events []dmatrace.Event
	closed int
}

func (f *fakeTracer) Read(ctx context.Context) (dmatrace.Event, error) {
	if len(f.events) > 0 {
		ev := f.events[0]
		f.events = f.events[1:]
		return ev, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}
func (f *fakeTracer) Sources() dmatrace.Source { return dmatrace.SourceDMAR | dmatrace.SourceMapUnmap }
func (f *fakeTracer) Skipped() []error {
	return []error{&dmatrace.NotSupportedError{Source: dmatrace.SourceFaultTracepoint, Missing: dmatrace.MissingTracepoint, Detail: "iommu:io_page_fault"}}
}
func (f *fakeTracer) Lost() (uint64, uint64) { return 0, 0 }
func (f *fakeTracer) Close() error           { f.closed++; return nil }

func fakeTrace(t *testing.T, err error) *fakeTracer {
	t.Helper()
	at := time.Date(2026, 11, 22, 8, 0, 0, 123456000, time.UTC)
	f := &fakeTracer{events: []dmatrace.Event{
		&dmatrace.Map{Time: at, PID: 42, IOVA: 0x200000, Size: 0x400000, Paddr: 0x7000000},
		&dmatrace.Fault{Source: dmatrace.SourceDMAR, Time: at, BDF: "0000:04:00.0", IOVA: 0x3000, Write: false, Reason: 6},
		&dmatrace.Fault{Source: dmatrace.SourceDMAR, Time: at, BDF: "0000:03:00.0", IOVA: 0x4000000000, Write: true, Reason: 5},
		&dmatrace.Unmap{Time: at, PID: 42, IOVA: 0x200000, Size: 0x400000, Unmapped: 0x400000},
	}}
	old := openTracer
	t.Cleanup(func() { openTracer = old })
	openTracer = func(o dmatrace.Options) (eventSource, error) {
		if o.Sources != dmatrace.DefaultSources || !o.BestEffort {
			t.Errorf("tracer options %+v", o)
		}
		if err != nil {
			return nil, err
		}
		return f, nil
	}
	return f
}

func TestTraceJSON(t *testing.T) {
	tr := pcietest.Sample(t)
	f := fakeTrace(t, nil)
	code, out, errOut := probe(t, tr.Root, "trace", "03:00.0", "-o", "json", "--duration", "50ms")
	if code != exitOK || f.closed == 0 {
		t.Fatalf("exit %d, closed %d times, stderr %q", code, f.closed, errOut)
	}
	for _, s := range []string{
		"umdprobe: note: not attached: tracepoint iommu:io_page_fault: missing kernel tracepoint (iommu:io_page_fault)\n",
		"umdprobe: tracing with kprobe dmar_fault, tracepoints iommu:map/unmap until 50ms or Ctrl-C\n",
		"umdprobe: 1 fault, 1 map and 1 unmap events\n",
	} {
		if !strings.Contains(errOut, s) {
			t.Errorf("stderr lacks %q:\n%s", s, errOut)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want map, the fault of 03:00.0 and unmap:\n%s", len(lines), out)
	}
	var fault map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &fault); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"schema": schemaTraceEvent, "kind": "fault", "bdf": "0000:03:00.0", "iova": "0x4000000000",
		"direction": "write", "reason": 5.0, "owned": false, "attribution": notOwned,
		"source": "kprobe dmar_fault", "time": "2026-11-22T08:00:00.123456Z",
		"reason_text": "page table entry does not allow writes",
	}
	for k, v := range want {
		if fault[k] != v {
			t.Errorf("fault %s = %v; want %v", k, fault[k], v)
		}
	}
	if !strings.Contains(lines[0], `"kind":"map","iova":"0x200000","pid":42,"size":"0x400000","paddr":"0x7000000"`) {
		t.Errorf("map line %s", lines[0])
	}
}

func TestTraceText(t *testing.T) {
	tr := pcietest.Sample(t)
	fakeTrace(t, nil)
	code, out, _ := probe(t, tr.Root, "trace", "--duration", "50ms")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	want := "08:00:00.123456  DMA write fault by 0000:03:00.0 at IOVA 0x4000000000 (reason 0x05 page table entry does not allow writes) [kprobe dmar_fault]: not owned by this process\n"
	if !strings.Contains(out, want) || strings.Count(out, "\n") != 4 {
		t.Errorf("output lacks %q or has not 4 lines:\n%s", want, out)
	}
}

func TestTraceNotSupported(t *testing.T) {
	tr := pcietest.Sample(t)
	fakeTrace(t, &dmatrace.NotSupportedError{Source: dmatrace.SourceDMAR, Missing: dmatrace.MissingPrivilege})
	code, out, errOut := probe(t, tr.Root, "trace")
	want := "umdprobe: cannot trace DMA faults here: kprobe dmar_fault: missing privileges (root, or CAP_BPF and CAP_PERFMON)\n"
	if code != exitNotSupported || out != "" || errOut != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, out, errOut, exitNotSupported, want)
	}
	if code, _, errOut := probe(t, tr.Root, "trace", "--duration", "-1s"); code != exitUsage || !strings.Contains(errOut, "negative") {
		t.Errorf("negative duration: exit %d, %q", code, errOut)
	}
}
