package dmatrace

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/iommu"
)

// Probe points.
const (
	// DMARFaultSymbol is the VT-d fault interrupt handler the DMAR source
	// probes. dmar_fault_do_one, which has the decoded fields as
	// arguments, is inlined in the Debian 6.1 and 6.12 kernels, and
	// iommu_report_device_fault only carries page requests (PRQ), so the
	// program reads the fault recording registers itself.
	DMARFaultSymbol = "dmar_fault"

	tpPageFault = "io_page_fault"
	tpMap       = "map"
	tpUnmap     = "unmap"

	// maxRanges bounds Options.IOVA: each range is five instructions in
	// the map and unmap programs.
	maxRanges = 64
)

// Options configure a Tracer. The zero value attaches DefaultSources with
// no filter.
type Options struct {
	// Sources to attach; 0 means DefaultSources.
	Sources Source
	// BestEffort attaches the sources that can be attached and skips the
	// others (Tracer.Skipped says why); Open then fails only when none
	// attached. Without it, Open fails when any source cannot attach.
	BestEffort bool
	// PID, when not 0, keeps only the map and unmap events of this
	// process (thread group): VFIO maps and unmaps in the context of the
	// process that asks. Faults are never filtered: they come from
	// interrupts, in no process's context.
	PID int
	// IOVA, when not empty, keeps only the map and unmap events that
	// overlap one of these ranges.
	IOVA []iommu.Range
	// RingSize is the ring buffer's size in bytes, a power of two and a
	// multiple of the page size; 0 means 256 KiB.
	RingSize int
	// Buffer is how many decoded events wait for Read before new ones
	// are dropped (and counted by Lost); 0 means 1024.
	Buffer int
}

// Tracer delivers IOMMU events from the kernel as typed events. Its
// methods are safe for concurrent use.
type Tracer struct {
	events  chan Event
	sources Source
	skipped []error
	lost    atomic.Uint64
	bad     atomic.Uint64
	readErr atomic.Pointer[error] // the first error that stopped a reader

	ring  *ebpf.Map
	rd    *ringbuf.Reader
	progs []*ebpf.Program
	links []link.Link
	kmsg  *os.File

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open loads the BPF programs for o.Sources, attaches them and starts
// delivering events. Errors say which source could not attach and what it
// lacks (a *NotSupportedError, matching ErrNotSupported). Close the Tracer
// to detach everything.
func Open(o Options) (*Tracer, error) {
	if o.Sources == 0 {
		o.Sources = DefaultSources
	}
	if o.Sources&^(SourceDMAR|SourceFaultTracepoint|SourceMapUnmap|SourceKmsg) != 0 {
		return nil, fmt.Errorf("opening a DMA-fault tracer: unknown sources %#x: %w", uint8(o.Sources), ErrInvalid)
	}
	if o.PID < 0 || o.PID > 1<<31-1 {
		return nil, fmt.Errorf("opening a DMA-fault tracer: PID %d out of range: %w", o.PID, ErrInvalid)
	}
	if len(o.IOVA) > maxRanges {
		return nil, fmt.Errorf("opening a DMA-fault tracer: %d IOVA ranges, at most %d: %w", len(o.IOVA), maxRanges, ErrInvalid)
	}
	for _, r := range o.IOVA {
		if r.End < r.Start {
			return nil, fmt.Errorf("opening a DMA-fault tracer: IOVA range %s ends before it starts: %w", r, ErrInvalid)
		}
	}
	if o.RingSize == 0 {
		o.RingSize = 256 << 10
	}
	if o.Buffer <= 0 {
		o.Buffer = 1024
	}
	t := &Tracer{events: make(chan Event, o.Buffer)}
	c := newClock()

	var errs []error
	fail := func(err error) {
		errs = append(errs, err)
	}
	if o.Sources&(SourceDMAR|SourceFaultTracepoint|SourceMapUnmap) != 0 {
		if err := t.openRing(o.RingSize); err != nil {
			// Without the ring buffer no BPF source can attach.
			for _, s := range []Source{SourceDMAR, SourceFaultTracepoint, SourceMapUnmap} {
				if o.Sources&s != 0 {
					fail(withSource(err, s))
				}
			}
		} else {
			if o.Sources&SourceDMAR != 0 {
				if err := t.attachDMAR(); err != nil {
					fail(err)
				} else {
					t.sources |= SourceDMAR
				}
			}
			if o.Sources&SourceFaultTracepoint != 0 {
				if err := t.attachPageFault(); err != nil {
					fail(err)
				} else {
					t.sources |= SourceFaultTracepoint
				}
			}
			if o.Sources&SourceMapUnmap != 0 {
				if err := t.attachMapUnmap(uint32(o.PID), o.IOVA); err != nil {
					fail(err)
				} else {
					t.sources |= SourceMapUnmap
				}
			}
		}
	}
	if o.Sources&SourceKmsg != 0 {
		if err := t.openKmsg(); err != nil {
			fail(err)
		} else {
			t.sources |= SourceKmsg
		}
	}
	if err := errors.Join(errs...); err != nil && (!o.BestEffort || t.sources == 0) {
		t.detach()
		return nil, fmt.Errorf("opening a DMA-fault tracer: %w", err)
	}
	t.skipped = errs
	if t.rd != nil && len(t.links) > 0 {
		t.wg.Add(1)
		go t.readRing(c)
	} else if t.rd != nil {
		t.rd.Close()
		t.rd = nil
	}
	if t.kmsg != nil {
		t.wg.Add(1)
		go t.readKmsg()
	}
	go func() {
		t.wg.Wait()
		close(t.events)
	}()
	return t, nil
}

// withSource sets the source of a *NotSupportedError made before the
// source was known.
func withSource(err error, s Source) error {
	var ns *NotSupportedError
	if errors.As(err, &ns) {
		cp := *ns
		cp.Source = s
		return &cp
	}
	return fmt.Errorf("%s: %w", s, err)
}

// newClock pairs the wall clock with CLOCK_MONOTONIC, the clock of
// bpf_ktime_get_ns.
func newClock() clock {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return clock{}
	}
	return clock{wall: now, mono: ts.Nano()}
}

