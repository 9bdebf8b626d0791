package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Percentiles are the ones the text table shows.
var Percentiles = []float64{50, 90, 99, 99.9, 99.99}

// fioPercentiles are the ones fio writes by default, plus 99.99's
// neighbours umdbench cares about; JSON carries all of them.
var fioPercentiles = []float64{1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99}

// Describe says in one line what the workload is, run by jobs jobs on
// each of namespaces namespaces of devices devices.
func (w *Workload) Describe(jobs, namespaces, devices int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", w.RW)
	if w.RW.Mixed() {
		fmt.Fprintf(&b, " (%d%% reads)", w.RWMixRead)
	}
	fmt.Fprintf(&b, ", bs %s, iodepth %d, %d job(s) on each of ", FormatSize(int64(w.BlockSize)), w.IODepth, jobs)
	if namespaces != devices {
		fmt.Fprintf(&b, "%d namespace(s) of ", namespaces)
	}
	fmt.Fprintf(&b, "%d device(s), %s completion", devices, w.Completion)
	switch {
	case w.NumberIOs > 0:
		fmt.Fprintf(&b, ", %d I/Os per job over %s regions", w.NumberIOs, FormatSize(w.Size))
	case w.TimeBased:
		fmt.Fprintf(&b, ", %v over %s regions", w.Runtime, FormatSize(w.Size))
	case w.Runtime > 0:
		fmt.Fprintf(&b, ", %s per job or %v", FormatSize(w.Size), w.Runtime)
	default:
		fmt.Fprintf(&b, ", %s per job", FormatSize(w.Size))
	}
	if w.RampTime > 0 {
		fmt.Fprintf(&b, " after a %v ramp", w.RampTime)
	}
	if w.Verify {
		fmt.Fprintf(&b, ", verify pass %d", w.VerifyPass)
	}
	return b.String()
}

// fmtLat writes nanoseconds as microseconds with 2, 1 or 0 decimals.
func fmtLat(ns uint64) string {
	us := float64(ns) / 1000
	switch {
	case us < 10:
		return fmt.Sprintf("%.2f", us)
	case us < 1000:
		return fmt.Sprintf("%.1f", us)
	}
	return fmt.Sprintf("%.0f", us)
}

