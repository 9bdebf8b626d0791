package vfio

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// TestHolders names the processes that hold a character device open: this
// one, and a child given the device as its standard input; a regular file
// has none.
func TestHolders(t *testing.T) {
	f, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	child := exec.Command("sleep", "30")
	child.Stdin = f
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		child.Process.Kill()
		child.Wait()
	}()
	who := holders("/dev/zero")
	if want := fmt.Sprintf("process %d (sleep)", child.Process.Pid); !slices.Contains(who, "this process") || !slices.Contains(who, want) {
		t.Errorf("holders of /dev/zero: %q, want this process and %q among them", who, want)
	}
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if who := holders(file); who != nil {
		t.Errorf("holders of a regular file: %q", who)
	}
}
