package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/umdkit/umd/pcie/pcietest"
)

// bindArgs points bind at a fake tree, /proc and state directory. Only
// dry runs and refusals are tested here: the fake tree has no kernel
// behind it (package pcie tests the writes against an emulated one, and
// the guest tests against the real one).
func bindArgs(t *testing.T, tr *pcietest.Tree, args ...string) []string {
	p := tr.NewProc()
	return append([]string{"--proc", p.Root, "--state-dir", t.TempDir()}, args...)
}

func TestBindDryRunCommand(t *testing.T) {
	tr := pcietest.Sample(t)
	code, out, errOut := probe(t, tr.Root, bindArgs(t, tr, "bind", "--dry-run", "07:00.0,03:00.0")...)
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"Dry run: nothing was changed. Bind would:\n",
		"  0000:03:00.0: nothing to do (already bound to vfio-pci)\n",
		"  0000:07:00.0: set driver_override to vfio-pci\n",
		"  0000:07:00.0: unbind it from nvme\n",
		"  0000:07:00.0: ask the kernel to probe it (drivers_probe)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// A card selector picks the switch ports too; only endpoints are
	// bound.
	code, out, _ = probe(t, tr.Root, bindArgs(t, tr, "bind", "-n", "card=01:00.0", "-o", "json")...)
	var doc bindDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != exitOK {
		t.Fatalf("exit %d, %v: %s", code, err, out)
	}
	if doc.Schema != schemaBind || doc.Refused || len(doc.Plan.Functions) != 2 || !doc.Plan.Functions[0].Nothing {
		t.Errorf("doc = %+v", doc)
	}
}

func TestBindRefusedCommand(t *testing.T) {
	tr := pcietest.Sample(t)
	tr.NVMeNamespace("0000:07:00.0", "nvme0", "241:0", pcietest.Namespace{Disk: "nvme0n1", Dev: "259:0"})
	p := tr.NewProc()
	p.Mount("259:0", "/srv")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bind", "00:1f.2"}, "umdprobe: binding 0000:00:1f.2 to vfio-pci: IOMMU group 20 is not viable: its member 0000:00:1f.0 is bound to the host driver lpc_ich (bind it to vfio-pci as well, or unbind it); nothing was changed\n"},
		{[]string{"bind", "--dry-run", "07:00.0"}, "umdprobe: binding 0000:07:00.0 to vfio-pci: 0000:07:00.0 is in use through nvme: nvme0n1 is mounted on /srv (unmount, stop or close them first); nothing was changed\n"},
		{[]string{"bind", "00:05.0"}, "not an endpoint: 0000:00:05.0 is a root port"},
	} {
		args := append([]string{"--proc", p.Root, "--state-dir", t.TempDir()}, tc.args...)
		code, out, errOut := probe(t, tr.Root, args...)
		if code != exitRefused || out != "" || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 4 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
}

func TestBindUsage(t *testing.T) {
	tr := pcietest.Sample(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bind"}, exitUsage, "bind needs a selector"},
		{[]string{"unbind"}, exitUsage, "unbind needs a selector"},
		{[]string{"list", "--dry-run"}, exitUsage, "--dry-run and --state-dir are for bind and unbind, not list"},
		{[]string{"unbind", "--driver", "nvme", "03:00.0"}, exitUsage, "--driver is for bind, not unbind"},
		{[]string{"doctor", "--memlock", "lots"}, exitUsage, `"lots" is not a size`},
		{[]string{"bind", "1234:5678"}, exitNoMatch, `no PCI function matches "1234:5678"`},
	} {
		code, _, errOut := probe(t, tr.Root, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

func TestDoctorCommand(t *testing.T) {
	tr := pcietest.Sample(t) // no class/iommu, no modules, no hugepages
	p := tr.NewProc()
	dev := t.TempDir()
	code, out, errOut := probe(t, tr.Root, "doctor", "--proc", p.Root, "--dev", dev, "09:00.0")
	if code != exitCheckFailed || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"pass  iommu                  an IOMMU is on, with 24 IOMMU groups\n",
		"fail  vfio-modules           vfio_iommu_type1 not loaded\n",
		"                             fix: modprobe -a vfio_iommu_type1",
		"fail  function 0000:09:00.0  bound to vfio-pci, IOMMU group 14 is viable, but " + filepath.Join(dev, "vfio/14") + " is missing\n",
		"fail  hugepages",
		"failed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = probe(t, tr.Root, "doctor", "--proc", p.Root, "--dev", dev, "-o", "json")
	var doc doctorDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != exitCheckFailed {
		t.Fatalf("exit %d, %v: %s", code, err, out)
	}
	if doc.Schema != schemaDoctor || !doc.Failed || len(doc.Checks) < 7 {
		t.Errorf("doc = %+v", doc)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"64M": 64 << 20, "1G": 1 << 30, "1GiB": 1 << 30, "4096": 4096, "512k": 512 << 10, "2MB": 2 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "0", "1.5G", "99999999999T"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded", in)
		}
	}
}

func TestHelpTeachesBinding(t *testing.T) {
	_, out, _ := probe(t, os.TempDir(), "--help")
	for _, want := range []string{"umdprobe bind [flags] SELECTOR...", "--dry-run", "umdprobe doctor", "4 bind or unbind refused"} {
		if !strings.Contains(strings.ReplaceAll(out, "\n", " "), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}
