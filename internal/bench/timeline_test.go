package bench

import (
	"testing"
	"time"
)

func TestTimelineRecord(t *testing.T) {
	var tl Timeline
	ms := int64(time.Millisecond)
	for _, at := range []int64{0, 50 * ms, 99 * ms, 100 * ms, 350 * ms, -5} {
		tl.Record(at)
	}
	want := []uint64{4, 1, 0, 1}
	got := tl.Counts()
	if len(got) != len(want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("counts %v, want %v", got, want)
		}
	}
	// The last interval covers 50 ms of a 350 ms window: 1 I/O in 50 ms.
	r := tl.Rates(350 * time.Millisecond)
	if r[0] != 40 || r[3] != 20 {
		t.Errorf("rates %v, want 40 first and 20 last", r)
	}
	// A last interval covered for 10 ms only is left out.
	if r := tl.Rates(310 * time.Millisecond); len(r) != 3 || r[2] != 0 {
		t.Errorf("rates over 310 ms: %v, want 3 intervals", r)
	}
}

func TestTimelineCoarsens(t *testing.T) {
	var tl Timeline
	iv := int64(TimelineInterval)
	for i := int64(0); i < timelineSlots; i++ {
		tl.Record(i * iv)
	}
	if tl.Interval() != TimelineInterval || len(tl.Counts()) != timelineSlots {
		t.Fatalf("interval %v, %d slots before overflow", tl.Interval(), len(tl.Counts()))
	}
	tl.Record(timelineSlots * iv) // one past the end: pairs merge
	if tl.Interval() != 2*TimelineInterval {
		t.Fatalf("interval %v after overflow, want %v", tl.Interval(), 2*TimelineInterval)
	}
	c := tl.Counts()
	if len(c) != timelineSlots/2+1 || c[0] != 2 || c[timelineSlots/2] != 1 {
		t.Fatalf("after coarsening: %d slots, first %d, last %d", len(c), c[0], c[len(c)-1])
	}
	var sum uint64
	for _, n := range c {
		sum += n
	}
	if sum != timelineSlots+1 {
		t.Errorf("%d completions kept, want %d", sum, timelineSlots+1)
	}
}

func TestTimelineMerge(t *testing.T) {
	var a, b, m Timeline
	a.Record(0)
	b.Record(0)
	b.Record(int64(timelineSlots) * int64(TimelineInterval)) // b coarsens once
	m.Merge(&a)
	m.Merge(&b)
	if m.Interval() != 2*TimelineInterval {
		t.Fatalf("merged interval %v, want the coarser %v", m.Interval(), 2*TimelineInterval)
	}
	if c := m.Counts(); c[0] != 2 || c[len(c)-1] != 1 {
		t.Errorf("merged counts start %d end %d, want 2 and 1", c[0], c[len(c)-1])
	}
}

func TestTimelineRecordDoesNotAllocate(t *testing.T) {
	var tl Timeline
	at := int64(0)
	if n := testing.AllocsPerRun(1000, func() {
		at += int64(time.Second) // forces coarsening now and then
		tl.Record(at)
	}); n != 0 {
		t.Errorf("Record: %g allocations", n)
	}
}
