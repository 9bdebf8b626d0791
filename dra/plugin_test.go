package dra

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/umdkit/umd/dra/dratest"
)

const testNode = "node-a"

// claimBuilder makes allocated ResourceClaims as the scheduler leaves
// them for the kubelet.
type claimBuilder struct{ c *resourceapi.ResourceClaim }

func newClaim(name, uid string) *claimBuilder {
	return &claimBuilder{c: &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID(uid)},
		Status:     resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{}},
	}}
}

// result adds an allocated device of driver in pool.
func (b *claimBuilder) result(request, driver, pool, device string) *claimBuilder {
	d := &b.c.Status.Allocation.Devices
	d.Results = append(d.Results, resourceapi.DeviceRequestAllocationResult{Request: request, Driver: driver, Pool: pool, Device: device})
	return b
}

// ours adds a device of this driver on testNode.
func (b *claimBuilder) ours(request, device string) *claimBuilder {
	return b.result(request, DriverName, testNode, device)
}

// config adds an opaque configuration; params is JSON without the
// apiVersion/kind header, which umdParams adds.
func (b *claimBuilder) config(src resourceapi.AllocationConfigSource, driver string, requests []string, params string) *claimBuilder {
	d := &b.c.Status.Allocation.Devices
	d.Config = append(d.Config, resourceapi.DeviceAllocationConfiguration{
		Source:   src,
		Requests: requests,
		DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
			Driver:     driver,
			Parameters: runtime.RawExtension{Raw: []byte(params)},
		}},
	})
	return b
}

func umdParams(fields string) string {
	h := `{"apiVersion":"umd.umdkit.io/v1alpha1","kind":"UmdClaimParameters"`
	if fields == "" {
		return h + "}"
	}
	return h + "," + fields + "}"
}

const (
	fromClass = resourceapi.AllocationConfigSourceClass
	fromClaim = resourceapi.AllocationConfigSourceClaim
)

func newDriver(t *testing.T, r *rig) *Driver {
	t.Helper()
	return NewDriver(testNode, r.preparer(t))
}

func prepareOne(t *testing.T, d *Driver, c *resourceapi.ResourceClaim) kubeletplugin.PrepareResult {
	t.Helper()
	out, err := d.PrepareResourceClaims(context.Background(), []*resourceapi.ResourceClaim{c})
	if err != nil {
		t.Fatalf("PrepareResourceClaims: %v", err)
	}
	res, ok := out[c.UID]
	if len(out) != 1 || !ok {
		t.Fatalf("results %v, want one for %s", out, c.UID)
	}
	return res
}

// A claim with the DeviceClass's and its own configurations: the class's
// apply first whatever their place in the list, each applies only to the
// requests it names, another driver's configurations and devices are
// left alone, and each device comes back with its CDI device.
func TestDriverPrepare(t *testing.T) {
	r := newRig(t)
	d := newDriver(t, r)
	uid := "0b5c3a8e-3f0e-4a7c-9d55-0d9f1f6f7a01"
	c := newClaim("c1", uid).
		ours("nvme", "nvme-0000-03-00-0").
		result("gpu", "gpu.example.com", testNode, "gpu-0").
		ours("more/big", "nvme-0000-04-00-0").
		// The claim's, listed first: overrides the class's depth.
		config(fromClaim, DriverName, nil, umdParams(`"queueDepth":128`)).
		config(fromClass, DriverName, []string{"nvme", "more/big"}, umdParams(`"queuePairs":2,"queueDepth":32,"completion":"poll"`)).
		// Not ours: another driver's parameters, which ours would refuse.
		config(fromClaim, "gpu.example.com", nil, `{"cores":4}`).
		// Ours, but for the gpu request only: it must not apply.
		config(fromClaim, DriverName, []string{"gpu"}, umdParams(`"queuePairs":99`)).
		// A parent request's name covers its subrequest.
		config(fromClaim, DriverName, []string{"more"}, umdParams(`"poolBytes":8388608`)).
		config(fromClaim, DriverName, []string{"nvme"}, umdParams(`"poolBytes":8388608`)).c
	res := prepareOne(t, d, c)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	prep, ok := d.prep.Prepared(uid)
	if !ok {
		t.Fatal("claim not recorded")
	}
	want := Parameters{QueuePairs: 2, QueueDepth: 128, PoolBytes: 8 << 20, Completion: CompletionPoll, Mode: ModeMediated}
	if prep.Params != want {
		t.Errorf("parameters %+v, want %+v", prep.Params, want)
	}
	if len(res.Devices) != 2 {
		t.Fatalf("devices %+v, want the two of %s", res.Devices, DriverName)
	}
	for i, w := range []struct{ req, dev string }{{"nvme", "nvme-0000-03-00-0"}, {"more/big", "nvme-0000-04-00-0"}} {
		got := res.Devices[i]
		cdiID := DriverName + "/claim=" + uid + "-" + w.dev
		if !slices.Equal(got.Requests, []string{w.req}) || got.PoolName != testNode || got.DeviceName != w.dev ||
			!slices.Equal(got.CDIDeviceIDs, []string{cdiID}) || prep.Devices[i].CDIDevice != cdiID {
			t.Errorf("device %d: %+v, want request %s, device %s, CDI %s", i, got, w.req, w.dev, cdiID)
		}
	}
	if _, err := os.Stat(prep.CDISpec); err != nil {
		t.Errorf("CDI spec: %v", err)
	}
}

