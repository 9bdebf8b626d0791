package sriov

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
)

func TestCheckResources(t *testing.T) {
	f := nvmelike.FlexibleResources{Total: 6, MaxPerSecondary: 4}
	none := func(nvmelike.SecondaryController) uint16 { return 0 }
	held := func(s nvmelike.SecondaryController) uint16 { return s.Queues }
	for _, tc := range []struct {
		name    string
		f       nvmelike.FlexibleResources
		secs    []nvmelike.SecondaryController
		held    func(nvmelike.SecondaryController) uint16
		want, n int
		ok      bool
	}{
		{"fits", f, nil, none, 3, 2, true},
		{"exhausted", f, nil, none, 4, 2, false},
		{"over the per-VF cap", f, nil, none, 5, 1, false},
		{"no flexible resources", nvmelike.FlexibleResources{}, nil, none, 1, 1, false},
		{"assigned elsewhere", nvmelike.FlexibleResources{Total: 6, Assigned: 4, MaxPerSecondary: 4}, nil, none, 2, 2, false},
		// Resources the VFs already hold are given back first.
		{"held by the VFs", nvmelike.FlexibleResources{Total: 6, Assigned: 4, MaxPerSecondary: 4},
			[]nvmelike.SecondaryController{{Queues: 2}, {Queues: 2}}, held, 3, 2, true},
	} {
		err := checkResources("queue", tc.f, tc.secs, tc.want, tc.held, tc.n)
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, ErrNoFlexibleResources) {
			t.Errorf("%s: %v, want ErrNoFlexibleResources", tc.name, err)
		}
	}
}

// fakeSys makes a sysfs tree with vfio-pci's enable_sriov parameter.
func fakeSys(t *testing.T, param string) string {
	t.Helper()
	sys := t.TempDir()
	p := filepath.Join(sys, sriovParam)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(param+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return sys
}

func readParam(t *testing.T, sys string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(sys, sriovParam))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(raw))
}

func TestEnableSRIOVParameterIsCounted(t *testing.T) {
	sys := fakeSys(t, "N")
	for range 2 {
		if err := acquireEnableSRIOV(sys); err != nil {
			t.Fatal(err)
		}
		if got := readParam(t, sys); got != "Y" {
			t.Fatalf("enable_sriov %s while in use", got)
		}
	}
	if err := releaseEnableSRIOV(sys); err != nil {
		t.Fatal(err)
	}
	if got := readParam(t, sys); got != "Y" {
		t.Errorf("enable_sriov %s with one user left", got)
	}
	if err := releaseEnableSRIOV(sys); err != nil {
		t.Fatal(err)
	}
	if got := readParam(t, sys); got != "N" {
		t.Errorf("enable_sriov %s after the last user, want N back", got)
	}

	// A parameter that was on stays on.
	sys = fakeSys(t, "Y")
	if err := acquireEnableSRIOV(sys); err != nil {
		t.Fatal(err)
	}
	if err := releaseEnableSRIOV(sys); err != nil {
		t.Fatal(err)
	}
	if got := readParam(t, sys); got != "Y" {
		t.Errorf("enable_sriov %s, was Y", got)
	}

	// Without vfio-pci loaded there is no parameter.
	if err := acquireEnableSRIOV(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no parameter: %v", err)
	}
	if enableSRIOV.users != 0 {
		t.Errorf("%d users counted after a failed acquire", enableSRIOV.users)
	}
}

// fakeVF makes PF 0000:01:00.0 with VF 0 at 0000:01:00.1 bound to driver
// in IOMMU group 7.
func fakeVF(t *testing.T, driver string) *PF {
	t.Helper()
	sys := t.TempDir()
	devs := filepath.Join(sys, "bus", "pci", "devices")
	for _, d := range []string{
		filepath.Join(devs, "0000:01:00.0"),
		filepath.Join(devs, "0000:01:00.1"),
		filepath.Join(sys, "bus", "pci", "drivers", driver),
		filepath.Join(sys, "kernel", "iommu_groups", "7"),
	} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		filepath.Join(devs, "0000:01:00.0", "virtfn0"):     "../0000:01:00.1",
		filepath.Join(devs, "0000:01:00.1", "driver"):      "../../drivers/" + driver,
		filepath.Join(devs, "0000:01:00.1", "iommu_group"): "../../../../kernel/iommu_groups/7",
	} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	return &PF{bdf: "0000:01:00.0", sys: sys}
}

func TestWaitVF(t *testing.T) {
	p := fakeVF(t, "vfio-pci")
	vf, err := p.waitVF(0, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if vf != (VF{Index: 0, BDF: "0000:01:00.1", IOMMUGroup: 7}) {
		t.Errorf("got %+v", vf)
	}
	if _, err := p.waitVF(1, 30*time.Millisecond); err == nil || !strings.Contains(err.Error(), "VF 2 not ready") {
		t.Errorf("missing VF: %v", err)
	}
	p = fakeVF(t, "nvme")
	if _, err := p.waitVF(0, 30*time.Millisecond); err == nil || !strings.Contains(err.Error(), "bound to nvme, not vfio-pci") {
		t.Errorf("VF bound to nvme: %v", err)
	}
}
