package size

import "testing"

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"512", 512}, {"4k", 4096}, {"4K", 4096}, {"4kb", 4096}, {"4KiB", 4096}, {"4KIB", 4096},
		{"128k", 128 << 10}, {"1m", 1 << 20}, {"1M", 1 << 20}, {"2MB", 2 << 20}, {"2g", 2 << 30},
		{"2GiB", 2 << 30}, {"1t", 1 << 40}, {"1P", 1 << 50}, {" 64m ", 64 << 20}, {"0", 0},
		{"8191p", 8191 << 50},
	} {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for bad, msg := range map[string]string{
		"":             `size "": empty`,
		"k":            `size "k": want a number with an optional k, m, g or t suffix (4k, 128k, 1m, 2g)`,
		"4x":           `size "4x": want a number with an optional k, m, g or t suffix (4k, 128k, 1m, 2g)`,
		"-1":           `size "-1": want a number with an optional k, m, g or t suffix (4k, 128k, 1m, 2g)`,
		"1.5m":         `size "1.5m": want a number with an optional k, m, g or t suffix (4k, 128k, 1m, 2g)`,
		"4kk":          `size "4kk": want a number with an optional k, m, g or t suffix (4k, 128k, 1m, 2g)`,
		"4 k":          `size "4 k": want a number with an optional k, m, g or t suffix (4k, 128k, 1m, 2g)`,
		"99999999999t": `size "99999999999t": too large`,
		"8192p":        `size "8192p": too large`,
	} {
		if v, err := Parse(bad); err == nil || err.Error() != msg {
			t.Errorf("Parse(%q) = %d, %v; want the error %q", bad, v, err, msg)
		}
	}
}

func TestExact(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0 bytes", 512: "512 bytes", 4096: "4 KiB", 1536 << 10: "1536 KiB",
		2 << 20: "2 MiB", 3 << 30: "3 GiB", 1 << 40: "1 TiB", 1<<20 + 1: "1048577 bytes",
	} {
		if got := Exact(n); got != want {
			t.Errorf("Exact(%d) = %q, want %q", n, got, want)
		}
	}
}
