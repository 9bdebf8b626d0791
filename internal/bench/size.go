package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseSize parses a size the way fio writes them: a number with an
// optional binary suffix, k, m, g, t or p (any case, optionally followed
// by "b" or "ib"): "4k" and "4KiB" are 4096, "1m" is 1048576, "512" is 512
// bytes. As in fio's default (kb_base=1024) every suffix is a power of
// 1024.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("size %q: empty", s)
	}
	t = strings.TrimSuffix(t, "ib")
	t = strings.TrimSuffix(t, "b")
	shift := 0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			shift = 10
		case 'm':
			shift = 20
		case 'g':
			shift = 30
		case 't':
			shift = 40
		case 'p':
			shift = 50
		}
		if shift != 0 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number with an optional k, m, g or t suffix (4k, 128k, 1m, 2g)", s)
	}
	if v > math.MaxInt64>>shift {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int64(v) << shift, nil
}

// ParseDuration parses a time the way fio does: a bare number is seconds
// ("2" is 2 s); otherwise a Go duration ("200ms", "1m30s", "5s").
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if v, err := strconv.ParseUint(t, 10, 32); err == nil {
		return time.Duration(v) * time.Second, nil
	}
	d, err := time.ParseDuration(t)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("time %q: want seconds (10) or a number with a unit (200ms, 5s, 2m)", s)
	}
	return d, nil
}

// FormatSize writes n bytes with a binary unit: "4 KiB", "1.5 MiB", "512 B".
func FormatSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if f == math.Trunc(f) {
		return fmt.Sprintf("%.0f %s", f, units[i])
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
