package bench

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/umdkit/umd/internal/cycles"
	"github.com/umdkit/umd/nvmelike"
)

func openSim(t testing.TB, lbaSize int, size int64) *SimDevice {
	t.Helper()
	d, err := OpenSim(context.Background(), SimOptions{LBASize: lbaSize, Bytes: size})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("closing the software controller: %v", err)
		}
	})
	return d
}

func runSim(t testing.TB, d *SimDevice, w Workload, numjobs int) *Result {
	t.Helper()
	ctx := context.Background()
	jobs, err := d.NewJobs(ctx, w, numjobs)
	if err != nil {
		t.Fatal(err)
	}
	return ExecuteSim(ctx, d, w, jobs, ExecOptions{})
}

// TestEveryPattern runs each --rw mode with verify, two jobs, against the
// software controller, and checks the figures are there and add up.
func TestEveryPattern(t *testing.T) {
	for _, rw := range []RW{SeqRead, SeqWrite, RandRead, RandWrite, SeqReadWrite, RandReadWrite} {
		t.Run(rw.String(), func(t *testing.T) {
			d := openSim(t, 512, 8<<20)
			w := Workload{RW: rw, RWMixRead: 50, BlockSize: 4096, IODepth: 8, Size: 2 << 20, Verify: true, VerifyPass: 3, Seed: 1}
			if rw.Reads() && !rw.Writes() {
				// Reads check what they read: write the regions first.
				fill := w
				fill.RW = SeqWrite
				if r := runSim(t, d, fill, 2); r.Err() != nil {
					t.Fatal(r.Err())
				}
			}
			r := runSim(t, d, w, 2)
			if err := r.Err(); err != nil {
				t.Fatal(err)
			}
			tot := &r.Total
			if len(r.Jobs) != 2 || tot.IOPS() <= 0 || tot.Runtime <= 0 {
				t.Fatalf("%d jobs, IOPS %g, runtime %v", len(r.Jobs), tot.IOPS(), tot.Runtime)
			}
			perJob := uint64(w.Size) / uint64(w.BlockSize)
			for _, j := range r.Jobs {
				if n := j.Read.IOs + j.Write.IOs; n != perJob {
					t.Errorf("%s did %d I/Os, want %d (--size / --bs)", j.Name, n, perJob)
				}
				if rw.Reads() != (j.Read.IOs > 0) || rw.Writes() != (j.Write.IOs > 0) {
					t.Errorf("%s: %d reads and %d writes for %v", j.Name, j.Read.IOs, j.Write.IOs, rw)
				}
				if j.Read.Lat.Count() != j.Read.IOs || j.Write.Lat.Count() != j.Write.IOs {
					t.Errorf("%s: %d and %d latencies for %d and %d I/Os", j.Name, j.Read.Lat.Count(), j.Write.Lat.Count(), j.Read.IOs, j.Write.IOs)
				}
				if j.Verified == 0 {
					t.Errorf("%s verified nothing", j.Name)
				}
			}
			if rw.Mixed() {
				share := float64(tot.Read.IOs) / float64(tot.Read.IOs+tot.Write.IOs)
				if share < 0.4 || share > 0.6 {
					t.Errorf("reads are %.0f%% of a 50/50 mix", 100*share)
				}
			}
			if r.Sim == nil || r.Sim.Doorbells == 0 {
				t.Errorf("no doorbell writes counted: %+v", r.Sim)
			}
			// Every doorbell write went through the queue pairs' own
			// counters too.
			if q := tot.Queue.SQDoorbells + tot.Queue.CQDoorbells; q != r.Sim.Doorbells {
				t.Errorf("queue pairs counted %d doorbells, the registers %d", q, r.Sim.Doorbells)
			}
		})
	}
}

// TestVerifyCatchesCorruption writes a region with verify, corrupts one
// byte of one block behind the host's back, and checks a verifying read
// names that block.
func TestVerifyCatchesCorruption(t *testing.T) {
	d := openSim(t, 512, 4<<20)
	w := Workload{RW: SeqWrite, BlockSize: 8192, IODepth: 4, Size: 1 << 20, Offset: 1 << 20, Verify: true, VerifyPass: 1}
	if r := runSim(t, d, w, 1); r.Err() != nil {
		t.Fatal(r.Err())
	}
	const bad = 2048 + 77 // LBA: 1 MiB offset in 512-byte blocks, then 77 more
	d.Sim.NamespaceData(1)[bad*512+300] ^= 0x10

	w.RW = SeqRead
	r := runSim(t, d, w, 1)
	var ve *VerifyError
	if !errors.As(r.Err(), &ve) {
		t.Fatalf("reading a corrupted block: %v, want a *VerifyError", r.Err())
	}
	if ve.LBA != bad || ve.Field != "checksum" || ve.Device != "sim" || ve.NSID != 1 || ve.Expected == ve.Found {
		t.Errorf("got %+v, want a checksum mismatch at LBA %d", ve, bad)
	}
	if r.Total.Verified != 77 {
		t.Errorf("%d blocks verified before the bad one, want 77", r.Total.Verified)
	}

	// The other pass number: the first block read is wrong.
	w.VerifyPass = 2
	r = runSim(t, d, w, 1)
	if !errors.As(r.Err(), &ve) || ve.LBA != 2048 || ve.Field != "pass" || ve.Expected != 2 || ve.Found != 1 {
		t.Errorf("reading pass 1 as pass 2: %v", r.Err())
	}
}