// A claim whose devices are all another driver's reserves nothing.
func TestDriverPrepareForeignOnly(t *testing.T) {
	r := newRig(t)
	d := newDriver(t, r)
	c := newClaim("gpu", "uid-gpu").result("gpu", "gpu.example.com", testNode, "gpu-0").c
	res := prepareOne(t, d, c)
	if res.Err != nil || len(res.Devices) != 0 {
		t.Errorf("%+v, want success with no devices", res)
	}
	if r.res.reserves != 0 {
		t.Errorf("%d reservations for a claim with none of our devices", r.res.reserves)
	}
}

// Each claim fails alone, with an error that says which claim, what is
// wrong and where.
func TestDriverPrepareErrors(t *testing.T) {
	r := newRig(t)
	d := newDriver(t, r)
	good := newClaim("good", "uid-good").ours("nvme", "nvme-0000-03-00-0").c
	unallocated := newClaim("pending", "uid-pending").c
	unallocated.Status.Allocation = nil
	cases := []struct {
		claim *resourceapi.ResourceClaim
		is    error
		says  []string
	}{
		{unallocated, ErrNotAllocated, []string{"default/pending"}},
		{
			newClaim("range", "uid-range").ours("nvme", "nvme-0000-04-00-0").
				config(fromClaim, DriverName, nil, umdParams(`"queuePairs":65`)).c,
			ErrInvalidParameters, []string{"default/range", `request "nvme"`, "queuePairs: 65 is not allowed, must be 1 to 64"},
		},
		{
			newClaim("unknown", "uid-unknown").ours("nvme", "nvme-0000-04-00-0").
				config(fromClass, DriverName, nil, umdParams(`"mode":"trusted"`)).
				config(fromClaim, DriverName, nil, umdParams(`"queues":2`)).c,
			ErrInvalidParameters, []string{"status.allocation.devices.config[1] (from the claim)", `unknown field "queues"`},
		},
		{
			newClaim("kind", "uid-kind").ours("nvme", "nvme-0000-04-00-0").
				config(fromClass, DriverName, nil, `{"apiVersion":"v1","kind":"ConfigMap"}`).c,
			ErrInvalidParameters, []string{"status.allocation.devices.config[0] (from the DeviceClass)", "apiVersion/kind"},
		},
		{
			newClaim("elsewhere", "uid-elsewhere").result("nvme", DriverName, "node-b", "nvme-0000-04-00-0").c,
			ErrNotThisNode, []string{`pool "node-b"`, `"node-a"`},
		},
		{
			newClaim("mixed", "uid-mixed").ours("a", "nvme-0000-04-00-0").ours("b", "nvme-0000-07-00-0").
				config(fromClaim, DriverName, []string{"a"}, umdParams(`"queuePairs":2`)).c,
			ErrMixedParameters, []string{`requests "a" and "b"`},
		},
		{
			newClaim("nosuch", "uid-nosuch").ours("nvme", "nvme-0000-99-00-0").c,
			ErrUnknownDevice, []string{"nvme-0000-99-00-0"},
		},
		{
			// good's device, which the scheduler would not hand out twice.
			newClaim("taken", "uid-taken").ours("nvme", "nvme-0000-03-00-0").c,
			ErrDeviceInUse, []string{"uid-good"},
		},
	}
	claims := []*resourceapi.ResourceClaim{good}
	for _, c := range cases {
		claims = append(claims, c.claim)
	}
	out, err := d.PrepareResourceClaims(context.Background(), claims)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(claims) {
		t.Errorf("%d results for %d claims", len(out), len(claims))
	}
	if res := out[good.UID]; res.Err != nil || len(res.Devices) != 1 {
		t.Errorf("good claim: %+v", res)
	}
	for _, c := range cases {
		err := out[c.claim.UID].Err
		var ce *ClaimError
		if !errors.As(err, &ce) || ce.UID != c.claim.UID || !errors.Is(err, c.is) {
			t.Errorf("%s: %v, want a *ClaimError matching %v", c.claim.Name, err, c.is)
			continue
		}
		for _, s := range append(c.says, "default/"+c.claim.Name) {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %q does not say %q", c.claim.Name, err, s)
			}
		}
		if _, ok := d.prep.Prepared(string(c.claim.UID)); ok {
			t.Errorf("%s: recorded although it failed", c.claim.Name)
		}
	}
	if len(r.res.held) != 1 {
		t.Errorf("reservations held %v, want only the good claim's", r.res.held)
	}
}

