package pcie

import (
	"fmt"
	"slices"
	"testing"
)

// qemuLayout is what each topology of qemu/topology.go must look like
// from inside its guest. The guest tests check the live /sys against it,
// and the host tests the snapshots captured from those guests.
type qemuLayout struct {
	nvme     int   // QEMU NVMe functions
	switches int   // switch upstream ports, each holding two NVMe
	cards    []int // NVMe functions per card holding any, sorted
	numa     []int // NVMe functions per NUMA node; nil if there are no nodes
}

var qemuLayouts = map[string]qemuLayout{
	"single": {nvme: 1, cards: []int{1}},
	"cards":  {nvme: 5, switches: 2, cards: []int{1, 2, 2}},
	"numa":   {nvme: 4, cards: []int{1, 1, 1, 1}, numa: []int{2, 2}},
	// The PF boots with its VFs disabled (tests enable them and disable
	// them again).
	"sriov": {nvme: 1, cards: []int{1}},
	// Six controllers, each on a root port of its own.
	"quirks": {nvme: 6, cards: []int{1, 1, 1, 1, 1, 1}},
}

// qemuNVMe returns the QEMU NVMe functions of s.
func qemuNVMe(t *testing.T, s *System) []*Function {
	t.Helper()
	sel, err := ParseSelector("1b36:0010", "class=010802")
	if err != nil {
		t.Fatal(err)
	}
	return s.Select(sel)
}

// checkQEMULayout checks a scan of a QEMU guest booted with topology,
// its NVMe functions bound to driver.
func checkQEMULayout(t *testing.T, s *System, topology, driver string) {
	t.Helper()
	want, ok := qemuLayouts[topology]
	if !ok {
		t.Fatalf("unknown topology %q: add it to qemuLayouts", topology)
	}
	nvme := qemuNVMe(t, s)
	if len(nvme) != want.nvme {
		t.Fatalf("found %d QEMU NVMe functions; topology %s has %d", len(nvme), topology, want.nvme)
	}

	for _, f := range nvme {
		if f.Driver != driver {
			t.Errorf("%s: driver %q; want %q", f.BDF, f.Driver, driver)
		}
		if f.IOMMUGroup == NoIOMMUGroup {
			t.Errorf("%s: no IOMMU group behind intel-iommu", f.BDF)
		}
		if !f.HasFullConfig() {
			t.Fatalf("%s: only %d bytes of config space", f.BDF, f.Config.Size)
		}
		if m := f.Config.MSIX; m == nil || m.TableSize < 1 {
			t.Errorf("%s: MSI-X capability %+v", f.BDF, m)
		}
		if f.Config.PCIe == nil {
			t.Errorf("%s: no PCI Express capability", f.BDF)
		}
		if len(f.BARs) == 0 || f.BARs[0].Index != 0 || f.BARs[0].IO || f.BARs[0].Size < 0x1000 {
			t.Errorf("%s: BARs %+v; want a memory BAR0 for the NVMe registers", f.BDF, f.BARs)
		}
		if f.Card == "" {
			t.Errorf("%s: on no card", f.BDF)
		}
		if len(f.Problems) > 0 {
			t.Errorf("%s: problems %q", f.BDF, f.Problems)
		}
	}
	for _, f := range s.Functions {
		if f.Config != nil && len(f.Config.Problems) > 0 {
			t.Errorf("%s: config-space problems on a real device: %q", f.BDF, f.Config.Problems)
		}
	}

	// Every switch holds two NVMe endpoints, each below a downstream
	// port of its own, and sits on a root port.
	switches := 0
	for _, f := range s.Functions {
		if f.Role != RoleUpstreamPort {
			continue
		}
		switches++
		var below []string
		for _, dn := range s.Node(f.BDF).Children {
			if dn.Function == nil || dn.Function.Role != RoleDownstreamPort {
				t.Errorf("switch %s: child %s is not a downstream port", f.BDF, dn.Name)
				continue
			}
			for _, ep := range dn.Children {
				if ep.Function != nil && ep.Function.Class == ClassNVMe {
					below = append(below, ep.Name)
				}
			}
		}
		if len(below) != 2 {
			t.Errorf("switch %s holds NVMe %v; want two", f.BDF, below)
		}
		if p := s.Node(f.BDF).Parent; p == nil || p.Function == nil || p.Function.Role != RoleRootPort {
			t.Errorf("switch %s is not on a root port", f.BDF)
		}
	}
	if switches != want.switches {
		t.Errorf("%d switches; want %d", switches, want.switches)
	}

	// Cards: a switch card holds two NVMe, a root port's one.
	perCard := map[string]int{}
	for _, f := range nvme {
		perCard[f.Card]++
	}
	var sizes []int
	for id, n := range perCard {
		c := s.Card(id)
		if c == nil {
			t.Fatalf("card %q not in the system's cards", id)
		}
		sizes = append(sizes, n)
		wantKind := CardDevice
		switch {
		case n == 2:
			wantKind = CardSwitch
		case topology == "single":
			wantKind = CardIntegrated
		}
		if c.Kind != wantKind {
			t.Errorf("card %s is a %s card; want %s", id, c.Kind, wantKind)
		}
		if len(c.IOMMUGroups) != n {
			t.Errorf("card %s: IOMMU groups %v for %d endpoints; want one group each", id, c.IOMMUGroups, n)
		}
	}
	slices.Sort(sizes)
	if fmt.Sprint(sizes) != fmt.Sprint(want.cards) {
		t.Errorf("NVMe functions per card = %v; want %v", sizes, want.cards)
	}

	// NUMA: the expanders place their controllers on nodes 0 and 1.
	if want.numa != nil {
		perNode := make([]int, len(want.numa))
		for _, f := range nvme {
			if f.NUMANode < 0 || f.NUMANode >= len(perNode) {
				t.Errorf("%s: NUMA node %d", f.BDF, f.NUMANode)
				continue
			}
			perNode[f.NUMANode]++
		}
		if fmt.Sprint(perNode) != fmt.Sprint(want.numa) {
			t.Errorf("NVMe functions per NUMA node = %v; want %v", perNode, want.numa)
		}
	}

	// No NVMe shares its IOMMU group with another endpoint. Below a
	// switch it does share it with its downstream port: QEMU's
	// xio3130-downstream has no ACS capability, so the kernel cannot
	// isolate the two. A port bound to pcieport does not stop VFIO.
	for _, f := range nvme {
		for _, p := range f.IOMMUPeers {
			if pf := s.Function(p); pf == nil || !pf.Role.IsPort() {
				t.Errorf("%s shares IOMMU group %d with %s, which is not a port", f.BDF, f.IOMMUGroup, p)
			}
		}
		above := s.Node(f.BDF).Parent.Function // nil on a root bus
		if above != nil && above.Role == RoleDownstreamPort && above.Config.ACS == nil && !slices.Contains(f.IOMMUPeers, above.BDF) {
			t.Errorf("%s: its downstream port %s has no ACS, yet they are in different groups", f.BDF, above.BDF)
		}
	}
}
