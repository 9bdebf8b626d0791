package vfio

import (
	"regexp"
	"testing"
)

func TestVFTokenString(t *testing.T) {
	tok := VFToken{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x80, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07}
	if got, want := tok.String(), "12345678-9abc-4def-8001-020304050607"; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	if got := (VFToken{}).String(); got != "00000000-0000-0000-0000-000000000000" {
		t.Errorf("nil token: %s", got)
	}
}

func TestNewVFToken(t *testing.T) {
	a, err := NewVFToken()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewVFToken()
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Errorf("two random tokens are equal: %s", a)
	}
	v4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	if !v4.MatchString(a.String()) {
		t.Errorf("%s is not a version 4 UUID", a)
	}
}

func TestDeviceNameWithVFToken(t *testing.T) {
	const bdf = "0000:01:00.1"
	if got := deviceName(bdf); got != bdf {
		t.Errorf("no token: %q", got)
	}
	tok := VFToken{15: 1}
	if err := UseVFToken(bdf, tok); err != nil {
		t.Fatal(err)
	}
	if got, want := deviceName(bdf), bdf+" vf_token=00000000-0000-0000-0000-000000000001"; got != want {
		t.Errorf("with token: %q, want %q", got, want)
	}
	if got := deviceName("0000:01:00.2"); got != "0000:01:00.2" {
		t.Errorf("other device: %q", got)
	}
	ForgetVFToken(bdf)
	if got := deviceName(bdf); got != bdf {
		t.Errorf("after ForgetVFToken: %q", got)
	}
	if err := UseVFToken("01:00.1", tok); err == nil {
		t.Error("a BDF without domain accepted")
	}
}

func TestParseVFToken(t *testing.T) {
	tok, err := NewVFToken()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseVFToken(tok.String())
	if err != nil || got != tok {
		t.Errorf("round trip of %s: %s, %v", tok, got, err)
	}
	if got, err := ParseVFToken("12345678-9ABC-4DEF-8001-020304050607"); err != nil || got.String() != "12345678-9abc-4def-8001-020304050607" {
		t.Errorf("upper case: %s, %v", got, err)
	}
	for _, bad := range []string{"", "12345678-9abc-4def-8001-02030405060", "12345678-9abc-4def-8001_020304050607", "1234567g-9abc-4def-8001-020304050607", "123456789abc4def8001020304050607"} {
		if _, err := ParseVFToken(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
