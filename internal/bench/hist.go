package bench

import (
	"math"
	"math/bits"
)

// Histogram counts values (latencies in nanoseconds) in log-linear
// buckets, as HdrHistogram does: every value below 128 has a bucket of its
// own, and each power-of-two range above, [2^k, 2^(k+1)), is cut into 64
// equal buckets. A percentile is therefore exact below 128 ns and at most
// 1/64 (1.6 %) above the true value elsewhere. The buckets are a fixed
// array inside the Histogram: Record never allocates, and the zero value
// is ready to use.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64 // of all values; overflows only after ~584 years of latency
	min    uint64
	max    uint64
}

const (
	histLinear  = 128 // values below this have a bucket each
	histSubBits = 6   // each power of two above is split into 2^6 buckets
	histSub     = 1 << histSubBits
	// The top power of two is [2^63, 2^64): index 63.
	histBuckets = histLinear + (63-7+1)*histSub
)

// histIndex returns the bucket of v.
func histIndex(v uint64) int {
	if v < histLinear {
		return int(v)
	}
	k := bits.Len64(v) - 1       // v in [2^k, 2^(k+1)), k >= 7
	shift := k - histSubBits     // v>>shift in [64, 128)
	m := int(v>>shift) - histSub // 0..63
	return histLinear + (k-7)*histSub + m
}

// histBounds returns the smallest and largest value bucket i holds.
func histBounds(i int) (lo, hi uint64) {
	if i < histLinear {
		return uint64(i), uint64(i)
	}
	k := (i-histLinear)/histSub + 7
	m := uint64((i-histLinear)%histSub + histSub)
	shift := k - histSubBits
	lo = m << shift
	return lo, lo + (1 << shift) - 1
}

// Record counts one value.
func (h *Histogram) Record(v uint64) {
	h.counts[histIndex(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Reset forgets every value.
func (h *Histogram) Reset() { *h = Histogram{} }

// Count returns the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Min returns the smallest value recorded (0 for none).
func (h *Histogram) Min() uint64 { return h.min }

// Max returns the largest value recorded.
func (h *Histogram) Max() uint64 { return h.max }

// Mean returns the exact mean of the values recorded (0 for none).
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return float64(h.sum) / float64(h.n)
}

// Percentile returns the value below or at which p percent of the values
// lie: the largest value of the bucket holding the value of rank
// ceil(p/100 × count), kept within the recorded minimum and maximum. p 0
// and 100 are the exact minimum and maximum. It returns 0 when nothing
// was recorded.
func (h *Histogram) Percentile(p float64) uint64 {
	if h.n == 0 {
		return 0
	}
	if p <= 0 {
		return h.min
	}
	if p >= 100 {
		return h.max
	}
	// The epsilon keeps 99.9 % of 10,000 at rank 9,990, not 9,991 from
	// 0.999 × 10000 = 9990.000000000002.
	rank := uint64(math.Ceil(p/100*float64(h.n) - 1e-9))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := histBounds(i)
			return min(max(hi, h.min), h.max)
		}
	}
	return h.max
}
