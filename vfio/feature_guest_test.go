//go:build guest

package vfio_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/vfio"
)

// TestGuestProbeFeatures checks what VFIO_DEVICE_FEATURE answers for a QEMU
// NVMe controller under plain vfio-pci: the low power features on both
// kernels (vfio-pci has them since 6.0), no migration or DMA logging (no
// variant driver), and the VF token (set only) exactly when the function
// is an SR-IOV physical function (the sriov topology's).
func TestGuestProbeFeatures(t *testing.T) {
	guest.Require(t)
	_, d := openFirst(t)
	_, err := os.Stat(filepath.Join("/sys/bus/pci/devices", d.BDF(), "sriov_totalvfs"))
	if pf := err == nil; pf {
		ops, err := d.ProbeFeature(vfio.FeaturePCIVFToken)
		if err != nil || ops != vfio.FeatureSet {
			t.Errorf("ProbeFeature(%s) on an SR-IOV PF = %s, %v; want set only", vfio.FeaturePCIVFToken, ops, err)
		}
	} else {
		ops, err := d.ProbeFeature(vfio.FeaturePCIVFToken)
		if !errors.Is(err, vfio.ErrNotSupported) || !errors.Is(err, unix.ENOTTY) || ops != 0 {
			t.Errorf("ProbeFeature(%s) = %s, %v; want ErrNotSupported wrapping ENOTTY", vfio.FeaturePCIVFToken, ops, err)
		}
	}
	for _, f := range []vfio.Feature{
		vfio.FeatureLowPowerEntry, vfio.FeatureLowPowerEntryWithWakeup, vfio.FeatureLowPowerExit,
	} {
		ops, err := d.ProbeFeature(f)
		if err != nil || ops != vfio.FeatureSet {
			t.Errorf("ProbeFeature(%s) = %s, %v; want set only", f, ops, err)
		}
	}
	for _, f := range []vfio.Feature{
		vfio.FeatureMigration, vfio.FeatureMigrationState, vfio.FeatureDMALoggingStart,
		vfio.FeatureDMALoggingStop, vfio.FeatureDMALoggingReport, vfio.Feature(1000),
	} {
		ops, err := d.ProbeFeature(f)
		t.Logf("ProbeFeature(%s): %v", f, err)
		if !errors.Is(err, vfio.ErrNotSupported) || !errors.Is(err, unix.ENOTTY) || ops != 0 {
			t.Errorf("ProbeFeature(%s) = %s, %v; want ErrNotSupported wrapping ENOTTY", f, ops, err)
		}
	}
	if _, err := d.ProbeFeature(vfio.Feature(1 << 16)); err == nil || !strings.Contains(err.Error(), "16 bits") {
		t.Errorf("ProbeFeature of an index past 16 bits: got %v", err)
	}

	flags, err := d.Migration()
	if !errors.Is(err, vfio.ErrNotSupported) || flags != 0 {
		t.Errorf("Migration = %#x, %v; want ErrNotSupported", flags, err)
	}
	// The low power entry can be set, not read: EINVAL, not "not supported".
	err = d.GetFeature(vfio.FeatureLowPowerEntry, nil)
	if !errors.Is(err, unix.EINVAL) || errors.Is(err, vfio.ErrNotSupported) {
		t.Errorf("GetFeature(low power entry): got %v, want EINVAL", err)
	}
}

// runtimeStatus reads the function's runtime power management status from
// sysfs: "active", "suspended", …
func runtimeStatus(t *testing.T, bdf string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/bus/pci/devices", bdf, "power", "runtime_status"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// awaitStatus waits for the function's runtime status to become want.
func awaitStatus(t *testing.T, bdf, want string) {
	t.Helper()
	var got string
	for start := time.Now(); time.Since(start) < guard; time.Sleep(5 * time.Millisecond) {
		if got = runtimeStatus(t, bdf); got == want {
			return
		}
	}
	t.Errorf("%s: runtime PM status %q, want %q", bdf, got, want)
}

// TestGuestLowPower enters and leaves low power. The guest lets vfio-pci
// functions runtime-suspend (power/control is "auto"), so the kernel
// suspends the device as soon as the entry ioctl returns, and the next
// ioctl on the device fd resumes it.
func TestGuestLowPower(t *testing.T) {
	guest.Require(t)
	_, d := openFirst(t)
	bdf := d.BDF()
	awaitStatus(t, bdf, "active")

	if err := d.EnterLowPower(); err != nil {
		t.Fatal(err)
	}
	awaitStatus(t, bdf, "suspended")
	err := d.EnterLowPower()
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "ExitLowPower") {
		t.Errorf("entering low power twice: got %v, want EINVAL explained", err)
	}
	if err := d.ExitLowPower(); err != nil {
		t.Fatal(err)
	}
	awaitStatus(t, bdf, "active")
	if err := d.ExitLowPower(); err != nil {
		t.Errorf("exiting low power twice: %v", err)
	}

	// With a wakeup eventfd: an access through the device fd resumes the
	// device, and the kernel says so on the eventfd.
	wake := newInterrupts(t, d, 1)[0]
	if err := d.EnterLowPowerWithWakeup(wake); err != nil {
		t.Fatal(err)
	}
	awaitStatus(t, bdf, "suspended")
	quiet(t, wake, "suspended, before any access")
	if _, err := d.IRQInfo(vfio.IRQMSIX); err != nil {
		t.Fatal(err)
	}
	fired(t, wake, "after an ioctl on the suspended device")
	// The wakeup ended the low power entry: the device stays active.
	time.Sleep(20 * time.Millisecond)
	if got := runtimeStatus(t, bdf); got != "active" {
		t.Errorf("after the wakeup the device is %q, want active", got)
	}
	if err := d.ExitLowPower(); err != nil {
		t.Errorf("ExitLowPower after a wakeup: %v", err)
	}

	// The device works: config space reads its ids.
	checkConfigIDs(t, d)

	if err := d.EnterLowPowerWithWakeup(nil); err == nil {
		t.Error("EnterLowPowerWithWakeup(nil): got no error")
	}
}
