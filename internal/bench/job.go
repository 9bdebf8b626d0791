package bench

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/cycles"
	"github.com/umdkit/umd/nvmelike"
)

// Target is the namespace a job works on.
type Target struct {
	// Device names the device in reports and errors: its PCI address,
	// or "sim" for the software controller.
	Device  string
	NSID    uint32
	LBASize int    // bytes per logical block
	Blocks  uint64 // namespace size in logical blocks
	// MaxTransfer is the largest I/O the controller takes, in bytes; 0
	// means no limit.
	MaxTransfer int
}

// JobConfig is what a job is given to work with.
type JobConfig struct {
	// Name names the job in reports ("0000:03:00.0/1").
	Name   string
	Target Target
	// Index is the job's number on its device: it picks the job's region
	// (Offset + Index×Size) and its random seed (Seed + Index).
	Index int
	// Queue is the job's own I/O queue pair, with room for IODepth
	// commands (a depth of at least IODepth+1).
	Queue *nvmelike.QueuePair
	// Wait sleeps until the queue pair's interrupt fires or ctx is done;
	// the Adaptive and IRQ modes need it.
	Wait func(ctx context.Context) error
	// Buffers are the job's data buffers: IODepth of at least BlockSize
	// bytes each, in memory the device can reach.
	Buffers []nvmelike.Buffer
}

// DirStats are the figures of one direction (reads or writes) of a job.
type DirStats struct {
	IOs   uint64
	Bytes uint64
	Lat   Histogram // nanoseconds from just before Submit to the completion
}

// JobResult is what a job did, over its measured window (after the ramp).
type JobResult struct {
	Name   string
	Device string
	NSID   uint32
	QID    uint16
	Read   DirStats
	Write  DirStats
	// Timeline counts the measured window's completions (reads and
	// writes) per interval, for IOPS over time.
	Timeline Timeline
	// Runtime is the measured window: from the end of the ramp to the
	// last completion of the workload (the verify read-back excluded).
	Runtime time.Duration
	// UserCPU and SysCPU are the CPU time of the job's thread (getrusage
	// RUSAGE_THREAD: the job runs locked to its thread), ramp and verify
	// included.
	UserCPU, SysCPU time.Duration
	// VolCtxSwitches and InvolCtxSwitches are the thread's context
	// switches: waits on the interrupt, preemption.
	VolCtxSwitches, InvolCtxSwitches uint64
	// Syscalls is the system calls the job's thread entered over the
	// same span as the CPU time, counted by the kernel (a perf event on
	// raw_syscalls:sys_enter); SyscallsErr says why not when it could
	// not be counted.
	Syscalls    uint64
	SyscallsErr string
	// IOs is every I/O the job completed, ramp and verify included (for
	// per-I/O CPU costs); Read and Write count the measured window only.
	IOs uint64
	// Queue is the queue pair's own counters over the job's life.
	Queue nvmelike.QueueStats
	// Verified counts the logical blocks checked by verify.
	Verified uint64
	// Err is the first error: an I/O that failed, a verify mismatch
	// (*VerifyError), a device that stopped answering.
	Err error
}

// IOPS returns the I/Os per second of the measured window, reads and
// writes together.
func (r *JobResult) IOPS() float64 { return rate(r.Read.IOs+r.Write.IOs, r.Runtime) }

