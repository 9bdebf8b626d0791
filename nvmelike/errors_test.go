package nvmelike

import (
	"strings"
	"testing"
)

// TestStatusNames checks that statuses are named in messages, by their
// status code type and code together, and that no pair is named twice.
func TestStatusNames(t *testing.T) {
	for _, c := range []struct {
		sct, sc uint8
		want    string
	}{
		{SCTGeneric, 0x02, "(invalid field in command)"},
		{SCTCommandSpecific, 0xbc, "(zone invalid write (not at the write pointer))"},
		{SCTCommandSpecific, 0xb9, "(zone is full)"},
		{SCTMediaError, 0x87, "(deallocated or unwritten logical block)"},
		{SCTGeneric, 0x83, "(reservation conflict)"},
		{SCTMediaError, 0x83, "(end-to-end application tag check error)"},
	} {
		e := &StatusError{SCT: c.sct, SC: c.sc, DNR: true}
		if got := e.Error(); !strings.Contains(got, c.want) || !strings.HasSuffix(got, " dnr") {
			t.Errorf("sct %#x sc %#x: %q, want it to name %s", c.sct, c.sc, got, c.want)
		}
	}
	if got := (&StatusError{SCT: SCTVendor, SC: 0xc1}).Error(); got != "nvme status sct 0x7 sc 0xc1" {
		t.Errorf("an unnamed status: %q", got)
	}
	seen := map[[2]uint8]string{}
	for _, n := range statusNames {
		k := [2]uint8{n.e.SCT, n.e.SC}
		if was, ok := seen[k]; ok {
			t.Errorf("sct %#x sc %#x named twice: %q and %q", k[0], k[1], was, n.name)
		}
		seen[k] = n.name
	}
}
