package pcietest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// IDs used by Sample.
const (
	VendorIntel  = 0x8086
	VendorRedHat = 0x1b36
	VendorTI     = 0x104c

	DeviceQ35Host    = 0x29c0 // Intel 82G33/G31/P35/P31 DRAM controller, q35's host bridge
	DeviceRootPort   = 0x000c // QEMU PCIe root port
	DeviceNVMe       = 0x0010 // QEMU NVM Express controller
	DeviceXIO3130Up  = 0x8232 // TI XIO3130 switch upstream port
	DeviceXIO3130Dn  = 0x8233 // TI XIO3130 switch downstream port
	DeviceX710       = 0x1572 // Intel X710 10GbE (an SR-IOV PF)
	DeviceX710VF     = 0x154c // its VF
	DeviceICH9LPC    = 0x2918
	DeviceICH9SATA   = 0x2922
	DeviceICH9SMBus  = 0x2930
	ClassNVMe        = 0x010802
	ClassBridge      = 0x060400
	ClassHostBridge  = 0x060000
	ClassEthernet    = 0x020000
	ClassISABridge   = 0x060100
	ClassSATA        = 0x010601
	ClassSMBus       = 0x0c0500
	pcieSpeedGen1    = "2.5 GT/s PCIe"
	pcieSpeedGen3    = "8.0 GT/s PCIe"
	pcieSpeedGen4    = "16.0 GT/s PCIe"
	pcieSpeedUnknown = "Unknown"
)

