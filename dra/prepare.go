package dra

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	cdi "tags.cncf.io/container-device-interface/specs-go"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/pcie"
)

// A Reservation is what Prepare asks the Reserver for, once per device of
// a claim.
type Reservation struct {
	ClaimUID string
	Device   string   // the published name, DeviceName(BDF)
	BDF      pcie.BDF // the function
	Params   Parameters
}

// A Grant is the Reserver's answer: an ID the client in the container
// presents to the broker to get exactly this reservation.
type Grant struct {
	ID string `json:"id"`
}

// A Reserver holds resources for claims; in the real driver it is a
// client of the broker (umdd). Both methods must be idempotent, since
// Prepare and Unprepare may run again after a crash between any two steps:
//
//   - Reserve with a ClaimUID and Device it already reserved returns the
//     same Grant and reserves nothing more;
//   - Release frees everything reserved under the claim UID and returns
//     nil when there is nothing.
type Reserver interface {
	Reserve(ctx context.Context, r Reservation) (Grant, error)
	Release(ctx context.Context, claimUID string) error
}

// PreparerConfig configures a Preparer.
type PreparerConfig struct {
	// StateDir holds the checkpoint file; it is created if missing.
	StateDir string
	// CDIDir is where CDI specs are written (/var/run/cdi on a node).
	CDIDir string
	// Socket is umdd's socket on the node; ContainerSocket is where the
	// container sees it (default DefaultContainerSocket).
	Socket          string
	ContainerSocket string
	// VFIODir is where the VFIO device files are (default "/dev/vfio");
	// an exclusive claim gets <VFIODir>/<group> and <VFIODir>/vfio.
	VFIODir   string
	Inventory *Inventory
	Reserver  Reserver
}

// DefaultContainerSocket is where a container finds umdd's socket.
const DefaultContainerSocket = "/run/umd/umdd.sock"

// Environment variables a prepared container gets: the broker's names,
// since its client library (broker.ClaimFromEnv) reads them.
const (
	EnvSocket = broker.EnvSocket // the socket's path in the container (not set for exclusive claims)
	EnvClaim  = broker.EnvClaim  // the claim's UID
	EnvMode   = broker.EnvMode   // Parameters.Mode
	// EnvDevicePrefix + the device's name in upper case with '-' as '_'
	// ("UMD_DEVICE_NVME_0000_03_00_0") holds "<BDF>,<grant ID>".
	EnvDevicePrefix = broker.EnvDevicePrefix
)

// CheckpointFile is the name of the checkpoint in StateDir.
const CheckpointFile = "umd-dra-checkpoint.json"

// checkpointVersion is the version of the checkpoint's format.
const checkpointVersion = 1

// ErrCorruptCheckpoint is matched by the error NewPreparer returns for a
// checkpoint it cannot read back.
var ErrCorruptCheckpoint = errors.New("corrupt checkpoint")

// ErrUnknownDevice is matched by Prepare's error for a device name the
// inventory does not have.
var ErrUnknownDevice = errors.New("device not published by this node")

// ErrClaimChanged is matched by Prepare's error when a claim already
// prepared comes again with other devices or parameters.
var ErrClaimChanged = errors.New("claim already prepared differently")

// ErrDeviceInUse is matched by Prepare's error when a device of the claim
// is held by another prepared claim. The scheduler gives a device to one
// claim at a time; this is the node's own check that it did.
var ErrDeviceInUse = errors.New("device is prepared for another claim")

// ErrSameController is matched by Prepare's error when a claim holds a
// controller and a share of it. The whole controller is the claim's use
// of all its queue pairs (the scheduler's counters never give it with a
// share, to one claim or two), so no share of it is left to grant. Shares
// of one controller in one claim are fine: umdd holds a reservation, a
// grant and a session for each.
var ErrSameController = errors.New("a claim may not hold a controller and a share of it")

// A PreparedDevice is one device of a prepared claim.
type PreparedDevice struct {
	Device string   `json:"device"`
	BDF    pcie.BDF `json:"bdf"`
	Grant  Grant    `json:"grant"`
	// CDIDevice is the fully qualified CDI name to give the runtime:
	// "umd.umdkit.io/claim=<claim UID>-<device>".
	CDIDevice string `json:"cdi_device"`
}