// WriteText writes the result as a table: a row per job and direction,
// then the total, then CPU, doorbells and verify lines.
func WriteText(out io.Writer, r *Result, title string) error {
	w := &r.Workload
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(out, "%s\n", title)
	if !w.NoLatency {
		fmt.Fprintln(out, "latency in µs, from just before submission to the completion callback")
	}
	fmt.Fprintln(out)
	fmt.Fprint(tw, "JOB\tDIR\tIOPS\tMiB/s\t")
	if !w.NoLatency {
		fmt.Fprint(tw, "MIN\tMEAN\t")
		for _, p := range Percentiles {
			fmt.Fprintf(tw, "P%g\t", p)
		}
		fmt.Fprint(tw, "MAX\t")
	}
	fmt.Fprintln(tw)
	rows := append([]*JobResult{}, r.Jobs...)
	if len(r.Jobs) > 1 {
		rows = append(rows, &r.Total)
	}
	for _, j := range rows {
		for _, d := range []struct {
			name string
			s    *DirStats
		}{{"read", &j.Read}, {"write", &j.Write}} {
			if d.s.IOs == 0 && !(d.name == "read" && j.Write.IOs == 0) {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f\t", j.Name, d.name, rate(d.s.IOs, j.Runtime), rate(d.s.Bytes, j.Runtime)/(1<<20))
			if !w.NoLatency {
				h := &d.s.Lat
				fmt.Fprintf(tw, "%s\t%s\t", fmtLat(h.Min()), fmtLat(uint64(h.Mean())))
				for _, p := range Percentiles {
					fmt.Fprintf(tw, "%s\t", fmtLat(h.Percentile(p)))
				}
				fmt.Fprintf(tw, "%s\t", fmtLat(h.Max()))
			}
			fmt.Fprintln(tw)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	t := &r.Total
	fmt.Fprintln(out)
	fmt.Fprintf(out, "runtime %v per job (measured window), wall %v\n", t.Runtime.Round(time.Millisecond), r.Wall.Round(time.Millisecond))
	cpu := t.UserCPU + t.SysCPU
	fmt.Fprintf(out, "CPU: jobs %.2fs user + %.2fs sys (%.0f%% of a core per job, %d voluntary and %d involuntary context switches); process %.2fs user + %.2fs sys\n",
		t.UserCPU.Seconds(), t.SysCPU.Seconds(), 100*cpu.Seconds()/max(r.Wall.Seconds(), 1e-9)/float64(max(len(r.Jobs), 1)),
		t.VolCtxSwitches, t.InvolCtxSwitches, r.ProcessUserCPU.Seconds(), r.ProcessSysCPU.Seconds())
	if t.IOs > 0 {
		fmt.Fprintf(out, "doorbells: %.3f SQ + %.3f CQ MMIO writes per I/O (%d written to shadow doorbells only)\n",
			float64(t.Queue.SQDoorbells)/float64(t.IOs), float64(t.Queue.CQDoorbells)/float64(t.IOs), t.Queue.ShadowOnly)
	}
	if w.Verify {
		if err := r.Err(); err != nil {
			fmt.Fprintf(out, "verify: FAILED after %d good blocks\n", t.Verified)
		} else {
			fmt.Fprintf(out, "verify: %d blocks checked, all carry their LBA, pass %d and a good checksum\n", t.Verified, w.VerifyPass)
		}
	}
	if f := r.DMAFaults; f != nil {
		fmt.Fprintf(out, "DMA faults traced during the run: %d\n", f.Count)
		for _, e := range f.Examples {
			fmt.Fprintf(out, "  %s\n", e)
		}
	}
	if r.Sim != nil {
		if err := writeSimCost(out, r); err != nil {
			return err
		}
	}
	for _, j := range r.Jobs {
		if j.Err != nil {
			fmt.Fprintf(out, "error: %v\n", j.Err)
		}
	}
	return nil
}

// SimPerIO is the host's cost per I/O of a --sim run.
type SimPerIO struct {
	IOs        uint64
	WallNS     float64 // measured window / I/Os in it
	CPUNS      float64 // thread CPU time / every I/O (ramp and verify included)
	DeviceNS   float64 // of that, time inside doorbell writes: the instant controller's work
	HostNS     float64 // CPUNS - DeviceNS: the host's own submit + complete
	HostCycles float64 // HostNS in reference cycles of the CPU's counter (cycles.Hz)
	Allocs     float64 // process-wide heap allocations / every I/O
	MMIOWrites float64 // doorbell writes / every I/O
	Syscalls   float64 // system calls of the job threads / every I/O; -1 when not counted
	// SyscallsErr says why syscalls were not counted.
	SyscallsErr string
}

// PerIO computes the host's cost per I/O of a --sim run, for the total.
func (r *Result) PerIO() SimPerIO {
	t := &r.Total
	p := SimPerIO{IOs: t.IOs, Syscalls: -1, SyscallsErr: t.SyscallsErr}
	if n := t.Read.IOs + t.Write.IOs; n > 0 {
		p.WallNS = float64(t.Runtime.Nanoseconds()) / float64(n)
	}
	if t.IOs > 0 {
		p.CPUNS = float64((t.UserCPU + t.SysCPU).Nanoseconds()) / float64(t.IOs)
		p.Allocs = float64(r.Mallocs) / float64(t.IOs)
		if t.SyscallsErr == "" {
			p.Syscalls = float64(t.Syscalls) / float64(t.IOs)
		}
		if r.Sim != nil {
			p.MMIOWrites = float64(r.Sim.Doorbells) / float64(t.IOs)
			if r.Sim.TicksPerSecond > 0 {
				p.DeviceNS = float64(r.Sim.DeviceTicks) / r.Sim.TicksPerSecond * 1e9 / float64(t.IOs)
				p.HostNS = max(p.CPUNS-p.DeviceNS, 0)
				p.HostCycles = p.HostNS * r.Sim.TicksPerSecond / 1e9
			}
		}
	}
	return p
}

func writeSimCost(out io.Writer, r *Result) error {
	fmt.Fprintln(out, "\nCost per I/O against the software controller (instant completion: it does a")
	fmt.Fprintln(out, "device's work inside each doorbell write, timed as DEVICE; HOST is the rest):")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "JOB\tI/Os\tWALL ns/IO\tCPU ns/IO\tDEVICE ns/IO\tHOST ns/IO\tHOST cycles/IO\tALLOCS/IO\tMMIO WRITES/IO\tSYSCALLS/IO\t")
	syscalls := func(n uint64, ios uint64, errText string) string {
		if errText != "" || ios == 0 {
			return "not measured"
		}
		return fmt.Sprintf("%.4f", float64(n)/float64(ios))
	}
	for _, j := range r.Jobs {
		n := j.Read.IOs + j.Write.IOs
		var wall, cpu, mmio float64
		if n > 0 {
			wall = float64(j.Runtime.Nanoseconds()) / float64(n)
		}
		if j.IOs > 0 {
			cpu = float64((j.UserCPU + j.SysCPU).Nanoseconds()) / float64(j.IOs)
			mmio = float64(j.Queue.SQDoorbells+j.Queue.CQDoorbells) / float64(j.IOs)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t-\t-\t-\t-\t%.3f\t%s\t\n", j.Name, j.IOs, wall, cpu, mmio, syscalls(j.Syscalls, j.IOs, j.SyscallsErr))
	}
	p := r.PerIO()
	fmt.Fprintf(tw, "total\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.4f\t%.3f\t%s\t\n", p.IOs, p.WallNS, p.CPUNS, p.DeviceNS, p.HostNS, p.HostCycles, p.Allocs, p.MMIOWrites,
		syscalls(r.Total.Syscalls, r.Total.IOs, r.Total.SyscallsErr))
	if err := tw.Flush(); err != nil {
		return err
	}
	hz := 0.0
	if r.Sim != nil {
		hz = r.Sim.TicksPerSecond
	}
	fmt.Fprintf(out, "HOST cycles are reference cycles of the CPU's time-stamp counter (%.2f GHz here), not core clocks.\n", hz/1e9)
	fmt.Fprintln(out, "ALLOCS/IO is process-wide (runtime.MemStats.Mallocs over the run, set-up excluded).")
	fmt.Fprintln(out, "MMIO WRITES/IO are doorbell writes counted by a wrapper around the controller's registers.")
	if r.Total.SyscallsErr != "" {
		fmt.Fprintf(out, "SYSCALLS/IO not measured: %s.\n", r.Total.SyscallsErr)
	} else {
		fmt.Fprintln(out, "SYSCALLS/IO: the job threads' system calls, counted by the kernel (perf, raw_syscalls:sys_enter).")
	}
	return nil
}

// The JSON follows fio's --output-format=json layout for every field the
// two share, so fio's tools read it; umdbench's own figures sit under
// "umd" keys, which fio's tools ignore.

type fioLat struct {
	Min        uint64            `json:"min"`
	Max        uint64            `json:"max"`
	Mean       float64           `json:"mean"`
	N          uint64            `json:"N"`
	Percentile map[string]uint64 `json:"percentile,omitempty"`
}

type fioDir struct {
	IOBytes  uint64  `json:"io_bytes"`
	IOKBytes uint64  `json:"io_kbytes"`
	BWBytes  uint64  `json:"bw_bytes"`
	BW       uint64  `json:"bw"` // KiB/s
	IOPS     float64 `json:"iops"`
	Runtime  uint64  `json:"runtime"` // ms
	TotalIOs uint64  `json:"total_ios"`
	ShortIOs uint64  `json:"short_ios"`
	DropIOs  uint64  `json:"drop_ios"`
	ClatNS   fioLat  `json:"clat_ns"`
	LatNS    fioLat  `json:"lat_ns"`
}

type fioJob struct {
	JobName    string  `json:"jobname"`
	GroupID    int     `json:"groupid"`
	Error      int     `json:"error"`
	JobRuntime uint64  `json:"job_runtime"` // ms
	Read       fioDir  `json:"read"`
	Write      fioDir  `json:"write"`
	Trim       fioDir  `json:"trim"`
	UsrCPU     float64 `json:"usr_cpu"` // % of the job's runtime
	SysCPU     float64 `json:"sys_cpu"`
	Ctx        uint64  `json:"ctx"`
	Majf       uint64  `json:"majf"`
	Minf       uint64  `json:"minf"`
	UMD        umdJob  `json:"umd"`
}

type umdJob struct {
	Device      string `json:"device"`
	NSID        uint32 `json:"nsid"`
	QID         uint16 `json:"qid,omitempty"`
	IOs         uint64 `json:"ios"` // ramp and verify included
	UserCPUNS   int64  `json:"user_cpu_ns"`
	SysCPUNS    int64  `json:"sys_cpu_ns"`
	SQDoorbells uint64 `json:"sq_doorbells"`
	CQDoorbells uint64 `json:"cq_doorbells"`
	ShadowOnly  uint64 `json:"shadow_only_doorbells"`
	Verified    uint64 `json:"verified_blocks"`
	// Syscalls counts the job thread's system calls over the whole run
	// (perf, raw_syscalls:sys_enter); absent when they were not counted.
	Syscalls *uint64 `json:"syscalls,omitempty"`
	Err      string  `json:"error,omitempty"`
}

type fioDoc struct {
	Version     string            `json:"umdbench version"`
	Timestamp   int64             `json:"timestamp"`
	TimestampMS int64             `json:"timestamp_ms"`
	Time        string            `json:"time"`
	Global      map[string]string `json:"global options"`
	Jobs        []fioJob          `json:"jobs"`
	UMD         umdRun            `json:"umd"`
}

type umdRun struct {
	Total       fioJob    `json:"total"`
	WallNS      int64     `json:"wall_ns"`
	ProcUserNS  int64     `json:"process_user_cpu_ns"`
	ProcSysNS   int64     `json:"process_sys_cpu_ns"`
	Mallocs     *uint64   `json:"mallocs,omitempty"`
	Sim         *umdSim   `json:"sim,omitempty"`
	Errors      []string  `json:"errors,omitempty"`
	Percentiles []float64 `json:"percentiles"`
	// DMAFaults is set when the run traced DMA faults (--trace_faults).
	DMAFaults *umdFaults `json:"dma_faults,omitempty"`
}

type umdFaults struct {
	Count    int      `json:"count"`
	Examples []string `json:"examples,omitempty"`
}

type umdSim struct {
	WallNSPerIO     float64 `json:"wall_ns_per_io"`
	CPUNSPerIO      float64 `json:"cpu_ns_per_io"`
	DeviceNSPerIO   float64 `json:"device_ns_per_io"`
	HostNSPerIO     float64 `json:"host_ns_per_io"`
	HostCyclesPerIO float64 `json:"host_cycles_per_io"`
	AllocsPerIO     float64 `json:"allocs_per_io"`
	MMIOWritesPerIO float64 `json:"mmio_writes_per_io"`
	Syscalls        string  `json:"syscalls_per_io"`
}

// PercentileKey formats p as fio names percentiles: "99.900000".
func PercentileKey(p float64) string { return fmt.Sprintf("%f", p) }

func fioDirOf(d *DirStats, runtime time.Duration, latency bool) fioDir {
	f := fioDir{
		IOBytes:  d.Bytes,
		IOKBytes: d.Bytes >> 10,
		BWBytes:  uint64(rate(d.Bytes, runtime)),
		BW:       uint64(rate(d.Bytes, runtime) / 1024),
		IOPS:     rate(d.IOs, runtime),
		Runtime:  uint64(runtime.Milliseconds()),
		TotalIOs: d.IOs,
	}
	if latency && d.Lat.Count() > 0 {
		h := &d.Lat
		l := fioLat{Min: h.Min(), Max: h.Max(), Mean: h.Mean(), N: h.Count(), Percentile: map[string]uint64{}}
		for _, p := range fioPercentiles {
			l.Percentile[PercentileKey(p)] = h.Percentile(p)
		}
		// One timestamp before Submit, one in the completion callback:
		// umdbench's latency is fio's lat (slat + clat); submission
		// itself is tens of nanoseconds, so clat carries the same
		// figures.
		f.ClatNS, f.LatNS = l, l
	}
	return f
}

func fioJobOf(j *JobResult, latency bool) fioJob {
	f := fioJob{
		JobName:    j.Name,
		JobRuntime: uint64(j.Runtime.Milliseconds()),
		Read:       fioDirOf(&j.Read, j.Runtime, latency),
		Write:      fioDirOf(&j.Write, j.Runtime, latency),
		Ctx:        j.VolCtxSwitches + j.InvolCtxSwitches,
		UMD: umdJob{
			Device: j.Device, NSID: j.NSID, QID: j.QID, IOs: j.IOs,
			UserCPUNS: j.UserCPU.Nanoseconds(), SysCPUNS: j.SysCPU.Nanoseconds(),
			SQDoorbells: j.Queue.SQDoorbells, CQDoorbells: j.Queue.CQDoorbells, ShadowOnly: j.Queue.ShadowOnly,
			Verified: j.Verified,
		},
	}
	if j.SyscallsErr == "" {
		f.UMD.Syscalls = &j.Syscalls
	}
	if j.Runtime > 0 {
		f.UsrCPU = 100 * j.UserCPU.Seconds() / j.Runtime.Seconds()
		f.SysCPU = 100 * j.SysCPU.Seconds() / j.Runtime.Seconds()
	}
	if j.Err != nil {
		f.Error = 1
		f.UMD.Err = j.Err.Error()
	}
	return f
}

// WriteJSON writes the result in fio's --output-format=json layout;
// global holds the options as given, for "global options".
func WriteJSON(out io.Writer, r *Result, global map[string]string) error {
	lat := !r.Workload.NoLatency
	doc := fioDoc{
		Version:     "umdbench-1",
		Timestamp:   r.Start.Unix(),
		TimestampMS: r.Start.UnixMilli(),
		Time:        r.Start.Format(time.ANSIC),
		Global:      global,
		Jobs:        []fioJob{},
		UMD: umdRun{
			Total:       fioJobOf(&r.Total, lat),
			WallNS:      r.Wall.Nanoseconds(),
			ProcUserNS:  r.ProcessUserCPU.Nanoseconds(),
			ProcSysNS:   r.ProcessSysCPU.Nanoseconds(),
			Percentiles: fioPercentiles,
		},
	}
	for _, j := range r.Jobs {
		doc.Jobs = append(doc.Jobs, fioJobOf(j, lat))
		if j.Err != nil {
			doc.UMD.Errors = append(doc.UMD.Errors, j.Err.Error())
		}
	}
	if f := r.DMAFaults; f != nil {
		doc.UMD.DMAFaults = &umdFaults{Count: f.Count, Examples: f.Examples}
	}
	if r.Sim != nil {
		m := r.Mallocs
		doc.UMD.Mallocs = &m
		p := r.PerIO()
		doc.UMD.Sim = &umdSim{WallNSPerIO: p.WallNS, CPUNSPerIO: p.CPUNS, DeviceNSPerIO: p.DeviceNS, HostNSPerIO: p.HostNS, HostCyclesPerIO: p.HostCycles,
			AllocsPerIO: p.Allocs, MMIOWritesPerIO: p.MMIOWrites, Syscalls: "not measured: " + p.SyscallsErr}
		if p.SyscallsErr == "" {
			doc.UMD.Sim.Syscalls = strconv.FormatFloat(p.Syscalls, 'f', 4, 64)
		}
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