// TestRuntimeAndRamp: a time-based run lasts about its runtime and counts
// only after the ramp.
func TestRuntimeAndRamp(t *testing.T) {
	d := openSim(t, 4096, 16<<20)
	w := Workload{RW: RandRead, BlockSize: 4096, IODepth: 16, Size: 16 << 20, Runtime: 200 * time.Millisecond, TimeBased: true, RampTime: 100 * time.Millisecond}
	r := runSim(t, d, w, 1)
	if r.Err() != nil {
		t.Fatal(r.Err())
	}
	j := r.Jobs[0]
	if j.Runtime < w.Runtime || j.Runtime > w.Runtime+time.Second {
		t.Errorf("measured window %v for a runtime of %v", j.Runtime, w.Runtime)
	}
	if j.IOs <= j.Read.IOs {
		t.Errorf("%d I/Os in all, %d counted: the ramp's I/Os were counted", j.IOs, j.Read.IOs)
	}
	if r.Wall < w.Runtime+w.RampTime {
		t.Errorf("wall time %v, shorter than ramp + runtime", r.Wall)
	}
}

// TestResetEndsRun: a controller reset from outside mid-run ends the job
// with the controller's reason (ErrNotReady) once completions have stopped
// for nvmelike.CheckInterval, not with ErrStalled after StallTimeout.
func TestResetEndsRun(t *testing.T) {
	d, err := OpenSim(context.Background(), SimOptions{LBASize: 4096, Bytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	w := Workload{RW: RandRead, BlockSize: 4096, IODepth: 8, Size: 16 << 20, Runtime: time.Minute, TimeBased: true}
	jobs, err := d.NewJobs(context.Background(), w, 1)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for jobs[0].Completed() < 1000 {
			time.Sleep(time.Millisecond)
		}
		d.Sim.FunctionReset()
	}()
	r := Execute(context.Background(), w, jobs, ExecOptions{})
	if err := r.Err(); !errors.Is(err, nvmelike.ErrNotReady) {
		t.Errorf("run: %v, want ErrNotReady", err)
	}
	if err := d.Close(); !errors.Is(err, nvmelike.ErrNotReady) {
		t.Errorf("Close: %v, want ErrNotReady", err)
	}
	if n := d.Mem.Regions(); n != w.IODepth {
		t.Errorf("%d DMA regions left, want the job's %d buffers", n, w.IODepth)
	}
}

func TestNewJobChecks(t *testing.T) {
	d := openSim(t, 4096, 1<<20)
	ctx := context.Background()
	base := Workload{RW: SeqRead, BlockSize: 4096, IODepth: 2, Size: 512 << 10}
	for _, c := range []struct {
		name string
		mod  func(*Workload)
		jobs int
		want string
	}{
		{"bs not a multiple of the LBA size", func(w *Workload) { w.BlockSize = 512 }, 1, "not a multiple of the LBA size"},
		{"beyond the namespace", func(w *Workload) { w.Size = 2 << 20 }, 1, "goes beyond sim namespace 1"},
		{"second job beyond the namespace", func(w *Workload) { w.Offset = 4096 }, 2, "goes beyond"},
		{"irq without an interrupt", func(w *Workload) { w.Completion = IRQ }, 1, "needs an interrupt"},
		{"bs above the transfer limit", func(w *Workload) { w.BlockSize = 2 << 20; w.Size = 0 }, 1, "larger than the largest transfer"},
	} {
		w := base
		c.mod(&w)
		if w.Size == 0 {
			w.Size = int64(w.BlockSize)
		}
		_, err := d.NewJobs(ctx, w, c.jobs)
		if err == nil || !contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestDriveDoesNotAllocate runs the per-I/O loop itself (submit, ring,
// poll, callback, record, resubmit) under testing.AllocsPerRun.
func TestDriveDoesNotAllocate(t *testing.T) {
	for _, w := range []Workload{
		{RW: RandRead, BlockSize: 4096, IODepth: 32, Size: 4 << 20},
		{RW: RandReadWrite, RWMixRead: 70, BlockSize: 4096, IODepth: 8, Size: 4 << 20, Verify: true, VerifyPass: 1},
		{RW: SeqWrite, BlockSize: 4096, IODepth: 1, Size: 4 << 20, NoLatency: true},
		{RW: RandRead, BlockSize: 4096, IODepth: 8, Size: 4 << 20, Clock: ClockCPU},
	} {
		d := openSim(t, 512, 8<<20)
		jobs, err := d.NewJobs(context.Background(), w, 1)
		if err != nil {
			t.Fatal(err)
		}
		j := jobs[0]
		j.epoch = time.Now()
		j.tsc = newTSCClock(cycles.Hz())
		j.recording = true
		ctx := context.Background()
		allocs := testing.AllocsPerRun(5, func() {
			j.stopping, j.counted = false, 0
			j.drive(ctx)
		})
		if j.err != nil {
			t.Fatal(j.err)
		}
		if allocs != 0 {
			t.Errorf("%v: %g allocations per %d I/Os", w.RW, allocs, j.limit)
		}
	}
}

// BenchmarkJob4KiBRandRead is the per-I/O path against the software
// controller: one op is one 4 KiB random read at queue depth 32, timed,
// recorded and resubmitted by the callback.
func BenchmarkJob4KiBRandRead(b *testing.B) {
	for _, depth := range []int{1, 32} {
		b.Run(map[int]string{1: "qd1", 32: "qd32"}[depth], func(b *testing.B) {
			d := openSim(b, 4096, 64<<20)
			w := Workload{RW: RandRead, BlockSize: 4096, IODepth: depth, Size: 64 << 20, NumberIOs: uint64(b.N)}
			jobs, err := d.NewJobs(context.Background(), w, 1)
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			b.ReportAllocs()
			b.ResetTimer()
			r := jobs[0].Run(context.Background())
			b.StopTimer()
			if r.Err != nil {
				b.Fatal(r.Err)
			}
			if r.IOs > 0 {
				b.ReportMetric(float64((r.UserCPU+r.SysCPU).Nanoseconds())/float64(r.IOs), "cpu-ns/op")
				b.ReportMetric(float64(r.Queue.SQDoorbells+r.Queue.CQDoorbells)/float64(r.IOs), "doorbells/op")
			}
		})
	}
}

// TestSimShadowDoorbells: with ShadowDoorbells the software controller
// offers Doorbell Buffer Config, and jobs still complete and verify.
func TestSimShadowDoorbells(t *testing.T) {
	for _, on := range []bool{false, true} {
		d, err := OpenSim(context.Background(), SimOptions{ShadowDoorbells: on, Bytes: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if id := d.Ctrl.IdentifyController(); id.DoorbellBufferConfig() != on {
			t.Errorf("ShadowDoorbells %v: the controller offers shadow doorbells: %v", on, id.DoorbellBufferConfig())
		}
		w := Workload{RW: RandWrite, BlockSize: 4096, IODepth: 16, Size: 4 << 20, NumberIOs: 2000, Verify: true, VerifyPass: 1}
		jobs, err := d.NewJobs(context.Background(), w, 1)
		if err != nil {
			t.Fatal(err)
		}
		r := ExecuteSim(context.Background(), d, w, jobs, ExecOptions{})
		if err := r.Err(); err != nil || r.Total.Verified == 0 {
			t.Errorf("ShadowDoorbells %v: %v, %d blocks verified", on, err, r.Total.Verified)
		}
		d.Close()
	}
}

// TestDataPointers writes and reads back 128 KiB blocks with verify in
// each --data_pointer mode: each job's queue pair is left in the mode
// asked for, and the data round-trips (PRP lists and SGLs alike).
func TestDataPointers(t *testing.T) {
	for _, dp := range []nvmelike.DataPointer{nvmelike.DataPointerPRP, nvmelike.DataPointerSGL, nvmelike.DataPointerAuto} {
		t.Run(dp.String(), func(t *testing.T) {
			d := openSim(t, 512, 4<<20)
			for _, rw := range []RW{SeqWrite, RandRead} {
				w := Workload{RW: rw, BlockSize: 128 << 10, IODepth: 4, Size: 2 << 20, Verify: true, VerifyPass: 1, Seed: 1, DataPointer: dp}
				jobs, err := d.NewJobs(context.Background(), w, 1)
				if err != nil {
					t.Fatal(err)
				}
				if got := jobs[0].q.DataPointer(); got != dp {
					t.Fatalf("%v: the queue pair's data pointer is %v", rw, got)
				}
				r := ExecuteSim(context.Background(), d, w, jobs, ExecOptions{})
				if err := r.Err(); err != nil {
					t.Fatalf("%v: %v", rw, err)
				}
				if r.Total.Read.IOs+r.Total.Write.IOs != 16 || r.Jobs[0].Verified == 0 {
					t.Errorf("%v: %d reads, %d writes, %d blocks verified", rw, r.Total.Read.IOs, r.Total.Write.IOs, r.Jobs[0].Verified)
				}
			}
		})
	}
}
