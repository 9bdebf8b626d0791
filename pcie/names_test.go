package pcie

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/umdkit/umd/pcie/pcietest"
)

func testIDs(t *testing.T) *IDs {
	t.Helper()
	ids, err := LoadIDs(pcietest.WritePCIIDs(t))
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestIDs(t *testing.T) {
	ids := testIDs(t)
	check := func(what, got string, ok bool, want string) {
		t.Helper()
		if want == "" && ok || want != "" && (!ok || got != want) {
			t.Errorf("%s = %q, %v; want %q", what, got, ok, want)
		}
	}
	n, ok := ids.Vendor(0x1b36)
	check("Vendor(1b36)", n, ok, "Red Hat, Inc.")
	n, ok = ids.Device(0x1b36, 0x0010)
	check("Device(1b36:0010)", n, ok, "QEMU NVM Express Controller")
	n, ok = ids.Subsystem(0x1b36, 0x0010, 0x1af4, 0x1100)
	check("Subsystem", n, ok, "QEMU Virtual Machine")
	n, ok = ids.Device(0x1b36, 0x0011)
	check("Device(1b36:0011)", n, ok, "")
	n, ok = ids.Vendor(0x12)
	check("Vendor(0012) from a damaged line", n, ok, "")
	n, ok = ids.Class(0x010802)
	check("Class(010802)", n, ok, "Non-Volatile memory controller (NVM Express)")
	n, ok = ids.Class(0x010700)
	check("Class(010700), base class only", n, ok, "Mass storage controller")
	// Not in the file: the built-in table.
	n, ok = ids.Class(0x030000)
	check("Class(030000) from the built-in table", n, ok, "VGA compatible controller")
	n, ok = ids.Class(0x770000)
	check("Class(770000)", n, ok, "")
	if filepath.Base(ids.Source) != "pci.ids" {
		t.Errorf("Source = %q", ids.Source)
	}

	var none *IDs
	if _, ok := none.Vendor(0x1b36); ok {
		t.Error("a nil *IDs knows a vendor")
	}
}

func TestLoadIDsGzip(t *testing.T) {
	raw := []byte(pcietest.PCIIDs)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	p := filepath.Join(t.TempDir(), "pci.ids.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ids, err := LoadIDs(p)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := ids.Device(0x104c, 0x8232); n != "XIO3130 PCI Express Switch (Upstream)" {
		t.Errorf("Device(104c:8232) = %q", n)
	}
	if _, err := LoadIDs(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("LoadIDs of a missing file succeeded")
	}
}

func TestBuiltinIDs(t *testing.T) {
	ids := BuiltinIDs()
	if ids.Source != BuiltinIDsSource {
		t.Errorf("Source = %q", ids.Source)
	}
	// QEMU's NVMe controller has been in pci.ids for years.
	if n, ok := ids.Device(0x1b36, 0x0010); !ok || !strings.Contains(n, "NVM Express") {
		t.Errorf("Device(1b36:0010) = %q, %v", n, ok)
	}
}

func TestNamesFallBackToHex(t *testing.T) {
	f := &Function{VendorID: 0xabcd, DeviceID: 0x0001, SubsystemVendor: 0xabcd, SubsystemDevice: 2, Class: 0x770000}
	(&IDs{}).names(f)
	if f.VendorName != "abcd" || f.DeviceName != "0001" || f.SubsystemName != "abcd:0002" || f.ClassName != "0x770000" {
		t.Errorf("names = %q %q %q %q", f.VendorName, f.DeviceName, f.SubsystemName, f.ClassName)
	}
	f = &Function{VendorID: 0x1b36, DeviceID: 0x0010, SubsystemVendor: 0x1af4, SubsystemDevice: 0x1101}
	testIDs(t).names(f)
	if f.SubsystemName != "Red Hat, Inc. device 1101" {
		t.Errorf("SubsystemName = %q", f.SubsystemName)
	}
}

func FuzzParseIDs(f *testing.F) {
	f.Add(pcietest.PCIIDs)
	f.Add("C 01  x\n\t08  y\n\t\t02  z\n")
	f.Fuzz(func(t *testing.T, s string) {
		ids, err := ParseIDs(strings.NewReader(s))
		if err != nil {
			return
		}
		ids.Vendor(0)
		ids.Class(0x010802)
	})
}
