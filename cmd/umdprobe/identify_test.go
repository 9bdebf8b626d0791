package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
	"github.com/umdkit/umd/pcie/pcietest"
)

// fakeControllers makes identify open software controllers instead of
// VFIO devices, and records which functions it opened and closed.
func fakeControllers(t *testing.T, fail map[string]error) *[]string {
	t.Helper()
	var seen []string
	old := openController
	t.Cleanup(func() { openController = old })
	openController = func(ctx context.Context, bdf string) (*opened, error) {
		if err := fail[bdf]; err != nil {
			return nil, err
		}
		mem := sim.NewMemory()
		dev := sim.New(mem, sim.Config{MDTS: 5, DoorbellBufferConfig: true, Namespaces: []sim.NamespaceConfig{{Blocks: 2048}, {Blocks: 1024, LBASize: 4096}}})
		ctrl, err := nvmelike.Open(ctx, dev, mem, nil)
		if err != nil {
			return nil, err
		}
		seen = append(seen, bdf)
		return &opened{ctrl: ctrl, pageSize: 4096, fallback: errors.New("no free 2 MiB hugepages"), close: ctrl.Close}, nil
	}
	return &seen
}

func TestIdentify(t *testing.T) {
	tr := pcietest.Sample(t)
	opened := fakeControllers(t, nil)
	code, out, errOut := probe(t, tr.Root, "identify")
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	// With no selector: every NVMe controller on vfio-pci, not 07:00.0
	// (on nvme).
	want := "0000:03:00.0 0000:04:00.0 0000:08:00.0 0000:09:00.0 0000:81:00.0"
	if got := strings.Join(*opened, " "); got != want {
		t.Errorf("opened %s; want %s", got, want)
	}
	for _, s := range []string{
		"0000:03:00.0  umd software controller\n",
		"  serial            UMDSIM0001\n",
		"  max transfer      128 KiB (MDTS 5); the engine uses 128 KiB\n",
		"  namespaces        2 active of 2 (NN)\n",
		"  NVM commands      compare, dataset management, write zeroes (ONCS 0x000d)\n",
		"  admin commands    doorbell buffer config (OACS 0x0100)\n",
		"  shadow doorbells  supported (doorbell buffer config)\n",
		"  DMA pool          4 KiB pages (no hugepages: fell back to small pages)\n",
		"  namespace 1       2048 blocks of 512 bytes = 1 MiB (1048576 bytes)\n",
		"  namespace 2       1024 blocks of 4096 bytes = 4 MiB (4194304 bytes)\n",
		"    formats         #0 512 B, #1 4096 B (in use)\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}

	code, out, _ = probe(t, tr.Root, "identify", "03:00.0", "-o", "json")
	if code != exitOK {
		t.Fatalf("json: exit %d", code)
	}
	var doc identifyDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Schema != schemaIdentify || len(doc.Controllers) != 1 || len(doc.Errors) != 0 {
		t.Fatalf("schema %q, %d controllers, errors %v", doc.Schema, len(doc.Controllers), doc.Errors)
	}
	c := doc.Controllers[0]
	if c.BDF != "0000:03:00.0" || c.VendorID != "1b36" || c.Serial != "UMDSIM0001" || c.MaxTransfer != 128<<10 ||
		!c.ShadowDoorbells || len(c.Namespaces) != 2 || c.Namespaces[1].Bytes != 4<<20 || c.Namespaces[1].LBASize != 4096 ||
		c.PoolFallback == "" {
		t.Errorf("controller %+v", c)
	}
	if !strings.Contains(out, `"oncs_features": [`) || !strings.Contains(out, `"formats": [`) {
		t.Errorf("JSON lacks members:\n%s", out)
	}
}

func TestIdentifyErrors(t *testing.T) {
	tr := pcietest.Sample(t)
	fakeControllers(t, map[string]error{"0000:09:00.0": errors.New("opening 0000:09:00.0: no such group")})
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr []string
	}{
		{[]string{"identify", "07:00.0"}, exitFailure, "",
			[]string{"umdprobe: 0000:07:00.0 is bound to nvme, not vfio-pci: run `umdprobe bind 0000:07:00.0` first\n"}},
		{[]string{"identify", "0a:02.1"}, exitFailure, "",
			[]string{"umdprobe: 0000:0a:02.1 is not an NVMe controller (class 0x020000"}},
		// The others are still shown; the failure is one line each.
		{[]string{"identify", "09:00.0,07:00.0,03:00.0"}, exitFailure, "0000:03:00.0  umd software controller",
			[]string{"umdprobe: 0000:07:00.0 is bound to nvme", "umdprobe: opening 0000:09:00.0: no such group\n"}},
		// card=... picks the switch ports too: they are skipped.
		{[]string{"identify", "card=0000:01:00.0"}, exitOK, "0000:04:00.0  umd software controller", nil},
		{[]string{"identify", "1234:5678"}, exitNoMatch, "", []string{`no PCI function matches "1234:5678"`}},
		{[]string{"identify", "--duration", "1s"}, exitUsage, "", []string{"--duration is for trace, not identify"}},
	} {
		code, out, errOut := probe(t, tr.Root, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.stdout) || (tc.stdout == "" && out != "") {
			t.Errorf("%q: exit %d, stdout %q; want exit %d and %q", tc.args, code, out, tc.code, tc.stdout)
		}
		for _, s := range tc.stderr {
			if !strings.Contains(errOut, s) {
				t.Errorf("%q: stderr %q lacks %q", tc.args, errOut, s)
			}
		}
		if lines := strings.Count(errOut, "\n"); lines > len(tc.stderr)+1 {
			t.Errorf("%q: %d lines of errors:\n%s", tc.args, lines, errOut)
		}
	}

	// JSON carries the errors too.
	code, out, _ := probe(t, tr.Root, "identify", "07:00.0", "-o", "json")
	var doc identifyDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != exitFailure || len(doc.Errors) != 1 || doc.Errors[0].BDF != "0000:07:00.0" {
		t.Errorf("exit %d, %v: %s", code, err, out)
	}

	code, _, errOut := probe(t, tr.Root, "identify", "class=ethernet")
	if code != exitFailure || !strings.Contains(errOut, "is not an NVMe controller") {
		t.Errorf("class=ethernet: exit %d, %q", code, errOut)
	}
}

func TestIdentifyNoneBound(t *testing.T) {
	tr := pcietest.Sample(t)
	fakeControllers(t, nil)
	var out, errOut strings.Builder
	code := run([]string{"--sysfs", tr.Root, "identify", "--pci-ids", "none"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if err := runIdentify(&out, &errOut, nil, false, options{}); !errors.Is(err, errNoMatch) ||
		!strings.Contains(err.Error(), "no NVMe controller is bound to vfio-pci") {
		t.Errorf("no functions: %v", err)
	}
}
