//go:build guest

package pcie

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/qemu/guest"
)

// guestNVMe returns the NVMe functions of the guest (bound to vfio-pci
// by its init, unless the guest was booted with the nvme driver).
func guestNVMe(t *testing.T) []BDF {
	t.Helper()
	s, err := Scan(Options{IDs: &IDs{}})
	if err != nil {
		t.Fatal(err)
	}
	var out []BDF
	for _, f := range s.Functions {
		if f.Class == 0x010802 {
			out = append(out, f.BDF)
		}
	}
	if len(out) == 0 {
		t.Fatal("no NVMe function in the guest")
	}
	return out
}

func requireVFIOStart(t *testing.T) {
	t.Helper()
	guest.Require(t)
	if d := guest.Driver(); d != "" && d != "vfio-pci" {
		t.Skipf("the guest was booted with NVMe on %s; these tests start from vfio-pci", d)
	}
}

// leaveAsFound puts every NVMe function back on vfio-pci with
// driver_override vfio-pci, as the guest's init left them, without the
// code under test; a test that needed it to do anything fails.
func leaveAsFound(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		for _, b := range guestNVMe(t) {
			dir := filepath.Join("/sys/bus/pci/devices", b.String())
			d, _ := readDriver(DefaultSysfsRoot, b)
			o, _ := os.ReadFile(filepath.Join(dir, "driver_override"))
			if d == "vfio-pci" && strings.TrimSpace(string(o)) == "vfio-pci" {
				continue
			}
			t.Errorf("cleanup: %s was left on %q with driver_override %q; putting it back on vfio-pci", b, d, strings.TrimSpace(string(o)))
			_ = writeSysfs(filepath.Join(dir, "driver_override"), "vfio-pci")
			if d != "" && d != "vfio-pci" {
				_ = writeSysfs(filepath.Join("/sys/bus/pci/drivers", d, "unbind"), b.String())
			}
			_ = writeSysfs("/sys/bus/pci/drivers_probe", b.String())
			waitFor(func() bool { d, _ := readDriver(DefaultSysfsRoot, b); return d == "vfio-pci" }, 5*time.Second)
		}
	})
}

func guestOpts(t *testing.T, driver string) BindOptions {
	return BindOptions{Driver: driver, StateDir: t.TempDir()}
}

func wantDriver(t *testing.T, b BDF, driver, override string) {
	t.Helper()
	d, err := readDriver(DefaultSysfsRoot, b)
	if err != nil {
		t.Fatal(err)
	}
	o, err := os.ReadFile(filepath.Join("/sys/bus/pci/devices", b.String(), "driver_override"))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(string(o))
	if got == "(null)" {
		got = ""
	}
	if d != driver || got != override {
		t.Fatalf("%s: driver %q, driver_override %q; want %q, %q", b, d, got, driver, override)
	}
}

// namespaceOf waits for the nvme driver to bring up b's first namespace
// and returns its name ("nvme0n1").
func namespaceOf(t *testing.T, b BDF) string {
	t.Helper()
	var disk string
	waitFor(func() bool {
		nodes, err := functionDevices(DefaultSysfsRoot, b)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.block && !n.isPart {
				disk = n.name
				return true
			}
		}
		return false
	}, 10*time.Second)
	if disk == "" {
		t.Fatalf("%s: no namespace appeared under nvme within 10s", b)
	}
	return disk
}

