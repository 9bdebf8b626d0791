package pcie

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/umdkit/umd/pcie/pcietest"
)

// roundTrip snapshots root, restores the snapshot in a new directory and
// scans that.
func roundTrip(t *testing.T, root string) *System {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteSnapshot(root, &buf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := RestoreSnapshot(&buf, dir); err != nil {
		t.Fatal(err)
	}
	s, err := Scan(Options{SysfsRoot: dir, IDs: testIDs(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSnapshotRoundTrip(t *testing.T) {
	tr := pcietest.Sample(t)
	orig, err := Scan(Options{SysfsRoot: tr.Root, IDs: testIDs(t)})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := dump(orig), dump(roundTrip(t, tr.Root)); a != b {
		t.Errorf("restored snapshot scans differently:\n--- original\n%s\n--- restored\n%s", a, b)
	}
}

// TestQEMUSnapshots scans the sysfs trees captured from the QEMU guests
// (testdata/snapshots; each file says how it was made) and checks them
// as the guest tests check the live guests.
func TestQEMUSnapshots(t *testing.T) {
	for topology := range qemuLayouts {
		t.Run(topology, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", "snapshots", "qemu-"+topology+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			dir := t.TempDir()
			if err := RestoreSnapshot(f, dir); err != nil {
				t.Fatal(err)
			}
			s, err := Scan(Options{SysfsRoot: dir, IDs: testIDs(t)})
			if err != nil {
				t.Fatal(err)
			}
			checkQEMULayout(t, s, topology, "vfio-pci")
			golden(t, "qemu-"+topology+".golden", dump(s))

			// Without root the capabilities go, the topology stays.
			cutConfigs(t, dir)
			user, err := Scan(Options{SysfsRoot: dir, IDs: testIDs(t)})
			if err != nil {
				t.Fatal(err)
			}
			if a, b := dump(s), dump(user); a != b {
				t.Errorf("unprivileged scan differs:\n--- root\n%s\n--- user\n%s", a, b)
			}
		})
	}
}

func TestRestoreSnapshotRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, snapshot, want string
	}{
		{"absolute", "f /etc/x \"y\"\n", "not a clean relative path"},
		{"climbing", "f a/../../x \"y\"\n", "not a clean relative path"},
		{"parent", "f ../x \"y\"\n", "not a clean relative path"},
		{"through a link", "l a /tmp\nf a/x \"y\"\n", "a is a symbolic link"},
		{"unquoted", "f a/x y\n", "content is not a quoted string"},
		{"bad hex", "x a/config 4 zz\n", "hex content does not fit"},
		{"too much hex", "x a/config 1 0102\n", "hex content does not fit"},
		{"kind", "q a/x y\n", `unknown kind "q"`},
		{"short", "f a\n", "want KIND PATH VALUE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := RestoreSnapshot(strings.NewReader(SnapshotHeader+"\n"+tc.snapshot), dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v; want %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "a", "x")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused snapshot wrote a/x (%v)", err)
			}
		})
	}
}

// cutConfigs cuts every config file below dir to the 64 bytes an
// unprivileged reader sees.
func cutConfigs(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "config" || !d.Type().IsRegular() {
			return err
		}
		return os.Truncate(p, 64)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenTree: a directory is its own root; a snapshot file is restored
// into a temporary root that cleanup removes; a file that is not a
// snapshot is refused, naming it, and leaves nothing behind.
func TestOpenTree(t *testing.T) {
	dir := t.TempDir()
	root, cleanup, err := OpenTree(dir)
	if err != nil || root != dir {
		t.Fatalf("OpenTree(dir) = %q, %v", root, err)
	}
	cleanup()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("cleanup of a directory removed it: %v", err)
	}

	snap := filepath.Join("testdata", "snapshots", "qemu-single.txt")
	root, cleanup, err = OpenTree(snap)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := Scan(Options{SysfsRoot: root})
	if err != nil || len(sys.Functions) == 0 {
		t.Fatalf("scanning the restored snapshot: %d functions, %v", len(sys.Functions), err)
	}
	cleanup()
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("cleanup left %s: %v", root, err)
	}

	bad := filepath.Join(t.TempDir(), "not-a-snapshot")
	if err := os.WriteFile(bad, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenTree(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("OpenTree of a non-snapshot: %v", err)
	}
	if _, _, err := OpenTree(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("OpenTree of a missing path: no error")
	}
}
