package dra

import (
	"fmt"
	"slices"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/pcie"
)

// DriverName is the name of the DRA driver, in ResourceSlices, DeviceClass
// selectors and the CDI vendor; it is also the domain of umd's own device
// attributes and capacities.
const DriverName = "umd.umdkit.io"

// Names of the attributes and capacities a published device carries.
// Standard names are Kubernetes' own (k8s.io/dynamic-resource-allocation's
// deviceattribute package defines them); the rest are in DriverName's
// domain, so a CEL selector reads them as
// device.attributes["umd.umdkit.io"].numaNode.
const (
	// AttrPCIeRoot is the PCIe root complex the device hangs under, as
	// "pci<domain>:<bus>" ("pci0000:00"): the first element of its sysfs
	// path, which is how Kubernetes defines the standard attribute.
	AttrPCIeRoot resourceapi.QualifiedName = "resource.kubernetes.io/pcieRoot"
	// AttrPCIBusID is the function's address, "0000:03:00.0".
	AttrPCIBusID resourceapi.QualifiedName = "resource.kubernetes.io/pciBusID"

	AttrNUMANode   resourceapi.QualifiedName = DriverName + "/numaNode"   // int; -1 when the platform does not say
	AttrCard       resourceapi.QualifiedName = DriverName + "/card"       // string: pcie.Card.ID; the BDF itself when on no card
	AttrVendorID   resourceapi.QualifiedName = DriverName + "/vendorID"   // string, four hex digits
	AttrDeviceID   resourceapi.QualifiedName = DriverName + "/deviceID"   // string, four hex digits
	AttrIOMMUGroup resourceapi.QualifiedName = DriverName + "/iommuGroup" // int; absent when the IOMMU is off
	AttrFunction   resourceapi.QualifiedName = DriverName + "/function"   // string: "pf" or "vf"
	AttrPhysFn     resourceapi.QualifiedName = DriverName + "/physfn"     // string: a VF's PF, its BDF
	AttrModel      resourceapi.QualifiedName = DriverName + "/model"      // string, from Identify
	AttrSerial     resourceapi.QualifiedName = DriverName + "/serial"     // string, from Identify
	AttrNamespaces resourceapi.QualifiedName = DriverName + "/namespaces" // int, from Identify

	// AttrController names the controller a device is or is a share of:
	// the whole controller's device name ("nvme-0000-03-00-0"), on every
	// device, so matchAttribute and selectors can say "this controller".
	AttrController resourceapi.QualifiedName = DriverName + "/controller"
	// AttrShare is true on a named share of a controller and false on
	// every other device (a whole controller, a VF): the DeviceClasses
	// that mean whole controllers select share == false.
	AttrShare resourceapi.QualifiedName = DriverName + "/share"

	// CapStorage is the sum of the namespaces' sizes, in bytes.
	CapStorage resourceapi.QualifiedName = DriverName + "/storage"
	// CapQueuePairs is the I/O queue pairs the controller granted.
	CapQueuePairs resourceapi.QualifiedName = DriverName + "/queuePairs"
)

// CounterQueuePairs is the counter, in each controller's counter set
// (named like the controller's device), that its whole device and its
// shares consume: the I/O queue pairs the controller granted. A counter
// name must be a DNS label, hence not "queuePairs".
const CounterQueuePairs = "queue-pairs"

// MaxShares is the most shares a controller is split into; fewer when it
// has fewer queue pairs (each share gets at least one).
const MaxShares = 32

// Limits of one ResourceSlice that the 1.34 API server enforces on
// partitionable devices (its ResourceSliceMaxSharedCounters and
// ResourceSliceMaxDeviceCountersPerSlice; k8s.io/api v0.37 no longer has
// them, since 1.35 moved counter sets to slices of their own).
const (
	maxSliceSharedCounters = 32
	maxSliceDeviceCounters = 1024
)

// Values of AttrFunction.
const (
	FunctionPF = "pf" // a controller of its own (a physical function, or one without SR-IOV)
	FunctionVF = "vf" // an SR-IOV virtual function
)

// An Identity is what only the device itself can say about a controller
// (NVMe Identify), which a scan of sysfs cannot.
type Identity struct {
	Model        string
	Serial       string
	Namespaces   int
	StorageBytes uint64 // all namespaces together
	QueuePairs   int    // I/O queue pairs granted; 0 if unknown
}

// An IdentitySource gives the identity of the controller at a BDF, or
// false when it does not know it (the device is then published without
// those attributes).
type IdentitySource interface {
	Identity(pcie.BDF) (Identity, bool)
}

// Identities is an IdentitySource backed by a map.
type Identities map[pcie.BDF]Identity

// Identity implements IdentitySource.
func (m Identities) Identity(b pcie.BDF) (Identity, bool) { id, ok := m[b]; return id, ok }

