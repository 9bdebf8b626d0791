package qemu

import (
	"os/exec"
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
