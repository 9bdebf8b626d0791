package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/bench"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/pcie"
)

// Exit codes; see doc.go.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitNoMatch = 3
)

const usageText = `umdbench measures NVMe (and NVMe-like) controllers driven from user space by
umd: IOPS, bandwidth and latency percentiles, like fio and spdk_nvme_perf,
with fio's option names. Devices must be bound to vfio-pci (umdprobe bind).

Usage:
  umdbench [flags] SELECTOR...    run the workload on every NVMe function selected
  umdbench --sim [flags]          run it on the in-process software controller, to
                                  measure the host's own cost per I/O
  umdbench --broker PATH [flags] [BDF...]
                                  run it as a client of the broker (umdd) at PATH, on
                                  queue pairs of a trusted session (umdd --trusted)

Examples:
  umdbench --rw randread --bs 4k --iodepth 32 --runtime 10s 0000:03:00.0
        4 KiB random reads at queue depth 32 for ten seconds
  umdbench --rw read --bs 128k --iodepth 32 --numjobs 2 --runtime 30 class=nvme driver=vfio-pci
        128 KiB sequential reads, two queue pairs on every NVMe held by vfio-pci
  umdbench --rw randrw --rwmixread 70 --bs 4k --iodepth 16 --completion irq --runtime 5s 03:00.0
        a 70/30 mix, sleeping on the completion interrupt instead of spinning
  umdbench --rw write --bs 64k --iodepth 8 --size 256m --verify 03:00.0
  umdbench --rw randread --bs 4k --iodepth 8 --size 256m --runtime 20s --verify 03:00.0
        write 256 MiB with verify headers and read every block back; then check
        random reads of the same region against them
  umdbench --sim --rw randread --bs 4k --iodepth 32 --runtime 5s
        ns, CPU ns, allocations and doorbell writes per I/O, with no device
  umdbench --broker /run/umdd.sock --rw randread --iodepth 32 --runtime 5s
        the same through the broker, on every device it lets this user use
  umdbench --rw randread --runtime 5s -o json 03:00.0 > run.json
        fio's JSON layout: fio's tools read jobs[].read.iops, bw, clat_ns.percentile…

Workload (fio's names; fio's --name=value spelling works too):
  --rw MODE           read, write, randread, randwrite, rw (readwrite) or randrw (default read)
  --rwmixread PCT     reads in rw and randrw, in percent (default 50); or --rwmixwrite PCT
  --bs SIZE           bytes per I/O, a multiple of the LBA size (default 4k)
  --iodepth N         I/Os each job keeps in flight (default 1)
  --numjobs N         jobs per device and namespace: each is one goroutine on a thread of its own, with
                      its own queue pair and buffers (default 1)
  --size SIZE         each job's region: job i works on [offset + i×size, offset + (i+1)×size),
                      so jobs never touch each other's blocks; and the amount of I/O each job
                      does unless --time_based (default: the namespace shared out between jobs)
  --offset SIZE       where job 0's region starts (default 0)
  --number_ios N      do N I/Os per job (after the ramp) instead of --size's worth
  --runtime TIME      stop after this long (seconds, or 200ms, 5s, 2m); with --size too,
                      whichever of size and time comes first, as in fio
  --time_based        keep going round the region until --runtime is up. Implied by
                      --runtime without --size; with neither: --runtime 10s --time_based
  --ramp_time TIME    run this long first without counting anything
  --nsid IDS          namespaces: an ID, several (1,2), or all (every active namespace of each
                      device); --numjobs jobs on each, each with its own queue pair (default 1)
  --completion MODE   poll: spin on the completion queue (a core per job, lowest latency);
                      irq: sleep on the queue pair's MSI-X interrupt when nothing is there
                      (jobs share vectors when the device has fewer than jobs);
                      adaptive: spin --poll_spins times, then sleep (default poll)
  --poll_spins N      empty polls before adaptive sleeps (default 1000)
  --shadow_doorbells on|off
                      on: the I/O queues write new tails and heads to shadow doorbells in
                      memory (NVMe Doorbell Buffer Config) and to the MMIO doorbell only when
                      the controller's event index asks; a device that does not offer them
                      fails the run. off: an MMIO write per ring and per poll that consumed
                      completions (default off). --sim offers them when on
  --data_pointer MODE how commands describe their buffers. prp: PRPs, with a list page for
                      an I/O that spans more than two memory pages; sgl: one SGL Data Block
                      per I/O (the controller must offer SGLs); auto: PRPs for I/Os within
                      two pages, an SGL beyond, PRPs only on a controller without SGLs
                      (default auto: QEMU's emulated NVMe maps an SGL's extent in one go and
                      a PRP list page by page, so large I/Os run faster with SGLs there)
  --randseed N        seed of random offsets and of the mix; job i uses N+i

Verify:
  --verify            every logical block written carries its LBA, the pass number and a
                      CRC-32C over the block. Writing patterns read every block they wrote
                      back after the run and check it (rw and randrw check only there: a read
                      during the run could race the job's own write of the same block); read
                      and randread check every block they read (so write the region with
                      --verify first). A mismatch
                      names device, namespace, LBA, what was expected and what was found,
                      and fails the run (exit status 1).
  --verify_pass N     the pass number written and expected (default 1): verify a region
                      written with pass 2 with --verify_pass 2

Output:
  -o, --output-format FMT  text (a table; the default) or json (fio's --output-format=json
                      layout, with umdbench's own figures under "umd" keys)
  --output FILE       write the results to FILE instead of standard output
  --plot FILE.svg     also draw the run as SVG (or FILE.png: PNG): the latency histogram
                      (log latency axis) and IOPS over time, per 100 ms (coarser on long
                      runs), in total and per job
  --disable_lat       take no per-I/O timestamps: no latency figures, slightly less cost.
                      Each I/O otherwise reads the clock once (its completion time is the
                      next I/O's start)
  --clocksource SRC   what that reading reads. cpu: the time-stamp counter (RDTSC, a few ns),
                      scaled to ns at a rate calibrated at start; offered only where the
                      kernel keeps time with the TSC (its clocksource is tsc). clock_gettime:
                      the monotonic clock through the vDSO, ~20 ns on a host with a TSC
                      clocksource, ~0.2 µs in a TCG guest booted with clocksource=tsc,
                      ~1.7 µs with hpet, where the vDSO falls back to a system call.
                      (default: cpu where offered, else clock_gettime; as fio)
  --trace_faults      trace IOMMU (DMA) faults during the run with eBPF (root; the Intel
                      DMAR fault path): count the faults the devices raise, name the first
                      few with what they hit, and fail the command behind each one with a
                      DMA-fault error instead of letting it complete as if nothing happened
  A progress line (IOPS, MiB/s, elapsed and remaining time) is drawn on standard error once
  a second when it is a terminal.

  Latency is from just before the command is submitted to its completion callback, in an
  HDR-style log-linear histogram (exact below 128 ns, within 1.6 % above); percentiles
  p50 p90 p99 p99.9 p99.99 per job and in total. CPU is each job thread's getrusage time.

  A job whose completions stop reads the controller's status once a second: a device
  removed, a fatal controller (CSTS.CFS) or one reset from outside (CSTS.RDY 0, e.g. a
  reset through sysfs) ends the run with that reason; otherwise it gives up after 30s.

Software controller:
  --sim               no device: nvmelike/sim in instant-completion mode (commands complete
                      inside the doorbell write), polled. Adds per I/O: wall ns, CPU ns,
                      heap allocations, doorbell (MMIO) writes
  --sim_size SIZE     its namespace, held in memory (default 64m)
  --sim_lba N         its LBA size, 512 or 4096 (default 512)

Broker:
  --broker PATH       open each device as a trusted session of the broker at PATH: umdd
                      creates the queue pairs over rings shared with umdbench, which then
                      submits and completes on them itself (same code path as a device
                      opened here). Devices are named by PCI address; with none, every
                      device the broker lets this user use. Polled runs ask for queue
                      pairs without interrupts

Other:
  --sysfs DIR         read sysfs from DIR (for selectors) instead of /sys
  -h, --help          this help

`