// BrokerIdentities makes an IdentitySource of the broker's device list
// (broker.Client.List). Entries whose BDF does not parse are returned as
// an error, the rest are kept.
func BrokerIdentities(devs []broker.DeviceInfo) (Identities, error) {
	m := make(Identities, len(devs))
	var bad []string
	for _, d := range devs {
		b, err := pcie.ParseBDF(d.BDF)
		if err != nil {
			bad = append(bad, d.BDF)
			continue
		}
		id := Identity{Model: d.Model, Serial: d.Serial, Namespaces: len(d.Namespaces), QueuePairs: d.MaxQueues}
		for _, ns := range d.Namespaces {
			if ns.LBASize > 0 {
				id.StorageBytes += ns.Blocks * uint64(ns.LBASize)
			}
		}
		m[b] = id
	}
	if len(bad) > 0 {
		return m, fmt.Errorf("broker device list: unparsable BDFs %q", bad)
	}
	return m, nil
}

// A Published is one device of an Inventory: the ResourceSlice entry and
// what preparing a claim on it needs to know.
type Published struct {
	Device     resourceapi.Device
	BDF        pcie.BDF // the function; a share's is its controller's
	IOMMUGroup int      // pcie.NoIOMMUGroup if none
	PhysFn     *pcie.BDF
	// Counters is the counter set a split controller's whole device
	// defines (its shares and itself consume it); nil otherwise.
	Counters *resourceapi.CounterSet
	// Share is set on a named share of a controller.
	Share *Share
}

// A Share is a named part of a controller: umdd serves many sessions on
// one controller, and each share is a claim's way to one of them. The
// scheduler sees the controller's queue pairs as a counter that the whole
// device consumes entirely and each share in part, so it never gives a
// controller whole and a share of it at once, nor more shares than it
// has.
type Share struct {
	Controller string // the whole controller's device name
	Index      int    // 0 ...
	QueuePairs int    // the most queue pairs a claim on the share may reserve
}

// ShareName is the device name of a controller's share index:
// "nvme-0000-03-00-0-share-0".
func ShareName(controller string, index int) string {
	return fmt.Sprintf("%s-share-%d", controller, index)
}

// PublishOptions says how Publish presents the devices.
type PublishOptions struct {
	// Shares splits every physical function whose queue pairs are known
	// (from the IdentitySource) into that many named shares, or into as
	// many as it has queue pairs if fewer, each getting an equal whole
	// number of them; 0 publishes whole controllers only. At most
	// MaxShares. Virtual functions are never split: the broker leases
	// them whole.
	Shares int
}

// An Inventory is the set of devices a node publishes, sorted by BDF,
// each controller's shares right after it.
type Inventory struct {
	devices []Published
	byName  map[string]int
}

// DeviceName is the name a function gets in ResourceSlices: a DNS label
// made of its BDF, "nvme-0000-03-00-0".
func DeviceName(b pcie.BDF) string {
	return fmt.Sprintf("nvme-%04x-%02x-%02x-%x", b.Domain, b.Bus, b.Device, b.Function)
}

// isNVMe reports whether the class is NVMe's (pcie.ClassNVMe), the
// functions umdd serves when it is given no selector: the two must agree,
// or the node would publish devices its umdd does not serve.
func isNVMe(c pcie.Class) bool { return c == pcie.ClassNVMe }

// Publish picks the devices to publish out of a scan: every NVMe function
// bound to vfio-pci (physical functions, and the virtual functions of
// those when sysfs shows them enabled and bound to vfio-pci too), each
// whole. ids may be nil. It fails only on a value Kubernetes would refuse
// (an Identify string too long, say), naming the device.
func Publish(sys *pcie.System, ids IdentitySource) (*Inventory, error) {
	return PublishWith(sys, ids, PublishOptions{})
}

// PublishWith is Publish with options: with opt.Shares, each physical
// function whose queue pairs ids knows is published whole and as named
// shares (see PublishOptions).
func PublishWith(sys *pcie.System, ids IdentitySource, opt PublishOptions) (*Inventory, error) {
	if opt.Shares < 0 || opt.Shares > MaxShares {
		return nil, fmt.Errorf("publishing: %d shares per controller is not allowed, must be 0 to %d", opt.Shares, MaxShares)
	}
	inv := &Inventory{byName: map[string]int{}}
	for _, f := range sys.Functions {
		if !isNVMe(f.Class) || f.Driver != "vfio-pci" {
			continue
		}
		if f.IsVF() {
			pf := sys.Function(*f.PhysFn)
			if pf == nil || !isNVMe(pf.Class) || pf.Driver != "vfio-pci" {
				continue // the broker leases VFs only of a PF it serves
			}
		}
		p, err := publish(sys, f, ids)
		if err != nil {
			return nil, err
		}
		shares := split(&p, opt.Shares)
		inv.devices = append(inv.devices, p)
		inv.devices = append(inv.devices, shares...)
	}
	slices.SortStableFunc(inv.devices, func(a, b Published) int { return a.BDF.Compare(b.BDF) })
	for i, p := range inv.devices {
		inv.byName[p.Device.Name] = i
	}
	return inv, nil
}