func rate(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

type phase int

const (
	phaseRun    phase = iota // the workload
	phaseVerify              // reading back what was written
)

// slot is one of the job's IODepth I/Os: its buffer and when it was
// submitted. Its index is the I/O's tag.
type slot struct {
	buf   nvmelike.Buffer
	start int64  // ns since the job's epoch
	block uint64 // index of the I/O-sized block in the job's region
	write bool
}

// ErrStalled is returned when no completion arrived for StallTimeout with
// commands outstanding.
var ErrStalled = errors.New("no completion arrived")

// StallTimeout is how long a job waits without any completion before it
// gives up on the device.
const StallTimeout = 30 * time.Second

// A Job drives one queue pair with the workload. It belongs to the
// goroutine that calls Run; Progress and Stop may be called from others.
type Job struct {
	w    Workload
	cfg  JobConfig
	q    *nvmelike.QueuePair
	rng  *rand.PCG // called directly: through rand.Rand's Source interface it cost ~50 instructions per I/O
	mode CompletionMode

	slots     []slot
	firstLBA  uint64 // the region's first LBA
	blocks    uint64 // I/O-sized blocks in the region
	lbasPerIO uint64
	seq       uint64   // next block of a sequential pattern
	limit     uint64   // I/Os to issue after the ramp; 0 means no limit
	written   []uint64 // bitmap of blocks written, for the verify read-back
	cursor    uint64   // next block the verify read-back looks at

	phase     phase
	epoch     time.Time
	tsc       tscClock // with ClockCPU: the epoch as a counter reading
	rampEnd   int64    // ns since epoch
	deadline  int64    // ns since epoch; 0 means none
	recording bool
	lastNow   int64
	lastDone  int64
	lastCheck int64 // when the controller's status was last read
	tick      uint64

	outstanding int
	counted     uint64 // I/Os issued after the ramp, against limit
	done        uint64
	stopping    bool
	err         error
	dirs        [2]DirStats // read, write
	timeline    Timeline
	verified    uint64

	abort     atomic.Bool
	published atomic.Uint64 // completions, stored every 64
}

// NewJob prepares a job: it checks the workload against the target and
// lays out the job's region; no I/O happens until Run.
func NewJob(w Workload, c JobConfig) (*Job, error) {
	if err := w.Check(); err != nil {
		return nil, err
	}
	t := c.Target
	switch {
	case c.Queue == nil:
		return nil, fmt.Errorf("job %s: no queue pair", c.Name)
	case t.LBASize <= 0 || w.BlockSize%t.LBASize != 0:
		return nil, fmt.Errorf("--bs %d is not a multiple of the LBA size of %s namespace %d (%d bytes)", w.BlockSize, t.Device, t.NSID, t.LBASize)
	case t.MaxTransfer > 0 && w.BlockSize > t.MaxTransfer:
		return nil, fmt.Errorf("--bs %s is larger than the largest transfer %s takes (%s)", FormatSize(int64(w.BlockSize)), t.Device, FormatSize(int64(t.MaxTransfer)))
	case len(c.Buffers) < w.IODepth:
		return nil, fmt.Errorf("job %s: %d buffers for an iodepth of %d", c.Name, len(c.Buffers), w.IODepth)
	case c.Queue.Depth() <= w.IODepth:
		return nil, fmt.Errorf("job %s: a queue of depth %d holds at most %d commands, --iodepth is %d", c.Name, c.Queue.Depth(), c.Queue.Depth()-1, w.IODepth)
	case w.Completion != Poll && c.Wait == nil:
		return nil, fmt.Errorf("job %s: --completion %s needs an interrupt, and this queue pair has none", c.Name, w.Completion)
	case w.Verify && t.LBASize < verifyHeaderSize:
		return nil, fmt.Errorf("--verify needs logical blocks of at least %d bytes", verifyHeaderSize)
	}
	if err := c.Queue.SetDataPointer(w.DataPointer); err != nil {
		return nil, fmt.Errorf("%s: %w (--data_pointer auto uses SGLs only where the controller has them)", t.Device, err)
	}
	nsBytes := int64(t.Blocks) * int64(t.LBASize)
	size := w.Size
	if size == 0 {
		return nil, fmt.Errorf("job %s: no region size", c.Name)
	}
	start := w.Offset + int64(c.Index)*size
	if end := start + size; end > nsBytes || end < start {
		return nil, fmt.Errorf("the region of job %s, %s at offset %s (--offset + job×--size), goes beyond %s namespace %d, which holds %s",
			c.Name, FormatSize(size), FormatSize(start), t.Device, t.NSID, FormatSize(nsBytes))
	}
	j := &Job{
		w:         w,
		cfg:       c,
		q:         c.Queue,
		mode:      w.Completion,
		rng:       rand.NewPCG(w.Seed+uint64(c.Index), 0x756d6462656e6368),
		firstLBA:  uint64(start) / uint64(t.LBASize),
		blocks:    uint64(size) / uint64(w.BlockSize),
		lbasPerIO: uint64(w.BlockSize / t.LBASize),
		slots:     make([]slot, w.IODepth),
	}
	switch {
	case w.NumberIOs > 0:
		j.limit = w.NumberIOs
	case !w.TimeBased:
		j.limit = j.blocks
	}
	if w.Verify && w.RW.Writes() {
		j.written = make([]uint64, (j.blocks+63)/64)
	}
	for i := range j.slots {
		j.slots[i].buf = c.Buffers[i].Slice(0, w.BlockSize)
		if !w.Verify {
			// Data that does not compress or dedupe to nothing.
			fillPattern(j.slots[i].buf.Bytes, uint64(i), uint32(c.Index))
		}
	}
	// Every I/O goes through SubmitIO, the engine's shortest path, and
	// completes here with its slot's index as the tag.
	j.q.SetIOCallback(j.complete)
	return j, nil
}

// Name returns the job's name.
func (j *Job) Name() string { return j.cfg.Name }

// Completed returns how many I/Os the job has completed so far, to within
// 64; safe to call while it runs.
func (j *Job) Completed() uint64 { return j.published.Load() }

// Stop asks a running job to stop issuing I/O; it finishes the I/O in
// flight and returns. Safe to call from any goroutine.
func (j *Job) Stop() { j.abort.Store(true) }

// Run runs the workload, then (with Verify on a writing pattern) reads
// back and checks every block written. It locks the goroutine to its
// thread for the duration, so the thread's CPU time is the job's.
func (j *Job) Run(ctx context.Context) *JobResult {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var ru0, ru1 unix.Rusage
	sc, scErr := countSyscalls()
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru0)

	j.epoch = time.Now()
	if j.w.Clock == ClockCPU {
		j.tsc = newTSCClock(cycles.Hz())
	}
	j.rampEnd = int64(j.w.RampTime)
	if j.w.Runtime > 0 {
		j.deadline = j.rampEnd + int64(j.w.Runtime)
	}
	j.recording = j.rampEnd == 0
	j.drive(ctx)
	end := j.lastDone
	if j.w.Verify && j.w.RW.Writes() && j.err == nil && !j.abort.Load() {
		j.phase, j.stopping = phaseVerify, false
		j.drive(ctx)
	}
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru1)
	var syscalls uint64
	if scErr == nil {
		syscalls, scErr = sc.stop()
		syscalls = max(syscalls, 2) - 2 // the two getrusage calls
	}

	r := &JobResult{
		Syscalls:         syscalls,
		Name:             j.cfg.Name,
		Device:           j.cfg.Target.Device,
		NSID:             j.cfg.Target.NSID,
		QID:              j.q.ID(),
		Read:             j.dirs[0],
		Write:            j.dirs[1],
		Timeline:         j.timeline,
		Runtime:          time.Duration(max(end-j.rampEnd, 0)),
		UserCPU:          tvDiff(ru1.Utime, ru0.Utime),
		SysCPU:           tvDiff(ru1.Stime, ru0.Stime),
		VolCtxSwitches:   uint64(ru1.Nvcsw - ru0.Nvcsw),
		InvolCtxSwitches: uint64(ru1.Nivcsw - ru0.Nivcsw),
		IOs:              j.done,
		Queue:            j.q.Stats(),
		Verified:         j.verified,
		Err:              j.err,
	}
	if scErr != nil {
		r.SyscallsErr = scErr.Error()
	}
	return r
}

