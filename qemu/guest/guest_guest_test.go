//go:build guest

package guest_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/umdkit/umd/qemu"
	"github.com/umdkit/umd/qemu/guest"
)

// These tests check what the harness promises every guest: the topology's
// controllers, bound to the requested driver behind an enabled IOMMU, and
// the file systems and hugepages later tests rely on.

func topology(t *testing.T) qemu.Topology {
	t.Helper()
	top, err := qemu.LookupTopology(guest.Topology())
	if err != nil {
		t.Fatalf("guest topology: %v", err)
	}
	return top
}

func nvmeFunctions(t *testing.T) []string {
	t.Helper()
	var bdfs []string
	devs, err := filepath.Glob("/sys/bus/pci/devices/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		class, err := os.ReadFile(filepath.Join(d, "class"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(class)) == "0x010802" {
			bdfs = append(bdfs, filepath.Base(d))
		}
	}
	return bdfs
}

func TestControllersBoundToRequestedDriver(t *testing.T) {
	guest.Require(t)
	top := topology(t)
	bdfs := nvmeFunctions(t)
	if len(bdfs) != len(top.Controllers()) {
		t.Fatalf("%d NVMe functions, topology %s has %d controllers", len(bdfs), top.Name, len(top.Controllers()))
	}
	driver := os.Getenv(guest.EnvDriver)
	bound := guest.DriverFunctions(t, driver)
	if strings.Join(bound, " ") != strings.Join(bdfs, " ") {
		t.Errorf("bound to %s: %v; NVMe functions: %v", driver, bound, bdfs)
	}
}

func TestIOMMUGroupsAndVFIONodes(t *testing.T) {
	guest.Require(t)
	if entries, _ := os.ReadDir("/sys/class/iommu"); len(entries) == 0 {
		t.Fatal("no IOMMU in /sys/class/iommu: intel-iommu is not enabled")
	}
	groups := map[string]string{}
	for _, bdf := range nvmeFunctions(t) {
		g := guest.IOMMUGroup(t, bdf)
		if other, dup := groups[g]; dup {
			t.Errorf("%s and %s share IOMMU group %s; every topology gives each controller its own", bdf, other, g)
		}
		groups[g] = bdf
		if guest.Driver() == "vfio-pci" {
			if _, err := os.Stat("/dev/vfio/" + g); err != nil {
				t.Errorf("%s is bound to vfio-pci but its group node: %v", bdf, err)
			}
		}
	}
	if guest.Driver() == "vfio-pci" {
		if _, err := os.Stat("/dev/vfio/vfio"); err != nil {
			t.Errorf("container node: %v", err)
		}
	}
}

func TestMountsAndHugepages(t *testing.T) {
	guest.Require(t)
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for fs, dir := range map[string]string{"hugetlbfs": "/dev/hugepages", "tracefs": "/sys/kernel/tracing", "bpf": "/sys/fs/bpf"} {
		if !strings.Contains(string(mounts), " "+dir+" "+fs+" ") {
			t.Errorf("%s is not mounted on %s", fs, dir)
		}
	}
	raw, err := os.ReadFile("/proc/sys/vm/nr_hugepages")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(string(raw))); n < 1 {
		t.Errorf("nr_hugepages = %d, want hugepages reserved", n)
	}
}

func TestNUMAPlacement(t *testing.T) {
	guest.Require(t)
	top := topology(t)
	nodes := map[string]int{}
	for _, bdf := range nvmeFunctions(t) {
		raw, err := os.ReadFile(filepath.Join("/sys/bus/pci/devices", bdf, "numa_node"))
		if err != nil {
			t.Fatal(err)
		}
		nodes[strings.TrimSpace(string(raw))]++
	}
	if top.NUMANodes > 1 {
		for n := 0; n < top.NUMANodes; n++ {
			if nodes[strconv.Itoa(n)] == 0 {
				t.Errorf("no NVMe function on NUMA node %d: %v", n, nodes)
			}
		}
	} else if len(nodes) != 1 {
		t.Errorf("topology %s has one NUMA node, functions report %v", top.Name, nodes)
	}
}

func TestNamespacesWithKernelDriver(t *testing.T) {
	guest.Require(t)
	if guest.Driver() != "nvme" {
		// With vfio-pci the namespaces are only visible through the
		// device itself; the nvmelike tests cover that.
		return
	}
	top := topology(t)
	want := map[string]int{}
	for _, c := range top.Controllers() {
		want[c.Serial] = len(c.Namespaces)
	}
	ctrls, _ := filepath.Glob("/sys/class/nvme/nvme*")
	for _, c := range ctrls {
		raw, err := os.ReadFile(filepath.Join(c, "serial"))
		if err != nil {
			t.Fatal(err)
		}
		serial := strings.TrimSpace(string(raw))
		ns, _ := filepath.Glob(filepath.Join("/sys/block", filepath.Base(c)+"n*"))
		if n, ok := want[serial]; !ok || n != len(ns) {
			t.Errorf("controller %s: %d namespaces, topology says %d (known: %v)", serial, len(ns), n, ok)
		}
		delete(want, serial)
	}
	if len(want) != 0 {
		t.Errorf("controllers not found: %v", want)
	}
}
