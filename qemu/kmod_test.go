package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHeaderDependencies(t *testing.T) {
	show := `Package: linux-headers-6.12.95+deb12-amd64
Version: 6.12.95-1~bpo12+1
Depends: linux-base (>= 4.12~), linux-headers-6.12.95+deb12-common (= 6.12.95-1~bpo12+1), linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1) | linux-image-6.12.95+deb12-amd64-unsigned (= 6.12.95-1~bpo12+1), linux-kbuild-6.12.95+deb12, gcc-12

Package: linux-headers-6.12.95+deb12-amd64
Version: 6.12.90-1~bpo12+1
Depends: linux-headers-6.12.90+deb12-common
`
	got := headerDependencies(show)
	if strings.Join(got, " ") != "linux-headers-6.12.95+deb12-common linux-kbuild-6.12.95+deb12" {
		t.Errorf("dependencies %v", got)
	}
}

// TestRelocateHeaders: both forms of installed path in a headers Makefile
// (bookworm's include, and the KBUILD_OUTPUT= of Debian's 7.x packages)
// point into the cache; nothing else changes.
func TestRelocateHeaders(t *testing.T) {
	in := "KBUILD_OUTPUT=/usr/src/linux-headers-7.3.4+deb13-amd64\n" +
		"include /usr/src/linux-headers-7.3.4+deb13-common/Makefile\n" +
		"MAKEFLAGS += -rR\n"
	want := "KBUILD_OUTPUT=/cache/h/usr/src/linux-headers-7.3.4+deb13-amd64\n" +
		"include /cache/h/usr/src/linux-headers-7.3.4+deb13-common/Makefile\n" +
		"MAKEFLAGS += -rR\n"
	if got := relocateHeaders(in, "/cache/h"); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestKmodToolsAreHostTools(t *testing.T) {
	if len(kmodTools) != 3 {
		t.Errorf("kmodTools = %v, want make, gcc and pahole", kmodTools)
	}
}

func TestSyncDirRewritesOnlyChanges(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(src, "a.c"), []byte("one"), 0o644)
	os.WriteFile(filepath.Join(src, "Kbuild"), []byte("obj-m := a.o\n"), 0o644)
	os.Mkdir(filepath.Join(src, "sub"), 0o755)
	if err := syncDir(src, dst); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(filepath.Join(dst, "Kbuild"))
	os.WriteFile(filepath.Join(src, "a.c"), []byte("two"), 0o644)
	if err := syncDir(src, dst); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(dst, "a.c")); string(data) != "two" {
		t.Errorf("a.c = %q after sync", data)
	}
	after, _ := os.Stat(filepath.Join(dst, "Kbuild"))
	if !after.ModTime().Equal(before.ModTime()) {
		t.Error("an unchanged file was rewritten")
	}
	if _, err := os.Stat(filepath.Join(dst, "sub")); err == nil {
		t.Error("a subdirectory was copied")
	}
}