func tvDiff(a, b unix.Timeval) time.Duration {
	return time.Duration(a.Nano() - b.Nano())
}

// drive fills the queue and keeps it full until the phase has nothing
// left to issue and everything in flight has completed. The completion
// callback issues the next I/O, so this loop only polls, rings and waits.
func (j *Job) drive(ctx context.Context) {
	now := j.clock()
	j.lastDone = now
	for i := range j.slots {
		if !j.issue(i, now) {
			break
		}
	}
	j.q.Ring()
	mode := j.mode
	spins, empty := 0, 0
	for j.outstanding > 0 {
		if j.abort.Load() {
			j.stopping = true
		}
		n, err := j.q.Poll(0)
		if err != nil {
			// A completion the engine could not deliver: its command
			// may never complete. Stop here; closing the queue pair
			// fails what is left.
			j.fail(fmt.Errorf("job %s: %w", j.cfg.Name, err))
			return
		}
		if n > 0 {
			j.q.Ring() // what the callbacks submitted
			spins, empty = 0, 0
			continue
		}
		// Look at the clock now and then while nothing completes (every
		// time when each empty poll is followed by a sleep).
		if empty++; mode != Poll || empty&(1<<14-1) == 0 {
			now := j.elapsed()
			if now-j.lastDone > int64(StallTimeout) {
				j.fail(fmt.Errorf("job %s on %s: %w for %v with %d commands outstanding", j.cfg.Name, j.cfg.Target.Device, ErrStalled, StallTimeout, j.outstanding))
				return
			}
			// Completions stopped: every nvmelike.CheckInterval, read
			// the controller's status, so that a device removed, fatal
			// or reset from outside ends the run with that reason rather
			// than after StallTimeout.
			if every := int64(nvmelike.CheckInterval); now-j.lastDone > every && now-j.lastCheck > every {
				j.lastCheck = now
				if err := j.q.Check(); err != nil {
					j.fail(fmt.Errorf("job %s on %s: no completion for %v with %d commands outstanding: %w",
						j.cfg.Name, j.cfg.Target.Device, time.Duration(now-j.lastDone).Round(time.Millisecond), j.outstanding, err))
					return
				}
			}
		}
		switch mode {
		case Poll:
			continue
		case Adaptive:
			if spins++; spins < j.w.PollSpins {
				continue
			}
			spins = 0
		}
		if err := j.cfg.Wait(ctx); err != nil {
			// Interrupted (^C, or the run's context): drain by polling.
			j.stopping = true
			mode = Poll
		}
	}
}

