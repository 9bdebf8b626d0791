package bench

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/umdkit/umd/internal/cycles"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// CountingRegisters counts the doorbell writes (offsets from
// NVME_REG_DBS on) that go through it to the Registers underneath: on a
// real device each is an MMIO write. It counts independently of the queue
// pairs' own counters, which tests compare it with.
//
// It also times the doorbell writes with the CPU's counter (package
// cycles): the software controller in its instant mode does all of a
// device's work (fetching entries, moving data, posting completions)
// inside them, so their time is the simulated device's, and the rest of
// a job's CPU time is the host's.
type CountingRegisters struct {
	nvmelike.Registers
	doorbells atomic.Uint64
	device    atomic.Uint64 // counter ticks spent inside doorbell writes
}

// Write32 counts the write and passes it on.
func (r *CountingRegisters) Write32(off uint64, v uint32) {
	if off >= nvmelike.NVME_REG_DBS {
		r.doorbells.Add(1)
		t0 := cycles.Now()
		r.Registers.Write32(off, v)
		r.device.Add(cycles.Now() - t0)
		return
	}
	r.Registers.Write32(off, v)
}

// DeviceTicks returns the counter ticks spent inside doorbell writes so
// far (cycles.Hz converts them to time).
func (r *CountingRegisters) DeviceTicks() uint64 { return r.device.Load() }

// Doorbells returns the doorbell writes so far.
func (r *CountingRegisters) Doorbells() uint64 { return r.doorbells.Load() }

// SimCost is what the software controller saw of a run.
type SimCost struct {
	// Doorbells is the doorbell writes over the run, from the first
	// job's start to the last one's end.
	Doorbells uint64
	// DeviceTicks is the counter ticks (cycles.Now) spent inside doorbell
	// writes, where the instant controller does its work; TicksPerSecond
	// their rate.
	DeviceTicks    uint64
	TicksPerSecond float64
}

// SimDevice is the software controller (nvmelike/sim) in its
// instant-completion mode, with the protocol engine brought up on it
// through CountingRegisters.
type SimDevice struct {
	Sim    *sim.Controller
	Mem    *sim.Memory
	Regs   *CountingRegisters
	Ctrl   *nvmelike.Controller
	Target Target
}

// SimOptions describe the software controller's namespace.
type SimOptions struct {
	// LBASize is the namespace's block size; 0 means 512.
	LBASize int
	// Bytes is the namespace's size; 0 means 64 MiB. It is held in memory.
	Bytes int64
	// ShadowDoorbells makes the controller offer shadow doorbells
	// (Doorbell Buffer Config) and the driver use them.
	ShadowDoorbells bool
}

// OpenSim makes a software controller and brings it up.
func OpenSim(ctx context.Context, o SimOptions) (*SimDevice, error) {
	if o.LBASize == 0 {
		o.LBASize = 512
	}
	if o.Bytes == 0 {
		o.Bytes = 64 << 20
	}
	if o.LBASize < 512 || o.LBASize&(o.LBASize-1) != 0 {
		return nil, fmt.Errorf("software controller: LBA size %d is not a power of two from 512", o.LBASize)
	}
	if o.Bytes < int64(o.LBASize) || o.Bytes > 16<<30 {
		return nil, fmt.Errorf("software controller: namespace size %s: want %s to 16 GiB (it is kept in memory)", FormatSize(o.Bytes), FormatSize(int64(o.LBASize)))
	}
	blocks := uint64(o.Bytes) / uint64(o.LBASize)
	mem := sim.NewMemory()
	// SGLs as QEMU's emulated NVMe offers them (byte aligned, bit
	// buckets), so that every --data_pointer mode runs here too.
	s := sim.New(mem, sim.Config{
		DoorbellBufferConfig: o.ShadowDoorbells,
		SGLS:                 nvmelike.NVME_CTRL_SGLS_BYTE_ALIGNED | nvmelike.NVME_CTRL_SGLS_BIT_BUCKET,
		Namespaces:           []sim.NamespaceConfig{{Blocks: blocks, LBASize: o.LBASize}},
	})
	regs := &CountingRegisters{Registers: s}
	ctrl, err := nvmelike.Open(ctx, regs, mem, &nvmelike.Options{ShadowDoorbells: o.ShadowDoorbells})
	if err != nil {
		return nil, fmt.Errorf("bringing up the software controller: %w", err)
	}
	return &SimDevice{
		Sim: s, Mem: mem, Regs: regs, Ctrl: ctrl,
		Target: Target{Device: "sim", NSID: 1, LBASize: o.LBASize, Blocks: blocks, MaxTransfer: ctrl.MaxTransfer()},
	}, nil
}

// NewJobs creates n jobs of w on the software controller, each with a
// queue pair and IODepth buffers of its own. Jobs are named "sim/0",
// "sim/1", ….
func (d *SimDevice) NewJobs(ctx context.Context, w Workload, n int) ([]*Job, error) {
	var jobs []*Job
	for i := range n {
		q, err := d.Ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: w.IODepth + 1})
		if err != nil {
			return nil, fmt.Errorf("software controller: %w", err)
		}
		bufs := make([]nvmelike.Buffer, w.IODepth)
		for k := range bufs {
			if bufs[k], err = d.Mem.Alloc(w.BlockSize, 4096); err != nil {
				return nil, fmt.Errorf("software controller: %w", err)
			}
		}
		j, err := NewJob(w, JobConfig{Name: fmt.Sprintf("sim/%d", i), Target: d.Target, Index: i, Queue: q, Buffers: bufs})
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// Close shuts the controller down. It is safe to call twice.
func (d *SimDevice) Close() error {
	if d.Ctrl == nil {
		return nil
	}
	err := d.Ctrl.Close()
	d.Ctrl = nil
	return err
}

// ExecuteSim runs jobs on d like Execute, with allocations counted, and
// adds the controller's register write counts to the result.
func ExecuteSim(ctx context.Context, d *SimDevice, w Workload, jobs []*Job, o ExecOptions) *Result {
	o.CountAllocs = true
	hz := cycles.Hz() // calibrated before the run, not during
	db0 := d.Regs.Doorbells()
	dev0 := d.Regs.DeviceTicks()
	r := Execute(ctx, w, jobs, o)
	r.Sim = &SimCost{Doorbells: d.Regs.Doorbells() - db0, DeviceTicks: d.Regs.DeviceTicks() - dev0, TicksPerSecond: hz}
	return r
}
