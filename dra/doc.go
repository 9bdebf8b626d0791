// Package dra holds the node-side logic of a Kubernetes Dynamic Resource
// Allocation (resource.k8s.io/v1) driver for umd devices, apart from the
// kubelet: what the node publishes, what a claim may ask for, and what
// preparing and unpreparing a claim does on the node.
//
//   - [Publish] turns a pcie scan into an [Inventory]: one device per NVMe
//     controller bound to vfio-pci (and one per SR-IOV virtual function of
//     such a controller that is bound to vfio-pci too), named as a DNS
//     label, with the attributes users select on (the standard
//     resource.kubernetes.io/pcieRoot and pciBusID, NUMA node, card, IDs,
//     IOMMU group, and from an [IdentitySource] such as the broker's device
//     list: model, serial, namespaces, capacity). [Inventory.Slices] cuts
//     it into ResourceSlices for one node, in a deterministic order.
//   - [Parameters] is the opaque configuration a DeviceClass or a claim
//     carries (apiVersion umd.umdkit.io/v1alpha1, kind UmdClaimParameters):
//     [ParseParameters] decodes, merges, defaults and validates it, and
//     every error names the field and the allowed values.
//   - A [Preparer] prepares and unprepares claims: it asks a [Reserver]
//     (the broker, umdd, in the real driver) to reserve what the claim
//     asks for under the claim's UID, writes a CDI spec that gives the
//     container the umdd socket and the claim's identity (or, for an
//     exclusive claim, the device's /dev/vfio nodes), and records every
//     claim in a checkpoint file, so that both operations are idempotent
//     and survive a restart of the plugin.
//
// The package never talks to the Kubernetes API server, never registers
// with the kubelet and never opens a device. The kubelet plugin that will
// wire it to k8s.io/dynamic-resource-allocation is not written yet
// (cmd/umd-dra only prints slices and checks parameters), nor is the
// Reserver backed by umdd. docs/dra.md says what exists and what does not.
package dra
