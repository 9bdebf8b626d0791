//go:build guest

package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/umdkit/umd/qemu/guest"
)

// TestGuestProbe runs umdprobe on the guest's real /sys: the tree, the
// JSON list, and a malformed selector.
func TestGuestProbe(t *testing.T) {
	guest.Require(t)
	want := map[string]struct{ switchCards, deviceCards, nvme int }{
		"single": {0, 0, 1},
		"cards":  {2, 1, 5},
		"numa":   {0, 4, 4},
		"sriov":  {0, 1, 1}, // VFs disabled
		"quirks": {0, 6, 6},
	}
	w, ok := want[guest.Topology()]
	if !ok {
		t.Fatalf("unknown topology %q", guest.Topology())
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"-t", "class=nvme"}, &out, &errOut); code != exitOK {
		t.Fatalf("umdprobe -t: exit %d: %s", code, errOut.String())
	}
	tree := out.String()
	t.Logf("umdprobe -t class=nvme:\n%s", tree)
	if n := strings.Count(tree, "(switch, 2 endpoints)"); n != w.switchCards {
		t.Errorf("%d switch cards with two endpoints in the tree; want %d", n, w.switchCards)
	}
	if n := strings.Count(tree, "(device, 1 endpoint)"); n != w.deviceCards {
		t.Errorf("%d single-device cards in the tree; want %d", n, w.deviceCards)
	}

	out.Reset()
	if code := run([]string{"class=nvme", "-o", "json"}, &out, &errOut); code != exitOK {
		t.Fatalf("umdprobe -o json: exit %d: %s", code, errOut.String())
	}
	var doc struct {
		Schema    string
		Functions []struct {
			Driver     string `json:"driver"`
			IOMMUGroup int    `json:"iommu_group"`
		}
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Schema != schemaList || len(doc.Functions) != w.nvme {
		t.Errorf("JSON: schema %q, %d functions; want %d", doc.Schema, len(doc.Functions), w.nvme)
	}
	for _, f := range doc.Functions {
		if f.IOMMUGroup < 0 || f.Driver == "" {
			t.Errorf("JSON function without group or driver: %+v", f)
		}
	}

	out.Reset()
	errOut.Reset()
	if code := run([]string{"0000:3:00.0x"}, &out, &errOut); code != exitUsage || out.Len() != 0 ||
		!strings.Contains(errOut.String(), `bad selector "0000:3:00.0x": bus "3" is not two hex digits`) {
		t.Errorf("bad address: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}
