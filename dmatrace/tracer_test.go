package dmatrace

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/umdkit/umd/iommu"
	"golang.org/x/sys/unix"
)

// The development machine's kernel has BPF, BTF and the iommu tracepoints
// (CONFIG_IOMMU_API) but neither kprobes nor the Intel IOMMU driver: these
// tests assert exactly that, as root. Without root they assert the typed
// privilege error instead.

func isRoot() bool { return os.Geteuid() == 0 }

func hasSymbol(t *testing.T, symbol string) bool {
	t.Helper()
	err := kernelSymbol(symbol)
	var ns *NotSupportedError
	if err != nil && !errors.As(err, &ns) {
		t.Fatal(err)
	}
	return err == nil
}

func notSupported(t *testing.T, err error, missing Missing) *NotSupportedError {
	t.Helper()
	var ns *NotSupportedError
	if !errors.Is(err, ErrNotSupported) || !errors.As(err, &ns) || ns.Missing != missing {
		t.Fatalf("got %v; want a *NotSupportedError for missing %s", err, missing)
	}
	return ns
}

func TestOpenTracepoints(t *testing.T) {
	tr, err := Open(Options{Sources: SourceFaultTracepoint | SourceMapUnmap, PID: os.Getpid()})
	if !isRoot() {
		notSupported(t, err, MissingPrivilege)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.Sources(); got != SourceFaultTracepoint|SourceMapUnmap {
		t.Errorf("attached %s", got)
	}
	if len(tr.Skipped()) != 0 {
		t.Errorf("skipped %v", tr.Skipped())
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if ev, err := tr.Read(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close = %v, %v; want ErrClosed", ev, err)
	}
	if _, ok := <-tr.Events(); ok {
		t.Error("the Events channel is open after Close")
	}
	if err := tr.Err(); err != nil {
		t.Errorf("Err() after Close = %v; want nil", err)
	}
}

func TestOpenIOVAFilter(t *testing.T) {
	if !isRoot() {
		t.Skip("loading BPF programs needs root; TestOpenTracepoints checks the error")
	}
	// Several ranges make the longest filter the program builder emits;
	// the verifier must accept it.
	tr, err := Open(Options{Sources: SourceMapUnmap, IOVA: []iommu.Range{{Start: 0x1000, End: 0x1fff}, {Start: 0x10_0000, End: 0x1f_ffff}, {Start: 0xfef00000, End: 0x7fffffffff}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDMARNotSupportedHere(t *testing.T) {
	if hasSymbol(t, DMARFaultSymbol) {
		t.Skipf("this kernel has %s; the guest tests cover it", DMARFaultSymbol)
	}
	_, err := Open(Options{Sources: SourceDMAR})
	if !isRoot() {
		notSupported(t, err, MissingPrivilege)
		return
	}
	ns := notSupported(t, err, MissingSymbol)
	if ns.Source != SourceDMAR || !strings.Contains(err.Error(), "dmar_fault is not in /proc/kallsyms") {
		t.Errorf("error %q, source %s", err, ns.Source)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%v does not unwrap to its cause", err)
	}
}

// TestDMARProgramVerifies loads the DMAR program with made-up structure
// offsets (the host has no struct intel_iommu): the verifier must accept
// it. Attaching it shows the typed error of a kernel without kprobes.
func TestDMARProgramVerifies(t *testing.T) {
	if !isRoot() {
		t.Skip("loading BPF programs needs root; TestOpenTracepoints checks the error")
	}
	tr := &Tracer{}
	defer tr.detach()
	if err := tr.openRing(4096); err != nil {
		t.Fatal(err)
	}
	for _, o := range []iommuOffsets{{reg: 0, cap: 24, segment: 120, segSize: 2}, {reg: 8, cap: 16, segment: -1}} {
		p, err := tr.load(SourceDMAR, "umd_dmar_fault", ebpf.Kprobe, dmarProgram(tr.ring.FD(), o))
		if err != nil {
			t.Fatalf("offsets %+v: %v", o, err)
		}
		err = tr.attachKprobe(SourceDMAR, "do_sys_openat2", p)
		if exists("/sys/bus/event_source/devices/kprobe") {
			if err != nil {
				t.Errorf("this kernel has kprobes: %v", err)
			}
			continue
		}
		var ns *NotSupportedError
		if !errors.As(err, &ns) || (ns.Missing != MissingSymbol && ns.Missing != MissingTracefs) {
			t.Errorf("attaching a kprobe without kprobes: %v; want a *NotSupportedError", err)
		}
	}
}

func TestBestEffort(t *testing.T) {
	if !isRoot() || hasSymbol(t, DMARFaultSymbol) {
		t.Skip("needs root and a kernel without dmar_fault, as the development machine's")
	}
	o := Options{Sources: SourceDMAR | SourceMapUnmap}
	if tr, err := Open(o); err == nil {
		tr.Close()
		t.Fatal("Open attached without dmar_fault")
	} else {
		notSupported(t, err, MissingSymbol) // and nothing leaks: TestMain counts fds
	}
	o.BestEffort = true
	tr, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.Sources() != SourceMapUnmap || len(tr.Skipped()) != 1 {
		t.Fatalf("attached %s, skipped %v", tr.Sources(), tr.Skipped())
	}
	notSupported(t, tr.Skipped()[0], MissingSymbol)

	// Nothing attachable: BestEffort fails too.
	if _, err := Open(Options{Sources: SourceDMAR, BestEffort: true}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("best effort with nothing attachable: %v", err)
	}
}

// TestKmsgFallback writes a DMAR-like line (marked as a test) to the
// kernel log and reads it back through the fallback.
func TestKmsgFallback(t *testing.T) {
	tr, err := Open(Options{Sources: SourceKmsg})
	if err != nil {
		if !isRoot() {
			notSupported(t, err, MissingPrivilege)
			return
		}
		t.Fatal(err)
	}
	defer tr.Close()
	f, err := os.OpenFile(kmsgPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("umd dmatrace test, not a real fault: DMAR: [DMA Read NO_PASID] Request device [00:1f.7] fault addr 0xabc000 [fault reason 0x06] PTE Read access is not set\n")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := tr.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := ev.(*Fault)
	if !ok || got.Source != SourceKmsg || got.BDF != "0000:00:1f.7" || got.IOVA != 0xabc000 || got.Write || got.Reason != 6 {
		t.Errorf("read %v", ev)
	}
}

func TestReadContext(t *testing.T) {
	tr := &Tracer{events: make(chan Event)}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tr.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Read with a cancelled context: %v", err)
	}
}

func TestOpenInvalid(t *testing.T) {
	for _, o := range []Options{
		{Sources: 1 << 6},
		{PID: -1},
		{IOVA: []iommu.Range{{Start: 2, End: 1}}},
		{IOVA: make([]iommu.Range, maxRanges+1)},
	} {
		if tr, err := Open(o); !errors.Is(err, ErrInvalid) {
			if tr != nil {
				tr.Close()
			}
			t.Errorf("Open(%+v) = %v; want an invalid-argument error", o, err)
		}
	}
}

func TestNotSupportedError(t *testing.T) {
	err := error(&NotSupportedError{Source: SourceDMAR, Missing: MissingBTF, Detail: "struct intel_iommu", Err: unix.ENOENT})
	const want = "DMA-fault tracing not supported: kprobe dmar_fault: missing kernel BTF (struct intel_iommu): no such file or directory"
	if err.Error() != want {
		t.Errorf("Error() = %q\nwant      %q", err, want)
	}
	if !errors.Is(err, ErrNotSupported) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("%v does not match ErrNotSupported and its cause", err)
	}
	for m := MissingPrivilege; m <= MissingKmsg; m++ {
		if strings.HasPrefix(m.String(), "missing(") {
			t.Errorf("Missing %d has no name", int(m))
		}
	}
	// Errors from loading are classified by their cause.
	if err := classify(unix.EPERM, SourceMapUnmap, "loading", ""); !errors.Is(err, ErrNotSupported) {
		t.Errorf("EPERM: %v", err)
	}
	if err := classify(unix.EINVAL, SourceMapUnmap, "loading", ""); errors.Is(err, ErrNotSupported) {
		t.Errorf("EINVAL: %v is not a missing feature", err)
	}
}