const exitText = `
Exit status: 0 success; 1 the run failed (an I/O error, a verify mismatch, a device that
could not be opened); 2 usage error (bad flag, value or selector); 3 the selectors matched
no NVMe function.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is umdbench with its arguments and output streams: main without
// the process around it, for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := runErr(ctx, args, stdout, stderr)
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		fmt.Fprint(stdout, usageText+pcie.SelectorHelp+"\n"+exitText)
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "umdbench: %v\nRun umdbench --help for the flags and examples.\n", err)
		return exitUsage
	case errors.Is(err, errNoMatch):
		fmt.Fprintf(stderr, "umdbench: %v\n", err)
		return exitNoMatch
	}
	fmt.Fprintf(stderr, "umdbench: %v\n", err)
	return exitFailure
}

var errHelp = errors.New("help")

func runErr(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, sels, err := parseArgs(args)
	if err != nil {
		return err
	}
	if o.help {
		return errHelp
	}
	w, err := o.workload()
	if err != nil {
		return err
	}
	out := stdout
	if o.outFile != "" {
		f, err := os.Create(o.outFile)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}()
		out = f
	}

	var (
		jobs    []*bench.Job
		result  *bench.Result
		devices int
		stopped error // why the run ended early: a device asked for back, the broker gone
	)
	tick := progress(stderr, &w, o)
	if o.sim {
		if len(sels) > 0 {
			return usageError{fmt.Errorf("--sim takes no selectors (got %q)", sels)}
		}
		if o.broker != "" {
			return usageError{errors.New("--sim and --broker exclude each other: the software controller runs in this process")}
		}
		if o.traceFault {
			return usageError{errors.New("--trace_faults needs a device: the software controller has no IOMMU")}
		}
		if !o.nsid.all && !slices.Equal(o.nsid.ids, []uint32{1}) {
			return usageError{fmt.Errorf("--nsid %s: the software controller has one namespace, 1", &o.nsid)}
		}
		if w.Completion != bench.Poll {
			return usageError{errors.New("--sim runs polled: the software controller completes commands inside the doorbell write and signals no interrupts")}
		}
		if w.Verify && !w.RW.Writes() {
			return usageError{fmt.Errorf("--rw %s --verify with --sim: the software controller starts empty every run, so a read has no block written with --verify to check; verify writes (write, randwrite, rw, randrw) read back what they wrote", o.rw)}
		}
		d, err := bench.OpenSim(ctx, bench.SimOptions{LBASize: o.simLBA, Bytes: o.simSize.v, ShadowDoorbells: o.shadowDB.on})
		if err != nil {
			return usageError{err}
		}
		defer d.Close()
		if w.Size == 0 {
			if w.Size, err = defaultSize([]bench.Target{d.Target}, w, o.numjobs); err != nil {
				return err
			}
		}
		if jobs, err = d.NewJobs(ctx, w, o.numjobs); err != nil {
			return err
		}
		devices = 1
		result = bench.ExecuteSim(ctx, d, w, jobs, bench.ExecOptions{Tick: tick.fn})
	} else if o.broker != "" {
		if result, devices, stopped, err = runBroker(ctx, o, sels, &w, tick); err != nil {
			return err
		}
	} else {
		bdfs, err := selectDevices(o.sysfs, sels)
		if err != nil {
			return err
		}
		var devs []*device
		defer func() {
			for _, d := range devs {
				// A failed close is reported after whatever failed the
				// run: it may have left something behind.
				err = errors.Join(err, d.close())
			}
		}()
		for _, bdf := range bdfs {
			d, err := openDevice(ctx, bdf, o.nsid, w, o.numjobs, o.shadowDB.on)
			if err != nil {
				return err
			}
			devs = append(devs, d)
		}
		if w.Size == 0 {
			var targets []bench.Target
			for _, d := range devs {
				targets = append(targets, d.targets...)
			}
			if w.Size, err = defaultSize(targets, w, o.numjobs); err != nil {
				return err
			}
		}
		for _, d := range devs {
			js, err := d.newJobs(ctx, w, o.numjobs, o.nsid.several())
			if err != nil {
				return err
			}
			jobs = append(jobs, js...)
		}
		devices = len(devs)
		var faults *faultWatch
		if o.traceFault {
			if faults, err = watchFaults(devs); err != nil {
				return err
			}
		}
		runCtx, stopRun := context.WithCancel(ctx)
		// The kernel asks for a device back before an unbind or removal,
		// which then waits for it to be closed.
		asked := make([]<-chan struct{}, len(devs))
		for i, d := range devs {
			asked[i] = d.dev.RemovalRequested()
		}
		watched := watchFirst(runCtx, asked, stopRun)
		result = bench.Execute(runCtx, w, jobs, bench.ExecOptions{Tick: tick.fn})
		stopRun()
		if i := <-watched; i >= 0 {
			stopped = fmt.Errorf("the kernel asked for %s back (an unbind from vfio-pci, or its removal): the run stopped there, and the figures above cover it until then", devs[i].dev.BDF())
		}
		if faults != nil {
			result.DMAFaults = faults.stop()
		}
	}
	tick.clear()

	title := "umdbench: " + w.Describe(o.numjobs, len(result.Jobs)/o.numjobs, devices)
	if o.sim {
		title += " (software controller)"
	}
	if o.broker != "" {
		title += " (through the broker at " + o.broker + ")"
	}
	if o.shadowDB.on {
		title += ", shadow doorbells"
	}
	if w.DataPointer != nvmelike.DataPointerAuto {
		title += ", data pointer " + w.DataPointer.String()
	}
	if o.format == "json" {
		err = bench.WriteJSON(out, result, o.given)
	} else {
		err = bench.WriteText(out, result, title)
	}
	if err != nil {
		return err
	}
	if o.plot != "" {
		if err := writePlot(o.plot, result, title); err != nil {
			return err
		}
	}
	if stopped != nil {
		// First: what went wrong with the I/O after that is its doing.
		return errors.Join(stopped, result.Err())
	}
	if rerr := result.Err(); rerr != nil {
		return rerr
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: the figures above cover the run until then")
	}
	return nil
}

// watchFirst stops the run (stop) when one of chans is closed (a nil one
// never is). Once ctx ends, the channel yields the index of the first
// closed, or -1.
func watchFirst(ctx context.Context, chans []<-chan struct{}, stop func()) <-chan int {
	first := make(chan int, len(chans))
	var wg sync.WaitGroup
	for i, ch := range chans {
		wg.Go(func() {
			select {
			case <-ch:
				first <- i
				stop()
			case <-ctx.Done():
			}
		})
	}
	out := make(chan int, 1)
	go func() {
		wg.Wait()
		close(first)
		if i, ok := <-first; ok {
			out <- i
		} else {
			out <- -1
		}
	}()
	return out
}

// writePlot draws the result into the SVG file name.
func writePlot(name string, r *bench.Result, title string) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	write := bench.WriteSVG
	if strings.EqualFold(filepath.Ext(name), ".png") {
		write = bench.WritePNG
	}
	if err := write(f, r, title); err != nil {
		f.Close()
		return fmt.Errorf("--plot: writing %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--plot: writing %s: %w", name, err)
	}
	return nil
}

// defaultSize shares the namespace out between the jobs: whole blocks of
// --bs each, after --offset, the same on every target (the smallest
// share). It fails when some target leaves a job less than one block.
func defaultSize(targets []bench.Target, w bench.Workload, numjobs int) (int64, error) {
	var size int64
	for i, t := range targets {
		ns := int64(t.Blocks) * int64(t.LBASize)
		s := (ns - w.Offset) / int64(numjobs) / int64(w.BlockSize) * int64(w.BlockSize)
		if s <= 0 {
			share := fmt.Sprintf("%d jobs less than one --bs of %s each", numjobs, bench.FormatSize(int64(w.BlockSize)))
			if numjobs == 1 {
				share = fmt.Sprintf("the job less than one --bs of %s", bench.FormatSize(int64(w.BlockSize)))
			}
			return 0, fmt.Errorf("%s namespace %d holds %s: after --offset %s that leaves %s",
				t.Device, t.NSID, bench.FormatSize(ns), bench.FormatSize(w.Offset), share)
		}
		if i == 0 || s < size {
			size = s
		}
	}
	return size, nil
}

// ticker draws the progress line.
type ticker struct {
	fn    func(completed uint64, elapsed time.Duration)
	out   *os.File
	drawn bool
}

// progress returns the progress line's drawer: a no-op unless stderr is
// a terminal.
func progress(stderr io.Writer, w *bench.Workload, o *options) *ticker {
	t := &ticker{}
	f, ok := stderr.(*os.File)
	if !ok {
		return t
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return t
	}
	t.out = f
	var last uint64
	var lastAt time.Duration
	total := w.RampTime + w.Runtime
	buf := make([]byte, 0, 128)
	t.fn = func(completed uint64, elapsed time.Duration) {
		iops := float64(completed-last) / max((elapsed-lastAt).Seconds(), 1e-3)
		last, lastAt = completed, elapsed
		buf = append(buf[:0], "\r\033[K"...)
		buf = strconv.AppendFloat(buf, iops, 'f', 0, 64)
		buf = append(buf, " IOPS  "...)
		buf = strconv.AppendFloat(buf, iops*float64(w.BlockSize)/(1<<20), 'f', 1, 64)
		buf = append(buf, " MiB/s  "...)
		// Whole seconds with strconv into a reused buffer: drawing the
		// line allocates nothing (--sim counts allocations).
		buf = strconv.AppendInt(buf, int64(elapsed.Round(time.Second)/time.Second), 10)
		if w.Runtime > 0 {
			buf = append(buf, "s elapsed, "...)
			buf = strconv.AppendInt(buf, int64(max(total-elapsed, 0).Round(time.Second)/time.Second), 10)
			buf = append(buf, "s left"...)
		} else {
			buf = append(buf, "s elapsed"...)
		}
		if elapsed < w.RampTime {
			buf = append(buf, " (ramp)"...)
		}
		_, _ = t.out.Write(buf)
		t.drawn = true
	}
	return t
}

// clear erases the progress line before the results.
func (t *ticker) clear() {
	if t.drawn {
		_, _ = t.out.Write([]byte("\r\033[K"))
	}
}