// A Prepared is the result of preparing a claim, as the checkpoint keeps it.
type Prepared struct {
	ClaimUID string           `json:"claim_uid"`
	Params   Parameters       `json:"params"`
	Devices  []PreparedDevice `json:"devices"`
	CDISpec  string           `json:"cdi_spec"` // the spec file's path
}

type checkpoint struct {
	Version int                  `json:"version"`
	Claims  map[string]*Prepared `json:"claims"`
}

// A Preparer prepares and unprepares claims on one node. Its methods may
// be called from several goroutines; they run one at a time.
type Preparer struct {
	cfg PreparerConfig
	mu  sync.Mutex
	cp  checkpoint
}

// NewPreparer reads the checkpoint in cfg.StateDir (none is an empty
// one) and returns a Preparer that continues from it.
func NewPreparer(cfg PreparerConfig) (*Preparer, error) {
	switch {
	case cfg.StateDir == "" || cfg.CDIDir == "":
		return nil, errors.New("new preparer: StateDir and CDIDir are required")
	case cfg.Inventory == nil || cfg.Reserver == nil:
		return nil, errors.New("new preparer: Inventory and Reserver are required")
	case cfg.Socket == "":
		return nil, errors.New("new preparer: Socket is required")
	}
	if cfg.ContainerSocket == "" {
		cfg.ContainerSocket = DefaultContainerSocket
	}
	if cfg.VFIODir == "" {
		cfg.VFIODir = "/dev/vfio"
	}
	for _, d := range []string{cfg.StateDir, cfg.CDIDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("new preparer: %w", err)
		}
	}
	p := &Preparer{cfg: cfg, cp: checkpoint{Version: checkpointVersion, Claims: map[string]*Prepared{}}}
	path := p.checkpointPath()
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return p, nil
	case err != nil:
		return nil, fmt.Errorf("reading checkpoint: %w", err)
	}
	var cp checkpoint
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cp); err != nil {
		return nil, fmt.Errorf("reading checkpoint %s: %w: %w", path, ErrCorruptCheckpoint, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("reading checkpoint %s: %w: data after the object", path, ErrCorruptCheckpoint)
	}
	if cp.Version != checkpointVersion {
		return nil, fmt.Errorf("reading checkpoint %s: %w: version %d, this driver reads %d", path, ErrCorruptCheckpoint, cp.Version, checkpointVersion)
	}
	for uid, c := range cp.Claims {
		if c == nil || c.ClaimUID != uid {
			return nil, fmt.Errorf("reading checkpoint %s: %w: entry %q is not that claim's", path, ErrCorruptCheckpoint, uid)
		}
	}
	if cp.Claims != nil {
		p.cp.Claims = cp.Claims
	}
	return p, nil
}

func (p *Preparer) checkpointPath() string { return filepath.Join(p.cfg.StateDir, CheckpointFile) }

func (p *Preparer) specPath(claimUID string) string {
	return filepath.Join(p.cfg.CDIDir, DriverName+"-"+claimUID+".json")
}

// Prepared returns the claim's recorded preparation, if any.
func (p *Preparer) Prepared(claimUID string) (Prepared, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.cp.Claims[claimUID]
	if !ok {
		return Prepared{}, false
	}
	return clonePrepared(c), true
}

func clonePrepared(c *Prepared) Prepared {
	out := *c
	out.Devices = slices.Clone(c.Devices)
	return out
}

