//go:build guest

package pcie

import (
	"testing"

	"github.com/umdkit/umd/qemu/guest"
)

// TestGuestPreflight runs every check on the guest, which has what umd
// needs: an Intel IOMMU, the VFIO modules, NVMe on vfio-pci, hugepages
// reserved, root.
func TestGuestPreflight(t *testing.T) {
	requireVFIOStart(t)
	r, err := Preflight(PreflightOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nfn := 0
	for _, c := range r.Checks {
		t.Logf("%s %s %s: %s", c.Status, c.ID, c.Subject, c.Detail)
		if c.Status != StatusPass {
			t.Errorf("%s %s: %s: %s (%s)", c.ID, c.Subject, c.Status, c.Detail, c.Remedy)
		}
		if c.ID == "function" {
			nfn++
		}
	}
	if want := len(guest.DriverFunctions(t, "vfio-pci")); nfn != want {
		t.Errorf("%d functions checked; %d are on vfio-pci", nfn, want)
	}
	if c := r.Checks[0]; c.ID != "iommu" || c.Detail[:len("Intel VT-d (dmar0)")] != "Intel VT-d (dmar0)" {
		t.Errorf("iommu check: %+v", c)
	}
}
