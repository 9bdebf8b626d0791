// Package dra is umd's Kubernetes Dynamic Resource Allocation
// (resource.k8s.io/v1) driver, umd.umdkit.io, on the node side: what the
// node publishes, what a claim may ask for, what preparing and
// unpreparing a claim does, and the kubelet plugin that wires these to
// the kubelet and the API server.
//
//   - [Publish] turns a pcie scan into an [Inventory]: one device per NVMe
//     controller bound to vfio-pci (and one per SR-IOV virtual function of
//     such a controller that is bound to vfio-pci too), named as a DNS
//     label, with the attributes users select on (the standard
//     resource.kubernetes.io/pcieRoot and pciBusID, NUMA node, card, IDs,
//     IOMMU group, and from an [IdentitySource] such as the broker's device
//     list: model, serial, namespaces, capacity). With
//     [PublishOptions].Shares ([PublishWith]) each controller whose queue
//     pairs are known is also published as named shares: DRA
//     partitionable devices, each consuming part of one counter of the
//     controller's queue pairs, which the whole device consumes all of.
//     [Inventory.Slices] cuts
//     it into ResourceSlices for one node, in a deterministic order.
//   - [Parameters] is the opaque configuration a DeviceClass or a claim
//     carries (apiVersion umd.umdkit.io/v1alpha1, kind UmdClaimParameters):
//     [ParseParameters] decodes, merges, defaults and validates it, and
//     every error names the field and the allowed values.
//   - A [Preparer] prepares and unprepares claims: it asks a [Reserver]
//     ([BrokerReserver]: umdd, the broker) to reserve what the claim asks
//     for under the claim's UID, writes a CDI spec that gives the
//     container the umdd socket and the claim's identity (or, for an
//     exclusive claim, the device's /dev/vfio nodes), and records every
//     claim in a checkpoint file, so that both operations are idempotent
//     and survive a restart of the plugin.
//   - A [Driver] answers the kubelet's prepare and unprepare calls
//     (k8s.io/dynamic-resource-allocation's kubeletplugin.DRAPlugin): it
//     picks a claim's devices of this driver on this node, merges their
//     parameters from the allocation's opaque configurations (the
//     DeviceClass's first, then the claim's, each for the requests it
//     names) and calls the Preparer; a claim that fails gets a
//     [*ClaimError] naming it and the cause. [StartPlugin] runs it:
//     registration with the kubelet, the DRA gRPC service, and the node's
//     ResourceSlices published through the API server.
//
// The package never opens a device; cmd/umd-dra is the command that runs
// the plugin. docs/dra.md says what exists and how the pieces fit.
package dra
