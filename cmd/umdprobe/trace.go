package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"github.com/umdkit/umd/dmatrace"
)

const (
	schemaTraceEvent = "umd.dmatrace.event/v1"
	// exitNotSupported: the kernel or the process cannot trace.
	exitNotSupported = 6
	// notOwned is the attribution of a fault on a device this process
	// does not drive: umdprobe has no ledger for it.
	notOwned = "not owned by this process"
)

// eventSource is what trace reads: a *dmatrace.Tracer, or a test's fake.
type eventSource interface {
	Read(ctx context.Context) (dmatrace.Event, error)
	Sources() dmatrace.Source
	Skipped() []error
	Lost() (dropped, malformed uint64)
	Close() error
}

// openTracer attaches the tracer; tests replace it.
var openTracer = func(o dmatrace.Options) (eventSource, error) {
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK: raise it
	// there (this does nothing on later kernels; if it fails, Open says
	// what is missing).
	_ = rlimit.RemoveMemlock()
	t, err := dmatrace.Open(o)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// errTraceUnsupported marks a tracer that could not attach at all (exit
// status 6).
var errTraceUnsupported = errors.New("cannot trace DMA faults here")

// traceEventDoc is one line of trace -o json: one event.
type traceEventDoc struct {
	Schema string `json:"schema"`
	Time   string `json:"time"` // RFC 3339 with nanoseconds
	Kind   string `json:"kind"` // fault, map, unmap
	IOVA   string `json:"iova"` // "0x..." (64-bit IOVAs do not fit a JSON number)

	// fault
	Source      string  `json:"source,omitempty"`
	BDF         string  `json:"bdf,omitempty"`
	Direction   string  `json:"direction,omitempty"` // read, write
	Reason      *uint8  `json:"reason,omitempty"`
	ReasonText  string  `json:"reason_text,omitempty"`
	IRQRemap    bool    `json:"irq_remap,omitempty"`
	PASID       *uint32 `json:"pasid,omitempty"`
	Owned       *bool   `json:"owned,omitempty"`
	Verdict     string  `json:"verdict,omitempty"` // never mapped, unmapped, live (owned devices only)
	Attribution string  `json:"attribution,omitempty"`

	// map and unmap
	PID      uint32 `json:"pid,omitempty"`
	Size     string `json:"size,omitempty"`
	Paddr    string `json:"paddr,omitempty"`
	Unmapped string `json:"unmapped,omitempty"`
}

func hex(v uint64) string { return fmt.Sprintf("0x%x", v) }

// tracePrinter writes events as trace shows them.
type tracePrinter struct {
	w    io.Writer
	json bool
	// bdfs, when not nil, keeps only the faults of these functions.
	bdfs map[string]bool
	// devs are the devices this process owns, for attribution; umdprobe
	// owns none, so their faults say notOwned.
	devs []dmatrace.Device

	faults, maps, unmaps int
}

func (p *tracePrinter) print(ev dmatrace.Event) error {
	doc := traceEventDoc{Schema: schemaTraceEvent, Time: ev.When().Format(time.RFC3339Nano)}
	var text string
	switch ev := ev.(type) {
	case *dmatrace.Fault:
		if p.bdfs != nil && !p.bdfs[ev.BDF] {
			return nil
		}
		p.faults++
		a, owned := dmatrace.Dispatch(*ev, p.devs)
		what := notOwned
		if owned {
			what = a.What()
			doc.Verdict = a.Verdict.String()
		}
		reason := ev.Reason
		doc.Kind, doc.Source, doc.BDF, doc.IOVA = "fault", ev.Source.String(), ev.BDF, hex(ev.IOVA)
		doc.Direction, doc.Reason, doc.ReasonText, doc.IRQRemap = ev.Direction(), &reason, dmatrace.ReasonText(ev.Reason), ev.IRQRemap
		if ev.HasPASID {
			pasid := ev.PASID
			doc.PASID = &pasid
		}
		doc.Owned, doc.Attribution = &owned, what
		text = ev.String() + ": " + what
	case *dmatrace.Map:
		p.maps++
		doc.Kind, doc.PID, doc.IOVA, doc.Size, doc.Paddr = "map", ev.PID, hex(ev.IOVA), hex(ev.Size), hex(ev.Paddr)
		text = ev.String()
	case *dmatrace.Unmap:
		p.unmaps++
		doc.Kind, doc.PID, doc.IOVA, doc.Size, doc.Unmapped = "unmap", ev.PID, hex(ev.IOVA), hex(ev.Size), hex(ev.Unmapped)
		text = ev.String()
	default:
		return nil
	}
	if p.json {
		line, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		_, err = p.w.Write(append(line, '\n'))
		return err
	}
	_, err := fmt.Fprintf(p.w, "%s  %s\n", ev.When().Format("15:04:05.000000"), text)
	return err
}

// runTrace attaches the tracer and prints events until Ctrl-C (SIGINT or
// SIGTERM) or, with --duration, until that long after the probes are in
// place.
func runTrace(w, errw io.Writer, bdfs map[string]bool, opt options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tr, err := openTracer(dmatrace.Options{Sources: dmatrace.DefaultSources, BestEffort: true})
	if errors.Is(err, dmatrace.ErrNotSupported) {
		return fmt.Errorf("%w: %s", errTraceUnsupported, unsupportedText(err))
	} else if err != nil {
		return err
	}
	defer tr.Close()
	for _, s := range tr.Skipped() {
		fmt.Fprintf(errw, "umdprobe: note: not attached: %s\n", unsupportedText(s))
	}
	until := "Ctrl-C"
	if opt.duration > 0 {
		until = opt.duration.String() + " or Ctrl-C"
	}
	// The JSON stream stays on stdout; this line tells a reader that the
	// probes are in place.
	fmt.Fprintf(errw, "umdprobe: tracing with %s until %s\n", tr.Sources(), until)
	// The duration counts from here: loading the kernel's BTF and
	// attaching can take seconds on a slow machine.
	if opt.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opt.duration)
		defer cancel()
	}

	p := &tracePrinter{w: w, json: opt.output == "json", bdfs: bdfs}
	for {
		ev, err := tr.Read(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, dmatrace.ErrClosed) {
				break
			}
			return err
		}
		if err := p.print(ev); err != nil {
			return fmt.Errorf("writing trace events: %w", err)
		}
	}
	if err := tr.Close(); err != nil {
		return err
	}
	dropped, malformed := tr.Lost()
	summary := fmt.Sprintf("umdprobe: %d fault%s, %d map and %d unmap events", p.faults, plural(p.faults), p.maps, p.unmaps)
	if dropped+malformed > 0 {
		summary += fmt.Sprintf("; %d dropped, %d malformed", dropped, malformed)
	}
	fmt.Fprintln(errw, summary)
	if err, ok := tr.(interface{ Err() error }); ok && err.Err() != nil {
		return err.Err()
	}
	return nil
}

// unsupportedText says on one line what each source lacks: Open joins
// one *dmatrace.NotSupportedError per source.
func unsupportedText(err error) string {
	errs := []error{err}
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		errs = joined.Unwrap()
	}
	var parts []string
	for _, e := range errs {
		parts = append(parts, strings.TrimPrefix(e.Error(), dmatrace.ErrNotSupported.Error()+": "))
	}
	return strings.Join(parts, "; ")
}

// traceBDFs is the set of functions whose faults trace shows; nil for
// all.
func traceBDFs(bdfs []string) map[string]bool {
	if bdfs == nil {
		return nil
	}
	m := map[string]bool{}
	for _, b := range bdfs {
		m[strings.ToLower(b)] = true
	}
	return m
}