// clock returns nanoseconds since the job's epoch. With NoLatency it reads
// the clock only every 64th call.
func (j *Job) clock() int64 {
	if j.w.NoLatency {
		j.tick++
		if j.tick&63 != 1 {
			return j.lastNow
		}
	}
	j.lastNow = j.elapsed()
	return j.lastNow
}

// elapsed reads the job's clock (Workload.Clock): nanoseconds since its
// epoch.
func (j *Job) elapsed() int64 {
	if j.w.Clock == ClockCPU {
		return j.tsc.elapsed()
	}
	return int64(time.Since(j.epoch))
}

// issue builds the next I/O in slot i and submits it; false when there is
// nothing more to issue (or the submission failed).
func (j *Job) issue(i int, now int64) bool {
	if j.stopping {
		return false
	}
	s := &j.slots[i]
	var block uint64
	write := false
	if j.phase == phaseVerify {
		b, ok := j.nextWritten()
		if !ok {
			return false
		}
		block = b
	} else {
		if (j.deadline > 0 && now >= j.deadline) || (j.limit > 0 && j.counted >= j.limit) {
			j.stopping = true
			return false
		}
		switch {
		case j.w.RW.Mixed():
			write = int(j.randN(100)) >= j.w.RWMixRead
		case j.w.RW.Writes():
			write = true
		}
		if j.w.RW.Random() {
			block = j.randN(j.blocks)
		} else {
			block = j.seq
			if j.seq++; j.seq == j.blocks {
				j.seq = 0
			}
		}
	}
	lba := j.firstLBA + block*j.lbasPerIO
	nlb := uint32(j.lbasPerIO)
	if write {
		if j.w.Verify {
			lbs := j.cfg.Target.LBASize
			for k := uint64(0); k < j.lbasPerIO; k++ {
				StampBlock(s.buf.Bytes[int(k)*lbs:int(k+1)*lbs], lba+k, j.w.VerifyPass)
			}
		}
	}
	op := nvmelike.CmdRead
	if write {
		op = nvmelike.CmdWrite
	}
	s.start, s.block, s.write = now, block, write
	if err := j.q.SubmitIO(op, j.cfg.Target.NSID, lba, nlb, s.buf, uint64(i)); err != nil {
		j.fail(fmt.Errorf("job %s: submitting %s of LBA %d: %w", j.cfg.Name, opName(write), lba, err))
		return false
	}
	j.outstanding++
	if now >= j.rampEnd && j.phase == phaseRun {
		j.counted++
	}
	return true
}