// classify turns an error from loading or attaching into a
// *NotSupportedError when it means the kernel or the process cannot,
// and returns other errors wrapped with what.
func classify(err error, s Source, what, detail string) error {
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return &NotSupportedError{Source: s, Missing: MissingPrivilege, Detail: detail, Err: err}
	case errors.Is(err, ebpf.ErrNotSupported):
		return &NotSupportedError{Source: s, Missing: MissingBPF, Detail: detail, Err: err}
	}
	return fmt.Errorf("%s: %s: %w", s, what, err)
}

func (t *Tracer) openRing(size int) error {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "umd_dma_events", Type: ebpf.RingBuf, MaxEntries: uint32(size)})
	if err != nil {
		return classify(err, 0, "making the ring buffer", "BPF ring buffer map")
	}
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		m.Close()
		return classify(err, 0, "reading the ring buffer", "BPF ring buffer map")
	}
	t.ring, t.rd = m, rd
	return nil
}

// load loads one program.
func (t *Tracer) load(s Source, name string, typ ebpf.ProgramType, insns asm.Instructions) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         name,
		Type:         typ,
		License:      "GPL", // bpf_probe_read_kernel and the ring buffer are GPL-only helpers
		Instructions: insns,
	})
	if err != nil {
		return nil, classify(err, s, "loading the "+name+" program", "loading "+typ.String())
	}
	t.progs = append(t.progs, p)
	return p, nil
}

// attachRaw attaches p to the raw tracepoint called name.
func (t *Tracer) attachRaw(s Source, name string, p *ebpf.Program) error {
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: name, Program: p})
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
			return &NotSupportedError{Source: s, Missing: MissingTracepoint, Detail: "iommu:" + name, Err: err}
		}
		return classify(err, s, "attaching to tracepoint iommu:"+name, "raw tracepoint iommu:"+name)
	}
	t.links = append(t.links, l)
	return nil
}

