package bench

import "time"

// Timeline counts completions per interval of a job's measured window,
// for the IOPS-over-time plot. Its slots are a fixed array inside the
// Timeline, so Record never allocates: when a completion falls past the
// last slot, neighbouring slots are merged in pairs and the interval
// doubles, so any run fits (a long run just gets coarser points). The
// zero value is ready to use and starts at TimelineInterval.
type Timeline struct {
	counts   [timelineSlots]uint64
	used     int   // slots up to the last one written
	interval int64 // ns per slot; 0 until the first Record
}

const timelineSlots = 512

// TimelineInterval is a timeline's first interval: 100 ms gives 100
// points over a 10 s run; longer runs coarsen it by powers of two.
const TimelineInterval = 100 * time.Millisecond

// Record counts one completion at ns nanoseconds into the measured window
// (negative values count in the first slot).
func (t *Timeline) Record(ns int64) {
	if t.interval == 0 {
		t.interval = int64(TimelineInterval)
	}
	i := max(ns, 0) / t.interval
	for i >= timelineSlots {
		t.coarsen()
		i /= 2
	}
	t.counts[i]++
	t.used = max(t.used, int(i)+1)
}

// coarsen merges slots in pairs and doubles the interval.
func (t *Timeline) coarsen() {
	for k := 0; k < timelineSlots/2; k++ {
		t.counts[k] = t.counts[2*k] + t.counts[2*k+1]
	}
	clear(t.counts[timelineSlots/2:])
	t.used = (t.used + 1) / 2
	t.interval *= 2
}

// Interval returns the time each slot covers (TimelineInterval before
// anything was recorded).
func (t *Timeline) Interval() time.Duration {
	if t.interval == 0 {
		return TimelineInterval
	}
	return time.Duration(t.interval)
}

// Counts returns the completions per interval, from the start of the
// measured window to the last interval with any. The slice aliases the
// Timeline.
func (t *Timeline) Counts() []uint64 { return t.counts[:t.used] }

// Merge adds o's counts to t, coarsening whichever has the shorter
// interval to the other's first.
func (t *Timeline) Merge(o *Timeline) {
	if o.used == 0 {
		return
	}
	src := *o
	if t.interval == 0 {
		t.interval = src.interval
	}
	for t.interval < src.interval {
		t.coarsen()
	}
	for src.interval < t.interval {
		src.coarsen()
	}
	for i, c := range src.counts[:src.used] {
		t.counts[i] += c
	}
	t.used = max(t.used, src.used)
}

// Rates returns the I/Os per second of each interval. The last interval
// is divided by the part of it the window covered (window, when positive
// and within it), so a run that ends mid-interval shows no false drop;
// when that part is under half an interval it is left out: the few I/Os
// that complete there (those in flight at the deadline) over a sliver of
// time make a rate that means nothing.
func (t *Timeline) Rates(window time.Duration) []float64 {
	c := t.Counts()
	iv := t.Interval()
	if n := len(c); n > 0 {
		if rest := window - time.Duration(n-1)*iv; rest > 0 && rest < iv/2 {
			c = c[:n-1]
		}
	}
	r := make([]float64, len(c))
	for i, n := range c {
		d := iv
		if i == len(c)-1 {
			if rest := window - time.Duration(i)*iv; rest > 0 && rest < iv {
				d = rest
			}
		}
		r[i] = float64(n) / d.Seconds()
	}
	return r
}
