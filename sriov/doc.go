// Package sriov gives whole NVMe virtual functions (SR-IOV VFs) to users:
// hardware isolation, as opposed to the queue pairs of a shared controller.
// A VF is a PCI function of its own, with its own requester ID and, behind
// ports with ACS, its own IOMMU group, so its DMA is confined by the IOMMU
// and its controller (an NVMe secondary controller) has its own queues,
// interrupts and namespaces.
//
// # The flow
//
//  1. The PF's owner opens it with umd.Open (bound to vfio-pci) and keeps it
//     open: its controller is the primary controller, and resetting or
//     closing it takes every secondary controller offline (and a function
//     reset of the PF removes the VFs under the kernel's feet).
//  2. Enable(ctx, pf, Options{VFs, IOQueues, Vectors}) reads the primary
//     controller's flexible resources (Identify CNS 14h) and its secondary
//     controllers (CNS 15h), checks there are enough, sets a fresh VF token
//     on the PF (VFIO_DEVICE_FEATURE_PCI_VF_TOKEN), turns on vfio-pci's
//     enable_sriov parameter (without it vfio-pci refuses sriov_numvfs,
//     both ways), writes sriov_numvfs and waits for the VFs, which vfio-pci
//     binds to itself (it sets their driver_override). Then, for each VF,
//     it assigns the secondary controller its queues (the admin queue
//     counts) and interrupt vectors and sets it online (Virtualization
//     Management, admin opcode 1Ch, through the PF's admin queue), and
//     registers the token for the VF in this process (vfio.UseVFToken).
//  3. PF.AttachNamespace(ctx, nsid, vf) attaches a namespace of the NVM
//     subsystem to one VF's controller (Namespace Attachment), so the VF
//     sees its own storage and nothing else: the `sriov` test topology
//     keeps two namespaces detached in the subsystem for this.
//  4. umd.Open(ctx, vf.BDF, …) opens the VF like any controller: vfio-pci
//     lets a VF of a vfio-pci PF be opened only with the PF's token, which
//     vfio.Group.Device presents once it is registered. Another process
//     registers it with vfio.UseVFToken(vf.BDF, pf.Token()), or gets the
//     VF's device descriptor from the owner (umd.Device.DupDeviceFd).
//  5. PF.Disable, once every VF is closed, detaches the namespaces, sets
//     the secondary controllers offline with their resources given back,
//     writes sriov_numvfs = 0, forgets the tokens and restores
//     enable_sriov. Then the PF may be closed.
//
// # What it never does
//
// It never binds or unbinds drivers (vfio-pci takes the VFs by itself),
// never resets the PF, and keeps no process-wide state beyond the token
// registry (package vfio) and a count of the PFs that need enable_sriov.
// The token protects VFs from processes that do not hold it; it is no
// secret from root, nor from the PF's owner, which can always reset, take
// back or reconfigure its VFs: a VF's user trusts the PF's owner.
//
// # What QEMU needs
//
// QEMU's nvme (7.2) offers SR-IOV only in an nvme-subsys, with
// sriov_max_vfs, sriov_vq_flexible (at least two per VF, and at most
// max_ioqpairs − 2) and sriov_vi_flexible (at least one per VF, and at most
// msix_qsize − 1); a secondary controller goes online only with at least
// two queues and one vector and only while its VF is enabled, and the
// registers of a VF whose controller is offline read as zero (CSTS aside,
// which reports CFS), so no driver can bring it up. Namespaces of the
// subsystem that are shared and not detached appear on every VF.
package sriov
