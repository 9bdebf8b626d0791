package bench

import (
	"errors"
	"strings"
	"testing"
)

func TestVerifyBlock(t *testing.T) {
	for _, size := range []int{512, 4096} {
		b := make([]byte, size)
		StampBlock(b, 12345, 7)
		if field, _, _, ok := CheckBlock(b, 12345, 7); !ok {
			t.Fatalf("%d-byte block: fresh stamp fails on %s", size, field)
		}
		other := make([]byte, size)
		StampBlock(other, 12346, 7)
		if string(other[24:]) == string(b[24:]) {
			t.Error("two LBAs carry the same pattern")
		}
		StampBlock(other, 12345, 8)
		if string(other[24:]) == string(b[24:]) {
			t.Error("two passes carry the same pattern")
		}
		for _, c := range []struct {
			name      string
			lba       uint64
			pass      uint32
			corrupt   func([]byte)
			field     string
			exp, seen uint64
		}{
			{"other LBA", 99, 7, nil, "LBA", 99, 12345},
			{"other pass", 12345, 8, nil, "pass", 8, 7},
			{"zeros", 12345, 7, func(b []byte) { clear(b) }, "magic", VerifyMagic, 0},
			{"flipped data bit", 12345, 7, func(b []byte) { b[size-1] ^= 1 }, "checksum", 0, 0},
			{"flipped header bit", 12345, 7, func(b []byte) { b[19] ^= 0x80 }, "pass", 7, 7 | 0x80<<24},
		} {
			blk := append([]byte(nil), b...)
			if c.corrupt != nil {
				c.corrupt(blk)
			}
			field, exp, found, ok := CheckBlock(blk, c.lba, c.pass)
			if ok || field != c.field {
				t.Errorf("%s: field %q ok %v, want %q", c.name, field, ok, c.field)
				continue
			}
			if c.field != "checksum" && (exp != c.exp || found != c.seen) {
				t.Errorf("%s: expected %d found %d, want %d and %d", c.name, exp, found, c.exp, c.seen)
			}
			if c.field == "checksum" && exp == found {
				t.Errorf("%s: checksum expected and found are both 0x%x", c.name, exp)
			}
		}
	}
}

func TestVerifyErrorMessage(t *testing.T) {
	var err error = &VerifyError{Device: "0000:03:00.0", NSID: 1, LBA: 4242, Field: "pass", Expected: 2, Found: 1}
	msg := err.Error()
	for _, want := range []string{"0000:03:00.0", "namespace 1", "LBA 4242", "pass expected 2, found 1"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.LBA != 4242 {
		t.Error("errors.As does not find the *VerifyError")
	}
	msg = (&VerifyError{Device: "sim", NSID: 1, LBA: 8, Field: "checksum", Expected: 0xabc, Found: 0xdef}).Error()
	if !strings.Contains(msg, "LBA 8") || !strings.Contains(msg, "0x00000abc") || !strings.Contains(msg, "0x00000def") {
		t.Errorf("checksum message %q lacks LBA, expected or found", msg)
	}
}

func TestVerifyAllocs(t *testing.T) {
	b := make([]byte, 4096)
	if n := testing.AllocsPerRun(100, func() {
		StampBlock(b, 1, 2)
		CheckBlock(b, 1, 2)
	}); n != 0 {
		t.Errorf("StampBlock+CheckBlock allocate %g times", n)
	}
}
