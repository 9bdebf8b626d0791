package pcie

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/umdkit/umd/pcie/pcietest"
)

func scanSample(t *testing.T, edit func(tr *pcietest.Tree)) *System {
	t.Helper()
	tr := pcietest.Sample(t)
	if edit != nil {
		edit(tr)
	}
	s, err := Scan(Options{SysfsRoot: tr.Root, IDs: testIDs(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dump writes what a System says about topology in a stable text form for
// golden comparisons: the tree, then the cards, then per-function facts
// that depend on the topology.
func dump(s *System) string {
	var b strings.Builder
	var tree func(n *Node, depth int)
	tree = func(n *Node, depth int) {
		ind := strings.Repeat("  ", depth)
		if n.IsHostBridge() {
			fmt.Fprintf(&b, "%s%s\n", ind, n.Name)
		} else if f := n.Function; f == nil {
			fmt.Fprintf(&b, "%s%s (not listed in bus/pci/devices)\n", ind, n.Name)
		} else {
			fmt.Fprintf(&b, "%s%s %s:%s %s [%s]", ind, f.BDF.Short(), f.VendorID, f.DeviceID, f.DeviceName, f.Role)
			if f.Driver != "" {
				fmt.Fprintf(&b, " driver=%s", f.Driver)
			}
			if f.IOMMUGroup != NoIOMMUGroup {
				fmt.Fprintf(&b, " group=%d", f.IOMMUGroup)
			}
			if f.NUMANode != NoNUMANode {
				fmt.Fprintf(&b, " numa=%d", f.NUMANode)
			}
			if f.Card != "" {
				fmt.Fprintf(&b, " card=%s", f.Card)
			}
			if f.Link != nil {
				fmt.Fprintf(&b, " link=%q", f.Link.String())
			}
			b.WriteString("\n")
		}
		for _, c := range n.Children {
			tree(c, depth+1)
		}
	}
	for _, h := range s.HostBridges {
		tree(h, 0)
	}
	b.WriteString("\ncards:\n")
	for _, c := range s.Cards {
		fmt.Fprintf(&b, "  %s %s", c.ID, c.Kind)
		if c.RootPort != nil {
			fmt.Fprintf(&b, " on %s", c.RootPort)
		}
		if c.Slot != "" {
			fmt.Fprintf(&b, " slot=%s", c.Slot)
		}
		fmt.Fprintf(&b, " numa=%d groups=%v", c.NUMANode, c.IOMMUGroups)
		if c.Link != nil {
			fmt.Fprintf(&b, " link=%q", c.Link.Link.String())
		}
		fmt.Fprintf(&b, "\n    switches=%v\n    endpoints=%v\n", c.Switches, c.Endpoints)
	}
	b.WriteString("\nfunctions:\n")
	for _, f := range s.Functions {
		fmt.Fprintf(&b, "  %s parent=%v host=%s", f.BDF, bdfOrNone(f.Parent), f.HostBridge)
		if len(f.IOMMUPeers) > 0 {
			fmt.Fprintf(&b, " peers=%v", f.IOMMUPeers)
		}
		if f.NarrowestLink != nil {
			fmt.Fprintf(&b, " narrowest=%q", f.NarrowestLink.String())
		}
		if f.PhysFn != nil {
			fmt.Fprintf(&b, " physfn=%v", f.PhysFn)
		}
		if f.SRIOV != nil {
			fmt.Fprintf(&b, " sriov=%d/%d vfs=%v", f.SRIOV.NumVFs, f.SRIOV.TotalVFs, f.SRIOV.VFs)
		}
		b.WriteString("\n")
	}
	for _, p := range s.Problems {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	return b.String()
}

func bdfOrNone(b *BDF) string {
	if b == nil {
		return "none"
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update after checking):\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

func TestScanSampleGolden(t *testing.T) {
	s := scanSample(t, nil)
	for _, f := range s.Functions {
		if len(f.Problems) > 0 {
			t.Errorf("%s: problems %q", f.BDF, f.Problems)
		}
	}
	golden(t, "sample.golden", dump(s))
}

// TestScanUnprivileged checks that without capabilities (config space
// cut to 64 bytes, as for a non-root caller) the topology comes out the
// same, from position alone.
func TestScanUnprivileged(t *testing.T) {
	root := scanSample(t, nil)
	user := scanSample(t, func(tr *pcietest.Tree) { tr.Unprivileged() })
	if a, b := dump(root), dump(user); a != b {
		t.Errorf("unprivileged scan differs:\n--- root\n%s\n--- user\n%s", a, b)
	}
	for _, f := range user.Functions {
		if f.HasFullConfig() || f.Config == nil || len(f.Config.Capabilities) != 0 || len(f.Problems) != 0 {
			t.Errorf("%s: full=%v caps=%v problems=%q", f.BDF, f.HasFullConfig(), f.Config, f.Problems)
		}
	}
}

func TestScanFacts(t *testing.T) {
	s := scanSample(t, nil)
	must := func(bdf string) *Function {
		t.Helper()
		b, err := ParseBDF(bdf)
		if err != nil {
			t.Fatal(err)
		}
		f := s.Function(b)
		if f == nil {
			t.Fatalf("%s not found", bdf)
		}
		return f
	}

	nvme := must("0000:03:00.0")
	if nvme.VendorName != "Red Hat, Inc." || nvme.DeviceName != "QEMU NVM Express Controller" ||
		nvme.SubsystemName != "QEMU Virtual Machine" || nvme.ClassName != "Non-Volatile memory controller (NVM Express)" {
		t.Errorf("names: %q %q %q %q", nvme.VendorName, nvme.DeviceName, nvme.SubsystemName, nvme.ClassName)
	}
	if nvme.Revision != 2 || nvme.Class != ClassNVMe || nvme.Driver != "vfio-pci" || nvme.IOMMUGroup != 5 {
		t.Errorf("attrs: %+v", nvme)
	}
	if len(nvme.BARs) != 1 || nvme.BARs[0].Size != 0x4000 || !nvme.BARs[0].Is64 || nvme.BARs[0].Prefetchable || nvme.BARs[0].IO {
		t.Errorf("BARs = %+v", nvme.BARs)
	}
	if nvme.Config.MSIX == nil || nvme.Config.MSIX.TableSize != 65 {
		t.Errorf("MSI-X = %+v", nvme.Config.MSIX)
	}
	if want := "devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0/0000:03:00.0"; nvme.SysfsPath != want {
		t.Errorf("SysfsPath = %q", nvme.SysfsPath)
	}

	// The degraded link is flagged at both of its ends, and it is the
	// narrowest on the way to its endpoint.
	slow, slowPort := must("0000:08:00.0"), must("0000:06:01.0")
	if !slow.Link.Degraded || !slowPort.Link.Degraded {
		t.Errorf("degraded: endpoint %v, port %v", slow.Link, slowPort.Link)
	}
	if n := slow.NarrowestLink; n == nil || n.Upstream != slowPort.BDF || n.Speed != 2500 || n.Width != 1 {
		t.Errorf("narrowest link = %v", n)
	}
	if got := len(slow.UpstreamLinks); got != 2 {
		t.Errorf("%d links above 08:00.0; want 2 (root port to switch, switch to endpoint)", got)
	}
	// A root port able to do x16 Gen4 running a x4 Gen3 switch is not
	// degraded: the switch can do no more.
	if rp := must("0000:00:01.0"); rp.Link.Degraded {
		t.Errorf("root port 00:01.0 flagged degraded: %v", rp.Link)
	}
	if rp := must("0000:00:05.0"); rp.Link.Degraded || rp.Link.String() != "down" {
		t.Errorf("empty root port link = %v", rp.Link)
	}

	// SR-IOV both ways.
	pf := must("0000:0a:00.0")
	if pf.SRIOV == nil || pf.SRIOV.TotalVFs != 8 || pf.SRIOV.NumVFs != 2 || len(pf.SRIOV.VFs) != 2 {
		t.Fatalf("PF SRIOV = %+v", pf.SRIOV)
	}
	if pf.Config.SRIOV == nil || pf.Config.SRIOV.VFDeviceID != 0x154c || pf.Config.ATS == nil {
		t.Errorf("PF config SRIOV = %+v ATS = %+v", pf.Config.SRIOV, pf.Config.ATS)
	}
	if len(pf.VFBARs) != 1 || pf.VFBARs[0].Index != 0 || pf.VFBARs[0].Size != 0x10000 {
		t.Errorf("VF BARs = %+v", pf.VFBARs)
	}
	for _, b := range pf.SRIOV.VFs {
		vf := s.Function(b)
		if vf == nil || !vf.IsVF() || *vf.PhysFn != pf.BDF || vf.Card != pf.Card {
			t.Errorf("VF %v: %+v", b, vf)
		}
		if vf.NarrowestLink == nil || vf.NarrowestLink.Downstream != pf.BDF {
			t.Errorf("VF %v narrowest link = %v; want its PF's", b, vf.NarrowestLink)
		}
	}
	if n := s.Node(pf.SRIOV.VFs[0]); n.Parent.Function != pf {
		t.Errorf("VF node hangs below %s; want its PF", n.Parent.Name)
	}

	// The chipset group has three members, each the others' peers.
	lpc := must("0000:00:1f.0")
	if got := fmt.Sprint(lpc.IOMMUPeers); got != "[0000:00:1f.2 0000:00:1f.3]" {
		t.Errorf("peers of 00:1f.0 = %s", got)
	}
	if got := fmt.Sprint(s.Group(20)); got != "[0000:00:1f.0 0000:00:1f.2 0000:00:1f.3]" {
		t.Errorf("group 20 = %s", got)
	}
	if c := s.CardOf(lpc.BDF); c == nil || c.Kind != CardIntegrated || len(c.Endpoints) != 3 {
		t.Errorf("chipset card = %+v", c)
	}

	// NUMA and slots.
	if f := must("0000:81:00.0"); f.NUMANode != 1 || f.HostBridge != "pci0000:80" || s.CardOf(f.BDF).NUMANode != 1 {
		t.Errorf("81:00.0 numa %d host %s", f.NUMANode, f.HostBridge)
	}
	if f := must("0000:09:00.0"); f.Slot != "3" || s.CardOf(f.BDF).Slot != "3" {
		t.Errorf("09:00.0 slot %q", f.Slot)
	}

	// Three cards hold the five NVMe functions of the two switches and
	// the solo root port, 2+2+1.
	var sizes []int
	for _, c := range s.Cards {
		n := 0
		for _, e := range c.Endpoints {
			if s.Function(e).Class == ClassNVMe && s.Function(e).HostBridge == "pci0000:00" {
				n++
			}
		}
		if n > 0 {
			sizes = append(sizes, n)
		}
	}
	if fmt.Sprint(sizes) != "[2 2 1]" {
		t.Errorf("NVMe per card = %v; want [2 2 1]", sizes)
	}
}

func TestScanEdgeCases(t *testing.T) {
	s := scanSample(t, func(tr *pcietest.Tree) {
		// No NUMA or IOMMU information.
		tr.Remove("0000:03:00.0", "numa_node")
		tr.Remove("0000:03:00.0", "iommu_group")
		// Unreadable config (a directory reads as an error) and a
		// damaged vendor attribute: IDs come from elsewhere.
		tr.Remove("0000:04:00.0", "config")
		if err := os.Mkdir(filepath.Join(tr.Path("0000:04:00.0"), "config"), 0o755); err != nil {
			t.Fatal(err)
		}
		tr.Write("0000:07:00.0", "vendor", "0xzz\n")
		tr.Write("0000:07:00.0", "current_link_speed", "fast\n")
		tr.Write("0000:09:00.0", "resource", "0x1000 0x0fff\n")
		// Something that is not a PCI address in bus/pci/devices.
		if err := os.Mkdir(filepath.Join(tr.Root, "bus/pci/devices/garbage"), 0o755); err != nil {
			t.Fatal(err)
		}
		// A function with no vendor attribute and no config: skipped.
		tr.Add(pcietest.Func{BDF: "0000:00:06.0", Vendor: 1, Device: 2, Class: 0xff0000})
		tr.Remove("0000:00:06.0", "vendor")
		tr.Remove("0000:00:06.0", "config")
		// A function whose bus/pci/devices entry is a directory, not a
		// link: no topology, but it is still listed.
		if err := os.MkdirAll(filepath.Join(tr.Root, "bus/pci/devices/0000:00:07.0"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(tr.Root, "bus/pci/devices/0000:00:07.0/vendor"), []byte("0x1234\n"), 0o644)
	})

	get := func(bdf string) *Function {
		b, _ := ParseBDF(bdf)
		return s.Function(b)
	}
	if f := get("0000:03:00.0"); f.NUMANode != NoNUMANode || f.IOMMUGroup != NoIOMMUGroup || len(f.Problems) != 0 || len(f.IOMMUPeers) != 0 {
		t.Errorf("03:00.0: numa %d group %d problems %q peers %v", f.NUMANode, f.IOMMUGroup, f.Problems, f.IOMMUPeers)
	}
	f := get("0000:04:00.0")
	if f.Config != nil || f.VendorID != 0x1b36 || !hasProblem(f, "reading config") {
		t.Errorf("04:00.0: config %v vendor %v problems %q", f.Config, f.VendorID, f.Problems)
	}
	if f.Role != RoleEndpoint {
		t.Errorf("04:00.0 role from position = %q", f.Role)
	}
	f = get("0000:07:00.0")
	if f.VendorID != 0x1b36 || !hasProblem(f, `vendor holds "0xzz"`) || !hasProblem(f, "current_link_speed") {
		t.Errorf("07:00.0: vendor %v problems %q", f.VendorID, f.Problems)
	}
	if f := get("0000:09:00.0"); !hasProblem(f, "resource: line 1") {
		t.Errorf("09:00.0 problems %q", f.Problems)
	}
	if get("0000:00:06.0") != nil {
		t.Error("00:06.0 has nothing to identify it by, yet was listed")
	}
	if f := get("0000:00:07.0"); f == nil || f.HostBridge != "pci0000:00" || !hasProblem(f, "not a symlink") {
		t.Errorf("00:07.0 = %+v", f)
	}
	problems := strings.Join(s.Problems, "\n")
	for _, want := range []string{"skipping " + filepath.Join(s.SysfsRoot, "bus/pci/devices/garbage"), "skipping 0000:00:06.0: reading PCI function 0000:00:06.0: no vendor attribute and no config space"} {
		if !strings.Contains(problems, want) {
			t.Errorf("system problems %q lack %q", s.Problems, want)
		}
	}
}

func hasProblem(f *Function, s string) bool {
	return slices.ContainsFunc(f.Problems, func(p string) bool { return strings.Contains(p, s) })
}

func TestScanNoSysfs(t *testing.T) {
	_, err := Scan(Options{SysfsRoot: filepath.Join(t.TempDir(), "nothing")})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "listing PCI functions: open ") {
		t.Errorf("err = %v", err)
	}
}

// TestScanVMD covers a root bus below a function, as Intel VMD makes:
// its NVMe sits in a domain of its own, below the VMD endpoint.
func TestScanVMD(t *testing.T) {
	tr := pcietest.New(t)
	tr.Add(pcietest.Func{BDF: "0000:00:0e.0", Vendor: 0x8086, Device: 0x467f, Class: 0x010400, Driver: "vmd"})
	tr.Add(pcietest.Func{BDF: "10000:e0:06.0", Parent: "0000:00:0e.0", HostBridge: "pci10000:e0",
		Vendor: 0x8086, Device: 0x464d, Class: 0x060400, Driver: "pcieport"})
	tr.Add(pcietest.Func{BDF: "10000:e1:00.0", Parent: "10000:e0:06.0", Vendor: 0x144d, Device: 0xa80a, Class: 0x010802, Driver: "nvme"})
	s, err := Scan(Options{SysfsRoot: tr.Root, IDs: &IDs{}})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "vmd.golden", dump(s))
}

// TestScanGarbledLinks: physfn links that point at each other, and a
// function whose path runs through a function bus/pci/devices does not
// list. The scan must end and keep what it can.
func TestScanGarbledLinks(t *testing.T) {
	tr := pcietest.New(t)
	tr.Add(pcietest.Func{BDF: "0000:00:02.0", Vendor: 0x8086, Device: 1, Class: 0x020000})
	tr.Add(pcietest.Func{BDF: "0000:00:03.0", Vendor: 0x8086, Device: 2, Class: 0x020000})
	for _, l := range [][2]string{{"0000:00:02.0", "../0000:00:03.0"}, {"0000:00:03.0", "../0000:00:02.0"}} {
		if err := os.Symlink(l[1], filepath.Join(tr.Path(l[0]), "physfn")); err != nil {
			t.Fatal(err)
		}
	}
	tr.Add(pcietest.Func{BDF: "0000:00:1c.0", Vendor: 0x8086, Device: 3, Class: 0x060400})
	tr.Add(pcietest.Func{BDF: "0000:01:00.0", Parent: "0000:00:1c.0", Vendor: 0x8086, Device: 4, Class: 0x010802})
	if err := os.Remove(filepath.Join(tr.Root, "bus/pci/devices/0000:00:1c.0")); err != nil {
		t.Fatal(err)
	}
	s, err := Scan(Options{SysfsRoot: tr.Root, IDs: &IDs{}})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "garbled.golden", dump(s))
	hidden := s.Node(BDF{Bus: 0, Device: 0x1c})
	if hidden == nil || hidden.Function != nil || hidden.IsHostBridge() {
		t.Errorf("unlisted bridge node = %+v", hidden)
	}
	if f := s.Function(BDF{Bus: 1}); f.HostBridge != "pci0000:00" || f.Parent == nil || *f.Parent != (BDF{Bus: 0, Device: 0x1c}) {
		t.Errorf("01:00.0: host %q parent %v", f.HostBridge, f.Parent)
	}
}