func publish(sys *pcie.System, f *pcie.Function, ids IdentitySource) (Published, error) {
	name := DeviceName(f.BDF)
	attrs := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		AttrController: str(name),
		AttrShare:      boolean(false),
		AttrPCIBusID:   str(f.BDF.String()),
		AttrNUMANode:   num(int64(f.NUMANode)),
		AttrVendorID:   str(f.VendorID.String()),
		AttrDeviceID:   str(f.DeviceID.String()),
		AttrFunction:   str(FunctionPF),
	}
	if f.IOMMUGroup != pcie.NoIOMMUGroup {
		attrs[AttrIOMMUGroup] = num(int64(f.IOMMUGroup))
	}
	if root := pcieRoot(f); root != "" {
		attrs[AttrPCIeRoot] = str(root)
	}
	card := f.Card
	if card == "" {
		card = f.BDF.String()
	}
	attrs[AttrCard] = str(card)
	if f.IsVF() {
		attrs[AttrFunction] = str(FunctionVF)
		attrs[AttrPhysFn] = str(f.PhysFn.String())
		if pf := sys.Function(*f.PhysFn); pf != nil && pf.Card != "" {
			attrs[AttrCard] = str(pf.Card)
		}
	}
	var capacity map[resourceapi.QualifiedName]resourceapi.DeviceCapacity
	if ids != nil {
		if id, ok := ids.Identity(f.BDF); ok {
			for _, a := range []struct {
				n resourceapi.QualifiedName
				v string
			}{{AttrModel, id.Model}, {AttrSerial, id.Serial}} {
				n, v := a.n, strings.TrimSpace(a.v)
				if len(v) > resourceapi.DeviceAttributeMaxValueLength {
					return Published{}, fmt.Errorf("publishing %s: %s of %d bytes, at most %d allowed", f.BDF, n, len(v), resourceapi.DeviceAttributeMaxValueLength)
				}
				if v != "" {
					attrs[n] = str(v)
				}
			}
			attrs[AttrNamespaces] = num(int64(id.Namespaces))
			capacity = map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
				CapStorage: {Value: *resource.NewQuantity(int64(min(id.StorageBytes, 1<<62)), resource.BinarySI)},
			}
			if id.QueuePairs > 0 {
				capacity[CapQueuePairs] = resourceapi.DeviceCapacity{Value: *resource.NewQuantity(int64(id.QueuePairs), resource.DecimalSI)}
			}
		}
	}
	return Published{
		Device:     resourceapi.Device{Name: name, Attributes: attrs, Capacity: capacity},
		BDF:        f.BDF,
		IOMMUGroup: f.IOMMUGroup,
		PhysFn:     f.PhysFn,
	}, nil
}

// pcieRoot returns the first element of the function's path under
// devices/, "pci<domain>:<bus>", as Kubernetes' deviceattribute package
// derives the standard attribute (so both agree on a function behind a
// VMD, whose own host bridge pcie names "pci10000:00" further down);
// "" if the path does not say.
func pcieRoot(f *pcie.Function) string {
	rest, ok := strings.CutPrefix(f.SysfsPath, "devices/")
	if !ok {
		return ""
	}
	first, _, _ := strings.Cut(rest, "/")
	if !strings.HasPrefix(first, "pci") {
		return ""
	}
	return first
}

// split makes whole (a physical function's device) the owner of a
// counter set of its queue pairs, consumed entirely by itself, and
// returns its shares, each consuming its part. Nothing is split when
// shares is 0, the device is a VF, or its queue pairs are unknown.
func split(whole *Published, shares int) []Published {
	qp, ok := whole.Device.Capacity[CapQueuePairs]
	if shares == 0 || whole.PhysFn != nil || !ok || qp.Value.Value() < 1 {
		return nil
	}
	total := qp.Value.Value()
	n := min(int64(shares), total)
	each := total / n
	name := whole.Device.Name
	whole.Counters = &resourceapi.CounterSet{Name: name, Counters: map[string]resourceapi.Counter{
		CounterQueuePairs: {Value: *resource.NewQuantity(total, resource.DecimalSI)},
	}}
	whole.Device.ConsumesCounters = consume(name, total)
	out := make([]Published, n)
	for i := range out {
		d := whole.Device.DeepCopy()
		d.Name = ShareName(name, i)
		d.Attributes[AttrShare] = boolean(true)
		d.Capacity[CapQueuePairs] = resourceapi.DeviceCapacity{Value: *resource.NewQuantity(each, resource.DecimalSI)}
		d.ConsumesCounters = consume(name, each)
		out[i] = Published{
			Device:     *d,
			BDF:        whole.BDF,
			IOMMUGroup: whole.IOMMUGroup,
			Share:      &Share{Controller: name, Index: i, QueuePairs: int(each)},
		}
	}
	return out
}

