package qemu

import (
	"reflect"
	"testing"
)

func TestSeriesOf(t *testing.T) {
	for in, want := range map[string]string{
		"6.1.0-56-amd64":      "6.1",
		"6.12.95+deb12-amd64": "6.12",
		"6.12.95-1~bpo12+1":   "6.12",
		"6.1.192-2":           "6.1",
		"garbage":             "",
	} {
		if got := seriesOf(in); got != want {
			t.Errorf("seriesOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLatestRelease(t *testing.T) {
	show := `Package: linux-image-amd64
Version: 6.12.95-1~bpo12+1
Depends: linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)

Package: linux-image-amd64
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)

Package: linux-image-amd64
Version: 6.1.76-1
Depends: linux-image-6.1.0-9-amd64 (= 6.1.76-1)
`
	if got := latestRelease(show, "6.1"); got != "6.1.0-56-amd64" {
		t.Errorf("6.1: got %q", got)
	}
	if got := latestRelease(show, "6.12"); got != "6.12.95+deb12-amd64" {
		t.Errorf("6.12: got %q", got)
	}
	if got := latestRelease(show, "6.6"); got != "" {
		t.Errorf("6.6: got %q, want none", got)
	}
}

func TestParseSources(t *testing.T) {
	text := `# comment
deb http://mirror.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian-security bookworm-security main
deb-src http://src.example/debian bookworm main

Types: deb
URIs: http://other.example/debian
Suites: trixie trixie-updates
Components: main

Types: deb-src
URIs: http://nope.example/debian
Suites: trixie
`
	got := parseSources(text)
	want := []sourceEntry{
		{uri: "http://mirror.example/debian", suites: []string{"bookworm"}},
		{uri: "http://mirror.example/debian-security", suites: []string{"bookworm-security"}},
		{uri: "http://other.example/debian", suites: []string{"trixie", "trixie-updates"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseSources:\n got %+v\nwant %+v", got, want)
	}
}

func TestLookupKernel(t *testing.T) {
	for _, k := range Kernels {
		got, err := LookupKernel(k.Name)
		if err != nil || got != k {
			t.Errorf("LookupKernel(%q) = %v, %v", k.Name, got, err)
		}
		if seriesOf(k.Release) != k.Name {
			t.Errorf("pin %s is not of series %s", k.Release, k.Name)
		}
	}
	if _, err := LookupKernel("5.10"); err == nil {
		t.Error("LookupKernel(5.10) succeeded")
	}
	if _, err := LookupKernel(DefaultKernel); err != nil {
		t.Errorf("default kernel: %v", err)
	}
}
