package bench

import (
	"errors"
	"fmt"
	"time"

	"github.com/umdkit/umd/nvmelike"
)

// RW is the I/O pattern of a job, with fio's names.
type RW int

const (
	SeqRead       RW = iota // read: sequential reads
	SeqWrite                // write: sequential writes
	RandRead                // randread
	RandWrite               // randwrite
	SeqReadWrite            // rw (or readwrite): sequential, mixed
	RandReadWrite           // randrw: random, mixed
)

var rwNames = []string{"read", "write", "randread", "randwrite", "rw", "randrw"}

// ParseRW parses fio's --rw values: read, write, randread, randwrite, rw
// (or readwrite) and randrw.
func ParseRW(s string) (RW, error) {
	if s == "readwrite" {
		return SeqReadWrite, nil
	}
	for i, n := range rwNames {
		if s == n {
			return RW(i), nil
		}
	}
	return 0, fmt.Errorf("--rw %q: want read, write, randread, randwrite, rw or randrw", s)
}

func (rw RW) String() string {
	if rw >= 0 && int(rw) < len(rwNames) {
		return rwNames[rw]
	}
	return fmt.Sprintf("RW(%d)", int(rw))
}

// Random reports whether offsets are random rather than sequential.
func (rw RW) Random() bool { return rw == RandRead || rw == RandWrite || rw == RandReadWrite }

// Mixed reports whether the pattern mixes reads and writes.
func (rw RW) Mixed() bool { return rw == SeqReadWrite || rw == RandReadWrite }

// Reads reports whether the pattern reads.
func (rw RW) Reads() bool { return rw != SeqWrite && rw != RandWrite }

// Writes reports whether the pattern writes.
func (rw RW) Writes() bool { return rw != SeqRead && rw != RandRead }

// CompletionMode is how a job learns of completions.
type CompletionMode int

const (
	// Poll spins on the completion queue: lowest latency, one core per job.
	Poll CompletionMode = iota
	// Adaptive spins PollSpins times, then sleeps on the interrupt.
	Adaptive
	// IRQ sleeps on the queue pair's interrupt whenever a poll finds
	// nothing.
	IRQ
)

var completionNames = []string{"poll", "adaptive", "irq"}

// ParseCompletion parses poll, adaptive or irq.
func ParseCompletion(s string) (CompletionMode, error) {
	for i, n := range completionNames {
		if s == n {
			return CompletionMode(i), nil
		}
	}
	return 0, fmt.Errorf("--completion %q: want poll, adaptive or irq", s)
}

// ParseDataPointer parses --data_pointer: prp, sgl or auto.
func ParseDataPointer(s string) (nvmelike.DataPointer, error) {
	switch s {
	case "prp":
		return nvmelike.DataPointerPRP, nil
	case "sgl":
		return nvmelike.DataPointerSGL, nil
	case "auto":
		return nvmelike.DataPointerAuto, nil
	}
	return 0, fmt.Errorf("--data_pointer %q: want prp, sgl or auto", s)
}

func (m CompletionMode) String() string {
	if m >= 0 && int(m) < len(completionNames) {
		return completionNames[m]
	}
	return fmt.Sprintf("CompletionMode(%d)", int(m))
}

// Workload is what every job of a run does.
type Workload struct {
	RW RW
	// RWMixRead is the percentage of reads in rw and randrw.
	RWMixRead int
	// BlockSize is the size of every I/O in bytes: a multiple of the
	// namespace's LBA size.
	BlockSize int
	// IODepth is the number of I/Os each job keeps in flight.
	IODepth int
	// Runtime ends the run when it has passed (after RampTime); 0 means no
	// time limit.
	Runtime time.Duration
	// TimeBased keeps going over the region until Runtime has passed,
	// rather than stopping after Size bytes.
	TimeBased bool
	// RampTime runs the workload this long before anything is counted.
	RampTime time.Duration
	// Size is the size of each job's region in bytes, and the amount of
	// I/O a job does unless TimeBased.
	Size int64
	// NumberIOs, when not 0, is the number of I/Os a job does (after
	// the ramp) instead of Size's worth (fio's number_ios).
	NumberIOs uint64
	// Offset is where the first job's region starts, in bytes; job i's
	// region starts at Offset + i×Size.
	Offset int64
	// Verify stamps every block written with its LBA, VerifyPass and a
	// checksum, and checks blocks read: in read and randread every block
	// read; in write modes every block written, read back after the run.
	Verify     bool
	VerifyPass uint32
	// Completion is how completions are waited for; PollSpins is how many
	// empty polls Adaptive makes before it sleeps.
	Completion CompletionMode
	PollSpins  int
	// DataPointer is how commands describe their buffers: PRPs (the zero
	// value), SGLs, or DataPointerAuto, an SGL where PRPs would need a
	// list page (see nvmelike.DataPointer).
	DataPointer nvmelike.DataPointer
	// Clock is what the per-I/O timestamps read: the monotonic clock
	// (the zero value) or the CPU's counter (fio's clocksource=cpu).
	Clock ClockSource
	// NoLatency takes no per-I/O timestamps (fio's disable_lat): no
	// latency figures, and the clock is read only every 64 completions.
	NoLatency bool
	// Seed seeds the random offsets and the read/write mix; job i uses
	// Seed+i.
	Seed uint64
}

// Check reports the first thing wrong with w that needs no device to see.
func (w *Workload) Check() error {
	switch {
	case w.RW < SeqRead || w.RW > RandReadWrite:
		return fmt.Errorf("unknown --rw %d", w.RW)
	case w.RWMixRead < 0 || w.RWMixRead > 100:
		return fmt.Errorf("--rwmixread %d: want 0 to 100", w.RWMixRead)
	case w.BlockSize <= 0:
		return errors.New("--bs must be positive")
	case w.BlockSize%512 != 0:
		return fmt.Errorf("--bs %d: not a multiple of 512, the smallest LBA size", w.BlockSize)
	case w.IODepth < 1 || w.IODepth > 4095:
		return fmt.Errorf("--iodepth %d: want 1 to 4095", w.IODepth)
	case w.Size < 0 || w.Offset < 0:
		return errors.New("--size and --offset must not be negative")
	case w.Size != 0 && w.Size < int64(w.BlockSize):
		return fmt.Errorf("--size %d is smaller than --bs %d", w.Size, w.BlockSize)
	case w.Offset%int64(w.BlockSize) != 0:
		return fmt.Errorf("--offset %d: not a multiple of --bs %d", w.Offset, w.BlockSize)
	case w.TimeBased && w.Runtime == 0:
		return errors.New("--time_based needs --runtime")
	case w.Completion < Poll || w.Completion > IRQ:
		return fmt.Errorf("unknown completion mode %d", w.Completion)
	}
	return nil
}
