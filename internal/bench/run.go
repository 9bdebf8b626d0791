package bench

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Result is a whole run: every job's result and their total.
type Result struct {
	Workload Workload
	Start    time.Time
	// Wall is the time from starting the first job to the end of the last.
	Wall time.Duration
	Jobs []*JobResult
	// Total merges the jobs: I/Os and bytes summed, histograms merged,
	// Runtime the longest job's, CPU summed.
	Total JobResult
	// ProcessUserCPU and ProcessSysCPU are the whole process's CPU time
	// over the run (getrusage RUSAGE_SELF): the jobs, the Go runtime (GC,
	// scheduler), the progress line.
	ProcessUserCPU, ProcessSysCPU time.Duration
	// Mallocs is the number of heap allocations the process made over
	// the run (runtime.MemStats.Mallocs), when Options.CountAllocs.
	Mallocs uint64
	// Sim holds the software controller's counters, for --sim runs.
	Sim *SimCost
	// DMAFaults, when the run traced them, are the IOMMU faults the
	// devices raised during the run.
	DMAFaults *FaultReport
}

// FaultReport counts the DMA faults traced during a run.
type FaultReport struct {
	Count int
	// Examples are the first few faults, described with their
	// attribution.
	Examples []string
}

// Err returns the jobs' errors joined, or nil.
func (r *Result) Err() error {
	var errs []error
	for _, j := range r.Jobs {
		if j.Err != nil {
			errs = append(errs, j.Err)
		}
	}
	return errors.Join(errs...)
}

// ExecOptions tune Execute.
type ExecOptions struct {
	// Tick, when set, is called about once a second while the jobs run,
	// with the I/Os completed so far (all jobs, ramp included) and the
	// time since the start.
	Tick func(completed uint64, elapsed time.Duration)
	// CountAllocs reads runtime.MemStats before and after the run (two
	// short stop-the-world pauses) to fill Result.Mallocs.
	CountAllocs bool
}

// Execute runs the jobs, each on a goroutine of its own, until all are
// done, and gathers their results. Cancelling ctx stops every job: each
// finishes the I/O in flight and reports what it did.
func Execute(ctx context.Context, w Workload, jobs []*Job, o ExecOptions) *Result {
	r := &Result{Workload: w, Jobs: make([]*JobResult, len(jobs))}
	var ms0, ms1 runtime.MemStats
	if o.CountAllocs {
		runtime.ReadMemStats(&ms0)
	}
	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	r.Start = time.Now()

	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Jobs[i] = j.Run(ctx)
		}()
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for done := false; !done; {
		select {
		case <-finished:
			done = true
		case <-ctx.Done():
			for _, j := range jobs {
				j.Stop()
			}
			<-finished
			done = true
		case <-ticker.C:
			if o.Tick != nil {
				var n uint64
				for _, j := range jobs {
					n += j.Completed()
				}
				o.Tick(n, time.Since(r.Start))
			}
		}
	}

	r.Wall = time.Since(r.Start)
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	if o.CountAllocs {
		runtime.ReadMemStats(&ms1)
		r.Mallocs = ms1.Mallocs - ms0.Mallocs
	}
	r.ProcessUserCPU = tvDiff(ru1.Utime, ru0.Utime)
	r.ProcessSysCPU = tvDiff(ru1.Stime, ru0.Stime)
	r.Total = Merge("total", r.Jobs)
	return r
}

// Merge sums job results into one named name.
func Merge(name string, jobs []*JobResult) JobResult {
	t := JobResult{Name: name}
	for _, j := range jobs {
		if t.Device == "" {
			t.Device, t.NSID = j.Device, j.NSID
		} else if t.Device != j.Device {
			t.Device = "all"
		}
		for _, d := range []struct{ to, from *DirStats }{{&t.Read, &j.Read}, {&t.Write, &j.Write}} {
			d.to.IOs += d.from.IOs
			d.to.Bytes += d.from.Bytes
			d.to.Lat.Merge(&d.from.Lat)
		}
		t.Timeline.Merge(&j.Timeline)
		t.Runtime = max(t.Runtime, j.Runtime)
		t.UserCPU += j.UserCPU
		t.SysCPU += j.SysCPU
		t.VolCtxSwitches += j.VolCtxSwitches
		t.InvolCtxSwitches += j.InvolCtxSwitches
		t.Syscalls += j.Syscalls
		if t.SyscallsErr == "" {
			t.SyscallsErr = j.SyscallsErr
		}
		t.IOs += j.IOs
		t.Verified += j.Verified
		t.Queue.Add(j.Queue)
		if t.Err == nil {
			t.Err = j.Err
		}
	}
	return t
}