// Prepare reserves params on each device for the claim, writes the CDI
// spec that hands the reservations to the container, and records the
// claim in the checkpoint, in that order. A claim already recorded with
// the same devices and parameters returns what was recorded without
// reserving anything more (it asks the Reserver again, which must answer
// with the reservations it holds, and rewrites the spec only if that
// answer changed or the spec is gone); with others it fails with
// ErrClaimChanged. If a step of a first Prepare fails, what the claim had
// reserved is released and nothing is recorded; a recorded claim stays
// recorded whatever fails, for Unprepare to release.
func (p *Preparer) Prepare(ctx context.Context, claimUID string, devices []string, params Parameters) (Prepared, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := validClaimUID(claimUID); err != nil {
		return Prepared{}, fmt.Errorf("preparing claim: %w", err)
	}
	if len(devices) == 0 {
		return Prepared{}, fmt.Errorf("preparing claim %s: no devices", claimUID)
	}
	if err := params.Validate(); err != nil {
		return Prepared{}, fmt.Errorf("preparing claim %s: %w", claimUID, err)
	}
	recorded, ok := p.cp.Claims[claimUID]
	if ok && (recorded.Params != params || !sameDevices(recorded.Devices, devices)) {
		return Prepared{}, fmt.Errorf("preparing claim %s: %w", claimUID, ErrClaimChanged)
	}

	pubs := make([]Published, len(devices))
	for i, name := range devices {
		pub, ok := p.cfg.Inventory.Lookup(name)
		if !ok {
			return Prepared{}, fmt.Errorf("preparing claim %s: %q: %w", claimUID, name, ErrUnknownDevice)
		}
		if slices.Contains(devices[:i], name) {
			return Prepared{}, fmt.Errorf("preparing claim %s: device %q listed twice", claimUID, name)
		}
		if err := checkShare(pub, params); err != nil {
			return Prepared{}, fmt.Errorf("preparing claim %s: %w", claimUID, err)
		}
		if j := slices.IndexFunc(pubs[:i], func(q Published) bool { return wholeAndShare(q, pub) }); j >= 0 {
			return Prepared{}, fmt.Errorf("preparing claim %s: %s and %s: %w: the whole controller leaves no queue pairs to its shares", claimUID, pubs[j].Device.Name, name, ErrSameController)
		}
		switch isVF := pub.PhysFn != nil; {
		case params.Mode == ModeVF && !isVF:
			return Prepared{}, fmt.Errorf("preparing claim %s: mode %q needs a virtual function, %s is not one", claimUID, ModeVF, name)
		case isVF && params.Mode != ModeVF && params.Mode != ModeExclusive:
			return Prepared{}, fmt.Errorf("preparing claim %s: %s is a virtual function, which the broker leases whole: mode must be %q or %q, not %q", claimUID, name, ModeVF, ModeExclusive, params.Mode)
		}
		if params.Mode == ModeExclusive && pub.IOMMUGroup == pcie.NoIOMMUGroup {
			return Prepared{}, fmt.Errorf("preparing claim %s: exclusive use of %s needs an IOMMU group, it has none", claimUID, name)
		}
		if other, dev := p.holder(pub); other != "" && other != claimUID {
			if dev != name {
				return Prepared{}, fmt.Errorf("preparing claim %s: %s: %w %s (it holds %s)", claimUID, name, ErrDeviceInUse, other, dev)
			}
			return Prepared{}, fmt.Errorf("preparing claim %s: %s: %w %s", claimUID, name, ErrDeviceInUse, other)
		}
		pubs[i] = pub
	}
	c := &Prepared{ClaimUID: claimUID, Params: params, CDISpec: p.specPath(claimUID)}
	fail := func(err error) (Prepared, error) {
		if recorded != nil {
			// Prepared before and perhaps in use: keep it for Unprepare.
			return Prepared{}, fmt.Errorf("preparing claim %s again: %w", claimUID, err)
		}
		if rerr := p.cfg.Reserver.Release(context.WithoutCancel(ctx), claimUID); rerr != nil {
			err = errors.Join(err, fmt.Errorf("releasing what was reserved: %w", rerr))
		}
		if rerr := os.Remove(c.CDISpec); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		return Prepared{}, fmt.Errorf("preparing claim %s: %w", claimUID, err)
	}
	// Reserve is idempotent per claim and device, so asking again for a
	// recorded claim reserves nothing more; it confirms the broker still
	// holds the reservations (a restarted broker reserves them anew,
	// perhaps under new grant IDs, which the spec then names).
	for _, pub := range pubs {
		g, err := p.cfg.Reserver.Reserve(ctx, Reservation{ClaimUID: claimUID, Device: pub.Device.Name, BDF: pub.BDF, Params: params})
		if err != nil {
			return fail(fmt.Errorf("reserving %s: %w", pub.Device.Name, err))
		}
		c.Devices = append(c.Devices, PreparedDevice{
			Device:    pub.Device.Name,
			BDF:       pub.BDF,
			Grant:     g,
			CDIDevice: DriverName + "/claim=" + cdiDeviceName(claimUID, pub.Device.Name),
		})
	}
	if recorded != nil && slices.Equal(recorded.Devices, c.Devices) {
		// Nothing changed. The CDI directory may be a tmpfs that a reboot
		// emptied while the checkpoint survived: write the spec if gone.
		if _, err := os.Stat(c.CDISpec); errors.Is(err, fs.ErrNotExist) {
			if err := writeJSONAtomic(c.CDISpec, p.cdiSpec(c, pubs)); err != nil {
				return fail(fmt.Errorf("rewriting CDI spec: %w", err))
			}
		}
		return clonePrepared(recorded), nil
	}
	if err := writeJSONAtomic(c.CDISpec, p.cdiSpec(c, pubs)); err != nil {
		return fail(fmt.Errorf("writing CDI spec: %w", err))
	}
	p.cp.Claims[claimUID] = c
	if err := p.save(); err != nil {
		if recorded != nil {
			p.cp.Claims[claimUID] = recorded
		} else {
			delete(p.cp.Claims, claimUID)
		}
		return fail(err)
	}
	return clonePrepared(c), nil
}

