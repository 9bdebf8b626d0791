//go:build guest

package pcie

import (
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/umdkit/umd/qemu/guest"
)

// TestGuestScan scans the guest's real /sys and checks it against the
// topology the guest was booted with (qemuLayouts), and against the
// kernel's view read independently through package guest.
func TestGuestScan(t *testing.T) {
	guest.Require(t)
	driver := os.Getenv(guest.EnvDriver)
	if driver == "" {
		driver = "vfio-pci"
	}
	s, err := Scan(Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkQEMULayout(t, s, guest.Topology(), driver)

	bound := guest.DriverFunctions(t, driver)
	for _, f := range qemuNVMe(t, s) {
		if !slices.Contains(bound, f.BDF.String()) {
			t.Errorf("%s: not among the functions the kernel lists under %s: %v", f.BDF, driver, bound)
		}
		if g := guest.IOMMUGroup(t, f.BDF.String()); g != strconv.Itoa(f.IOMMUGroup) {
			t.Errorf("%s: IOMMU group %d; the kernel says %s", f.BDF, f.IOMMUGroup, g)
		}
	}
}

// TestGuestSnapshotRoundTrip checks that a snapshot of the real /sys
// restores to a tree that scans the same.
func TestGuestSnapshotRoundTrip(t *testing.T) {
	guest.Require(t)
	live, err := Scan(Options{IDs: testIDs(t)}) // the names roundTrip uses
	if err != nil {
		t.Fatal(err)
	}
	restored := roundTrip(t, DefaultSysfsRoot)
	if a, b := dump(live), dump(restored); a != b {
		t.Errorf("restored snapshot scans differently:\n--- live\n%s\n--- restored\n%s", a, b)
	}
}
