package dra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	cdi "tags.cncf.io/container-device-interface/specs-go"

	"github.com/umdkit/umd/pcie"
)

// fakeReserver is a Reserver that keeps its reservations in memory and
// counts what it is asked, as umdd would keep them across plugin restarts.
// It keys them as umdd does: by claim, the function's address and the
// reservation's name (a share's device name, none for a whole device).
type fakeReserver struct {
	held     map[string]Grant // claim UID + "/" + BDF + "/" + name
	reserves int              // Reserve calls that reserved something new
	releases int              // Release calls that released something
	next     int
	failOn   string // a device name whose Reserve fails
}

func newFakeReserver() *fakeReserver { return &fakeReserver{held: map[string]Grant{}} }

func (f *fakeReserver) Reserve(_ context.Context, r Reservation) (Grant, error) {
	if r.Device == f.failOn {
		return Grant{}, errors.New("no free queue pairs")
	}
	key := r.ClaimUID + "/" + r.BDF.String() + "/" + reservationName(r)
	if g, ok := f.held[key]; ok {
		return g, nil
	}
	f.next++
	g := Grant{ID: fmt.Sprintf("r%d", f.next)}
	f.held[key] = g
	f.reserves++
	return g, nil
}

func (f *fakeReserver) Release(_ context.Context, claimUID string) error {
	n := 0
	for k := range f.held {
		if strings.HasPrefix(k, claimUID+"/") {
			delete(f.held, k)
			n++
		}
	}
	if n > 0 {
		f.releases++
	}
	return nil
}

type rig struct {
	cfg PreparerConfig
	res *fakeReserver
}

