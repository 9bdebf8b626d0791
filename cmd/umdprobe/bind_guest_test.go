//go:build guest

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/qemu/guest"
)

func umdprobe(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func driverOf(t *testing.T, bdf string) string {
	t.Helper()
	l, err := os.Readlink(filepath.Join("/sys/bus/pci/devices", bdf, "driver"))
	if err != nil {
		return ""
	}
	return filepath.Base(l)
}

// TestGuestDoctor: the guest is ready for umd, and doctor says so.
func TestGuestDoctor(t *testing.T) {
	guest.Require(t)
	code, out, errOut := umdprobe(t, "doctor")
	t.Logf("umdprobe doctor:\n%s", out)
	if code != exitOK || errOut != "" || !strings.Contains(out, " 0 failed\n") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	code, out, _ = umdprobe(t, "doctor", "class=nvme", "-o", "json")
	var doc doctorDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != exitOK || doc.Failed {
		t.Errorf("doctor -o json: exit %d, %v: %s", code, err, out)
	}
}

// TestGuestBindCommand: a dry run changes nothing; bind --driver nvme
// then unbind is a round trip back to vfio-pci.
func TestGuestBindCommand(t *testing.T) {
	guest.Require(t)
	if d := guest.Driver(); d != "" && d != "vfio-pci" {
		t.Skipf("the guest was booted with NVMe on %s; this test starts from vfio-pci", d)
	}
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	state := t.TempDir()
	t.Cleanup(func() {
		if d := driverOf(t, bdf); d != "vfio-pci" {
			t.Errorf("%s left on %q; putting it back", bdf, d)
			os.WriteFile(filepath.Join("/sys/bus/pci/devices", bdf, "driver_override"), []byte("vfio-pci"), 0)
			if d != "" {
				os.WriteFile(filepath.Join("/sys/bus/pci/drivers", d, "unbind"), []byte(bdf), 0)
			}
			os.WriteFile("/sys/bus/pci/drivers_probe", []byte(bdf), 0)
			time.Sleep(time.Second)
		}
	})

	code, out, errOut := umdprobe(t, "bind", "--dry-run", "--driver", "nvme", bdf, "--state-dir", state)
	t.Logf("umdprobe bind --dry-run --driver nvme %s:\n%s", bdf, out)
	if code != exitOK || !strings.HasPrefix(out, "Dry run: nothing was changed.") || driverOf(t, bdf) != "vfio-pci" {
		t.Fatalf("dry run: exit %d, stderr %q, driver %q", code, errOut, driverOf(t, bdf))
	}
	code, out, errOut = umdprobe(t, "bind", "--driver", "nvme", bdf, "--state-dir", state)
	t.Logf("umdprobe bind --driver nvme %s:\n%s", bdf, out)
	if code != exitOK || driverOf(t, bdf) != "nvme" || !strings.Contains(out, bdf+": now on nvme (was vfio-pci)") {
		t.Fatalf("bind: exit %d, stderr %q, driver %q", code, errOut, driverOf(t, bdf))
	}
	code, out, errOut = umdprobe(t, "unbind", bdf, "--state-dir", state)
	t.Logf("umdprobe unbind %s:\n%s", bdf, out)
	if code != exitOK || driverOf(t, bdf) != "vfio-pci" || !strings.Contains(out, bdf+": now on vfio-pci (was nvme)") {
		t.Fatalf("unbind: exit %d, stderr %q, driver %q", code, errOut, driverOf(t, bdf))
	}
	code, out, _ = umdprobe(t, "bind", bdf, "--state-dir", state)
	if code != exitOK || !strings.Contains(out, "nothing to do (already bound to vfio-pci)") {
		t.Errorf("bind again: exit %d: %s", code, out)
	}
}
