package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/umdkit/umd/pcie/pcietest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// probe runs umdprobe against a tree and returns its exit status and
// output.
func probe(t *testing.T, root string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	// Names come from pcietest's database, so the output does not
	// depend on the host's pci.ids.
	all := append([]string{"--sysfs", root, "--pci-ids", pcietest.WritePCIIDs(t)}, args...)
	code := run(all, &out, &errOut)
	return code, out.String(), errOut.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/umdprobe -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (check, then run with -update):\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

func TestGolden(t *testing.T) {
	tr := pcietest.Sample(t)
	for _, tc := range []struct {
		file string
		args []string
	}{
		{"list.txt", nil},
		{"list-all.txt", []string{"list", "-a"}},
		{"list-nvme.txt", []string{"class=nvme"}},
		{"tree.txt", []string{"tree"}},
		{"tree-nvme-vfio.txt", []string{"-t", "class=nvme", "driver=vfio-pci"}},
		{"show.txt", []string{"show", "08:00.0,0a:00.0", "0a:02.1"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			code, out, errOut := probe(t, tr.Root, tc.args...)
			if code != exitOK || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			golden(t, tc.file, out)
		})
	}
}

func TestUnprivilegedShow(t *testing.T) {
	tr := pcietest.Sample(t)
	tr.Unprivileged()
	code, out, _ := probe(t, tr.Root, "show", "03:00.0")
	if code != exitOK || !strings.Contains(out, "only 64 bytes of config space readable; run as root") {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
}

func TestJSON(t *testing.T) {
	tr := pcietest.Sample(t)
	// Flags after the selectors work too.
	code, out, errOut := probe(t, tr.Root, "list", "class=nvme", "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var doc struct {
		Schema    string
		Functions []struct {
			BDF        string `json:"bdf"`
			Driver     string `json:"driver"`
			IOMMUGroup int    `json:"iommu_group"`
			Card       string `json:"card"`
			Config     struct {
				MSIX *struct {
					TableSize int `json:"table_size"`
				} `json:"msix"`
			} `json:"config"`
		}
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Schema != schemaList || len(doc.Functions) != 6 {
		t.Fatalf("schema %q, %d functions", doc.Schema, len(doc.Functions))
	}
	if f := doc.Functions[0]; f.BDF != "0000:03:00.0" || f.Driver != "vfio-pci" || f.IOMMUGroup != 5 ||
		f.Card != "0000:01:00.0" || f.Config.MSIX == nil || f.Config.MSIX.TableSize != 65 {
		t.Errorf("first function = %+v", f)
	}

	code, out, _ = probe(t, tr.Root, "--output=json", "-t")
	if code != exitOK {
		t.Fatalf("tree exit %d", code)
	}
	var topo struct {
		Schema      string
		HostBridges []struct {
			Name     string
			Children []json.RawMessage
		} `json:"host_bridges"`
		Cards []struct {
			ID        string
			Kind      string
			Endpoints []string
		}
	}
	if err := json.Unmarshal([]byte(out), &topo); err != nil {
		t.Fatal(err)
	}
	if topo.Schema != schemaTopo || len(topo.HostBridges) != 2 || len(topo.Cards) != 6 {
		t.Errorf("topology: schema %q, %d host bridges, %d cards", topo.Schema, len(topo.HostBridges), len(topo.Cards))
	}

	// Nothing selected is still a document, with an empty list.
	code, out, _ = probe(t, tr.Root, "-o", "json", "-a")
	if code != exitOK || !strings.Contains(out, `"functions": [`) {
		t.Errorf("exit %d: %s", code, out)
	}
}

func TestErrors(t *testing.T) {
	tr := pcietest.Sample(t)
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"0000:3:00.0x"}, exitUsage, `umdprobe: bad selector "0000:3:00.0x": bus "3" is not two hex digits (want dddd:bb:dd.f or bb:dd.f)`},
		{[]string{"show", "clas=nvme"}, exitUsage, `unknown key "clas" (did you mean "class"?)`},
		{[]string{"show"}, exitUsage, "show needs a selector"},
		{[]string{"--frobnicate"}, exitUsage, "flag provided but not defined: -frobnicate"},
		{[]string{"-o", "yaml"}, exitUsage, `unknown output format "yaml"`},
		{[]string{"show", "-t", "03:00.0"}, exitUsage, "-t makes no sense with show"},
		{[]string{"1234:5678"}, exitNoMatch, `umdprobe: no PCI function matches "1234:5678"`},
		{[]string{"--pci-ids", "/nonexistent/pci.ids"}, exitUsage, "loading PCI names"},
		{[]string{"--sysfs", "/nonexistent"}, exitFailure, "umdprobe: listing PCI functions: open /nonexistent/bus/pci/devices: no such file or directory"},
	} {
		var out, errOut bytes.Buffer
		args := append([]string{"--sysfs", tr.Root}, tc.args...)
		code := run(args, &out, &errOut)
		if code != tc.code || !strings.Contains(errOut.String(), tc.stderr) {
			t.Errorf("umdprobe %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut.String(), tc.code, tc.stderr)
		}
		if out.Len() != 0 {
			t.Errorf("umdprobe %q wrote to stdout: %q", tc.args, out.String())
		}
		if lines := strings.Count(strings.TrimSpace(errOut.String()), "\n"); lines > 1 {
			t.Errorf("umdprobe %q: %d lines of error, want one (plus the hint)", tc.args, lines+1)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"class=nvme", "--help"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != exitOK {
			t.Errorf("%q: exit %d", args, code)
		}
		for _, want := range []string{"Usage:", "Examples:", "umdprobe -t", "Selectors pick PCI functions", "Exit status"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%q: help lacks %q", args, want)
			}
		}
	}
}

func TestDoubleDash(t *testing.T) {
	tr := pcietest.Sample(t)
	// After "--", "-a" is a selector (and a bad one), not a flag.
	code, _, errOut := probe(t, tr.Root, "list", "--", "-a")
	if code != exitUsage || !strings.Contains(errOut, `bad selector "-a"`) {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestSnapshot(t *testing.T) {
	tr := pcietest.Sample(t)
	code, out, errOut := probe(t, tr.Root, "snapshot")
	if code != exitOK || !strings.HasPrefix(out, "# umd PCI sysfs snapshot v1\n") || !strings.Contains(out, "l bus/pci/devices/0000:03:00.0 ") {
		t.Errorf("exit %d, stderr %q, output starts %.200q", code, errOut, out)
	}
	if code, _, errOut := probe(t, tr.Root, "snapshot", "class=nvme"); code != exitUsage || !strings.Contains(errOut, "snapshot takes no selectors") {
		t.Errorf("snapshot with a selector: exit %d, %q", code, errOut)
	}
}
