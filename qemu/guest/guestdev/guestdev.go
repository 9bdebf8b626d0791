// Package guestdev opens what most guest tests start from — an NVMe
// function bound to vfio-pci as a umd.Device, a queue pair on it, a DMA
// buffer — each released by t.Cleanup, so a test says only what it checks.
//
// It is a package of its own, apart from qemu/guest, because it imports
// package umd: the internal tests of the packages umd is built on (iommu,
// hugepage, …) import qemu/guest and must not import umd back.
package guestdev

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu/guest"
)

// Open opens the first function bound to vfio-pci with o (nil: a 8 MiB
// pool) and closes it when t ends, reporting a failed Close.
func Open(t testing.TB, o *umd.Options) *umd.Device {
	t.Helper()
	if o == nil {
		o = &umd.Options{PoolSize: 8 << 20}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	if len(bdfs) == 0 {
		t.Fatalf("topology %s: no function bound to vfio-pci", guest.Topology())
	}
	dev, err := umd.Open(ctx, bdfs[0], o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("closing %s: %v", dev.BDF(), err)
		}
	})
	return dev
}

// QueuePair creates a queue pair on dev, deleted when t ends (before dev
// is closed: cleanups run last registered first).
func QueuePair(t testing.TB, dev *umd.Device, o umd.QueueOptions) *umd.QueuePair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := dev.CreateQueuePair(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// Alloc allocates n bytes of dev's DMA memory, freed when t ends.
func Alloc(t testing.TB, dev *umd.Device, n int) nvmelike.Buffer {
	t.Helper()
	b, err := dev.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Free(b) })
	return b
}

// BySerial returns the address of each function bound to vfio-pci whose
// NVMe serial number is one of serials, opening each function to read
// it. t is skipped when the topology has not all of them (the serials
// are in qemu.Topologies).
func BySerial(t testing.TB, serials ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	found := map[string]string{}
	for _, bdf := range guest.DriverFunctions(t, "vfio-pci") {
		dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		sn := dev.Controller().IdentifyController().SN
		if err := dev.Close(); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(serials, sn) {
			found[sn] = bdf
		}
	}
	for _, sn := range serials {
		if found[sn] == "" {
			t.Skipf("topology %s has no controller with serial %s", guest.Topology(), sn)
		}
	}
	return found
}
