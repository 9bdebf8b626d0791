package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/internal/cycles"
	"github.com/umdkit/umd/nvmelike"
)

func TestParseDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"2", 2 * time.Second}, {"200ms", 200 * time.Millisecond}, {"5s", 5 * time.Second},
		{"2m", 2 * time.Minute}, {"1m30s", 90 * time.Second}, {"0", 0},
	} {
		got, err := ParseDuration(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "s", "-1s", "two"} {
		if v, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", bad, v)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for in, want := range map[int64]string{512: "512 B", 4096: "4 KiB", 1536 << 10: "1.5 MiB", 1 << 30: "1 GiB"} {
		if got := FormatSize(in); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestParseRWAndCompletion(t *testing.T) {
	for i, n := range rwNames {
		rw, err := ParseRW(n)
		if err != nil || rw != RW(i) || rw.String() != n {
			t.Errorf("ParseRW(%q) = %v, %v", n, rw, err)
		}
	}
	if rw, err := ParseRW("readwrite"); err != nil || rw != SeqReadWrite {
		t.Errorf("ParseRW(readwrite) = %v, %v", rw, err)
	}
	if _, err := ParseRW("trim"); err == nil {
		t.Error("ParseRW(trim) succeeded")
	}
	for name, want := range map[string]nvmelike.DataPointer{"prp": nvmelike.DataPointerPRP, "sgl": nvmelike.DataPointerSGL, "auto": nvmelike.DataPointerAuto} {
		if d, err := ParseDataPointer(name); err != nil || d != want {
			t.Errorf("ParseDataPointer(%q) = %v, %v; want %v", name, d, err, want)
		}
	}
	if _, err := ParseDataPointer("PRP"); err == nil {
		t.Error("ParseDataPointer(PRP) succeeded")
	}
	for _, c := range []struct {
		rw                           RW
		random, mixed, reads, writes bool
	}{
		{SeqRead, false, false, true, false},
		{SeqWrite, false, false, false, true},
		{RandRead, true, false, true, false},
		{RandWrite, true, false, false, true},
		{SeqReadWrite, false, true, true, true},
		{RandReadWrite, true, true, true, true},
	} {
		if c.rw.Random() != c.random || c.rw.Mixed() != c.mixed || c.rw.Reads() != c.reads || c.rw.Writes() != c.writes {
			t.Errorf("%v: random %v mixed %v reads %v writes %v", c.rw, c.rw.Random(), c.rw.Mixed(), c.rw.Reads(), c.rw.Writes())
		}
	}
	for i, n := range completionNames {
		if m, err := ParseCompletion(n); err != nil || m != CompletionMode(i) || m.String() != n {
			t.Errorf("ParseCompletion(%q) = %v, %v", n, m, err)
		}
	}
	if _, err := ParseCompletion("spin"); err == nil {
		t.Error("ParseCompletion(spin) succeeded")
	}
}

// ClockCPU is offered only where the kernel keeps time with the TSC.
func TestClockSource(t *testing.T) {
	for _, n := range []string{"cpu", "clock_gettime"} {
		if c, err := ParseClockSource(n); err != nil || c.String() != n {
			t.Errorf("ParseClockSource(%q) = %v, %v", n, c, err)
		}
	}
	if _, err := ParseClockSource("tsc"); err == nil {
		t.Error("ParseClockSource(tsc) succeeded")
	}
	if !cycles.Native() {
		return
	}
	old := clocksourcePath
	defer func() { clocksourcePath = old }()
	clocksourcePath = filepath.Join(t.TempDir(), "current_clocksource")
	for cs, want := range map[string]ClockSource{"tsc\n": ClockCPU, "kvm-clock\n": ClockGettime, "hpet\n": ClockGettime} {
		if err := os.WriteFile(clocksourcePath, []byte(cs), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := DefaultClockSource(); got != want {
			t.Errorf("kernel clocksource %q: default %v, want %v", cs, got, want)
		}
		if err := TSCReliable(); (err == nil) != (want == ClockCPU) || err != nil && !strings.Contains(err.Error(), strings.TrimSpace(cs)) {
			t.Errorf("kernel clocksource %q: %v", cs, err)
		}
	}
}

// The counter scaled to nanoseconds: a second's ticks at a known rate is
// a second, and an hour's does not overflow.
func TestTSCClockScale(t *testing.T) {
	for _, hz := range []float64{1e9, 2.45e9, 3.9e9} {
		c := tscClock{base: 1000, mult: newTSCClock(hz).mult}
		for _, secs := range []float64{1, 60, 3600} {
			got := c.since(1000 + uint64(secs*hz))
			// 32.32 fixed point: within a part per billion.
			if want := int64(secs * 1e9); got < want-want/1e9-1 || got > want+want/1e9+1 {
				t.Errorf("%.2g Hz, %g s of ticks: %d ns, want %d", hz, secs, got, want)
			}
		}
	}
}
