package vfio_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/umdkit/umd/vfio"
)

// Opening one PCI function takes the kernel's fixed order: container, group,
// group into container, IOMMU type, device. The defers close in the reverse
// order, which is the order the package requires.
func Example() {
	const bdf = "0000:00:03.0"

	if err := openAndIdentify(bdf); err != nil {
		fmt.Println(err)
	}
}

func openAndIdentify(bdf string) error {
	number, err := vfio.GroupOf(bdf)
	if err != nil {
		return err
	}
	container, err := vfio.OpenContainer()
	if err != nil {
		return err
	}
	defer container.Close()

	group, err := vfio.OpenGroup(number)
	if err != nil {
		return err
	}
	defer group.Close()
	if err := group.SetContainer(container); err != nil {
		return err
	}
	if err := container.SetIOMMU(vfio.Type1v2IOMMU); err != nil {
		return err
	}

	// Where DMA may go: choosing IOVAs within these ranges is the
	// caller's job (package iommu's, in umd).
	info, err := container.IOMMUInfo()
	if err != nil {
		return err
	}
	fmt.Println("IOVA ranges:", info.IOVARanges)

	device, err := group.Device(bdf)
	if err != nil {
		return err
	}
	defer device.Close()

	var id [4]byte
	if _, err := device.ReadConfig(id[:], 0); err != nil {
		return err
	}
	fmt.Printf("%s: vendor %#04x device %#04x\n", bdf,
		binary.LittleEndian.Uint16(id[0:2]), binary.LittleEndian.Uint16(id[2:4]))
	return nil
}

// Interrupts arrive on eventfds. Connect one per MSI-X vector and wait on
// it with a context. The vector lets go of the eventfd (DisconnectIRQ,
// DisableIRQ or the device's Close) before the eventfd is closed.
func ExampleDevice_ConnectIRQ() {
	var device *vfio.Device // opened as in the package example

	irq, err := vfio.NewInterrupt()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer irq.Close()
	if err := device.ConnectIRQ(vfio.IRQMSIX, 0, irq); err != nil {
		fmt.Println(err)
		return
	}
	defer device.DisconnectIRQ(vfio.IRQMSIX, 0) // runs before irq.Close

	// Prove the wiring from software: the kernel signals the vector's
	// eventfd as if the device had raised it.
	if err := device.TriggerIRQs(vfio.IRQMSIX, 0, 1); err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := irq.Wait(ctx)
	fmt.Println(n, err)
}
