package hugepage

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/umdkit/umd/internal/mountinfo"
)

func TestHugetlbfsMounts(t *testing.T) {
	mounts := filepath.Join(t.TempDir(), "mounts")
	os.WriteFile(mounts, []byte(`sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0
none /mnt/huge\0401G hugetlbfs rw,relatime,pagesize=1024M 0 0
tmpfs /dev/shm tmpfs rw 0 0
`), 0o644)
	got, err := hugetlbfsMounts(mounts)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/dev/hugepages", "/mnt/huge 1G"}; !reflect.DeepEqual(got, want) {
		t.Errorf("mounts %q, want %q", got, want)
	}
	if _, err := hugetlbfsMounts(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing mounts file gave no error")
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:         "/plain",
		`/a\040b`:        "/a b",
		`/tab\011x\134y`: "/tab\tx\\y",
		`/end\040`:       "/end ",
		`/short\04`:      `/short\04`,
		`/bad\9zz`:       `/bad\9zz`,
	} {
		if got := mountinfo.Unescape(in); got != want {
			t.Errorf("mountinfo.Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFindHugetlbfsNone(t *testing.T) {
	proc := t.TempDir()
	os.WriteFile(filepath.Join(proc, "mounts"), []byte("tmpfs /tmp tmpfs rw 0 0\n"), 0o644)
	_, err := findHugetlbfs(proc, Page2M)
	if err == nil || !errorsIsNoHugepages(err) {
		t.Fatalf("no hugetlbfs mounted: %v, want ErrNoHugepages", err)
	}
}

func TestParseNodeList(t *testing.T) {
	for in, want := range map[string][]int{"0": {0}, "0-1": {0, 1}, "0,2-3": {0, 2, 3}, "": nil} {
		got, err := parseNodeList(in)
		if err != nil {
			t.Errorf("parseNodeList(%q): %v", in, err)
			continue
		}
		if len(got) != len(want) {
			t.Errorf("parseNodeList(%q) = %v, want %v", in, got, want)
		}
		for _, n := range want {
			if !got[n] {
				t.Errorf("parseNodeList(%q) lacks %d", in, n)
			}
		}
	}
	for _, bad := range []string{"x", "1-0", "-1", "0-99999999"} {
		if _, err := parseNodeList(bad); err == nil {
			t.Errorf("parseNodeList(%q) accepted", bad)
		}
	}
}

func TestCheckNodeFake(t *testing.T) {
	sys := t.TempDir()
	if numa, err := checkNode(sys, 0); err != nil || numa {
		t.Errorf("node 0 on a kernel without NUMA: numa=%v, %v; want no placement, no error", numa, err)
	}
	if _, err := checkNode(sys, 1); !errorsIsNUMANode(err) {
		t.Errorf("node 1 on a kernel without NUMA: %v", err)
	}
	dir := filepath.Join(sys, "devices/system/node")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "online"), []byte("0-2\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "has_memory"), []byte("0-1\n"), 0o644)
	if numa, err := checkNode(sys, 1); err != nil || !numa {
		t.Errorf("node 1 of 0-2: numa=%v, %v", numa, err)
	}
	if _, err := checkNode(sys, 2); !errorsIsNUMANode(err) {
		t.Errorf("memoryless node 2: %v", err)
	}
	if _, err := checkNode(sys, 3); !errorsIsNUMANode(err) {
		t.Errorf("missing node 3: %v", err)
	}
}

func TestSummarizeNodes(t *testing.T) {
	if m, n := summarizeNodes([]int32{1, 1, 1}); n != 1 || m[1] != 3 {
		t.Errorf("all on node 1: %v, %d", m, n)
	}
	if m, n := summarizeNodes([]int32{0, 1}); n != AnyNode || m[0] != 1 || m[1] != 1 {
		t.Errorf("spread: %v, %d", m, n)
	}
	if m, n := summarizeNodes([]int32{0, -2}); n != AnyNode || m != nil {
		t.Errorf("unknown page: %v, %d", m, n)
	}
}
