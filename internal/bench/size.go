package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

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