// Prepare twice, restart, prepare again, unprepare twice: one
// reservation, the same answer every time, nothing left at the end.
func TestDriverIdempotentRestart(t *testing.T) {
	r := newRig(t)
	c := newClaim("c", "uid-restart").ours("pair", "nvme-0000-07-00-0").ours("pair", "nvme-0000-08-00-0").
		config(fromClaim, DriverName, nil, umdParams(`"queuePairs":3`)).c
	d := newDriver(t, r)
	first := prepareOne(t, d, c)
	if first.Err != nil {
		t.Fatal(first.Err)
	}
	again := prepareOne(t, d, c)
	restarted := newDriver(t, r) // a new process over the same directories
	third := prepareOne(t, restarted, c)
	for i, res := range []kubeletplugin.PrepareResult{again, third} {
		if res.Err != nil || fmt.Sprint(res.Devices) != fmt.Sprint(first.Devices) {
			t.Errorf("prepare %d: %+v, want %+v", i+2, res, first)
		}
	}
	if r.res.reserves != 2 {
		t.Errorf("%d reservations, want 2 (one per device)", r.res.reserves)
	}
	spec := filepath.Join(r.cfg.CDIDir, DriverName+"-uid-restart.json")
	for i := range 2 {
		out, err := restarted.UnprepareResourceClaims(context.Background(),
			[]kubeletplugin.NamespacedObject{{NamespacedName: types.NamespacedName{Namespace: "default", Name: "c"}, UID: c.UID}})
		if err != nil || len(out) != 1 || out[c.UID] != nil {
			t.Errorf("unprepare %d: %v, %v", i+1, out, err)
		}
	}
	if len(r.res.held) != 0 || r.res.releases != 1 {
		t.Errorf("held %v after %d releases, want nothing after 1", r.res.held, r.res.releases)
	}
	if _, err := os.Stat(spec); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CDI spec after unprepare: %v", err)
	}
	if _, ok := newDriver(t, r).prep.Prepared(string(c.UID)); ok {
		t.Error("claim still recorded after unprepare")
	}
}

// An unprepare that fails is that claim's error, and the others go on.
func TestDriverUnprepareError(t *testing.T) {
	r := newRig(t)
	r.cfg.Reserver = failingRelease{r.res}
	d := newDriver(t, r)
	out, err := d.UnprepareResourceClaims(context.Background(), []kubeletplugin.NamespacedObject{
		{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "x"}, UID: "uid-x"},
	})
	var ce *ClaimError
	if err != nil || !errors.As(out["uid-x"], &ce) || !strings.Contains(ce.Error(), "ns/x") || !strings.Contains(ce.Error(), "broker unreachable") {
		t.Errorf("%v, %v: want a ClaimError naming ns/x and the cause", out, err)
	}
}

// TestDriverResources: what the kubelet helper publishes holds every
// device of the inventory once, and each device that consumes counters
// finds their counter set in its own slice (the helper publishes each
// Slice as one ResourceSlice, and 1.34 wants them together).
func TestDriverResources(t *testing.T) {
	inv := cardsShares(t)
	res := inv.DriverResources(testNode)
	pool, ok := res.Pools[testNode]
	if len(res.Pools) != 1 || !ok || len(pool.Slices) == 0 {
		t.Fatalf("%+v, want one pool %s with slices", res, testNode)
	}
	var got, want []string
	consumers := 0
	for _, sl := range pool.Slices {
		sets := map[string]bool{}
		for _, cs := range sl.SharedCounters {
			sets[cs.Name] = true
		}
		for _, d := range sl.Devices {
			got = append(got, d.Name)
			for _, c := range d.ConsumesCounters {
				consumers++
				if !sets[c.CounterSet] {
					t.Errorf("device %s consumes counter set %s, which its slice does not carry", d.Name, c.CounterSet)
				}
			}
		}
	}
	for _, p := range inv.Devices() {
		want = append(want, p.Device.Name)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("devices %v, want %v", got, want)
	}
	if consumers == 0 {
		t.Error("no device consumes counters: the inventory has no shares to check")
	}
}

func deviceNames(devs []resourceapi.Device) []string {
	var out []string
	for _, d := range devs {
		out = append(out, d.Name)
	}
	return out
}

