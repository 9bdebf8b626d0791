package vfio

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
)

// The VF token (since Linux 5.7). When an SR-IOV physical function is
// bound to vfio-pci, its user can disturb or spy on its virtual functions
// (reset them, take their resources back), so vfio-pci lets a VF be opened
// only by a process that presents the PF's VF token, a UUID: the PF's user
// sets it (SetVFToken, VFIO_DEVICE_FEATURE_PCI_VF_TOKEN) and hands it to
// whoever may use the VFs, which pass it when opening the VF's device
// (VFIO_GROUP_GET_DEVICE_FD with "BDF vf_token=UUID"). Until the PF's user
// sets one the token is the nil UUID. A VF whose PF is not bound to
// vfio-pci needs no token and must not be given one (EINVAL).
//
// Group.Device presents the token registered for the device with
// UseVFToken, so code that opens devices by BDF (umd.Open) opens VFs
// unchanged once their token is registered in the process.

// VFToken is a VF token: a UUID in its 16 bytes, in RFC 4122 order.
type VFToken [16]byte

// NewVFToken returns a random (version 4) VF token.
func NewVFToken() (VFToken, error) {
	var t VFToken
	if _, err := rand.Read(t[:]); err != nil {
		return VFToken{}, fmt.Errorf("making a VF token: %w", err)
	}
	t[6] = t[6]&0x0f | 0x40
	t[8] = t[8]&0x3f | 0x80
	return t, nil
}

// String returns the token as the kernel parses it:
// xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, lower-case hex.
func (t VFToken) String() string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", t[0:4], t[4:6], t[6:8], t[8:10], t[10:16])
}

// ParseVFToken parses a token in the form String returns (upper-case hex
// accepted), as a client given it by a PF's owner would.
func ParseVFToken(s string) (VFToken, error) {
	var t VFToken
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return VFToken{}, fmt.Errorf("VF token %q is not a UUID of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	if _, err := hex.Decode(t[:], []byte(s[0:8]+s[9:13]+s[14:18]+s[19:23]+s[24:36])); err != nil {
		return VFToken{}, fmt.Errorf("VF token %q: %w", s, err)
	}
	return t, nil
}

// SetVFToken sets the VF token of d, an SR-IOV physical function bound to
// vfio-pci (SET of FeaturePCIVFToken). Opening its VFs then needs the
// token, and so does opening the PF again while its VFs are open. A device
// that is no PF has no token: the error wraps ErrNotSupported.
func (d *Device) SetVFToken(t VFToken) error {
	return d.SetFeature(FeaturePCIVFToken, t[:])
}

var vfTokens struct {
	sync.Mutex
	m map[string]VFToken
}

// UseVFToken registers t as the VF token to present when this process
// opens device bdf (a VF) with Group.Device. Registering again replaces
// the token.
func UseVFToken(bdf string, t VFToken) error {
	if err := checkBDF(bdf); err != nil {
		return fmt.Errorf("registering a VF token: %w", err)
	}
	vfTokens.Lock()
	defer vfTokens.Unlock()
	if vfTokens.m == nil {
		vfTokens.m = map[string]VFToken{}
	}
	vfTokens.m[bdf] = t
	return nil
}

// ForgetVFToken removes the VF token registered for bdf, if any.
func ForgetVFToken(bdf string) {
	vfTokens.Lock()
	defer vfTokens.Unlock()
	delete(vfTokens.m, bdf)
}

// deviceName returns the name VFIO_GROUP_GET_DEVICE_FD gets for bdf: the
// BDF, followed by " vf_token=UUID" when a token is registered for it.
func deviceName(bdf string) string {
	vfTokens.Lock()
	t, ok := vfTokens.m[bdf]
	vfTokens.Unlock()
	if !ok {
		return bdf
	}
	return bdf + " vf_token=" + t.String()
}
