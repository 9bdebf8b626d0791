// Package vfio drives the Linux VFIO kernel objects that give a user-space
// driver a PCI function: the container, the group and the device.
//
// # What it owns
//
//   - Container (/dev/vfio/vfio): one IOMMU address space. It reports the
//     API version and extensions, takes the IOMMU type (type1v2), reports
//     the IOVA ranges and DMA mapping limit the kernel allows, and maps and
//     unmaps DMA (MapDMA, UnmapDMA: thin wrappers over the ioctls).
//   - Group (/dev/vfio/N): an IOMMU group, the unit of isolation. It is
//     viable when every device in it is bound to vfio-pci (or to no
//     driver); a viable group is set to a container, and then hands out
//     its devices.
//   - Device: one PCI function. Its regions (BARs, ROM, config space) with
//     their capabilities, including the sparse mmap areas, its IRQ indexes,
//     config space reads and writes, mmap of a region, reset, its
//     interrupts (below) and its device features (ProbeFeature,
//     GetFeature, SetFeature; low power entry and exit; migration flags).
//   - Interrupt: an eventfd that a device vector signals, waited on
//     through Go's runtime poller (Wait) or by a thread-locked loop's own
//     epoll_wait (WaitThread), or read without waiting (TryRead); it joins
//     the poller's epoll set only once Wait is used. A Waiter is one
//     waiter's own view of an Interrupt, so that several (queues sharing
//     a vector) each see every signal.
//   - GroupOf and GroupDevices read the IOMMU group layout from sysfs.
//
// # What it never does
//
// It has no IOVA policy: which IOVA a buffer gets, the mapping ledger and
// the allocator belong to package iommu, which calls MapDMA. It knows
// nothing of NVMe: registers and queues belong to the protocol engine. It
// does not bind drivers (package pcie does), never logs and never panics on
// what the kernel or the caller hands it.
//
// # Opening a device
//
// The order is fixed by the kernel: open the container, open the group,
// set the group's container, set the container's IOMMU type, then get the
// device from the group. More groups may join the same container (one
// address space for several devices) before or after SetIOMMU.
//
// # Closing
//
// Every handle (Interrupts too) is an io.Closer whose Close is safe to
// call twice; the second call returns nil. Close runs in the opposite order of opening, and
// this package enforces it rather than closing children behind the
// caller's back:
//
//   - Group.Close fails with ErrInUse while a Device of the group is open;
//   - Container.Close fails with ErrInUse while a Group is set to it.
//
// A refused Close leaves the handle open and usable; close the children and
// call it again. With defers in the order of opening this happens by
// itself. When the last group leaves a container the kernel tears down its
// IOMMU: every DMA mapping is gone and SetIOMMU is needed again.
//
// Memory mapped from a device region (Device.Mmap) stays valid after the
// Device is closed, until the Mapping is closed.
//
// # Interrupts
//
// Each interrupt vector of a device (INTx, MSI, MSI-X, and the ERR and REQ
// notifications) is delivered as an eventfd: create Interrupts with
// NewInterrupt, connect them with Device.ConnectIRQs or ConnectIRQ, and
// Wait on them (the goroutine parks on the runtime poller, no OS thread is
// held, ctx cancels), block a thread-locked completion loop's own thread
// on them with WaitThread (one raw epoll_wait(2) on an edge-triggered epoll
// fd of its own: the goroutine keeps its P, no hand-off per wake-up, and
// the count is not read), or poll them with TryRead (one read(2), no
// allocation). When several goroutines wait on one vector (queues that
// share it), each uses a Waiter of its own (Interrupt.NewWaiter: an
// epoll instance of its own watching the eventfd edge-triggered, so every
// signal wakes every Waiter; nobody reads the count then). The package
// starts no goroutine per vector. TriggerIRQs and
// TriggerSelectedIRQs make the kernel signal vectors from software, to test
// the wiring. DisconnectIRQ stops one vector, DisableIRQ a whole index;
// irq.go explains what vfio-pci allows (one of INTx, MSI and MSI-X at a
// time; MSI-X grows on the fly only on kernels without IRQNoResize) and
// MaskIRQs why MSI-X cannot be masked through VFIO and what to do instead.
//
// Teardown runs backwards here too: Device.Close disables every index the
// device enabled, and an Interrupt refuses to Close (ErrInUse) while a
// vector is connected to it.
//
// # Errors
//
// Errors say what was being done, in lower case, and wrap the cause with
// %w: "opening vfio group 7: ...". errors.Is finds the sentinels below and
// the kernel's errno (unix.EBUSY and the like) through them. Where an errno
// has a usual cause (EBUSY on a group open, EINVAL from a DMA map outside
// the IOVA ranges) the message says so.
//
// Paths default to /dev and /sys; Root points them elsewhere for tests.
package vfio
