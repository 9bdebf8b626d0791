package pcie

import (
	"errors"
	"strings"
	"testing"
)

func TestParseBDF(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want BDF
	}{
		{"0000:03:00.0", BDF{0, 3, 0, 0}},
		{"0000:00:1f.7", BDF{0, 0, 0x1f, 7}},
		{"0001:ff:1F.3", BDF{1, 0xff, 0x1f, 3}},
		{"10000:e1:00.0", BDF{0x10000, 0xe1, 0, 0}}, // an Intel VMD domain
		{"03:00.0", BDF{0, 3, 0, 0}},
	} {
		got, err := ParseBDF(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseBDF(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseBDFErrors(t *testing.T) {
	for _, tc := range []struct {
		in, reason string
	}{
		{"", "empty"},
		{"0000:3:00.0x", `bus "3" is not two hex digits`},
		{"0000:03:00.0x", `function "0x" is not one digit from 0 to 7`},
		{"0000:03:00.8", `function "8" is not one digit from 0 to 7`},
		{"0000:03:20.0", "device 0x20 is above 0x1f"},
		{"0000:03:00", `no "." before the function number`},
		{"000:03:00.0", `domain "000" is not 4 to 8 hex digits`},
		{"0000:0g:00.0", `bus "0g" is not two hex digits`},
		{"0000:03:0.0", `device "0" is not two hex digits`},
		{"1b36:0010", `no "." before the function number`},
		{"0:0:0:00.0", "want two or three"},
		{" 0000:03:00.0", `domain " 0000" is not 4 to 8 hex digits`},
	} {
		_, err := ParseBDF(tc.in)
		var be *BDFError
		if !errors.As(err, &be) || !errors.Is(err, ErrBadBDF) {
			t.Errorf("ParseBDF(%q) error = %v; want a *BDFError wrapping ErrBadBDF", tc.in, err)
			continue
		}
		if !strings.Contains(be.Reason, tc.reason) {
			t.Errorf("ParseBDF(%q) reason = %q; want it to contain %q", tc.in, be.Reason, tc.reason)
		}
		if !strings.Contains(err.Error(), "0000:03:00.0") {
			t.Errorf("ParseBDF(%q) error %q does not show an example", tc.in, err)
		}
	}
}

func TestBDFFormsAndOrder(t *testing.T) {
	b := BDF{Domain: 0, Bus: 0x3a, Device: 0x1c, Function: 4}
	if got := b.String(); got != "0000:3a:1c.4" {
		t.Errorf("String = %q", got)
	}
	if got := b.Short(); got != "3a:1c.4" {
		t.Errorf("Short = %q", got)
	}
	if got := b.Slot(); got != "0000:3a:1c" {
		t.Errorf("Slot = %q", got)
	}
	order := []string{"0000:00:1f.7", "0000:01:00.0", "0000:01:00.1", "0000:01:01.0", "0001:00:00.0"}
	for i := 1; i < len(order); i++ {
		a, _ := ParseBDF(order[i-1])
		c, _ := ParseBDF(order[i])
		if a.Compare(c) != -1 || c.Compare(a) != 1 || a.Compare(a) != 0 {
			t.Errorf("Compare(%v, %v) is not ordered", a, c)
		}
	}
	var u BDF
	if err := u.UnmarshalText([]byte("0000:03:00.1")); err != nil || u != (BDF{0, 3, 0, 1}) {
		t.Errorf("UnmarshalText = %v, %v", u, err)
	}
}

func FuzzParseBDF(f *testing.F) {
	for _, s := range []string{"0000:03:00.0", "03:00.0", "0000:3:00.0x", "10000:e1:00.0", "::.", "0000:03:00."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBDF(s)
		if err != nil {
			return
		}
		// Whatever parses prints back to something that parses to
		// the same address.
		again, err := ParseBDF(b.String())
		if err != nil || again != b {
			t.Fatalf("%q parsed to %v, which re-parses to %v, %v", s, b, again, err)
		}
	})
}
