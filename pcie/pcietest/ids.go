package pcietest

import (
	"os"
	"path/filepath"
	"testing"
)

// PCIIDs is a small pci.ids naming everything in Sample, with a few
// damaged lines a parser must skip. Tests use it instead of the host's
// pci.ids so their output is the same everywhere.
const PCIIDs = `# A few entries in the format of https://pci-ids.ucw.cz/, for tests.
#
# Damaged lines below must be skipped without losing the rest.
1af4  Red Hat, Inc.
1b36  Red Hat, Inc.
	000c  QEMU PCIe Root port
	0010  QEMU NVM Express Controller
		1af4 1100  QEMU Virtual Machine
	zzzz  not an ID
104c  Texas Instruments
	8232  XIO3130 PCI Express Switch (Upstream)
	8233  XIO3130 PCI Express Switch (Downstream)
8086  Intel Corporation
	1572  Ethernet Controller X710 for 10GbE SFP+
		8086 0000  Ethernet Converged Network Adapter X710
	154c  Ethernet Virtual Function 700 Series
	29c0  82G33/G31/P35/P31 Express DRAM Controller
	2918  82801IB (ICH9) LPC Interface Controller
	2922  82801IR/IO/IH (ICH9R/DO/DH) 6 port SATA Controller [AHCI mode]
	2930  82801I (ICH9 Family) SMBus Controller
12
abcd
		ffff ffff  orphan subsystem
C 01  Mass storage controller
	06  SATA controller
		01  AHCI 1.0
	08  Non-Volatile memory controller
		02  NVM Express
C 02  Network controller
	00  Ethernet controller
C 06  Bridge
	00  Host bridge
	01  ISA bridge
	04  PCI bridge
		00  Normal decode
C 0c  Serial bus controller
	05  SMBus
`

// WritePCIIDs writes PCIIDs to a file in a temporary directory and returns
// its path.
func WritePCIIDs(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pci.ids")
	if err := os.WriteFile(p, []byte(PCIIDs), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
