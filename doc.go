// Package umd opens an NVMe or NVMe-like controller from user space: it
// puts together what the packages below it provide, for a device already
// bound to vfio-pci.
//
//	dev, err := umd.Open(ctx, "0000:03:00.0", nil)
//	...
//	defer dev.Close()
//	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 64})
//	buf, err := dev.Alloc(4096)
//	cmd := nvmelike.ReadCommand(1, 0, 1, buf)
//	_, err = q.Exec(ctx, &cmd)
//
// Open takes the device through VFIO (a container of its own, its IOMMU
// group, the device: package vfio), turns bus mastering on, maps BAR0 for
// register access (internal/mmio), makes a DMA pool of hugepages on the
// device's NUMA node (package hugepage), maps the whole pool into the
// device's IOMMU domain at once (package iommu), and brings the controller
// up (package nvmelike). Device.Alloc carves DMA buffers from the pool;
// their IOVAs are the pool's IOVA plus their offset. Queue pairs can take
// completion interrupts: each then has an MSI-X vector wired to an eventfd
// (vfio.Interrupt) that a caller waits on instead of spinning. A device
// with fewer vectors than queue pairs (an SR-IOV VF has a handful) lets
// queue pairs share one when asked (QueueOptions.ShareVector); each waits
// through a vfio.Waiter of its own and wakes at every interrupt of the
// vector.
//
// Close undoes all of it in the order the kernel and the device need:
// controller shutdown (no more DMA), interrupts, BAR, device, IOMMU
// mapping, pool, group, container. Every failure in Open undoes what was
// done. When the kernel wants the device back (an unbind from vfio-pci, a
// removal), Device.RemovalRequested is closed and the kernel waits for
// Close.
//
// OpenSet opens several devices as one Set — a card, a NUMA node, every
// NVMe bound to vfio-pci, picked with the selectors of package pcie — in
// one container, so one IOMMU domain and one iommu.Space, with one DMA
// pool per NUMA node the devices are on, each mapped once and usable by
// every device. Set.CreateQueuePair places a queue pair on a device of the
// calling thread's node; Set.Striped spreads each Read or Write over all
// the devices. Open is OpenSet with one device: the same bring-up code.
package umd
