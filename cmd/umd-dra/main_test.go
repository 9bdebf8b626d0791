package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/umdkit/umd/pcie"
)

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"slices", "--node", "n1", "--sysfs", "/tmp/s", "--generation", "4"})
	if err != nil || o.node != "n1" || o.sysfs != "/tmp/s" || o.generation != 4 {
		t.Fatalf("%+v, %v", o, err)
	}
	o, err = parseArgs([]string{"params", "a.yaml", "b.yaml"})
	if err != nil || strings.Join(o.files, " ") != "a.yaml b.yaml" {
		t.Fatalf("%+v, %v", o, err)
	}
	for _, bad := range [][]string{
		{}, {"serve"}, {"slices"}, {"slices", "--node", "n", "extra"}, {"params"}, {"slices", "--bogus"},
	} {
		var ue usageError
		if _, err := parseArgs(bad); !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
}

func TestSlicesCommand(t *testing.T) {
	f, err := os.Open("../../pcie/testdata/snapshots/qemu-numa.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	if err := pcie.RestoreSnapshot(f, dir); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(options{cmd: "slices", node: "n1", sysfs: dir, generation: 1}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nodeName: n1", "name: nvme-0000-61-00-0", "string: pci0000:60", "driver: umd.umdkit.io"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestParamsCommand(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	class := write("class.yaml", "apiVersion: umd.umdkit.io/v1alpha1\nkind: UmdClaimParameters\nmode: trusted\n")
	claim := write("claim.yaml", "apiVersion: umd.umdkit.io/v1alpha1\nkind: UmdClaimParameters\nqueuePairs: 3\n")
	bad := write("bad.yaml", "apiVersion: umd.umdkit.io/v1alpha1\nkind: UmdClaimParameters\nqueueDepth: 9999\n")
	var out bytes.Buffer
	if err := run(options{cmd: "params", files: []string{class, claim}}, &out); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "mode: trusted") || !strings.Contains(s, "queuePairs: 3") {
		t.Errorf("output:\n%s", s)
	}
	err := run(options{cmd: "params", files: []string{class, bad}}, &out)
	if err == nil || !strings.Contains(err.Error(), "queueDepth: 9999") {
		t.Errorf("bad depth: %v", err)
	}
	unknown := write("unknown.yaml", "apiVersion: umd.umdkit.io/v1alpha1\nkind: UmdClaimParameters\nqueues: 2\n")
	if err := run(options{cmd: "params", files: []string{class, unknown}}, &out); err == nil || !strings.Contains(err.Error(), unknown) {
		t.Errorf("unknown field: %v, want an error naming %s", err, unknown)
	}
}
