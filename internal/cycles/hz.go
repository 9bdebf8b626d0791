package cycles

import (
	"sync"
	"time"
)

var hz = sync.OnceValue(func() float64 {
	if !native {
		return 1e9
	}
	// Three 10 ms windows; the fastest rate seen is the least disturbed
	// by preemption between the two readings of each end.
	best := 0.0
	for range 3 {
		t0, c0 := time.Now(), Now()
		time.Sleep(10 * time.Millisecond)
		c1, t1 := Now(), time.Now()
		if r := float64(c1-c0) / t1.Sub(t0).Seconds(); r > best {
			best = r
		}
	}
	return best
})

// Hz returns the counter's rate in ticks per second, calibrated against
// the monotonic clock the first time (about 30 ms); 1e9 where Now falls
// back to the clock.
func Hz() float64 { return hz() }

// Native reports whether Now reads the CPU's counter (amd64) rather than
// the clock.
func Native() bool { return native }