// complete is the callback of every I/O: it records the I/O and issues
// the next one in the same slot.
func (j *Job) complete(tag uint64, _ nvmelike.Completion, err error) {
	i := int(tag)
	s := &j.slots[i]
	j.outstanding--
	now := j.clock()
	j.lastDone = now
	if err != nil {
		j.fail(fmt.Errorf("job %s on %s: %s of LBA %d: %w", j.cfg.Name, j.cfg.Target.Device, opName(s.write), j.firstLBA+s.block*j.lbasPerIO, err))
		return
	}
	j.done++
	// For the progress line: an atomic store is a locked instruction
	// on amd64, so only every 64th completion pays for one.
	if j.done&63 == 0 {
		j.published.Store(j.done)
	}
	if j.phase == phaseVerify {
		j.check(s)
	} else {
		if !j.recording && now >= j.rampEnd {
			j.recording = true
		}
		if j.recording {
			d := &j.dirs[0]
			if s.write {
				d = &j.dirs[1]
			}
			d.IOs++
			d.Bytes += uint64(j.w.BlockSize)
			j.timeline.Record(now - j.rampEnd)
			if !j.w.NoLatency {
				d.Lat.Record(uint64(now - s.start))
			}
		}
		switch {
		case s.write && j.written != nil:
			j.written[s.block/64] |= 1 << (s.block % 64)
		case !s.write && j.w.Verify && !j.w.RW.Writes():
			// Pure read patterns check every block read; mixed ones
			// could race their own writes, and are checked by the
			// read-back instead.
			j.check(s)
		}
	}
	j.issue(i, now)
}

// check verifies every logical block of slot s's buffer.
func (j *Job) check(s *slot) {
	if j.err != nil {
		return // the run has failed already; keep the first mismatch
	}
	lbs := j.cfg.Target.LBASize
	lba := j.firstLBA + s.block*j.lbasPerIO
	for k := uint64(0); k < j.lbasPerIO; k++ {
		field, exp, found, ok := CheckBlock(s.buf.Bytes[int(k)*lbs:int(k+1)*lbs], lba+k, j.w.VerifyPass)
		if !ok {
			t := j.cfg.Target
			j.fail(&VerifyError{Device: t.Device, NSID: t.NSID, LBA: lba + k, Field: field, Expected: exp, Found: found})
			return
		}
		j.verified++
	}
}

// randN returns a pseudo-random number in [0, n): the high word of a
// 64x64-bit product (Lemire's reduction, without the rejection step: the
// bias, below n/2^64, does not matter for picking blocks).
func (j *Job) randN(n uint64) uint64 {
	hi, _ := bits.Mul64(j.rng.Uint64(), n)
	return hi
}

// nextWritten returns the next block the verify read-back has to read.
func (j *Job) nextWritten() (uint64, bool) {
	for j.cursor < j.blocks {
		b := j.cursor
		w := j.written[b/64] >> (b % 64)
		if w == 0 {
			j.cursor = (b/64 + 1) * 64 // skip the rest of an empty word
			continue
		}
		j.cursor++
		if w&1 != 0 {
			return b, true
		}
	}
	return 0, false
}

// fail keeps the first error and stops issuing I/O.
func (j *Job) fail(err error) {
	if j.err == nil {
		j.err = err
	}
	j.stopping = true
}

func opName(write bool) string {
	if write {
		return "write"
	}
	return "read"
}