func (t *Tracer) attachMapUnmap(pid uint32, ranges []iommu.Range) error {
	for _, tp := range []struct {
		name string
		kind uint32
	}{{tpMap, kindMap}, {tpUnmap, kindUnmap}} {
		p, err := t.load(SourceMapUnmap, "umd_iommu_"+tp.name, ebpf.RawTracepoint, mapUnmapProgram(t.ring.FD(), tp.kind, pid, ranges))
		if err != nil {
			return err
		}
		if err := t.attachRaw(SourceMapUnmap, tp.name, p); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tracer) attachPageFault() error {
	spec, err := kernelBTF(SourceFaultTracepoint)
	if err != nil {
		return err
	}
	kobj, err := memberOffset(spec, "device", "kobj")
	if err != nil {
		return &NotSupportedError{Source: SourceFaultTracepoint, Missing: MissingBTF, Detail: "struct device", Err: err}
	}
	name, err := memberOffset(spec, "kobject", "name")
	if err != nil {
		return &NotSupportedError{Source: SourceFaultTracepoint, Missing: MissingBTF, Detail: "struct kobject", Err: err}
	}
	p, err := t.load(SourceFaultTracepoint, "umd_iommu_fault", ebpf.RawTracepoint, pageFaultProgram(t.ring.FD(), int32(kobj.off+name.off)))
	if err != nil {
		return err
	}
	return t.attachRaw(SourceFaultTracepoint, tpPageFault, p)
}

func (t *Tracer) attachDMAR() error {
	if err := kernelSymbol(DMARFaultSymbol); err != nil {
		return err
	}
	spec, err := kernelBTF(SourceDMAR)
	if err != nil {
		return err
	}
	var o iommuOffsets
	for _, f := range []struct {
		name string
		dst  *int32
	}{{"reg", &o.reg}, {"cap", &o.cap}} {
		m, err := memberOffset(spec, "intel_iommu", f.name)
		if err != nil {
			return &NotSupportedError{Source: SourceDMAR, Missing: MissingBTF, Detail: "struct intel_iommu", Err: err}
		}
		if m.size != 8 {
			return &NotSupportedError{Source: SourceDMAR, Missing: MissingBTF, Detail: "struct intel_iommu." + f.name + " is not 8 bytes"}
		}
		*f.dst = int32(m.off)
	}
	o.segment = -1
	if m, err := memberOffset(spec, "intel_iommu", "segment"); err == nil && (m.size == 2 || m.size == 4) {
		o.segment, o.segSize = int32(m.off), int32(m.size)
	}
	p, err := t.load(SourceDMAR, "umd_dmar_fault", ebpf.Kprobe, dmarProgram(t.ring.FD(), o))
	if err != nil {
		return err
	}
	return t.attachKprobe(SourceDMAR, DMARFaultSymbol, p)
}

// attachKprobe attaches p at the entry of the kernel function symbol.
func (t *Tracer) attachKprobe(s Source, symbol string, p *ebpf.Program) error {
	l, err := link.Kprobe(symbol, p, nil)
	if err != nil {
		pmu := exists("/sys/bus/event_source/devices/kprobe")
		switch {
		case !pmu && !tracefsMounted():
			// cilium/ebpf falls back to tracefs's kprobe_events when the
			// kernel has no kprobe PMU; without either there is no way.
			return &NotSupportedError{Source: s, Missing: MissingTracefs, Detail: "no kprobe PMU, and no tracefs with kprobe_events (not mounted, or no CONFIG_KPROBES)", Err: err}
		case !pmu && errors.Is(err, ebpf.ErrNotSupported):
			return &NotSupportedError{Source: s, Missing: MissingSymbol, Detail: "the kernel has no kprobes (CONFIG_KPROBES)", Err: err}
		case errors.Is(err, os.ErrNotExist):
			return &NotSupportedError{Source: s, Missing: MissingSymbol, Detail: "kprobe on " + symbol, Err: err}
		}
		return classify(err, s, "attaching a kprobe to "+symbol, "kprobe on "+symbol)
	}
	t.links = append(t.links, l)
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func tracefsMounted() bool {
	return exists("/sys/kernel/tracing/kprobe_events") || exists("/sys/kernel/debug/tracing/kprobe_events")
}

// kernelSymbol checks that /proc/kallsyms has the function symbol.
func kernelSymbol(symbol string) error {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return &NotSupportedError{Source: SourceDMAR, Missing: MissingSymbol, Detail: symbol, Err: err}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "ffffffff816d5950 T dmar_fault", maybe with " [module]".
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == symbol && (fields[1] == "T" || fields[1] == "t") {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: reading /proc/kallsyms: %w", SourceDMAR, err)
	}
	return &NotSupportedError{Source: SourceDMAR, Missing: MissingSymbol, Detail: symbol + " is not in /proc/kallsyms (no Intel IOMMU driver in this kernel)", Err: os.ErrNotExist}
}

// kernelBTF returns the kernel's BTF.
func kernelBTF(s Source) (*btf.Spec, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, &NotSupportedError{Source: s, Missing: MissingBTF, Detail: "/sys/kernel/btf/vmlinux", Err: err}
	}
	return spec, nil
}

type member struct {
	off  uint32 // bytes
	size uint32 // bytes
}

// memberOffset finds the named member of the named struct in spec,
// looking into anonymous structs and unions.
func memberOffset(spec *btf.Spec, typ, name string) (member, error) {
	var s *btf.Struct
	if err := spec.TypeByName(typ, &s); err != nil {
		return member{}, fmt.Errorf("finding struct %s: %w", typ, err)
	}
	if m, ok := findMember(s.Members, name, 0); ok {
		return m, nil
	}
	return member{}, fmt.Errorf("finding %s in struct %s: %w", name, typ, btf.ErrNotFound)
}

func findMember(ms []btf.Member, name string, base uint32) (member, bool) {
	for _, m := range ms {
		off := base + m.Offset.Bytes()
		if m.Name == name {
			size, err := btf.Sizeof(m.Type)
			if err != nil || m.BitfieldSize != 0 {
				return member{}, false
			}
			return member{off: off, size: uint32(size)}, true
		}
		if m.Name == "" {
			var inner []btf.Member
			switch c := btf.UnderlyingType(m.Type).(type) {
			case *btf.Struct:
				inner = c.Members
			case *btf.Union:
				inner = c.Members
			}
			if found, ok := findMember(inner, name, off); ok {
				return found, true
			}
		}
	}
	return member{}, false
}

// readRing decodes records from the ring buffer until it is closed.
func (t *Tracer) readRing(c clock) {
	defer t.wg.Done()
	var rec ringbuf.Record
	for {
		if err := t.rd.ReadInto(&rec); err != nil {
			if !errors.Is(err, os.ErrClosed) {
				t.stopped(fmt.Errorf("reading the ring buffer: %w", err))
			}
			return
		}
		ev, err := decode(rec.RawSample, c)
		if err != nil {
			t.bad.Add(1)
			continue
		}
		t.deliver(ev)
	}
}

// stopped records the first error that stopped a reader.
func (t *Tracer) stopped(err error) { t.readErr.CompareAndSwap(nil, &err) }

// Err returns the error that stopped reading events early, if one did
// (not Close: that is no error).
func (t *Tracer) Err() error {
	if p := t.readErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (t *Tracer) deliver(ev Event) {
	select {
	case t.events <- ev:
	default:
		t.lost.Add(1)
	}
}

// Events returns the channel events arrive on. It is closed after Close.
// Events and Read take from the same queue.
func (t *Tracer) Events() <-chan Event { return t.events }

// Read returns the next event, waiting for one until ctx is done. After
// Close, it returns the events still queued and then ErrClosed.
func (t *Tracer) Read(ctx context.Context) (Event, error) {
	select {
	case ev, ok := <-t.events:
		if !ok {
			return nil, fmt.Errorf("reading a DMA-fault tracer: %w", ErrClosed)
		}
		return ev, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("reading a DMA-fault tracer: %w", ctx.Err())
	}
}

// Sources returns the sources that are attached.
func (t *Tracer) Sources() Source { return t.sources }

// Skipped returns why each source asked for but not attached was skipped
// (with Options.BestEffort): *NotSupportedError, mostly.
func (t *Tracer) Skipped() []error { return append([]error(nil), t.skipped...) }

// Lost returns how many events were dropped because nobody read them fast
// enough, and how many records could not be decoded.
func (t *Tracer) Lost() (dropped, malformed uint64) { return t.lost.Load(), t.bad.Load() }

// Close detaches every program, closes the ring buffer and /dev/kmsg,
// and closes the Events channel once the readers stopped. It is safe to
// call more than once; later calls return the first call's result.
func (t *Tracer) Close() error {
	t.closeOnce.Do(func() {
		t.closeErr = t.detach()
		t.wg.Wait()
	})
	return t.closeErr
}

// detach closes everything Open made, links first.
func (t *Tracer) detach() error {
	var errs []error
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	for _, p := range t.progs {
		errs = append(errs, p.Close())
	}
	if t.rd != nil {
		errs = append(errs, t.rd.Close())
	}
	if t.ring != nil {
		errs = append(errs, t.ring.Close())
	}
	if t.kmsg != nil {
		errs = append(errs, t.kmsg.Close())
	}
	t.links, t.progs = nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing a DMA-fault tracer: %w", err)
	}
	return nil
}