// TestGuestBindRoundTrip moves an NVMe from vfio-pci to the kernel's nvme
// driver and back, with Bind and with Unbind (restore), checking the
// driver link each time; on the way it checks a dry run changes nothing
// and that an open namespace stops the move back.
func TestGuestBindRoundTrip(t *testing.T) {
	requireVFIOStart(t)
	leaveAsFound(t)
	b := guestNVMe(t)[0]
	one := []BDF{b}
	wantDriver(t, b, "vfio-pci", "vfio-pci")

	// A dry run plans, loads nothing and writes nothing.
	dry := guestOpts(t, "nvme")
	dry.DryRun = true
	p, err := Bind(one, dry)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dry run:\n%s", p)
	if len(p.Functions) != 1 || p.Functions[0].Nothing || len(p.Functions[0].Steps) == 0 {
		t.Fatalf("dry-run plan %+v", p)
	}
	wantDriver(t, b, "vfio-pci", "vfio-pci")
	if ents, _ := os.ReadDir(dry.StateDir); len(ents) != 0 {
		t.Errorf("a dry run wrote state: %v", ents)
	}

	// vfio-pci -> nvme (loading the module when it is not loaded yet).
	opts := guestOpts(t, "nvme")
	if _, err := Bind(one, opts); err != nil {
		t.Fatal(err)
	}
	wantDriver(t, b, "nvme", "nvme")
	rec, err := ReadBindRecord(opts.StateDir, b)
	if err != nil || rec == nil || rec.Driver != "vfio-pci" || rec.DriverOverride != "vfio-pci" {
		t.Fatalf("record %+v, %v", rec, err)
	}
	disk := namespaceOf(t, b)

	// Held open by this process: binding to vfio-pci is refused, and
	// names the holder.
	fd, err := os.Open("/dev/" + disk)
	if err != nil {
		t.Fatal(err)
	}
	opts.Driver = "vfio-pci"
	_, err = Bind(one, opts)
	want := fmt.Sprintf("%s is open by process %d", disk, os.Getpid())
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), want) {
		t.Errorf("bind with %s open: %v; want ErrInUse and %q", disk, err, want)
	} else {
		t.Logf("refused as it should: %v", err)
	}
	if _, err := Unbind(one, opts); !errors.Is(err, ErrInUse) {
		t.Errorf("unbind with %s open: %v; want ErrInUse", disk, err)
	}
	wantDriver(t, b, "nvme", "nvme")
	fd.Close()

	// nvme -> vfio-pci with Bind: the first record stays.
	if _, err := Bind(one, opts); err != nil {
		t.Fatal(err)
	}
	wantDriver(t, b, "vfio-pci", "vfio-pci")
	if rec, _ := ReadBindRecord(opts.StateDir, b); rec == nil || rec.Driver != "vfio-pci" {
		t.Errorf("record after binding back: %+v", rec)
	}
	p, err = Bind(one, opts)
	if err != nil || !p.Functions[0].Nothing {
		t.Errorf("binding to vfio-pci again: %v, %+v", err, p)
	}

	// vfio-pci -> nvme with Bind, back with Unbind (restore).
	opts.Driver = "nvme"
	if _, err := Bind(one, opts); err != nil {
		t.Fatal(err)
	}
	wantDriver(t, b, "nvme", "nvme")
	namespaceOf(t, b)
	if p, err = Unbind(one, opts); err != nil {
		t.Fatal(err)
	}
	t.Logf("restore:\n%s", p)
	wantDriver(t, b, "vfio-pci", "vfio-pci")
	if rec, err := ReadBindRecord(opts.StateDir, b); rec != nil || err != nil {
		t.Errorf("record after restore: %+v, %v", rec, err)
	}
}

// TestGuestGroupViability uses QEMU's xio3130 switches (topology cards),
// where an NVMe shares its IOMMU group with its downstream port: with
// the port on pcieport the group is viable; with the NVMe on nvme,
// binding the port to vfio-pci is refused, naming the NVMe and nvme.
func TestGuestGroupViability(t *testing.T) {
	requireVFIOStart(t)
	s, err := Scan(Options{IDs: &IDs{}})
	if err != nil {
		t.Fatal(err)
	}
	var nvme, port *Function
	for _, b := range guestNVMe(t) {
		f := s.Function(b)
		for _, m := range f.IOMMUPeers {
			if pf := s.Function(m); pf != nil && pf.Bridge {
				nvme, port = f, pf
				break
			}
		}
		if nvme != nil {
			break
		}
	}
	if nvme == nil {
		t.Skipf("topology %s puts every NVMe in an IOMMU group of its own", guest.Topology())
	}
	if port.Driver != "pcieport" {
		t.Fatalf("%s shares group %d with %s, which is on %q, not pcieport", nvme.BDF, nvme.IOMMUGroup, port.BDF, port.Driver)
	}
	leaveAsFound(t)
	opts := guestOpts(t, "nvme")
	if _, err := Bind([]BDF{nvme.BDF}, opts); err != nil {
		t.Fatal(err)
	}
	opts.Driver = "vfio-pci"
	_, err = Bind([]BDF{port.BDF}, opts)
	var ge *GroupError
	if !errors.As(err, &ge) || ge.Member != nvme.BDF || ge.Driver != "nvme" {
		t.Errorf("binding the port %s: %v; want a GroupError naming %s on nvme", port.BDF, err, nvme.BDF)
	} else {
		t.Logf("refused as it should: %v", err)
	}
	wantDriver(t, port.BDF, "pcieport", "")
	// The port on pcieport does not stop the NVMe going back.
	if _, err := Unbind([]BDF{nvme.BDF}, opts); err != nil {
		t.Fatal(err)
	}
	wantDriver(t, nvme.BDF, "vfio-pci", "vfio-pci")
}

// TestGuestUnbindHeldGroup opens /dev/vfio/N and checks that taking the
// function from vfio-pci is refused, naming the group and this process.
func TestGuestUnbindHeldGroup(t *testing.T) {
	requireVFIOStart(t)
	leaveAsFound(t)
	b := guestNVMe(t)[0]
	group := guest.IOMMUGroup(t, b.String())
	fd, err := os.OpenFile("/dev/vfio/"+group, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	_, err = Unbind([]BDF{b}, guestOpts(t, ""))
	want := fmt.Sprintf("vfio/%s is open by process %d", group, os.Getpid())
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), want) {
		t.Errorf("unbind with the group open: %v; want %q", err, want)
	}
	wantDriver(t, b, "vfio-pci", "vfio-pci")
}
