// Package guest is what a test that runs inside the umd QEMU guest uses to
// learn about the machine it was booted on.
//
// Guest tests live in files with the build constraint
//
//	//go:build guest
//
// so a plain `go test ./...` on the host never compiles them. The harness
// (`make test`, or `go run ./qemu/umdvm test`) builds them with `-tags guest`,
// boots a guest and runs them there as root. Each guest test starts with
// Require, which fails the test (never skips it) when the binary was built
// with the tag but is not running in a umd guest.
package guest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/qemu"
)

// Environment variables the guest's init sets for every command it runs.
const (
	// EnvGuest is "1" inside a umd guest.
	EnvGuest = "UMD_GUEST"
	// EnvTopology names the topology the guest was booted with.
	EnvTopology = "UMD_TOPOLOGY"
	// EnvKernel names the guest kernel (for example "6.12").
	EnvKernel = "UMD_KERNEL"
	// EnvDriver is the driver the guest bound NVMe functions to:
	// "vfio-pci" (the default) or "nvme".
	EnvDriver = "UMD_DRIVER"
)

// InGuest reports whether this process runs inside a umd guest.
func InGuest() bool { return os.Getenv(EnvGuest) == "1" }

// Require fails t unless it runs inside a umd guest. Guest tests call it
// first, so that a binary built with -tags guest and run elsewhere fails
// loudly instead of passing or skipping.
func Require(t testing.TB) {
	t.Helper()
	if !InGuest() {
		t.Fatalf("this test needs the umd QEMU guest (%s=1 is not set); run it with `make test` or `go run ./qemu/umdvm test`", EnvGuest)
	}
}

// Topology returns the name of the topology the guest was booted with.
func Topology() string { return os.Getenv(EnvTopology) }

// SRIOVController returns the SR-IOV controller of the topology the
// guest was booted with; t is skipped on a topology without one (only
// `sriov` has one).
func SRIOVController(t testing.TB) qemu.Controller {
	t.Helper()
	top, err := qemu.LookupTopology(Topology())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range top.Controllers() {
		if c.SRIOV != nil {
			return c
		}
	}
	t.Skipf("topology %s has no SR-IOV controller (run with -topology sriov)", top.Name)
	return qemu.Controller{}
}

// Kernel returns the guest kernel's short name, such as "6.1" or "6.12".
func Kernel() string { return os.Getenv(EnvKernel) }

// DriverFunctions returns the BDFs (domain:bus:device.function) of the PCI
// functions bound to the named driver, sorted.
func DriverFunctions(t testing.TB, driver string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("/sys/bus/pci/drivers", driver))
	if err != nil {
		t.Fatalf("listing functions bound to %s: %v", driver, err)
	}
	var bdfs []string
	for _, e := range entries {
		if strings.Count(e.Name(), ":") == 2 && strings.Contains(e.Name(), ".") {
			bdfs = append(bdfs, e.Name())
		}
	}
	sort.Strings(bdfs)
	return bdfs
}

// IOMMUGroup returns the IOMMU group number of the PCI function bdf as the
// kernel names it (the last element of its iommu_group link).
func IOMMUGroup(t testing.TB, bdf string) string {
	t.Helper()
	link, err := os.Readlink(filepath.Join("/sys/bus/pci/devices", bdf, "iommu_group"))
	if err != nil {
		t.Fatalf("reading the IOMMU group of %s: %v", bdf, err)
	}
	return filepath.Base(link)
}

// Driver returns the driver the guest bound NVMe functions to.
func Driver() string { return os.Getenv(EnvDriver) }

// Unbind starts unbinding the PCI function bdf from vfio-pci, in a
// goroutine of its own: vfio-pci asks the device's user for it back and
// waits until every descriptor of the device is closed. The channel yields
// the unbind's result; when t ends, bdf is bound to vfio-pci again.
func Unbind(t testing.TB, bdf string) <-chan error {
	t.Helper()
	unbound := make(chan error, 1)
	go func() {
		unbound <- os.WriteFile("/sys/bus/pci/drivers/vfio-pci/unbind", []byte(bdf), 0o200)
	}()
	t.Cleanup(func() {
		if err := BindVFIO(bdf); err != nil {
			t.Error(err)
		}
	})
	return unbound
}

// BindVFIO binds the PCI function bdf to vfio-pci, unless it is bound
// there already.
func BindVFIO(bdf string) error {
	if link, err := os.Readlink(filepath.Join("/sys/bus/pci/devices", bdf, "driver")); err == nil && filepath.Base(link) == "vfio-pci" {
		return nil
	}
	if err := os.WriteFile("/sys/bus/pci/drivers/vfio-pci/bind", []byte(bdf), 0o200); err != nil {
		return fmt.Errorf("binding %s to vfio-pci: %w", bdf, err)
	}
	return nil
}

// WaitUnbound fails t unless the unbind from Unbind finishes, without an
// error, within guard (which bounds a hang and measures nothing). after
// says what the unbind waited for, for the message.
func WaitUnbound(t testing.TB, unbound <-chan error, guard time.Duration, after string) {
	t.Helper()
	select {
	case err := <-unbound:
		if err != nil {
			t.Fatalf("unbind: %v", err)
		}
	case <-time.After(guard):
		t.Fatalf("the unbind still waits %v after %s", guard, after)
	}
}