func dial(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// The plugin as the kubelet and the API server see it: it registers
// through the registrar socket, publishes the node's slices, prepares and
// unprepares a claim over gRPC (the claim read from the API server), and
// removes its sockets when stopped.
func TestPluginStart(t *testing.T) {
	r := newRig(t)
	r.cfg.Reserver = &lockedReserver{fakeReserver: r.res} // gRPC calls run on the server's goroutines
	inv := r.cfg.Inventory
	claim := newClaim("c", "uid-grpc").ours("nvme", "nvme-0000-09-00-0").c
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode, UID: "node-uid"}}
	client := dratest.FakeAPIServer(node, claim)
	kubelet := t.TempDir()
	cfg := PluginConfig{
		NodeName:     testNode,
		KubeClient:   client,
		Inventory:    inv,
		Preparer:     r.preparer(t),
		RegistrarDir: filepath.Join(kubelet, "plugins_registry"),
		PluginDir:    filepath.Join(kubelet, "plugins", DriverName),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := StartPlugin(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			p.Stop()
		}
	}()
	regSock := filepath.Join(cfg.RegistrarDir, DriverName+"-reg.sock")
	draSock := filepath.Join(cfg.PluginDir, "dra.sock")

	info, err := registerapi.NewRegistrationClient(dial(t, regSock)).GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatalf("GetInfo: %v", err)
	}
	if info.Type != registerapi.DRAPlugin || info.Name != DriverName || info.Endpoint != draSock ||
		!slices.Contains(info.SupportedVersions, drapb.DRAPluginService) {
		t.Errorf("registration info %+v, want a DRA plugin %s at %s serving %s", info, DriverName, draSock, drapb.DRAPluginService)
	}

	slicesSeen := dratest.WaitForSlices(t, ctx, client)
	if len(slicesSeen) != 1 {
		t.Fatalf("slices %+v, want one", slicesSeen)
	}
	s := slicesSeen[0].Spec
	if s.Driver != DriverName || s.Pool.Name != testNode || s.NodeName == nil || *s.NodeName != testNode ||
		!slices.Equal(deviceNames(s.Devices), deviceNames(inv.Slices(testNode, 1)[0].Spec.Devices)) {
		t.Errorf("published %+v, want the inventory in pool %s of node %s", s, testNode, testNode)
	}
	if own := slicesSeen[0].OwnerReferences; len(own) != 1 || own[0].Kind != "Node" || own[0].UID != node.UID {
		t.Errorf("owners %+v, want the node", own)
	}

	dra := drapb.NewDRAPluginClient(dial(t, draSock))
	ref := &drapb.Claim{Namespace: "default", Name: "c", Uid: string(claim.UID)}
	prep, err := dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref}})
	if err != nil {
		t.Fatalf("NodePrepareResources: %v", err)
	}
	got := prep.Claims[string(claim.UID)]
	wantCDI := DriverName + "/claim=uid-grpc-nvme-0000-09-00-0"
	if got == nil || got.Error != "" || len(got.Devices) != 1 || !slices.Equal(got.Devices[0].CdiDeviceIds, []string{wantCDI}) {
		t.Errorf("prepare response %+v, want CDI device %s", got, wantCDI)
	}
	unprep, err := dra.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{ref}})
	if err != nil || unprep.Claims[string(claim.UID)] == nil || unprep.Claims[string(claim.UID)].Error != "" {
		t.Errorf("unprepare: %+v, %v", unprep, err)
	}
	if _, ok := cfg.Preparer.Prepared(string(claim.UID)); ok {
		t.Error("claim still prepared after NodeUnprepareResources")
	}

	p.Stop()
	stopped = true
	select {
	case <-p.Done():
	default:
		t.Error("Done not closed after Stop")
	}
	for _, sock := range []string{regSock, draSock} {
		if _, err := os.Stat(sock); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after Stop: %v", sock, err)
		}
	}
}

func TestStartPluginRefuses(t *testing.T) {
	_, err := StartPlugin(context.Background(), PluginConfig{NodeName: "n"})
	if err == nil || !strings.Contains(err.Error(), "KubeClient, Inventory, Preparer, RegistrarDir, PluginDir required") {
		t.Errorf("%v, want the missing fields named", err)
	}
}

// A kubelet directory too deep for a unix socket is refused up front,
// naming the path, rather than failing in bind.
func TestStartPluginLongPath(t *testing.T) {
	r := newRig(t)
	deep := filepath.Join(t.TempDir(), strings.Repeat("d", 90))
	_, err := StartPlugin(context.Background(), PluginConfig{
		NodeName: testNode, KubeClient: fake.NewClientset(), Inventory: r.cfg.Inventory, Preparer: r.preparer(t),
		RegistrarDir: filepath.Join(deep, "plugins_registry"), PluginDir: filepath.Join(deep, "plugins", DriverName),
	})
	if err == nil || !strings.Contains(err.Error(), "plugins_registry/"+DriverName+"-reg.sock") || !strings.Contains(err.Error(), "at most 107") {
		t.Errorf("%v, want the socket path named", err)
	}
}