// cardsInventory is the inventory of the cards topology, published once
// for all tests (an Inventory is read-only).
var cardsInventory = sync.OnceValues(func() (*Inventory, error) {
	f, err := os.Open(filepath.Join("..", "pcie", "testdata", "snapshots", "qemu-cards.txt"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dir, err := os.MkdirTemp("", "dra-cards")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := pcie.RestoreSnapshot(f, dir); err != nil {
		return nil, err
	}
	sys, err := pcie.Scan(pcie.Options{SysfsRoot: dir})
	if err != nil {
		return nil, err
	}
	return Publish(sys, nil)
})

func newRig(t *testing.T) *rig {
	t.Helper()
	inv, err := cardsInventory()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	res := newFakeReserver()
	return &rig{res: res, cfg: PreparerConfig{
		StateDir:  filepath.Join(dir, "state"),
		CDIDir:    filepath.Join(dir, "cdi"),
		Socket:    "/run/umdd/umdd.sock",
		Inventory: inv,
		Reserver:  res,
	}}
}

func (r *rig) preparer(t *testing.T) *Preparer {
	t.Helper()
	p, err := NewPreparer(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readSpec(t *testing.T, path string) cdi.Spec {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s cdi.Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

const uid = "0b6bd1e4-3c0e-4b8a-9d4c-6a4e2f1d7c90"

var pair = []string{"nvme-0000-03-00-0", "nvme-0000-04-00-0"}

func TestPrepareMediated(t *testing.T) {
	r := newRig(t)
	p := r.preparer(t)
	ctx := context.Background()
	got, err := p.Prepare(ctx, uid, pair, DefaultParameters())
	if err != nil {
		t.Fatal(err)
	}
	if r.res.reserves != 2 || len(got.Devices) != 2 {
		t.Fatalf("%d reservations, %d devices", r.res.reserves, len(got.Devices))
	}
	if want := "umd.umdkit.io/claim=" + uid + "-nvme-0000-03-00-0"; got.Devices[0].CDIDevice != want {
		t.Errorf("CDI device %q, want %q", got.Devices[0].CDIDevice, want)
	}
	spec := readSpec(t, got.CDISpec)
	if err := cdi.ValidateVersion(&spec); err != nil {
		t.Errorf("spec version: %v", err)
	}
	if spec.Kind != "umd.umdkit.io/claim" || len(spec.Devices) != 2 {
		t.Errorf("spec kind %q, %d devices", spec.Kind, len(spec.Devices))
	}
	e := spec.ContainerEdits
	if len(e.Mounts) != 1 || e.Mounts[0].HostPath != "/run/umdd/umdd.sock" || e.Mounts[0].ContainerPath != DefaultContainerSocket {
		t.Errorf("mounts %+v", e.Mounts)
	}
	for _, v := range []string{"UMD_CLAIM=" + uid, "UMD_MODE=mediated", "UMD_SOCKET=" + DefaultContainerSocket} {
		if !slices.Contains(e.Env, v) {
			t.Errorf("env %q lacks %q", e.Env, v)
		}
	}
	if len(e.DeviceNodes) != 0 {
		t.Errorf("a mediated claim gets device nodes %+v", e.DeviceNodes)
	}
	if env := spec.Devices[1].ContainerEdits.Env; !slices.Equal(env, []string{"UMD_DEVICE_NVME_0000_04_00_0=0000:04:00.0," + got.Devices[1].Grant.ID}) {
		t.Errorf("device env %q", env)
	}

	// Again: same answer, nothing reserved.
	again, err := p.Prepare(ctx, uid, pair, DefaultParameters())
	if err != nil {
		t.Fatal(err)
	}
	if r.res.reserves != 2 || !equalPrepared(got, again) {
		t.Errorf("second Prepare reserved (%d) or answered differently: %+v", r.res.reserves, again)
	}
	// The same claim with other parameters or devices is refused.
	other := DefaultParameters()
	other.QueuePairs = 3
	if _, err := p.Prepare(ctx, uid, pair, other); !errors.Is(err, ErrClaimChanged) {
		t.Errorf("changed parameters: %v", err)
	}
	if _, err := p.Prepare(ctx, uid, pair[:1], DefaultParameters()); !errors.Is(err, ErrClaimChanged) {
		t.Errorf("changed devices: %v", err)
	}

	if err := p.Unprepare(ctx, uid); err != nil {
		t.Fatal(err)
	}
	if len(r.res.held) != 0 || r.res.releases != 1 {
		t.Errorf("after Unprepare: held %v, %d releases", r.res.held, r.res.releases)
	}
	if _, err := os.Stat(got.CDISpec); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CDI spec still there: %v", err)
	}
	if _, ok := p.Prepared(uid); ok {
		t.Error("claim still recorded")
	}
	if err := p.Unprepare(ctx, uid); err != nil {
		t.Errorf("second Unprepare: %v", err)
	}
	if r.res.releases != 1 {
		t.Errorf("second Unprepare released again")
	}
}

func equalPrepared(a, b Prepared) bool {
	return a.ClaimUID == b.ClaimUID && a.Params == b.Params && a.CDISpec == b.CDISpec && slices.Equal(a.Devices, b.Devices)
}

func TestPrepareExclusive(t *testing.T) {
	r := newRig(t)
	r.cfg.VFIODir = "/dev/vfio"
	p := r.preparer(t)
	params := DefaultParameters()
	params.Mode = ModeExclusive
	got, err := p.Prepare(context.Background(), uid, []string{"nvme-0000-09-00-0"}, params)
	if err != nil {
		t.Fatal(err)
	}
	spec := readSpec(t, got.CDISpec)
	if len(spec.ContainerEdits.Mounts) != 0 || slices.ContainsFunc(spec.ContainerEdits.Env, func(s string) bool { return strings.HasPrefix(s, EnvSocket+"=") }) {
		t.Errorf("an exclusive claim gets the socket: %+v", spec.ContainerEdits)
	}
	group := r.cfg.Inventory.devices[r.cfg.Inventory.byName["nvme-0000-09-00-0"]].IOMMUGroup
	var nodes []string
	for _, n := range spec.ContainerEdits.DeviceNodes {
		nodes = append(nodes, n.Path)
	}
	for _, n := range spec.Devices[0].ContainerEdits.DeviceNodes {
		nodes = append(nodes, n.Path)
	}
	if want := []string{"/dev/vfio/vfio", fmt.Sprintf("/dev/vfio/%d", group)}; !slices.Equal(nodes, want) {
		t.Errorf("device nodes %q, want %q", nodes, want)
	}
}

func TestPrepareRestart(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	first, err := r.preparer(t).Prepare(ctx, uid, pair, DefaultParameters())
	if err != nil {
		t.Fatal(err)
	}
	// A new Preparer over the same directories: the claim is known.
	p := r.preparer(t)
	got, ok := p.Prepared(uid)
	if !ok || !equalPrepared(got, first) {
		t.Fatalf("after restart: %+v, %v", got, ok)
	}
	again, err := p.Prepare(ctx, uid, pair, DefaultParameters())
	if err != nil || !equalPrepared(again, first) || r.res.reserves != 2 {
		t.Errorf("Prepare after restart: %v, %d reservations", err, r.res.reserves)
	}
	if err := p.Unprepare(ctx, uid); err != nil {
		t.Fatal(err)
	}
	p = r.preparer(t)
	if _, ok := p.Prepared(uid); ok {
		t.Error("unprepared claim back after restart")
	}
	if err := p.Unprepare(ctx, uid); err != nil || r.res.releases != 1 {
		t.Errorf("Unprepare after restart: %v, %d releases", err, r.res.releases)
	}
}

// A crash after reserving and writing the spec but before the checkpoint:
// the next Unprepare still releases and removes the spec.
func TestUnprepareUnrecorded(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p := r.preparer(t)
	got, err := p.Prepare(ctx, uid, pair, DefaultParameters())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(r.cfg.StateDir, CheckpointFile)); err != nil {
		t.Fatal(err)
	}
	p = r.preparer(t)
	if err := p.Unprepare(ctx, uid); err != nil {
		t.Fatal(err)
	}
	if len(r.res.held) != 0 {
		t.Errorf("still held: %v", r.res.held)
	}
	if _, err := os.Stat(got.CDISpec); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CDI spec left: %v", err)
	}
}

func TestPrepareFailureReleases(t *testing.T) {
	r := newRig(t)
	r.res.failOn = pair[1]
	p := r.preparer(t)
	_, err := p.Prepare(context.Background(), uid, pair, DefaultParameters())
	if err == nil || !strings.Contains(err.Error(), "no free queue pairs") || !strings.Contains(err.Error(), pair[1]) {
		t.Fatalf("error %v", err)
	}
	if len(r.res.held) != 0 {
		t.Errorf("first device still reserved: %v", r.res.held)
	}
	if _, ok := p.Prepared(uid); ok {
		t.Error("failed claim recorded")
	}
	if ents, _ := os.ReadDir(r.cfg.CDIDir); len(ents) != 0 {
		t.Errorf("CDI dir holds %v", ents)
	}
}

func TestPrepareRefuses(t *testing.T) {
	r := newRig(t)
	p := r.preparer(t)
	ctx := context.Background()
	bad := DefaultParameters()
	bad.QueueDepth = 1
	for _, tc := range []struct {
		uid     string
		devices []string
		params  Parameters
		want    string
	}{
		{uid, []string{"nvme-0000-0a-00-0"}, DefaultParameters(), "not published"},
		{uid, []string{pair[0], pair[0]}, DefaultParameters(), "listed twice"},
		{uid, nil, DefaultParameters(), "no devices"},
		{uid, pair, bad, "queueDepth"},
		{"../etc", pair, DefaultParameters(), "only letters"},
		{"", pair, DefaultParameters(), "1 to 64"},
	} {
		if _, err := p.Prepare(ctx, tc.uid, tc.devices, tc.params); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Prepare(%q, %q): %v, want an error with %q", tc.uid, tc.devices, err, tc.want)
		}
	}
	if r.res.reserves != 0 {
		t.Errorf("refused claims reserved %d", r.res.reserves)
	}
}

func TestCorruptCheckpoint(t *testing.T) {
	for _, content := range []string{
		`{"version":1,"claims":{`,
		`not json`,
		`{"version":2,"claims":{}}`,
		`{"version":1,"claims":{"a":{"claim_uid":"b"}}}`,
		`{"version":1,"claims":{},"extra":1}`,
	} {
		r := newRig(t)
		if err := os.MkdirAll(r.cfg.StateDir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(r.cfg.StateDir, CheckpointFile)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := NewPreparer(r.cfg)
		if !errors.Is(err, ErrCorruptCheckpoint) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want ErrCorruptCheckpoint naming %s", content, err, path)
		}
	}
}

// The checkpoint is replaced whole: no temporary files stay behind and
// the file always decodes.
func TestCheckpointAtomic(t *testing.T) {
	r := newRig(t)
	p := r.preparer(t)
	ctx := context.Background()
	devs := r.cfg.Inventory.Devices()
	for i := range 5 {
		u := fmt.Sprintf("claim-%d", i)
		if _, err := p.Prepare(ctx, u, []string{devs[i].Device.Name}, DefaultParameters()); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Unprepare(ctx, "claim-2"); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(r.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != CheckpointFile {
		t.Errorf("state dir holds %v", ents)
	}
	p2 := r.preparer(t)
	for i := range 5 {
		_, ok := p2.Prepared(fmt.Sprintf("claim-%d", i))
		if ok != (i != 2) {
			t.Errorf("claim-%d recorded: %v", i, ok)
		}
	}
}

// After a reboot the CDI directory (a tmpfs) is empty and the broker has
// restarted with nothing reserved; the checkpoint survived. Preparing the
// claim again reserves it anew and writes a spec naming the new grants.
func TestPrepareAfterReboot(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	first, err := r.preparer(t).Prepare(ctx, uid, pair, DefaultParameters())
	if err != nil {
		t.Fatal(err)
	}

	// Only the spec is gone: rewritten, nothing reserved.
	if err := os.Remove(first.CDISpec); err != nil {
		t.Fatal(err)
	}
	p := r.preparer(t)
	if _, err := p.Prepare(ctx, uid, pair, DefaultParameters()); err != nil {
		t.Fatal(err)
	}
	if s := readSpec(t, first.CDISpec); len(s.Devices) != 2 || r.res.reserves != 2 {
		t.Errorf("rewritten spec has %d devices, %d reservations", len(s.Devices), r.res.reserves)
	}

	// The broker lost everything and numbers its grants anew.
	lost := newFakeReserver()
	lost.next = 100
	r.cfg.Reserver = lost
	r.res = lost
	p = r.preparer(t)
	again, err := p.Prepare(ctx, uid, pair, DefaultParameters())
	if err != nil {
		t.Fatal(err)
	}
	if lost.reserves != 2 || again.Devices[0].Grant == first.Devices[0].Grant {
		t.Errorf("after a broker restart: %d reservations, grant %v (was %v)", lost.reserves, again.Devices[0].Grant, first.Devices[0].Grant)
	}
	env := readSpec(t, again.CDISpec).Devices[0].ContainerEdits.Env[0]
	if !strings.HasSuffix(env, ","+again.Devices[0].Grant.ID) {
		t.Errorf("spec names %q, want grant %s", env, again.Devices[0].Grant.ID)
	}
	if got, _ := r.preparer(t).Prepared(uid); !equalPrepared(got, again) {
		t.Errorf("checkpoint not updated: %+v", got)
	}
}

type failingRelease struct{ *fakeReserver }

func (failingRelease) Release(context.Context, string) error { return errors.New("broker unreachable") }

// A failed release leaves the claim recorded, so that Unprepare can be
// retried; a failed re-Prepare of a recorded claim releases nothing.
func TestUnprepareReleaseFails(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if _, err := r.preparer(t).Prepare(ctx, uid, pair, DefaultParameters()); err != nil {
		t.Fatal(err)
	}
	r.cfg.Reserver = failingRelease{r.res}
	p := r.preparer(t)
	if err := p.Unprepare(ctx, uid); err == nil || !strings.Contains(err.Error(), "broker unreachable") {
		t.Fatalf("Unprepare: %v", err)
	}
	if _, ok := r.preparer(t).Prepared(uid); !ok {
		t.Error("claim dropped although its release failed")
	}
	r.res.failOn = pair[1]
	r.cfg.Reserver = r.res
	if _, err := r.preparer(t).Prepare(ctx, uid, pair, DefaultParameters()); err == nil {
		t.Error("re-Prepare with a failing Reserve succeeded")
	}
	if len(r.res.held) != 2 {
		t.Errorf("a failed re-Prepare released the claim: %v", r.res.held)
	}
	if _, ok := r.preparer(t).Prepared(uid); !ok {
		t.Error("a failed re-Prepare dropped the claim")
	}
}

type lockedReserver struct {
	mu sync.Mutex
	*fakeReserver
}

func (l *lockedReserver) Reserve(ctx context.Context, r Reservation) (Grant, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fakeReserver.Reserve(ctx, r)
}

func (l *lockedReserver) Release(ctx context.Context, uid string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fakeReserver.Release(ctx, uid)
}

// The kubelet may prepare claims concurrently.
func TestPrepareConcurrent(t *testing.T) {
	r := newRig(t)
	r.cfg.Reserver = &lockedReserver{fakeReserver: r.res}
	p := r.preparer(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	devs := r.cfg.Inventory.Devices() // one each: a device goes to one claim at a time
	for i := range len(devs) {
		wg.Go(func() {
			u := fmt.Sprintf("c-%d", i)
			for range 2 {
				if _, err := p.Prepare(ctx, u, []string{devs[i].Device.Name}, DefaultParameters()); err != nil {
					errs <- err
				}
			}
			if i%2 == 0 {
				if err := p.Unprepare(ctx, u); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if r.res.reserves != len(devs) || len(r.res.held) != len(devs)/2 {
		t.Errorf("%d reservations, %d held; want %d and %d", r.res.reserves, len(r.res.held), len(devs), len(devs)/2)
	}
	q := r.preparer(t)
	for i := range len(devs) {
		if _, ok := q.Prepared(fmt.Sprintf("c-%d", i)); ok != (i%2 == 1) {
			t.Errorf("c-%d recorded: %v", i, ok)
		}
	}
}

func TestPrepareVFModes(t *testing.T) {
	inv, err := Publish(sriovTree(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t)
	r.cfg.Inventory = inv
	p := r.preparer(t)
	ctx := context.Background()
	vf, pf := "nvme-0000-01-00-1", "nvme-0000-01-00-0"
	with := func(mode string) Parameters { x := DefaultParameters(); x.Mode = mode; return x }
	for _, tc := range []struct {
		device, mode string
		want         string // "" for success
	}{
		{vf, ModeMediated, "virtual function, which the broker leases whole"},
		{vf, ModeTrusted, "virtual function"},
		{pf, ModeVF, "needs a virtual function"},
		{"nvme-0000-82-00-0", ModeExclusive, "needs an IOMMU group"},
		{vf, ModeVF, ""},
		{pf, ModeTrusted, ""},
	} {
		u := "c-" + tc.device + "-" + tc.mode
		_, err := p.Prepare(ctx, u, []string{tc.device}, with(tc.mode))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s as %s: %v, want %q", tc.device, tc.mode, err, tc.want)
		}
	}
}

// A device prepared for one claim is refused to another until the first
// is unprepared.
func TestPrepareDeviceInUse(t *testing.T) {
	r := newRig(t)
	p := r.preparer(t)
	ctx := context.Background()
	if _, err := p.Prepare(ctx, "first", pair, DefaultParameters()); err != nil {
		t.Fatal(err)
	}
	_, err := p.Prepare(ctx, "second", pair[1:], DefaultParameters())
	if !errors.Is(err, ErrDeviceInUse) || !strings.Contains(err.Error(), "first") {
		t.Fatalf("%v, want ErrDeviceInUse naming the claim that holds it", err)
	}
	if r.res.reserves != 2 {
		t.Errorf("%d reservations, want the first claim's 2 only", r.res.reserves)
	}
	if err := p.Unprepare(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Prepare(ctx, "second", pair[1:], DefaultParameters()); err != nil {
		t.Errorf("after the first claim's unprepare: %v", err)
	}
}

// recordingReserver is a fakeReserver that keeps every Reservation asked.
type recordingReserver struct {
	*fakeReserver
	asked []Reservation
}

func (r *recordingReserver) Reserve(ctx context.Context, res Reservation) (Grant, error) {
	r.asked = append(r.asked, res)
	return r.fakeReserver.Reserve(ctx, res)
}

// sharesRig is a rig over the cards topology with 03:00.0 and 04:00.0
// (8 queue pairs each) split into four shares of two queue pairs.
func sharesRig(t *testing.T) (*rig, *recordingReserver) {
	t.Helper()
	r := newRig(t)
	inv := cardsShares(t)
	rec := &recordingReserver{fakeReserver: r.res}
	r.cfg.Inventory, r.cfg.Reserver = inv, rec
	return r, rec
}

// TestPrepareShares: two claims each prepare a share of one controller;
// umdd is asked to reserve on the controller's address under each claim,
// the CDI device and the environment name the share. The whole
// controller is refused to a third claim while a share is held (and a
// share while the whole is), and to a claim with a share of it
// (ErrSameController); a claim with two shares of one controller gets a
// reservation and a CDI device for each.
func TestPrepareShares(t *testing.T) {
	r, rec := sharesRig(t)
	p := r.preparer(t)
	ctx := context.Background()
	params := DefaultParameters()
	params.QueuePairs = 2
	s0, s1 := ShareName("nvme-0000-03-00-0", 0), ShareName("nvme-0000-03-00-0", 1)
	a, err := p.Prepare(ctx, "claim-a", []string{s0}, params)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Prepare(ctx, "claim-b", []string{s1}, params)
	if err != nil {
		t.Fatalf("a second share of the controller: %v", err)
	}
	if len(rec.asked) != 2 {
		t.Fatalf("asked %d reservations, want 2", len(rec.asked))
	}
	for i, want := range []string{"claim-a", "claim-b"} {
		got := rec.asked[i]
		if got.ClaimUID != want || got.BDF.String() != "0000:03:00.0" || got.Params.QueuePairs != 2 {
			t.Errorf("reservation %d: %+v, want claim %s on 0000:03:00.0 with 2 queue pairs", i, got, want)
		}
	}
	if want := "umd.umdkit.io/claim=claim-a-" + s0; a.Devices[0].CDIDevice != want || a.Devices[0].BDF.String() != "0000:03:00.0" {
		t.Errorf("prepared %+v, want CDI device %s on 0000:03:00.0", a.Devices[0], want)
	}
	spec := readSpec(t, b.CDISpec)
	if env := spec.Devices[0].ContainerEdits.Env; !slices.Equal(env, []string{"UMD_DEVICE_NVME_0000_03_00_0_SHARE_1=0000:03:00.0," + b.Devices[0].Grant.ID}) {
		t.Errorf("share's env %q", env)
	}

	// The whole controller, while shares are held.
	if _, err := p.Prepare(ctx, "claim-c", []string{"nvme-0000-03-00-0"}, DefaultParameters()); !errors.Is(err, ErrDeviceInUse) || !strings.Contains(err.Error(), "-share-") {
		t.Errorf("the whole controller while its shares are held: %v, want ErrDeviceInUse naming the share", err)
	}
	// Two shares of one controller in one claim: two reservations of
	// the controller, told apart by the shares' names, two grants, two
	// CDI devices.
	s2, s3 := ShareName("nvme-0000-03-00-0", 2), ShareName("nvme-0000-03-00-0", 3)
	reserves := r.res.reserves
	d, err := p.Prepare(ctx, "claim-d", []string{s2, s3}, params)
	if err != nil {
		t.Fatalf("two shares of one controller in a claim: %v", err)
	}
	if r.res.reserves != reserves+2 || len(d.Devices) != 2 || d.Devices[0].Grant == d.Devices[1].Grant {
		t.Fatalf("prepared %+v with %d new reservations, want two devices with grants of their own", d, r.res.reserves-reserves)
	}
	for i, name := range []string{s2, s3} {
		got := d.Devices[i]
		if got.Device != name || got.BDF.String() != "0000:03:00.0" || got.CDIDevice != "umd.umdkit.io/claim=claim-d-"+name {
			t.Errorf("device %d: %+v, want %s on 0000:03:00.0", i, got, name)
		}
		if br, ok := BrokerReservation(rec.asked[len(rec.asked)-2+i]); !ok || br.Name != name || br.Device != "0000:03:00.0" {
			t.Errorf("umdd reservation %d: %+v, want one of 0000:03:00.0 named %s", i, br, name)
		}
	}
	spec = readSpec(t, d.CDISpec)
	if len(spec.Devices) != 2 || !slices.Equal(spec.Devices[1].ContainerEdits.Env, []string{"UMD_DEVICE_NVME_0000_03_00_0_SHARE_3=0000:03:00.0," + d.Devices[1].Grant.ID}) {
		t.Errorf("spec devices %+v", spec.Devices)
	}
	if again, err := p.Prepare(ctx, "claim-d", []string{s2, s3}, params); err != nil || !slices.Equal(again.Devices, d.Devices) || r.res.reserves != reserves+2 {
		t.Errorf("preparing claim-d again: %+v, %v; want the same devices, nothing reserved anew", again, err)
	}
	if err := p.Unprepare(ctx, "claim-d"); err != nil {
		t.Fatal(err)
	}
	for k := range r.res.held {
		if strings.HasPrefix(k, "claim-d/") {
			t.Errorf("after unprepare the reserver holds %s", k)
		}
	}
	// A controller and a share of it in one claim: the whole leaves the
	// share nothing. Refused in either order, reserving nothing.
	asked := len(rec.asked)
	for _, devs := range [][]string{{"nvme-0000-04-00-0", ShareName("nvme-0000-04-00-0", 1)}, {ShareName("nvme-0000-04-00-0", 1), "nvme-0000-04-00-0"}} {
		if _, err := p.Prepare(ctx, "claim-w", devs, params); !errors.Is(err, ErrSameController) || !strings.Contains(err.Error(), devs[0]+" and "+devs[1]) {
			t.Errorf("%v in a claim: %v, want ErrSameController naming both", devs, err)
		}
	}
	if len(rec.asked) != asked {
		t.Errorf("refused claims reserved %+v", rec.asked[asked:])
	}
	// Shares of two controllers in one claim are fine.
	if _, err := p.Prepare(ctx, "claim-e", []string{ShareName("nvme-0000-03-00-0", 2), ShareName("nvme-0000-04-00-0", 0)}, params); err != nil {
		t.Errorf("shares of two controllers: %v", err)
	}
	for _, uid := range []string{"claim-a", "claim-b", "claim-e"} {
		if err := p.Unprepare(ctx, uid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Prepare(ctx, "claim-c", []string{"nvme-0000-03-00-0"}, DefaultParameters()); err != nil {
		t.Fatalf("the whole controller once its shares are unprepared: %v", err)
	}
	if _, err := p.Prepare(ctx, "claim-f", []string{s0}, params); !errors.Is(err, ErrDeviceInUse) || !strings.Contains(err.Error(), "claim-c") {
		t.Errorf("a share while the whole controller is held: %v, want ErrDeviceInUse naming claim-c", err)
	}
}

// TestPrepareShareLimits: a claim on a share may ask at most the share's
// queue pairs and only a broker session; the errors name the field and
// what is allowed, and nothing is reserved.
func TestPrepareShareLimits(t *testing.T) {
	r, rec := sharesRig(t)
	p := r.preparer(t)
	ctx := context.Background()
	share := []string{ShareName("nvme-0000-04-00-0", 3)}
	params := DefaultParameters()
	params.QueuePairs = 3
	_, err := p.Prepare(ctx, "too-many", share, params)
	var fe *FieldError
	if !errors.Is(err, ErrInvalidParameters) || !errors.As(err, &fe) || fe.Field != "queuePairs" || !strings.Contains(err.Error(), "must be 1 to 2") {
		t.Errorf("3 queue pairs on a share of 2: %v, want a queuePairs field error allowing 1 to 2", err)
	}
	for _, mode := range []string{ModeExclusive, ModeVF} {
		params := DefaultParameters()
		params.Mode = mode
		_, err := p.Prepare(ctx, "mode-"+mode, share, params)
		if !errors.As(err, &fe) || fe.Field != "mode" || !strings.Contains(err.Error(), "share") {
			t.Errorf("mode %s on a share: %v, want a mode field error", mode, err)
		}
	}
	if len(rec.asked) != 0 {
		t.Errorf("refused claims reserved %+v", rec.asked)
	}
	params.QueuePairs = 2
	if _, err := p.Prepare(ctx, "fits", share, params); err != nil {
		t.Errorf("2 queue pairs on a share of 2: %v", err)
	}
}
