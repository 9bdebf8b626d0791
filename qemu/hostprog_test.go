package qemu

import (
	"strings"
	"testing"
)

func TestHostProgramUnknown(t *testing.T) {
	if _, err := HostProgramFiles("nosuch", t.TempDir()); err == nil || !strings.Contains(err.Error(), "fio") {
		t.Errorf("an unknown program: %v, want an error naming what the guest can carry", err)
	}
	if err := EnsureHostProgram(nil, "nosuch"); err == nil {
		t.Error("EnsureHostProgram of an unknown program succeeded")
	}
}

// A program Debian does not package is never installed with apt-get, even
// as root: missing, it is an error that says to build it.
func TestHostProgramNotPackaged(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := EnsureHostProgram(nil, "spdk_nvme_perf")
	if err == nil || !strings.Contains(err.Error(), "does not package it") || strings.Contains(err.Error(), "apt-get") {
		t.Errorf("spdk_nvme_perf missing: %v, want the build-it error and no apt-get", err)
	}
	if _, err := HostProgramFiles("spdk_nvme_perf", t.TempDir()); err == nil || !strings.Contains(err.Error(), "LD_LIBRARY_PATH") {
		t.Errorf("spdk_nvme_perf missing: %v", err)
	}
}

func TestParseLDD(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n" +
		"\tlibaio.so.1 => /lib/x86_64-linux-gnu/libaio.so.1 (0x00007f00)\n" +
		"\tlibceph-common.so.2 => /usr/lib/x86_64-linux-gnu/ceph/libceph-common.so.2 (0x00007f01)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f02)\n"
	libs, loader, err := parseLDD(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) != 2 || libs[1] != "/usr/lib/x86_64-linux-gnu/ceph/libceph-common.so.2" || loader != "/lib64/ld-linux-x86-64.so.2" {
		t.Errorf("libs %q, loader %q", libs, loader)
	}
	if _, _, err := parseLDD(strings.NewReader("\tlibgone.so.1 => not found\n")); err == nil || !strings.Contains(err.Error(), "libgone.so.1") {
		t.Errorf("a missing library: %v", err)
	}
}
