package hugepage

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestHugepageErrorMessages(t *testing.T) {
	for _, c := range []struct {
		name string
		err  HugepageError
		want []string
	}{{
		name: "system-wide, some promised elsewhere",
		err:  HugepageError{PageSize: Page2M, Node: AnyNode, Needed: 32, Total: 40, Free: 20, Reserved: 4, Err: unix.ENOMEM},
		// 16 available, 16 missing: the pool must grow from 40 to 56.
		want: []string{"need 32 × 2 MiB", "16 available", "20 free", "4 of them promised", "40 in the pool",
			"`echo 56 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`", "hugepagesz=2M hugepages=56", "cannot allocate memory"},
	}, {
		name: "on a node",
		err:  HugepageError{PageSize: Page2M, Node: 1, Needed: 8, Total: 64, Free: 3, Reserved: -1, Err: unix.EFAULT},
		want: []string{"need 8 × 2 MiB on NUMA node 1", "3 free", "64 in the pool on NUMA node 1",
			"`echo 69 > /sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages`", "hugepages=1:69", "page fault found no free hugepage (EFAULT)"},
	}, {
		name: "gigantic pages",
		err:  HugepageError{PageSize: Page1G, Node: AnyNode, Needed: 2, Total: 0, Free: 0, Reserved: 0},
		want: []string{"need 2 × 1 GiB", "`echo 2 > /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages`", "at boot with `hugepagesz=1G hugepages=2`"},
	}, {
		name: "counts unknown, hugetlbfs mount",
		err:  HugepageError{PageSize: Page2M, Node: AnyNode, Needed: 3, Total: -1, Free: -1, Reserved: -1, Mount: "/mnt/huge", Err: unix.ENOSPC},
		want: []string{"need 3 × 2 MiB", "`echo 3 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`", "mount at /mnt/huge"},
	}, {
		name: "unsupported size",
		err:  HugepageError{PageSize: Page1G, Node: AnyNode, Unsupported: true},
		want: []string{"no 1 GiB hugepages", "hugepages-1048576kB does not exist"},
	}} {
		t.Run(c.name, func(t *testing.T) {
			err := error(&c.err)
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q:\n%s", w, msg)
				}
			}
			if !errors.Is(err, ErrNoHugepages) {
				t.Error("does not match ErrNoHugepages")
			}
			if c.err.Err != nil && !errors.Is(err, c.err.Err) {
				t.Errorf("does not match its errno %v", c.err.Err)
			}
			if msg != strings.ToLower(msg[:1])+msg[1:] {
				t.Errorf("message starts with a capital: %s", msg)
			}
		})
	}
}

func TestFillCounts(t *testing.T) {
	sys := t.TempDir()
	write := func(path, v string) {
		t.Helper()
		path = filepath.Join(sys, path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "128")
	write("kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "100")
	write("kernel/mm/hugepages/hugepages-2048kB/resv_hugepages", "10")
	write("devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages", "64")
	write("devices/system/node/node1/hugepages/hugepages-2048kB/free_hugepages", "50")

	e := HugepageError{PageSize: Page2M, Node: AnyNode, Needed: 100}
	e.fillCounts(sys)
	if e.Total != 128 || e.Free != 100 || e.Reserved != 10 {
		t.Errorf("system-wide counts %d/%d/%d, want 128/100/10", e.Total, e.Free, e.Reserved)
	}
	if !strings.Contains(e.Error(), "echo 138 >") {
		t.Errorf("90 available of 100 needed should ask for 138: %v", &e)
	}
	n := HugepageError{PageSize: Page2M, Node: 1, Needed: 60}
	n.fillCounts(sys)
	if n.Total != 64 || n.Free != 50 || n.Reserved != -1 {
		t.Errorf("node counts %d/%d/%d, want 64/50/-1", n.Total, n.Free, n.Reserved)
	}
	g := HugepageError{PageSize: Page1G, Node: AnyNode, Needed: 1}
	g.fillCounts(sys)
	if g.Total != -1 || g.Free != -1 {
		t.Errorf("counts of a size with no sysfs directory: %d/%d, want -1/-1", g.Total, g.Free)
	}
	if hugepageSizeSupported(sys, Page1G) || !hugepageSizeSupported(sys, Page2M) {
		t.Error("hugepageSizeSupported does not follow the sysfs directories")
	}
}

func TestMemlockErrorMessage(t *testing.T) {
	e := &MemlockError{Size: 64 << 20, Cur: 8 << 20, Max: unix.RLIM_INFINITY, Known: true, Locked: 1 << 20, Err: unix.ENOMEM}
	msg := e.Error()
	for _, w := range []string{"locking 64 MiB", "RLIMIT_MEMLOCK is 8 MiB (hard limit unlimited)", "1 MiB is locked already",
		"ulimit -l unlimited", "/etc/security/limits.conf", "LimitMEMLOCK=infinity", "CAP_IPC_LOCK", "cannot allocate memory"} {
		if !strings.Contains(msg, w) {
			t.Errorf("message lacks %q:\n%s", w, msg)
		}
	}
	if !errors.Is(e, ErrMemlock) || !errors.Is(e, unix.ENOMEM) {
		t.Error("does not match ErrMemlock and ENOMEM")
	}
}

func TestLockedBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status")
	os.WriteFile(path, []byte("Name:\tx\nVmLck:\t    2048 kB\nVmPin:\t0 kB\n"), 0o644)
	if got := lockedBytes(path); got != 2<<20 {
		t.Errorf("VmLck 2048 kB read as %d bytes", got)
	}
	if got := lockedBytes(filepath.Join(t.TempDir(), "missing")); got != -1 {
		t.Errorf("a missing file gives %d, want -1", got)
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int]string{0: "0 B", 512: "512 B", 4096: "4 KiB", 3 << 20: "3 MiB", 1 << 30: "1 GiB",
		1<<20 + 512: "1049088 B", 2 << 40: "2 TiB"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[int]string{Page2M: "2M", Page1G: "1G", 64 << 10: "64K"} {
		if got := kernelSizeName(n); got != want {
			t.Errorf("kernelSizeName(%d) = %q, want %q", n, got, want)
		}
	}
}

func errorsIsNoHugepages(err error) bool { return errors.Is(err, ErrNoHugepages) }
func errorsIsNUMANode(err error) bool    { return errors.Is(err, ErrNUMANode) }
