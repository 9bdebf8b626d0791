package qemu

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

type cpioEntry struct {
	name string
	mode uint32
	data string
}

// readCPIO parses a newc archive (stopping at the first trailer) the way
// the kernel does, checking magic and alignment as it goes.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	field := func(i int) int {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("header at %d field %d: %v", off, i, err)
		}
		return int(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated archive at %d", off)
		}
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic %q at %d", b[off:off+6], off)
		}
		mode, size, namesize := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+namesize-1])
		if b[off+110+namesize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		dataOff := align(off + 110 + namesize)
		if name == "TRAILER!!!" {
			return out
		}
		out = append(out, cpioEntry{name: name, mode: uint32(mode), data: string(b[dataOff : dataOff+size])})
		off = align(dataOff + size)
	}
}

func TestCPIOWriter(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a", "b", "f"), []byte("12345"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("b/f", filepath.Join(src, "a", "l")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.File("/etc/x", 0o644, []byte("hello"))
	w.Symlink("bin/sh", "/bin/busybox")
	w.CopyTree("tree", src)
	w.Dir("empty/dir")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d not a multiple of 4", buf.Len())
	}
	got := map[string]cpioEntry{}
	var order []string
	for _, e := range readCPIO(t, buf.Bytes()) {
		if _, dup := got[e.name]; dup {
			t.Errorf("entry %q written twice", e.name)
		}
		got[e.name] = e
		order = append(order, e.name)
	}
	want := map[string]struct {
		mode uint32
		data string
	}{
		"etc":        {modeDir | 0o755, ""},
		"etc/x":      {modeRegular | 0o644, "hello"},
		"bin":        {modeDir | 0o755, ""},
		"bin/sh":     {modeSymlink | 0o777, "/bin/busybox"},
		"tree":       {modeDir | 0o755, ""},
		"tree/a/b/f": {modeRegular | 0o640, "12345"},
		"tree/a/l":   {modeSymlink | 0o777, "b/f"},
		"empty/dir":  {modeDir | 0o755, ""},
		"empty":      {modeDir | 0o755, ""},
		"tree/a":     {modeDir | 0o755, ""},
		"tree/a/b":   {modeDir | 0o755, ""},
	}
	for name, w := range want {
		e, ok := got[name]
		if !ok {
			t.Errorf("missing %q (have %v)", name, order)
			continue
		}
		if e.mode != w.mode || e.data != w.data {
			t.Errorf("%s: mode %o data %q, want mode %o data %q", name, e.mode, e.data, w.mode, w.data)
		}
	}
	// Parents come before children, or the kernel cannot create them.
	seen := map[string]bool{}
	for _, n := range order {
		if d := filepath.Dir(n); d != "." && !seen[d] {
			t.Errorf("%q comes before its directory %q", n, d)
		}
		seen[n] = true
	}
}

func TestCPIOWriterReportsErrors(t *testing.T) {
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.CopyFile("x", filepath.Join(t.TempDir(), "missing"))
	w.File("y", 0o644, []byte("after the error"))
	if err := w.Close(); err == nil {
		t.Fatal("Close after a failed CopyFile returned nil")
	}
	fw := newCPIOWriter(failingWriter{})
	fw.File("big", 0o644, make([]byte, 2<<20))
	if err := fw.Close(); err == nil {
		t.Fatal("Close on a failing writer returned nil")
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, fmt.Errorf("disk full") }