// Unprepare releases the claim's reservations, removes its CDI spec and
// drops it from the checkpoint. A claim that is not recorded (never
// prepared, unprepared already, or lost in a crash during Prepare) is
// released and cleaned up all the same, so Unprepare is idempotent.
func (p *Preparer) Unprepare(ctx context.Context, claimUID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := validClaimUID(claimUID); err != nil {
		return fmt.Errorf("unpreparing claim: %w", err)
	}
	if err := p.cfg.Reserver.Release(ctx, claimUID); err != nil {
		return fmt.Errorf("unpreparing claim %s: releasing: %w", claimUID, err)
	}
	if err := os.Remove(p.specPath(claimUID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unpreparing claim %s: %w", claimUID, err)
	}
	c, ok := p.cp.Claims[claimUID]
	if !ok {
		return nil
	}
	delete(p.cp.Claims, claimUID)
	if err := p.save(); err != nil {
		p.cp.Claims[claimUID] = c
		return fmt.Errorf("unpreparing claim %s: %w", claimUID, err)
	}
	return nil
}

// holder returns a recorded claim that holds pub or a device it cannot
// share a controller with (the whole controller of a share, a share of a
// whole controller), and that device; "" if none. Other shares of the
// same controller do not conflict: umdd serves each its own session.
func (p *Preparer) holder(pub Published) (claimUID, device string) {
	for uid, c := range p.cp.Claims {
		for _, d := range c.Devices {
			if d.Device == pub.Device.Name {
				return uid, d.Device
			}
			if held, ok := p.cfg.Inventory.Lookup(d.Device); ok && wholeAndShare(held, pub) {
				return uid, d.Device
			}
		}
	}
	return "", ""
}

// wholeAndShare reports whether a and b (two devices) are a controller
// and a share of it, which no claims may hold at once; shares of one
// controller may be held together, by one claim or several.
func wholeAndShare(a, b Published) bool {
	return controllerOf(a) == controllerOf(b) && (a.Share == nil) != (b.Share == nil)
}

// controllerOf is the name of the controller a device is or is a share of.
func controllerOf(pub Published) string {
	if pub.Share != nil {
		return pub.Share.Controller
	}
	return pub.Device.Name
}

// checkShare checks what a claim may ask of a share: a broker session
// (the controller stays umdd's), with at most the share's queue pairs.
func checkShare(pub Published, params Parameters) error {
	sh := pub.Share
	if sh == nil {
		return nil
	}
	if params.Mode != ModeMediated && params.Mode != ModeTrusted {
		return fmt.Errorf("%s is a share of %s, a broker session: %w", pub.Device.Name, sh.Controller, &FieldError{
			Field: "mode", Value: fmt.Sprintf("%q", params.Mode), Allowed: fmt.Sprintf("%q or %q on a share", ModeMediated, ModeTrusted),
		})
	}
	if params.QueuePairs > sh.QueuePairs {
		return fmt.Errorf("%s: %w", pub.Device.Name, &FieldError{
			Field: "queuePairs", Value: fmt.Sprint(params.QueuePairs),
			Allowed: fmt.Sprintf("%d to %d: each share of %s has %d queue pairs", MinQueuePairs, sh.QueuePairs, sh.Controller, sh.QueuePairs),
		})
	}
	return nil
}

func (p *Preparer) save() error {
	if err := writeJSONAtomic(p.checkpointPath(), &p.cp); err != nil {
		return fmt.Errorf("writing checkpoint: %w", err)
	}
	return nil
}

func sameDevices(have []PreparedDevice, want []string) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range have {
		if have[i].Device != want[i] {
			return false
		}
	}
	return true
}

