package dra

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/pcie"
	"github.com/umdkit/umd/pcie/pcietest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// restore rebuilds one of pcie's captured guest trees and scans it.
func restore(t *testing.T, name string) *pcie.System {
	t.Helper()
	dir, cleanup, err := pcie.OpenTree(filepath.Join("..", "pcie", "testdata", "snapshots", name+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	return scan(t, dir)
}

// cardsShares is the "qemu-cards" tree published as umdd serves it, each
// controller with four shares.
func cardsShares(t *testing.T) *Inventory {
	t.Helper()
	ids, err := BrokerIdentities(brokerList)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := PublishWith(restore(t, "qemu-cards"), ids, PublishOptions{Shares: 4})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func scan(t *testing.T, root string) *pcie.System {
	t.Helper()
	sys, err := pcie.Scan(pcie.Options{SysfsRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	return sys
}

// sriovTree is a machine with an SR-IOV NVMe controller:
//
//	pci0000:00
//	  00:01.0 root port -> 01:00.0 NVMe PF (vfio-pci), 2 of 4 VFs enabled:
//	                       01:00.1 (vfio-pci, published), 01:00.2 (nvme, not)
//	pci0000:80 (NUMA node 1)
//	  80:00.0 root port -> 81:00.0 NVMe PF (nvme, not published),
//	                       81:00.1 its VF (vfio-pci, not published: the
//	                       broker leases VFs only of a PF it serves)
//	  80:01.0 root port -> 82:00.0 NVMe (vfio-pci, no IOMMU group info given)
func sriovTree(t *testing.T) *pcie.System {
	tr := pcietest.New(t)
	rp := func(bdf, group, numa string) {
		tr.Add(pcietest.Func{BDF: bdf, Vendor: pcietest.VendorRedHat, Device: pcietest.DeviceRootPort,
			Class: pcietest.ClassBridge, Driver: "pcieport", IOMMUGroup: group, NUMANode: numa,
			Config: pcietest.NewConfig(pcietest.VendorRedHat, pcietest.DeviceRootPort, pcietest.ClassBridge).
				Buses(0, uint8(mustBDF(t, bdf).Bus+1), uint8(mustBDF(t, bdf).Bus+1)).Bytes()})
	}
	nvme := func(bdf, parent, driver, group, numa, physfn string, total, num int) {
		tr.Add(pcietest.Func{BDF: bdf, Parent: parent, Vendor: pcietest.VendorRedHat, Device: pcietest.DeviceNVMe,
			Class: pcietest.ClassNVMe, Driver: driver, IOMMUGroup: group, NUMANode: numa,
			TotalVFs: total, NumVFs: num, PhysFn: physfn})
	}
	rp("0000:00:01.0", "1", "")
	nvme("0000:01:00.0", "0000:00:01.0", "vfio-pci", "2", "", "", 4, 2)
	nvme("0000:01:00.1", "0000:00:01.0", "vfio-pci", "3", "", "0000:01:00.0", 0, 0)
	nvme("0000:01:00.2", "0000:00:01.0", "nvme", "4", "", "0000:01:00.0", 0, 0)
	rp("0000:80:00.0", "10", "1")
	nvme("0000:81:00.0", "0000:80:00.0", "nvme", "11", "1", "", 4, 1)
	nvme("0000:81:00.1", "0000:80:00.0", "vfio-pci", "12", "1", "0000:81:00.0", 0, 0)
	rp("0000:80:01.0", "13", "1")
	nvme("0000:82:00.0", "0000:80:01.0", "vfio-pci", "", "1", "", 0, 0)
	return scan(t, tr.Root)
}

func mustBDF(t *testing.T, s string) pcie.BDF {
	t.Helper()
	b, err := pcie.ParseBDF(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// brokerList is what a broker serving the cards topology lists.
var brokerList = []broker.DeviceInfo{
	{BDF: "0000:03:00.0", Serial: "umd-cards-1", Model: "QEMU NVMe Ctrl", MaxQueues: 8,
		Namespaces: []broker.NamespaceInfo{{NSID: 1, LBASize: 512, Blocks: 131072}, {NSID: 2, LBASize: 4096, Blocks: 1024}}},
	{BDF: "0000:04:00.0", Serial: "umd-cards-2", Model: "QEMU NVMe Ctrl", MaxQueues: 8,
		Namespaces: []broker.NamespaceInfo{{NSID: 1, LBASize: 512, Blocks: 131072}}},
}

func TestSlicesGolden(t *testing.T) {
	ids, err := BrokerIdentities(brokerList)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		sys     func(*testing.T) *pcie.System
		ids     IdentitySource
		shares  int
		devices []string
	}{
		{"qemu-cards", func(t *testing.T) *pcie.System { return restore(t, "qemu-cards") }, ids, 0,
			[]string{"nvme-0000-03-00-0", "nvme-0000-04-00-0", "nvme-0000-07-00-0", "nvme-0000-08-00-0", "nvme-0000-09-00-0"}},
		// 03:00.0 and 04:00.0 have 8 queue pairs each (the broker says):
		// four shares of two; the others' queue pairs are unknown.
		{"qemu-cards-shares", func(t *testing.T) *pcie.System { return restore(t, "qemu-cards") }, ids, 4,
			[]string{"nvme-0000-03-00-0", "nvme-0000-03-00-0-share-0", "nvme-0000-03-00-0-share-1", "nvme-0000-03-00-0-share-2", "nvme-0000-03-00-0-share-3",
				"nvme-0000-04-00-0", "nvme-0000-04-00-0-share-0", "nvme-0000-04-00-0-share-1", "nvme-0000-04-00-0-share-2", "nvme-0000-04-00-0-share-3",
				"nvme-0000-07-00-0", "nvme-0000-08-00-0", "nvme-0000-09-00-0"}},
		{"qemu-numa", func(t *testing.T) *pcie.System { return restore(t, "qemu-numa") }, nil, 0,
			[]string{"nvme-0000-41-00-0", "nvme-0000-42-00-0", "nvme-0000-61-00-0", "nvme-0000-62-00-0"}},
		{"qemu-single", func(t *testing.T) *pcie.System { return restore(t, "qemu-single") }, nil, 0, nil},
		{"sriov", sriovTree, nil, 0, []string{"nvme-0000-01-00-0", "nvme-0000-01-00-1", "nvme-0000-82-00-0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := tc.sys(t)
			inv, err := PublishWith(sys, tc.ids, PublishOptions{Shares: tc.shares})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, p := range inv.Devices() {
				names = append(names, p.Device.Name)
			}
			if tc.devices != nil && strings.Join(names, " ") != strings.Join(tc.devices, " ") {
				t.Errorf("published %q, want %q", names, tc.devices)
			}
			for _, p := range inv.Devices() {
				checkDevice(t, sys, p)
			}
			sl := inv.Slices("node-a", 3)
			checkCounters(t, sl)
			got, err := yaml.Marshal(sl)
			if err != nil {
				t.Fatal(err)
			}
			// Publishing twice gives the same bytes (maps are sorted by
			// the encoder; devices by BDF).
			inv2, _ := PublishWith(tc.sys(t), tc.ids, PublishOptions{Shares: tc.shares})
			again, _ := yaml.Marshal(inv2.Slices("node-a", 3))
			if !bytes.Equal(got, again) {
				t.Error("two publications of the same tree differ")
			}
			golden(t, filepath.Join("testdata", "slices-"+tc.name+".yaml"), got)
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./dra -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs; got:\n%s", path, got)
	}
}

var cIdentifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// checkDevice checks what the API server would: a DNS label as name,
// qualified names, value lengths, at most 32 attributes and capacities;
// and that the standard pcieRoot is where sysfs puts the function.
func checkDevice(t *testing.T, sys *pcie.System, p Published) {
	t.Helper()
	d := p.Device
	if errs := validation.IsDNS1123Label(d.Name); len(errs) > 0 {
		t.Errorf("device name %q: %v", d.Name, errs)
	}
	if n := len(d.Attributes) + len(d.Capacity); n > resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice {
		t.Errorf("%s: %d attributes and capacities", d.Name, n)
	}
	names := map[resourceapi.QualifiedName]bool{}
	for n := range d.Attributes {
		names[n] = true
	}
	for n := range d.Capacity {
		names[n] = true
	}
	for n := range names {
		domain, id, ok := strings.Cut(string(n), "/")
		if !ok {
			t.Errorf("%s: attribute %q is not fully qualified", d.Name, n)
			continue
		}
		if errs := validation.IsDNS1123Subdomain(domain); len(errs) > 0 || len(domain) > resourceapi.DeviceMaxDomainLength {
			t.Errorf("%s: attribute %q: domain %v", d.Name, n, errs)
		}
		if !cIdentifier.MatchString(id) || len(id) > resourceapi.DeviceMaxIDLength {
			t.Errorf("%s: attribute %q: bad identifier", d.Name, n)
		}
	}
	for n, a := range d.Attributes {
		set := 0
		for _, b := range []bool{a.IntValue != nil, a.BoolValue != nil, a.StringValue != nil, a.VersionValue != nil} {
			if b {
				set++
			}
		}
		if set != 1 {
			t.Errorf("%s: attribute %s has %d values", d.Name, n, set)
		}
		if a.StringValue != nil && len(*a.StringValue) > resourceapi.DeviceAttributeMaxValueLength {
			t.Errorf("%s: attribute %s too long", d.Name, n)
		}
	}
	f := sys.Function(p.BDF)
	want, _, _ := strings.Cut(strings.TrimPrefix(f.SysfsPath, "devices/"), "/")
	if r := d.Attributes[AttrPCIeRoot].StringValue; r == nil || *r != want || !regexp.MustCompile(`^pci[0-9a-f]{4,}:[0-9a-f]{2}$`).MatchString(*r) {
		t.Errorf("%s: pcieRoot %v, want %q (from %s)", d.Name, r, want, f.SysfsPath)
	}
	if g, ok := d.Attributes[AttrIOMMUGroup]; ok != (f.IOMMUGroup != pcie.NoIOMMUGroup) || ok && *g.IntValue != int64(f.IOMMUGroup) {
		t.Errorf("%s: iommuGroup %v (set %v), want %d", d.Name, g.IntValue, ok, f.IOMMUGroup)
	}
}

func TestPublishIdentity(t *testing.T) {
	ids, err := BrokerIdentities(brokerList)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := Publish(restore(t, "qemu-cards"), ids)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := inv.Lookup("nvme-0000-03-00-0")
	if !ok {
		t.Fatal("03:00.0 not published")
	}
	if q := p.Device.Capacity[CapStorage].Value; q.Value() != 131072*512+1024*4096 {
		t.Errorf("storage %s", q.String())
	}
	if got := *p.Device.Attributes[AttrNamespaces].IntValue; got != 2 {
		t.Errorf("namespaces %d", got)
	}
	if got := *p.Device.Attributes[AttrSerial].StringValue; got != "umd-cards-1" {
		t.Errorf("serial %q", got)
	}
	// Devices behind one switch share a card; one on its own is its own.
	p4, _ := inv.Lookup("nvme-0000-04-00-0")
	p9, _ := inv.Lookup("nvme-0000-09-00-0")
	if c3, c4, c9 := *p.Device.Attributes[AttrCard].StringValue, *p4.Device.Attributes[AttrCard].StringValue, *p9.Device.Attributes[AttrCard].StringValue; c3 != c4 || c3 == c9 {
		t.Errorf("cards %s %s %s: want 03 and 04 on one, 09 on another", c3, c4, c9)
	}
	// Unknown identity: no Identify attributes, no capacity.
	if _, ok := p9.Device.Attributes[AttrSerial]; ok || p9.Device.Capacity != nil {
		t.Errorf("09:00.0 has identity attributes without an identity: %v", p9.Device)
	}

	long := Identities{p.BDF: {Model: strings.Repeat("m", 65)}}
	if _, err := Publish(restore(t, "qemu-cards"), long); err == nil || !strings.Contains(err.Error(), "model") {
		t.Errorf("a 65-byte model: %v, want an error naming the model", err)
	}
	if _, err := BrokerIdentities([]broker.DeviceInfo{{BDF: "nonsense"}}); err == nil {
		t.Error("a bad BDF in the broker list was accepted")
	}
}

func TestPublishVF(t *testing.T) {
	inv, err := Publish(sriovTree(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	vf, ok := inv.Lookup("nvme-0000-01-00-1")
	if !ok {
		t.Fatal("VF 01:00.1 not published")
	}
	if f := *vf.Device.Attributes[AttrFunction].StringValue; f != FunctionVF {
		t.Errorf("function %q", f)
	}
	if pf := *vf.Device.Attributes[AttrPhysFn].StringValue; pf != "0000:01:00.0" {
		t.Errorf("physfn %q", pf)
	}
	pf, _ := inv.Lookup("nvme-0000-01-00-0")
	if a, b := *pf.Device.Attributes[AttrCard].StringValue, *vf.Device.Attributes[AttrCard].StringValue; a != b {
		t.Errorf("VF on card %s, its PF on %s", b, a)
	}
	if _, ok := inv.Lookup("nvme-0000-81-00-1"); ok {
		t.Error("VF of a PF not bound to vfio-pci published")
	}
	if n := *inv.Devices()[2].Device.Attributes[AttrNUMANode].IntValue; n != 1 {
		t.Errorf("82:00.0 numa %d", n)
	}
}

func TestSlicesSplit(t *testing.T) {
	inv := &Inventory{byName: map[string]int{}}
	for i := range 300 {
		b := pcie.BDF{Bus: uint8(i / 8), Device: uint8(i % 8)}
		inv.devices = append(inv.devices, Published{BDF: b, Device: resourceapi.Device{Name: DeviceName(b)}})
	}
	sl := inv.Slices("n", 1)
	if len(sl) != 3 {
		t.Fatalf("%d slices", len(sl))
	}
	total := 0
	for _, s := range sl {
		if s.Spec.Pool.ResourceSliceCount != 3 || len(s.Spec.Devices) > resourceapi.ResourceSliceMaxDevices {
			t.Errorf("slice %s: count %d, %d devices", s.Name, s.Spec.Pool.ResourceSliceCount, len(s.Spec.Devices))
		}
		total += len(s.Spec.Devices)
	}
	if total != 300 {
		t.Errorf("%d devices in slices", total)
	}
	if sl := (&Inventory{}).Slices("n", 1); len(sl) != 1 || len(sl[0].Spec.Devices) != 0 {
		t.Errorf("empty inventory: %d slices", len(sl))
	}
}

// Behind an Intel VMD the NVMe sits in a domain of its own; its PCIe root,
// as Kubernetes reads it, is still the root complex the VMD hangs under.
func TestPublishVMD(t *testing.T) {
	tr := pcietest.New(t)
	tr.Add(pcietest.Func{BDF: "0000:00:0e.0", Vendor: 0x8086, Device: 0x467f, Class: 0x010400, Driver: "vmd", IOMMUGroup: "5"})
	tr.Add(pcietest.Func{BDF: "10000:e0:06.0", Parent: "0000:00:0e.0", HostBridge: "pci10000:e0",
		Vendor: 0x8086, Device: 0x464d, Class: 0x060400, Driver: "pcieport", IOMMUGroup: "5"})
	tr.Add(pcietest.Func{BDF: "10000:e1:00.0", Parent: "10000:e0:06.0", Vendor: 0x144d, Device: 0xa80a,
		Class: pcietest.ClassNVMe, Driver: "vfio-pci", IOMMUGroup: "5"})
	sys := scan(t, tr.Root)
	inv, err := Publish(sys, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Devices()) != 1 {
		t.Fatalf("%d devices", len(inv.Devices()))
	}
	p := inv.Devices()[0]
	checkDevice(t, sys, p)
	if p.Device.Name != "nvme-10000-e1-00-0" || *p.Device.Attributes[AttrPCIeRoot].StringValue != "pci0000:00" {
		t.Errorf("name %s, pcieRoot %s", p.Device.Name, *p.Device.Attributes[AttrPCIeRoot].StringValue)
	}
}

// checkCounters checks what the 1.34 API server checks of partitionable
// devices in each slice: every counter a device consumes is in a counter
// set of the same slice, set names are unique, and the slice is within
// the limits on devices and counters.
func checkCounters(t *testing.T, sl []resourceapi.ResourceSlice) {
	t.Helper()
	for _, s := range sl {
		sets := map[string]resourceapi.CounterSet{}
		shared := 0
		for _, cs := range s.Spec.SharedCounters {
			if _, dup := sets[cs.Name]; dup {
				t.Errorf("slice %s: counter set %s twice", s.Name, cs.Name)
			}
			if errs := validation.IsDNS1123Label(cs.Name); len(errs) > 0 {
				t.Errorf("counter set name %q: %v", cs.Name, errs)
			}
			for c := range cs.Counters {
				if errs := validation.IsDNS1123Label(c); len(errs) > 0 {
					t.Errorf("counter name %q: %v", c, errs)
				}
			}
			sets[cs.Name] = cs
			shared += len(cs.Counters)
		}
		consumed := 0
		for _, d := range s.Spec.Devices {
			for _, c := range d.ConsumesCounters {
				set, ok := sets[c.CounterSet]
				if !ok {
					t.Errorf("slice %s: device %s consumes counter set %s of another slice", s.Name, d.Name, c.CounterSet)
				}
				for name := range c.Counters {
					if _, ok := set.Counters[name]; !ok {
						t.Errorf("slice %s: device %s consumes %s/%s, which the set lacks", s.Name, d.Name, c.CounterSet, name)
					}
					consumed++
				}
			}
		}
		if len(s.Spec.Devices) > resourceapi.ResourceSliceMaxDevices || shared > maxSliceSharedCounters || consumed > maxSliceDeviceCounters {
			t.Errorf("slice %s: %d devices, %d shared counters, %d consumed: over the 1.34 limits", s.Name, len(s.Spec.Devices), shared, consumed)
		}
	}
}

// queuePairs is what a device consumes of its controller's queue pairs.
func queuePairs(t *testing.T, d resourceapi.Device) int64 {
	t.Helper()
	if len(d.ConsumesCounters) != 1 {
		t.Fatalf("%s consumes %d counter sets, want 1", d.Name, len(d.ConsumesCounters))
	}
	q := d.ConsumesCounters[0].Counters[CounterQueuePairs].Value
	return q.Value()
}

// TestPublishShares: a controller whose queue pairs are known is published
// whole and as named shares; the whole device consumes all of its counter,
// each share its part, and the shares carry the controller's attributes,
// share == true and the controller's name. Devices that cannot be split
// are whole only, with share == false.
func TestPublishShares(t *testing.T) {
	ids, err := BrokerIdentities(brokerList)
	if err != nil {
		t.Fatal(err)
	}
	sys := restore(t, "qemu-cards")
	inv, err := PublishWith(sys, ids, PublishOptions{Shares: 3})
	if err != nil {
		t.Fatal(err)
	}
	whole, ok := inv.Lookup("nvme-0000-03-00-0")
	if !ok {
		t.Fatal("03:00.0 not published")
	}
	if whole.Counters == nil || whole.Counters.Name != whole.Device.Name {
		t.Fatalf("whole device's counter set %+v", whole.Counters)
	}
	if q := whole.Counters.Counters[CounterQueuePairs].Value; q.Value() != 8 {
		t.Errorf("counter set holds %s queue pairs, want the controller's 8", q.String())
	}
	if got := queuePairs(t, whole.Device); got != 8 {
		t.Errorf("the whole device consumes %d, want all 8", got)
	}
	if b := whole.Device.Attributes[AttrShare].BoolValue; b == nil || *b {
		t.Errorf("whole device: share %v, want false", b)
	}
	// 8 queue pairs in 3 shares: 2 each (whole numbers; 2 left over).
	for i := range 3 {
		name := ShareName("nvme-0000-03-00-0", i)
		sh, ok := inv.Lookup(name)
		if !ok {
			t.Fatalf("%s not published", name)
		}
		checkDevice(t, sys, sh)
		if sh.Share == nil || *sh.Share != (Share{Controller: "nvme-0000-03-00-0", Index: i, QueuePairs: 2}) || sh.BDF != whole.BDF {
			t.Errorf("%s: share %+v at %s", name, sh.Share, sh.BDF)
		}
		if got := queuePairs(t, sh.Device); got != 2 || sh.Device.ConsumesCounters[0].CounterSet != "nvme-0000-03-00-0" {
			t.Errorf("%s consumes %d of %s, want 2 of the controller's set", name, got, sh.Device.ConsumesCounters[0].CounterSet)
		}
		if b := sh.Device.Attributes[AttrShare].BoolValue; b == nil || !*b {
			t.Errorf("%s: share %v, want true", name, b)
		}
		for _, a := range []resourceapi.QualifiedName{AttrController, AttrPCIBusID, AttrSerial, AttrCard, AttrNUMANode} {
			if !apiequality(sh.Device.Attributes[a], whole.Device.Attributes[a]) {
				t.Errorf("%s: attribute %s differs from its controller's", name, a)
			}
		}
		if q := sh.Device.Capacity[CapQueuePairs].Value; q.Value() != 2 {
			t.Errorf("%s: capacity queuePairs %s, want 2", name, q.String())
		}
	}
	if _, ok := inv.Lookup(ShareName("nvme-0000-03-00-0", 3)); ok {
		t.Error("a fourth share of three published")
	}
	// 07:00.0: queue pairs unknown, so not split; whole, consuming nothing.
	p7, _ := inv.Lookup("nvme-0000-07-00-0")
	if p7.Counters != nil || p7.Device.ConsumesCounters != nil || *p7.Device.Attributes[AttrShare].BoolValue || *p7.Device.Attributes[AttrController].StringValue != p7.Device.Name {
		t.Errorf("unsplit device: %+v", p7)
	}
	if _, ok := inv.Lookup(ShareName("nvme-0000-07-00-0", 0)); ok {
		t.Error("a controller of unknown queue pairs was split")
	}

	// Fewer queue pairs than shares: one share per queue pair.
	few, err := PublishWith(sys, Identities{whole.BDF: {QueuePairs: 3}}, PublishOptions{Shares: 4})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range few.Devices() {
		if p.Share != nil {
			names = append(names, p.Device.Name)
			if p.Share.QueuePairs != 1 {
				t.Errorf("%s has %d queue pairs, want 1", p.Device.Name, p.Share.QueuePairs)
			}
		}
	}
	if len(names) != 3 {
		t.Errorf("3 queue pairs in 4 shares gave shares %q, want 3", names)
	}
	for _, n := range []int{-1, MaxShares + 1} {
		if _, err := PublishWith(sys, ids, PublishOptions{Shares: n}); err == nil || !strings.Contains(err.Error(), "must be 0 to") {
			t.Errorf("%d shares: %v, want an error naming the range", n, err)
		}
	}

	// A VF is never split, even with its queue pairs known.
	sr := sriovTree(t)
	vfInv, err := PublishWith(sr, Identities{mustBDF(t, "0000:01:00.1"): {QueuePairs: 8}, mustBDF(t, "0000:01:00.0"): {QueuePairs: 8}}, PublishOptions{Shares: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := vfInv.Lookup(ShareName("nvme-0000-01-00-1", 0)); ok {
		t.Error("a VF was split")
	}
	if _, ok := vfInv.Lookup(ShareName("nvme-0000-01-00-0", 1)); !ok {
		t.Error("the PF was not split")
	}
}

func apiequality(a, b resourceapi.DeviceAttribute) bool {
	x, _ := yaml.Marshal(a)
	y, _ := yaml.Marshal(b)
	return bytes.Equal(x, y)
}

// TestSlicesSplitShares: many split controllers are cut into slices that
// keep each controller's devices with its counter set, within 128 devices
// and 32 shared counters a slice, whichever binds first.
func TestSlicesSplitShares(t *testing.T) {
	for _, tc := range []struct {
		shares              int
		firstDevs, firstSet int
	}{
		{4, 125, 25}, // 5 devices per controller: 128 devices bind
		{1, 64, 32},  // 2 devices per controller: 32 counters bind
	} {
		inv := &Inventory{byName: map[string]int{}}
		for i := range 40 {
			b := pcie.BDF{Bus: uint8(i + 1)}
			p := Published{BDF: b, Device: resourceapi.Device{Name: DeviceName(b),
				Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{AttrShare: boolean(false)},
				Capacity:   map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{CapQueuePairs: {Value: *resource.NewQuantity(16, resource.DecimalSI)}}}}
			shares := split(&p, tc.shares)
			inv.devices = append(inv.devices, p)
			inv.devices = append(inv.devices, shares...)
		}
		sl := inv.Slices("n", 1)
		checkCounters(t, sl)
		total := 0
		for _, s := range sl {
			total += len(s.Spec.Devices)
			if s.Spec.Pool.ResourceSliceCount != int64(len(sl)) {
				t.Errorf("slice %s: count %d of %d", s.Name, s.Spec.Pool.ResourceSliceCount, len(sl))
			}
		}
		if want := 40 * (1 + tc.shares); total != want {
			t.Errorf("%d shares: %d devices in slices, want %d", tc.shares, total, want)
		}
		if len(sl) != 2 || len(sl[0].Spec.Devices) != tc.firstDevs || len(sl[0].Spec.SharedCounters) != tc.firstSet {
			t.Errorf("%d shares: %d slices, the first with %d devices and %d counter sets; want 2, %d and %d",
				tc.shares, len(sl), len(sl[0].Spec.Devices), len(sl[0].Spec.SharedCounters), tc.firstDevs, tc.firstSet)
		}
	}
}

// TestPublishOnlyNVMe: a function of the NVM subclass with another
// programming interface (NVMHCI, 01:08:01) is not published even when
// bound to vfio-pci: umdd, given no selector, does not serve it either.
func TestPublishOnlyNVMe(t *testing.T) {
	tr := pcietest.New(t)
	tr.Add(pcietest.Func{BDF: "0000:00:03.0", Vendor: pcietest.VendorRedHat, Device: pcietest.DeviceNVMe,
		Class: pcietest.ClassNVMe, Driver: "vfio-pci", IOMMUGroup: "3"})
	tr.Add(pcietest.Func{BDF: "0000:00:04.0", Vendor: pcietest.VendorRedHat, Device: 0x1234,
		Class: 0x010801, Driver: "vfio-pci", IOMMUGroup: "4"})
	inv, err := Publish(scan(t, tr.Root), nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range inv.Devices() {
		got = append(got, d.BDF.String())
	}
	if len(got) != 1 || got[0] != "0000:00:03.0" {
		t.Fatalf("published %v, want only 0000:00:03.0", got)
	}
}
