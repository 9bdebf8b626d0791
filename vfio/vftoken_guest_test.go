//go:build guest

package vfio_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/vfio"
)

// TestGuestVFToken checks which functions have a VF token: an SR-IOV
// physical function (the `sriov` topology's) takes one, set only; any
// other function has none.
func TestGuestVFToken(t *testing.T) {
	guest.Require(t)
	s := openAll(t)
	for _, d := range s.devices {
		_, err := os.Stat(filepath.Join("/sys/bus/pci/devices", d.BDF(), "sriov_totalvfs"))
		pf := err == nil
		tok, err := vfio.NewVFToken()
		if err != nil {
			t.Fatal(err)
		}
		ops, probeErr := d.ProbeFeature(vfio.FeaturePCIVFToken)
		setErr := d.SetVFToken(tok)
		if pf {
			if probeErr != nil || ops != vfio.FeatureSet || setErr != nil {
				t.Errorf("SR-IOV PF %s: probe %s, %v; set %v; want set only, and a token set", d.BDF(), ops, probeErr, setErr)
			}
			// Leave it as found: the nil token, which VFs get by default.
			if err := d.SetVFToken(vfio.VFToken{}); err != nil {
				t.Error(err)
			}
		} else if !errors.Is(probeErr, vfio.ErrNotSupported) || !errors.Is(setErr, vfio.ErrNotSupported) {
			t.Errorf("%s (no SR-IOV): probe %v, set %v; want ErrNotSupported", d.BDF(), probeErr, setErr)
		}
	}
}
