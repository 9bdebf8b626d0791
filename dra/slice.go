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

	// CapStorage is the sum of the namespaces' sizes, in bytes.
	CapStorage resourceapi.QualifiedName = DriverName + "/storage"
	// CapQueuePairs is the I/O queue pairs the controller granted.
	CapQueuePairs resourceapi.QualifiedName = DriverName + "/queuePairs"
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
	BDF        pcie.BDF
	IOMMUGroup int // pcie.NoIOMMUGroup if none
	PhysFn     *pcie.BDF
}

// An Inventory is the set of devices a node publishes, sorted by BDF.
type Inventory struct {
	devices []Published
	byName  map[string]int
}

// DeviceName is the name a function gets in ResourceSlices: a DNS label
// made of its BDF, "nvme-0000-03-00-0".
func DeviceName(b pcie.BDF) string {
	return fmt.Sprintf("nvme-%04x-%02x-%02x-%x", b.Domain, b.Bus, b.Device, b.Function)
}

// isNVMe reports whether the class is Mass storage / Non-Volatile memory
// controller (any programming interface).
func isNVMe(c pcie.Class) bool { return c.Base() == 0x01 && c.Sub() == 0x08 }

// Publish picks the devices to publish out of a scan: every NVMe function
// bound to vfio-pci (physical functions, and the virtual functions of
// those when sysfs shows them enabled and bound to vfio-pci too). ids may
// be nil. It fails only on a value Kubernetes would refuse (an Identify
// string too long, say), naming the device.
func Publish(sys *pcie.System, ids IdentitySource) (*Inventory, error) {
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
		inv.devices = append(inv.devices, p)
	}
	slices.SortFunc(inv.devices, func(a, b Published) int { return a.BDF.Compare(b.BDF) })
	for i, p := range inv.devices {
		inv.byName[p.Device.Name] = i
	}
	return inv, nil
}

func publish(sys *pcie.System, f *pcie.Function, ids IdentitySource) (Published, error) {
	name := DeviceName(f.BDF)
	attrs := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		AttrPCIBusID: str(f.BDF.String()),
		AttrNUMANode: num(int64(f.NUMANode)),
		AttrVendorID: str(f.VendorID.String()),
		AttrDeviceID: str(f.DeviceID.String()),
		AttrFunction: str(FunctionPF),
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

func str(s string) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{StringValue: &s} }
func num(n int64) resourceapi.DeviceAttribute  { return resourceapi.DeviceAttribute{IntValue: &n} }

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
// one pool named after the node, at generation, cut into slices of at
// most resourceapi.ResourceSliceMaxDevices devices. Slice names are
// "<node>-umd.umdkit.io-<index>" (the kubelet plugin library names its own
// slices; these names serve tests and the apiserver round trip). A node
// with no devices gets one empty slice, so the pool exists.
func (inv *Inventory) Slices(node string, generation int64) []resourceapi.ResourceSlice {
	per := resourceapi.ResourceSliceMaxDevices
	n := max(1, (len(inv.devices)+per-1)/per)
	out := make([]resourceapi.ResourceSlice, 0, n)
	for i := range n {
		devs := make([]resourceapi.Device, 0, per)
		for _, p := range inv.devices[i*per : min(len(inv.devices), (i+1)*per)] {
			devs = append(devs, *p.Device.DeepCopy())
		}
		nodeName := node
		out = append(out, resourceapi.ResourceSlice{
			TypeMeta:   metav1.TypeMeta{APIVersion: resourceapi.SchemeGroupVersion.String(), Kind: "ResourceSlice"},
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%s-%d", node, DriverName, i)},
			Spec: resourceapi.ResourceSliceSpec{
				Driver:   DriverName,
				Pool:     resourceapi.ResourcePool{Name: node, Generation: generation, ResourceSliceCount: int64(n)},
				NodeName: &nodeName,
				Devices:  devs,
			},
		})
	}
	return out
}