// Sample builds the tree most tests use: a q35-like machine with
//
//	pci0000:00
//	  00:00.0 host bridge
//	  00:01.0 root port -> 01:00.0 switch -> 02:00.0 -> 03:00.0 NVMe (vfio-pci)
//	                                      -> 02:01.0 -> 04:00.0 NVMe (vfio-pci)
//	  00:02.0 root port -> 05:00.0 switch -> 06:00.0 -> 07:00.0 NVMe (nvme)
//	                                      -> 06:01.0 -> 08:00.0 NVMe (vfio-pci), link degraded to 2.5 GT/s x1
//	  00:03.0 root port, slot "3" -> 09:00.0 NVMe on its own (vfio-pci)
//	  00:04.0 root port -> 0a:00.0 and 0a:00.1 X710 PFs (i40e); 0a:00.0 has
//	                       2 of 8 VFs enabled: 0a:02.0 (iavf), 0a:02.1 (vfio-pci)
//	  00:05.0 root port, empty (link down)
//	  00:1f.0, 00:1f.2, 00:1f.3 chipset functions sharing IOMMU group 20
//	pci0000:80 (NUMA node 1)
//	  80:00.0 root port -> 81:00.0 NVMe (vfio-pci)
//
// All config spaces are full 4096-byte images with capabilities, as root
// sees them; Unprivileged cuts them to 64 bytes afterwards.
func Sample(t testing.TB) *Tree {
	t.Helper()
	tr := New(t)

	port := func(bdf, parent, hb string, portType, dev int, group string, buses [3]uint8, speed, maxSpeed string, width, maxWidth int, numa string) {
		vendor := uint16(VendorRedHat)
		if dev == DeviceXIO3130Up || dev == DeviceXIO3130Dn {
			vendor = VendorTI
		}
		cfg := NewConfig(vendor, uint16(dev), ClassBridge).Buses(buses[0], buses[1], buses[2]).
			PCIe(portType, speedCode(maxSpeed), maxWidth, speedCode(speed), width).
			MSI(0).AER(0, 0).ACS(0x1f, 0x1d)
		tr.Add(Func{
			BDF: bdf, Parent: parent, HostBridge: hb,
			Vendor: vendor, Device: uint16(dev), Class: ClassBridge,
			Config: cfg.Bytes(), Driver: "pcieport", IOMMUGroup: group, NUMANode: numa,
			Speed: speed, MaxSpeed: maxSpeed, Width: width, MaxWidth: maxWidth,
		})
	}
	nvme := func(bdf, parent, driver, group, numa, slot string, speed string, width int) {
		cfg := NewConfig(VendorRedHat, DeviceNVMe, ClassNVMe).Revision(2).Subsystem(0x1af4, 0x1100).
			PowerManagement().MSIX(65, 0, 0x2000, 0, 0x3000).PCIe(Endpoint, Gen3, 4, speedCode(speed), width).
			AER(0, 0)
		tr.Add(Func{
			BDF: bdf, Parent: parent,
			Vendor: VendorRedHat, Device: DeviceNVMe, Class: ClassNVMe, Revision: 2,
			SubVendor: 0x1af4, SubDevice: 0x1100,
			Config: cfg.Bytes(), Driver: driver, IOMMUGroup: group, NUMANode: numa, Slot: slot,
			Speed: speed, MaxSpeed: pcieSpeedGen3, Width: width, MaxWidth: 4,
			Resources: []Resource{MemBAR(0, 0xfe800000+uint64(len(tr.paths))<<16, 0x4000, true, false)},
		})
	}

	tr.Add(Func{BDF: "0000:00:00.0", Vendor: VendorIntel, Device: DeviceQ35Host, Class: ClassHostBridge, IOMMUGroup: "0",
		Config: NewConfig(VendorIntel, DeviceQ35Host, ClassHostBridge).Bytes(256)})

	// Two switches, two NVMe each.
	port("0000:00:01.0", "", "", RootPort, DeviceRootPort, "1", [3]uint8{0, 1, 4}, pcieSpeedGen3, pcieSpeedGen4, 4, 16, "")
	port("0000:01:00.0", "0000:00:01.0", "", UpstreamPort, DeviceXIO3130Up, "2", [3]uint8{1, 2, 4}, pcieSpeedGen3, pcieSpeedGen3, 4, 4, "")
	port("0000:02:00.0", "0000:01:00.0", "", DownstreamPort, DeviceXIO3130Dn, "3", [3]uint8{2, 3, 3}, pcieSpeedGen3, pcieSpeedGen3, 4, 4, "")
	port("0000:02:01.0", "0000:01:00.0", "", DownstreamPort, DeviceXIO3130Dn, "4", [3]uint8{2, 4, 4}, pcieSpeedGen3, pcieSpeedGen3, 4, 4, "")
	nvme("0000:03:00.0", "0000:02:00.0", "vfio-pci", "5", "", "", pcieSpeedGen3, 4)
	nvme("0000:04:00.0", "0000:02:01.0", "vfio-pci", "6", "", "", pcieSpeedGen3, 4)

	port("0000:00:02.0", "", "", RootPort, DeviceRootPort, "7", [3]uint8{0, 5, 8}, pcieSpeedGen3, pcieSpeedGen4, 4, 16, "")
	port("0000:05:00.0", "0000:00:02.0", "", UpstreamPort, DeviceXIO3130Up, "8", [3]uint8{5, 6, 8}, pcieSpeedGen3, pcieSpeedGen3, 4, 4, "")
	port("0000:06:00.0", "0000:05:00.0", "", DownstreamPort, DeviceXIO3130Dn, "9", [3]uint8{6, 7, 7}, pcieSpeedGen3, pcieSpeedGen3, 4, 4, "")
	port("0000:06:01.0", "0000:05:00.0", "", DownstreamPort, DeviceXIO3130Dn, "10", [3]uint8{6, 8, 8}, pcieSpeedGen1, pcieSpeedGen3, 1, 4, "")
	nvme("0000:07:00.0", "0000:06:00.0", "nvme", "11", "", "", pcieSpeedGen3, 4)
	nvme("0000:08:00.0", "0000:06:01.0", "vfio-pci", "12", "", "", pcieSpeedGen1, 1)

	// An NVMe on a root port of its own, in a named slot.
	port("0000:00:03.0", "", "", RootPort, DeviceRootPort, "13", [3]uint8{0, 9, 9}, pcieSpeedGen3, pcieSpeedGen4, 4, 16, "")
	nvme("0000:09:00.0", "0000:00:03.0", "vfio-pci", "14", "", "3", pcieSpeedGen3, 4)

	// An SR-IOV NIC: two PFs, the first with 2 of 8 VFs enabled.
	port("0000:00:04.0", "", "", RootPort, DeviceRootPort, "15", [3]uint8{0, 0xa, 0xa}, pcieSpeedGen3, pcieSpeedGen4, 8, 16, "")
	pfCfg := func(fn int) []byte {
		c := NewConfig(VendorIntel, DeviceX710, ClassEthernet).MultiFunction().Subsystem(VendorIntel, 0).
			PowerManagement().MSI(0).MSIX(129, 3, 0, 3, 0x1000).PCIe(Endpoint, Gen3, 8, Gen3, 8).
			AER(0, 0x2000).ARIAndSerial()
		if fn == 0 {
			c.SRIOV(8, 2, 16, 1, DeviceX710VF).ATS()
		}
		return c.Bytes()
	}
	for fn, drv := range []string{"i40e", "i40e"} {
		bdf := fmt.Sprintf("0000:0a:00.%d", fn)
		f := Func{
			BDF: bdf, Parent: "0000:00:04.0",
			Vendor: VendorIntel, Device: DeviceX710, Class: ClassEthernet, SubVendor: VendorIntel,
			Config: pfCfg(fn), Driver: drv, IOMMUGroup: fmt.Sprint(16 + fn),
			Speed: pcieSpeedGen3, MaxSpeed: pcieSpeedGen3, Width: 8, MaxWidth: 8,
			Resources: []Resource{
				MemBAR(0, 0xf0000000+uint64(fn)<<24, 0x800000, true, true),
				MemBAR(3, 0xf1000000+uint64(fn)<<16, 0x8000, true, true),
				MemBAR(7, 0xf2000000, 0x10000, true, true), // VF BAR0
			},
		}
		if fn == 0 {
			f.TotalVFs, f.NumVFs = 8, 2
		}
		tr.Add(f)
	}
	for i, drv := range []string{"iavf", "vfio-pci"} {
		tr.Add(Func{
			BDF: fmt.Sprintf("0000:0a:02.%d", i), Parent: "0000:00:04.0", PhysFn: "0000:0a:00.0",
			Vendor: VendorIntel, Device: DeviceX710VF, Class: ClassEthernet, SubVendor: VendorIntel,
			Config: NewConfig(VendorIntel, DeviceX710VF, ClassEthernet).MSIX(5, 3, 0, 3, 0x2000).
				PCIe(Endpoint, 0, 0, 0, 0).Bytes(),
			Driver: drv, IOMMUGroup: fmt.Sprint(18 + i),
		})
	}

	// An empty root port.
	port("0000:00:05.0", "", "", RootPort, DeviceRootPort, "21", [3]uint8{0, 0xb, 0xb}, pcieSpeedUnknown, pcieSpeedGen4, 0, 16, "")

	// Chipset functions: one multi-function device, one IOMMU group.
	for _, c := range []struct {
		bdf    string
		dev    uint16
		class  uint32
		driver string
	}{
		{"0000:00:1f.0", DeviceICH9LPC, ClassISABridge, "lpc_ich"},
		{"0000:00:1f.2", DeviceICH9SATA, ClassSATA, "ahci"},
		{"0000:00:1f.3", DeviceICH9SMBus, ClassSMBus, "i801_smbus"},
	} {
		tr.Add(Func{
			BDF: c.bdf, Vendor: VendorIntel, Device: c.dev, Class: c.class, Revision: 2,
			Config: NewConfig(VendorIntel, c.dev, c.class).MultiFunction().Revision(2).MSI(0).Bytes(256),
			Driver: c.driver, IOMMUGroup: "20",
		})
	}

	// A second root complex on NUMA node 1.
	port("0000:80:00.0", "", "pci0000:80", RootPort, DeviceRootPort, "22", [3]uint8{0x80, 0x81, 0x81}, pcieSpeedGen3, pcieSpeedGen4, 4, 16, "1")
	nvme("0000:81:00.0", "0000:80:00.0", "vfio-pci", "23", "1", "", pcieSpeedGen3, 4)
	return tr
}

// ARIAndSerial appends ARI and Device Serial Number capabilities, which
// the parser only names.
func (c *Config) ARIAndSerial() *Config {
	return c.ExtCap(0x000e, 1, make([]byte, 4)...).ExtCap(0x0003, 1, 0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0)
}

// Unprivileged cuts every config file in the tree to the 64 bytes an
// unprivileged reader of sysfs sees, so no capabilities are visible.
func (tr *Tree) Unprivileged() {
	tr.t.Helper()
	for bdf := range tr.paths {
		p := filepath.Join(tr.Path(bdf), "config")
		b, err := os.ReadFile(p)
		if err != nil {
			tr.t.Fatal(err)
		}
		if len(b) > 64 {
			if err := os.WriteFile(p, b[:64], 0o644); err != nil {
				tr.t.Fatal(err)
			}
		}
	}
}

func speedCode(s string) int {
	switch s {
	case pcieSpeedGen1:
		return Gen1
	case "5.0 GT/s PCIe":
		return Gen2
	case pcieSpeedGen3:
		return Gen3
	case pcieSpeedGen4:
		return Gen4
	case "32.0 GT/s PCIe":
		return Gen5
	}
	return 0
}
