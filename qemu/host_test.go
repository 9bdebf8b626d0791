package qemu

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestShellJoinRoundTrip(t *testing.T) {
	args := []string{"plain", "with space", "it's", `"dq"`, "$HOME", "", "a;b", "*"}
	out, err := exec.Command("sh", "-c", "for a in "+ShellJoin(args)+`; do printf '%s\n' "$a"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if strings.Join(got, "|") != strings.Join(args, "|") {
		t.Errorf("sh saw %q, want %q", got, args)
	}
}

func TestInstallCommandNamesEachPackageOnce(t *testing.T) {
	cmd := installCommand([]hostTool{{"/bin/busybox", "busybox-static", ""}, {"x", "busybox-static", ""}, {"xz", "xz-utils", ""}})
	if !strings.HasSuffix(cmd, "install -y --no-install-recommends busybox-static xz-utils") {
		t.Errorf("install command %q", cmd)
	}
}

func TestConsoleTailStartsAtTheCrash(t *testing.T) {
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "[ %d.0] boot line %d\n", i, i)
	}
	b.WriteString("[ 100.0] Kernel panic - not syncing: sysrq triggered crash\n")
	for i := range 60 {
		fmt.Fprintf(&b, "[ 101.0] trace line %d\n", i)
	}
	p := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got := consoleTail(p, 40)
	if !strings.HasPrefix(got, "[ 100.0] Kernel panic") || !strings.HasSuffix(got, "trace line 59") {
		t.Errorf("tail starts %q and ends %q", got[:min(40, len(got))], got[max(len(got)-20, 0):])
	}
	os.WriteFile(p, []byte("a\nb\nc\n"), 0o644)
	if got := consoleTail(p, 2); got != "b\nc" {
		t.Errorf("without a crash: %q", got)
	}
}
