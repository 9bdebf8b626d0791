// Package size parses byte counts as umd's commands take them on their
// command lines: a number with an optional binary suffix.
package size

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Parse parses a size the way fio writes them: a whole number with an
// optional binary suffix, k, m, g, t or p (any case, optionally followed
// by "b" or "ib"): "4k", "4K", "4kb" and "4KiB" are 4096, "1m" is 1048576,
// "512" is 512 bytes. As in fio's default (kb_base=1024) every suffix is a
// power of 1024. Space around the size is ignored; 0 is a size. Callers
// check the range they take.
func Parse(s string) (int64, error) {
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

// Exact writes n in the largest binary unit that divides it exactly:
// "4 KiB", "2 MiB", "1536 KiB", "1 TiB"; "N bytes" when no unit does.
func Exact(n uint64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
