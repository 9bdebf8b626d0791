package mountinfo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mountinfo")
	text := `22 1 0:21 / /proc rw,nosuid - proc proc rw
35 24 0:30 / /sys/fs/cgroup/cpu rw shared:9 master:2 - cgroup cgroup rw,cpu
36 24 0:31 / /mnt/with\040space rw - tmpfs tmpfs rw
short line
` + "40 24 0:40 / /run/ctr/rootfs rw - overlay overlay rw,lowerdir=" + strings.Repeat("/var/lib/layer:", 8000) + "\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{{"/proc", "proc", "0:21"}, {"/sys/fs/cgroup/cpu", "cgroup", "0:30"}, {"/mnt/with space", "tmpfs", "0:31"}, {"/run/ctr/rootfs", "overlay", "0:40"}}
	if len(ms) != len(want) {
		t.Fatalf("Read = %+v, want %+v", ms, want)
	}
	for i := range want {
		if ms[i] != want[i] {
			t.Errorf("mount %d = %+v, want %+v", i, ms[i], want[i])
		}
	}
	if _, err := Read(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("Read of a missing file: no error")
	}
}