// validClaimUID accepts what Kubernetes UIDs look like (a UUID) and, more
// loosely, any short string of letters, digits and '-', since it becomes
// part of file and CDI device names.
func validClaimUID(uid string) error {
	if uid == "" || len(uid) > 64 {
		return fmt.Errorf("claim UID %q: must be 1 to 64 characters", uid)
	}
	for _, r := range uid {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("claim UID %q: only letters, digits and '-' allowed", uid)
		}
	}
	return nil
}

func cdiDeviceName(claimUID, device string) string { return claimUID + "-" + device }

// EnvDevice is the environment variable naming a device's reservation.
func EnvDevice(device string) string {
	return EnvDevicePrefix + strings.ToUpper(strings.ReplaceAll(device, "-", "_"))
}

// cdiSpec builds the claim's CDI spec: one CDI device per claimed device.
// The container edits common to all (the socket, the claim's identity)
// are the spec's; each device adds its own variable and, when exclusive,
// its group's VFIO node.
func (p *Preparer) cdiSpec(c *Prepared, pubs []Published) *cdi.Spec {
	spec := &cdi.Spec{
		Kind: DriverName + "/claim",
		ContainerEdits: cdi.ContainerEdits{
			Env: []string{EnvClaim + "=" + c.ClaimUID, EnvMode + "=" + c.Params.Mode},
		},
	}
	if c.Params.Mode == ModeExclusive {
		spec.ContainerEdits.DeviceNodes = []*cdi.DeviceNode{{Path: filepath.Join(p.cfg.VFIODir, "vfio"), Permissions: "rw"}}
	} else {
		spec.ContainerEdits.Env = append(spec.ContainerEdits.Env, EnvSocket+"="+p.cfg.ContainerSocket)
		spec.ContainerEdits.Mounts = []*cdi.Mount{{
			HostPath:      p.cfg.Socket,
			ContainerPath: p.cfg.ContainerSocket,
			Options:       []string{"bind", "rw"},
		}}
	}
	for i, d := range c.Devices {
		edits := cdi.ContainerEdits{Env: []string{EnvDevice(d.Device) + "=" + d.BDF.String() + "," + d.Grant.ID}}
		if c.Params.Mode == ModeExclusive {
			edits.DeviceNodes = []*cdi.DeviceNode{{Path: filepath.Join(p.cfg.VFIODir, fmt.Sprint(pubs[i].IOMMUGroup)), Permissions: "rw"}}
		}
		spec.Devices = append(spec.Devices, cdi.Device{Name: cdiDeviceName(c.ClaimUID, d.Device), ContainerEdits: edits})
	}
	v, err := cdi.MinimumRequiredVersion(spec)
	if err != nil {
		v = cdi.CurrentVersion
	}
	spec.Version = v
	return spec
}

// writeJSONAtomic writes v as indented JSON to path so that a reader (or
// a restart after a crash) sees either the old content or the new, never
// a mix: a temporary file in the same directory, fsynced, renamed over
// path, then the directory fsynced so the rename itself is durable.
func writeJSONAtomic(path string, v any) (err error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