func consume(set string, queuePairs int64) []resourceapi.DeviceCounterConsumption {
	return []resourceapi.DeviceCounterConsumption{{CounterSet: set, Counters: map[string]resourceapi.Counter{
		CounterQueuePairs: {Value: *resource.NewQuantity(queuePairs, resource.DecimalSI)},
	}}}
}

func str(s string) resourceapi.DeviceAttribute   { return resourceapi.DeviceAttribute{StringValue: &s} }
func num(n int64) resourceapi.DeviceAttribute    { return resourceapi.DeviceAttribute{IntValue: &n} }
func boolean(b bool) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{BoolValue: &b} }

// Devices returns the published devices, sorted by BDF. The caller must
// not modify them.
func (inv *Inventory) Devices() []Published { return inv.devices }

// Lookup returns the device published under name.
func (inv *Inventory) Lookup(name string) (Published, bool) {
	i, ok := inv.byName[name]
	if !ok {
		return Published{}, false
	}
	return inv.devices[i], true
}

// Slices returns the ResourceSlices that publish the inventory for node:
// one pool named after the node, at generation, cut into slices in
// inventory order. A split controller's counter set goes in the slice
// of its devices, as the 1.34 API server wants (a device may consume only
// counters of its own slice), and a controller's devices are never cut
// apart; a slice holds at most resourceapi.ResourceSliceMaxDevices
// devices and 32 shared counters. Slice names are
// "<node>-umd.umdkit.io-<index>" (the kubelet plugin library names its own
// slices; these names serve tests and the apiserver round trip). A node
// with no devices gets one empty slice, so the pool exists.
func (inv *Inventory) Slices(node string, generation int64) []resourceapi.ResourceSlice {
	parts := inv.sliceParts()
	out := make([]resourceapi.ResourceSlice, len(parts))
	for i, part := range parts {
		nodeName := node
		out[i] = resourceapi.ResourceSlice{
			TypeMeta:   metav1.TypeMeta{APIVersion: resourceapi.SchemeGroupVersion.String(), Kind: "ResourceSlice"},
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%s-%d", node, DriverName, i)},
			Spec: resourceapi.ResourceSliceSpec{
				Driver:         DriverName,
				Pool:           resourceapi.ResourcePool{Name: node, Generation: generation, ResourceSliceCount: int64(len(parts))},
				NodeName:       &nodeName,
				Devices:        part.Devices,
				SharedCounters: part.SharedCounters,
			},
		}
	}
	return out
}

// A slicePart is what one ResourceSlice holds.
type slicePart struct {
	Devices        []resourceapi.Device
	SharedCounters []resourceapi.CounterSet
}

// sliceParts cuts the inventory into slices: devices in order, a
// controller's whole device and its shares (one group) always together,
// a new slice when the group would not fit the limits. At least one
// (perhaps empty) part.
func (inv *Inventory) sliceParts() []slicePart {
	var (
		parts                 []slicePart
		cur                   slicePart
		counters, devCounters int
	)
	flush := func() {
		parts = append(parts, cur)
		cur, counters, devCounters = slicePart{Devices: []resourceapi.Device{}}, 0, 0
	}
	cur.Devices = []resourceapi.Device{}
	for i := 0; i < len(inv.devices); {
		j := i + 1
		for j < len(inv.devices) && inv.devices[j].Share != nil {
			j++ // a share follows its controller
		}
		group := inv.devices[i:j]
		gCounters, gDevCounters := 0, 0
		for _, p := range group {
			if p.Counters != nil {
				gCounters += len(p.Counters.Counters)
			}
			for _, c := range p.Device.ConsumesCounters {
				gDevCounters += len(c.Counters)
			}
		}
		if len(cur.Devices) > 0 && (len(cur.Devices)+len(group) > resourceapi.ResourceSliceMaxDevices ||
			counters+gCounters > maxSliceSharedCounters || devCounters+gDevCounters > maxSliceDeviceCounters) {
			flush()
		}
		for _, p := range group {
			cur.Devices = append(cur.Devices, *p.Device.DeepCopy())
			if p.Counters != nil {
				cur.SharedCounters = append(cur.SharedCounters, *p.Counters.DeepCopy())
			}
		}
		counters += gCounters
		devCounters += gDevCounters
		i = j
	}
	flush()
	return parts
}
