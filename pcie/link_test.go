package pcie

import (
	"math"
	"testing"
)

func TestParseLinkSpeed(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want LinkSpeed
	}{
		{"2.5 GT/s PCIe", 2500},
		{"5.0 GT/s PCIe", 5000},
		{"8.0 GT/s PCIe\n", 8000},
		{"16.0 GT/s PCIe", 16000},
		{"32.0 GT/s PCIe", 32000},
		{"64.0 GT/s PCIe", 64000},
		{"8 GT/s", 8000}, // kernels before 4.20
		{"5 GT/s", 5000},
		{"Unknown", 0},
		{"Unknown speed", 0},
		{"", 0},
	} {
		got, err := ParseLinkSpeed(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseLinkSpeed(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"fast", "8.0 Gb/s", "-1 GT/s", "1e9 GT/s", "GT/s"} {
		if _, err := ParseLinkSpeed(bad); err == nil {
			t.Errorf("ParseLinkSpeed(%q) succeeded", bad)
		}
	}
}

func TestLinkSpeedForms(t *testing.T) {
	if s := LinkSpeed(2500).String(); s != "2.5 GT/s" {
		t.Errorf("String = %q", s)
	}
	if s := LinkSpeed(0).String(); s != "unknown" {
		t.Errorf("String(0) = %q", s)
	}
	if g := LinkSpeed(16000).Gen(); g != 4 {
		t.Errorf("Gen = %d", g)
	}
}

func TestLinkBandwidthAndState(t *testing.T) {
	// Gen3 x4: 8 GT/s * 4 lanes * 128/130 / 8 bits = 3.94 GB/s.
	l := Link{Speed: 8000, Width: 4, MaxSpeed: 8000, MaxWidth: 4}
	if bw := l.Bandwidth(); math.Abs(bw-3.938) > 0.01 {
		t.Errorf("Gen3 x4 bandwidth = %.3f GB/s", bw)
	}
	// Gen1 x1 with 8b/10b: 0.25 GB/s.
	if bw := (Link{Speed: 2500, Width: 1}).Bandwidth(); math.Abs(bw-0.25) > 0.001 {
		t.Errorf("Gen1 x1 bandwidth = %.3f GB/s", bw)
	}
	for _, tc := range []struct {
		link             Link
		peerSpeed        LinkSpeed
		peerWidth        int
		degraded         bool
		text             string
		degradedTextWhen bool
	}{
		{Link{Speed: 8000, Width: 4, MaxSpeed: 8000, MaxWidth: 4}, 0, 0, false, "8.0 GT/s x4", false},
		{Link{Speed: 2500, Width: 1, MaxSpeed: 8000, MaxWidth: 4}, 0, 0, true, "2.5 GT/s x1 (degraded, capable of 8.0 GT/s x4)", true},
		// A x4 device in a x16 slot at x4 runs as well as it can.
		{Link{Speed: 8000, Width: 4, MaxSpeed: 16000, MaxWidth: 16}, 8000, 4, false, "8.0 GT/s x4", false},
		// The same device trained at x2: degraded.
		{Link{Speed: 8000, Width: 2, MaxSpeed: 16000, MaxWidth: 16}, 8000, 4, true, "", false},
		// Down is down, not degraded.
		{Link{Speed: 0, Width: 0, MaxSpeed: 16000, MaxWidth: 16}, 0, 0, false, "down", false},
	} {
		if got := tc.link.degradedAgainst(tc.peerSpeed, tc.peerWidth); got != tc.degraded {
			t.Errorf("%+v against %v x%d: degraded = %v", tc.link, tc.peerSpeed, tc.peerWidth, got)
		}
		l := tc.link
		l.Degraded = tc.degradedTextWhen
		if tc.text != "" && l.String() != tc.text {
			t.Errorf("String = %q; want %q", l.String(), tc.text)
		}
	}
	if s := (Link{}).String(); s != "unknown" {
		t.Errorf("zero Link = %q", s)
	}
}
