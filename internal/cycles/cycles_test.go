package cycles

import (
	"testing"
	"time"
)

// TestRate: the counter advances, and at the calibrated rate a 50 ms
// sleep measures 50 ms within 10 % (sleep overshoots, never undershoots).
func TestRate(t *testing.T) {
	a := Now()
	b := Now()
	if b < a {
		t.Fatalf("the counter went back: %d then %d", a, b)
	}
	h := Hz()
	if h < 1e8 || h > 1e11 {
		t.Fatalf("rate %.0f Hz", h)
	}
	t0, c0 := time.Now(), Now()
	time.Sleep(50 * time.Millisecond)
	c1, el := Now(), time.Since(t0)
	got := float64(c1-c0) / h
	if d := got - el.Seconds(); d > 0.1*el.Seconds() || d < -0.1*el.Seconds() {
		t.Fatalf("50 ms sleep: clock %v, counter %.4f s at %.0f Hz", el, got, h)
	}
}

func BenchmarkNow(b *testing.B) {
	for b.Loop() {
		Now()
	}
}
