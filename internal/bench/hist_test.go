package bench

import (
	"math/rand/v2"
	"sort"
	"testing"
)

// TestHistogramBuckets checks the bucket layout: every bucket's bounds map
// back to it, buckets tile the values without gaps, and the width stays
// within 1/64 of the value.
func TestHistogramBuckets(t *testing.T) {
	var next uint64
	for i := range histBuckets {
		lo, hi := histBounds(i)
		if lo != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, lo, next)
		}
		if histIndex(lo) != i || histIndex(hi) != i {
			t.Fatalf("bucket %d [%d, %d]: index of bounds %d, %d", i, lo, hi, histIndex(lo), histIndex(hi))
		}
		if lo >= histLinear && float64(hi-lo+1)/float64(lo) > 1.0/64+1e-12 {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/64 of its value", i, lo, hi)
		}
		next = hi + 1
		if hi == ^uint64(0) {
			if i != histBuckets-1 {
				t.Fatalf("bucket %d reaches 2^64-1 before the last one", i)
			}
		}
	}
	if next != 0 { // wrapped past 2^64-1
		t.Fatalf("the buckets end at %d, not at 2^64-1", next-1)
	}
}

// TestHistogramExact: on values below 128 every percentile is exact.
func TestHistogramExact(t *testing.T) {
	var h Histogram
	for v := uint64(1); v <= 100; v++ {
		h.Record(v)
	}
	for _, c := range []struct {
		p    float64
		want uint64
	}{{0, 1}, {1, 1}, {50, 50}, {90, 90}, {99, 99}, {99.9, 100}, {99.99, 100}, {100, 100}} {
		if got := h.Percentile(c.p); got != c.want {
			t.Errorf("p%g of 1..100 = %d, want %d", c.p, got, c.want)
		}
	}
	if h.Min() != 1 || h.Max() != 100 || h.Mean() != 50.5 || h.Count() != 100 {
		t.Errorf("min %d max %d mean %g count %d", h.Min(), h.Max(), h.Mean(), h.Count())
	}
}

// TestHistogramKnown checks a latency-like distribution: 9,990 I/Os at 10
// µs, 9 at 1 ms and one at 50 ms. Bucket boundaries hold the values
// exactly: 10,000 ns is a bucket's top only by chance, so the percentile
// is the bucket's top, within 1/64 above.
func TestHistogramKnown(t *testing.T) {
	var h Histogram
	for range 9990 {
		h.Record(10_000)
	}
	for range 9 {
		h.Record(1_000_000)
	}
	h.Record(50_000_000)
	within := func(got, want uint64) bool { return got >= want && float64(got-want) <= float64(want)/64 }
	for _, c := range []struct {
		p    float64
		want uint64
	}{{50, 10_000}, {99, 10_000}, {99.9, 10_000}, {99.95, 1_000_000}, {99.99, 1_000_000}, {100, 50_000_000}} {
		if got := h.Percentile(c.p); !within(got, c.want) {
			t.Errorf("p%g = %d, want %d (+1/64)", c.p, got, c.want)
		}
	}
	// The minimum and maximum clamp the bucket tops: exact.
	if h.Percentile(0) != 10_000 || h.Percentile(100) != 50_000_000 {
		t.Errorf("p0 %d p100 %d, want the exact minimum and maximum", h.Percentile(0), h.Percentile(100))
	}
}

// TestHistogramRandom compares percentiles with the sorted values.
func TestHistogramRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	vals := make([]uint64, 100_000)
	for i := range vals {
		vals[i] = uint64(rng.ExpFloat64()*20_000) + 500
		h.Record(vals[i])
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	for _, p := range []float64{1, 50, 90, 99, 99.9, 99.99} {
		rank := int(float64(len(vals))*p/100+0.999999) - 1
		want := vals[rank]
		got := h.Percentile(p)
		if got < want || float64(got-want) > float64(want)/64 {
			t.Errorf("p%g = %d, the sorted values say %d", p, got, want)
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	for v := uint64(0); v < 1000; v += 7 {
		a.Record(v * 100)
		all.Record(v * 100)
	}
	for v := uint64(3); v < 5000; v += 13 {
		b.Record(v * 90)
		all.Record(v * 90)
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&Histogram{})
	if m != all {
		t.Errorf("merged histogram differs from one that recorded everything")
	}
	m.Reset()
	if m.Count() != 0 || m.Percentile(50) != 0 || m.Mean() != 0 {
		t.Error("Reset left values behind")
	}
}

func TestHistogramRecordAllocs(t *testing.T) {
	var h Histogram
	v := uint64(1)
	if n := testing.AllocsPerRun(1000, func() {
		h.Record(v)
		v = v*3 + 1
		_ = h.Percentile(99.9)
	}); n != 0 {
		t.Errorf("Record and Percentile allocate %g times per call", n)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	v := uint64(12345)
	for b.Loop() {
		h.Record(v)
		v += 977
	}
}
