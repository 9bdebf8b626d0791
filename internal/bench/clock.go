package bench

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"strings"

	"github.com/umdkit/umd/internal/cycles"
)

// ClockSource is what a job reads for its per-I/O timestamps, with fio's
// names (--clocksource).
type ClockSource int

const (
	// ClockGettime is the kernel's monotonic clock (through the vDSO):
	// about 20 ns a reading on a host with a TSC clocksource, 0.2 µs in a
	// TCG guest, more where the vDSO falls back to a system call.
	ClockGettime ClockSource = iota
	// ClockCPU is the CPU's time-stamp counter, read with RDTSC and
	// scaled to nanoseconds at the rate calibrated against the monotonic
	// clock: a few ns a reading. Only where the kernel itself keeps time
	// with the TSC (TSCReliable), which is its verdict that the counter
	// runs at a constant rate and in step on every CPU.
	ClockCPU
)

var clockNames = []string{"clock_gettime", "cpu"}

func (c ClockSource) String() string {
	if c >= 0 && int(c) < len(clockNames) {
		return clockNames[c]
	}
	return fmt.Sprintf("ClockSource(%d)", int(c))
}

// ParseClockSource parses --clocksource: cpu or clock_gettime.
func ParseClockSource(s string) (ClockSource, error) {
	for i, n := range clockNames {
		if s == n {
			return ClockSource(i), nil
		}
	}
	return 0, fmt.Errorf("--clocksource %q: want cpu or clock_gettime", s)
}

// clocksourcePath is where the kernel names the clocksource it keeps time
// with; a variable for tests.
var clocksourcePath = "/sys/devices/system/clocksource/clocksource0/current_clocksource"

// TSCReliable reports whether ClockCPU may be used here: the counter is
// the CPU's (amd64) and the kernel keeps time with it. The error says why
// not.
func TSCReliable() error {
	if !cycles.Native() {
		return errors.New("this architecture has no time-stamp counter umdbench reads")
	}
	b, err := os.ReadFile(clocksourcePath)
	if err != nil {
		return fmt.Errorf("reading the kernel's clocksource: %w", err)
	}
	if cs := strings.TrimSpace(string(b)); cs != "tsc" {
		return fmt.Errorf("the kernel keeps time with %s, not the TSC, so the counter may not run in step across CPUs", cs)
	}
	return nil
}

// DefaultClockSource is fio's choice: the CPU's counter where it is
// reliable, the monotonic clock otherwise.
func DefaultClockSource() ClockSource {
	if TSCReliable() == nil {
		return ClockCPU
	}
	return ClockGettime
}

// tscClock turns counter readings into nanoseconds since a base reading:
// ns = (ticks - base) × mult / 2^32, a 64×64-bit multiply.
type tscClock struct {
	base uint64
	mult uint64 // nanoseconds per tick, 32.32 fixed point
}

func newTSCClock(hz float64) tscClock {
	return tscClock{base: cycles.Now(), mult: uint64(math.Round(1e9 / hz * (1 << 32)))}
}

// since returns the nanoseconds from the base reading to now, a reading.
func (c *tscClock) since(now uint64) int64 {
	hi, lo := bits.Mul64(now-c.base, c.mult)
	return int64(hi<<32 | lo>>32)
}

// elapsed returns the nanoseconds since the base reading.
func (c *tscClock) elapsed() int64 { return c.since(cycles.Now()) }
