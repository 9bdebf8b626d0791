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

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceclaim"
	"k8s.io/dynamic-resource-allocation/resourceslice"
)

// Errors of preparing one claim, matched by the *ClaimError the kubelet
// gets for it (and shows in the pod's events).
var (
	// ErrNotAllocated: the claim has no allocation yet.
	ErrNotAllocated = errors.New("claim is not allocated")
	// ErrNotThisNode: a device of the claim for this driver is in another
	// pool than this node's.
	ErrNotThisNode = errors.New("device is not in this node's pool")
	// ErrAdminAccess: a request asked for admin access, which the driver
	// does not give (it would share a device a reservation holds).
	ErrAdminAccess = errors.New("admin access is not supported")
	// ErrMixedParameters: the claim's devices got different umd
	// parameters; a claim takes one set for all its devices.
	ErrMixedParameters = errors.New("devices of one claim must get the same umd parameters")
)

// A ClaimError is why one claim could not be prepared or unprepared. The
// kubelet retries the claim later and reports the message in the pod's
// events, so it names the claim and what to change.
type ClaimError struct {
	Claim string // "namespace/name"
	UID   types.UID
	Err   error
}

func (e *ClaimError) Error() string { return fmt.Sprintf("umd claim %s: %v", e.Claim, e.Err) }

// Unwrap returns the cause (ErrNotAllocated, ErrInvalidParameters, ...).
func (e *ClaimError) Unwrap() error { return e.Err }

// A Driver answers the kubelet's prepare and unprepare calls for one node
// (it implements kubeletplugin.DRAPlugin): it picks the claim's devices of
// this driver on this node, merges their umd parameters from the opaque
// configurations, and hands them to a Preparer.
type Driver struct {
	node  string
	prep  *Preparer
	fatal func(error) // called with errors the plugin cannot continue after
}

var _ kubeletplugin.DRAPlugin = (*Driver)(nil)

// NewDriver returns a Driver for the node (whose pool is named after it)
// over prep.
func NewDriver(node string, prep *Preparer) *Driver {
	return &Driver{node: node, prep: prep, fatal: func(error) {}}
}

// PrepareResourceClaims prepares each claim and returns, per claim UID,
// either the CDI devices of each of its devices for this driver or a
// *ClaimError. One claim's failure does not stop the others. A claim
// prepared before (by this process or an earlier one, the Preparer's
// checkpoint says) gets the same answer again.
func (d *Driver) PrepareResourceClaims(ctx context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	out := make(map[types.UID]kubeletplugin.PrepareResult, len(claims))
	for _, c := range claims {
		devs, err := d.prepareClaim(ctx, c)
		if err != nil {
			out[c.UID] = kubeletplugin.PrepareResult{Err: &ClaimError{Claim: c.Namespace + "/" + c.Name, UID: c.UID, Err: err}}
			continue
		}
		out[c.UID] = kubeletplugin.PrepareResult{Devices: devs}
	}
	return out, nil
}

func (d *Driver) prepareClaim(ctx context.Context, c *resourceapi.ResourceClaim) ([]kubeletplugin.Device, error) {
	if c.Status.Allocation == nil {
		return nil, ErrNotAllocated
	}
	alloc := c.Status.Allocation.Devices
	var results []resourceapi.DeviceRequestAllocationResult
	for _, r := range alloc.Results {
		switch {
		case r.Driver != DriverName:
			continue // another driver's, prepared by it
		case r.Pool != d.node:
			return nil, fmt.Errorf("request %q: device %s in pool %q: %w %q", r.Request, r.Device, r.Pool, ErrNotThisNode, d.node)
		case r.AdminAccess != nil && *r.AdminAccess:
			return nil, fmt.Errorf("request %q: %w", r.Request, ErrAdminAccess)
		}
		results = append(results, r)
	}
	if len(results) == 0 {
		return []kubeletplugin.Device{}, nil
	}
	configs := orderConfigs(alloc.Config)
	params, err := d.claimParameters(configs, results)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(results))
	for i, r := range results {
		names[i] = r.Device
	}
	prep, err := d.prep.Prepare(ctx, string(c.UID), names, params)
	if err != nil {
		return nil, err
	}
	devs := make([]kubeletplugin.Device, len(results))
	for i, r := range results {
		devs[i] = kubeletplugin.Device{
			Requests:     []string{r.Request},
			PoolName:     r.Pool,
			DeviceName:   r.Device,
			CDIDeviceIDs: []string{prep.Devices[i].CDIDevice},
		}
	}
	return devs, nil
}

// An indexedConfig is an allocation configuration with its index in
// status.allocation.devices.config, to name it in errors.
type indexedConfig struct {
	index int
	resourceapi.DeviceAllocationConfiguration
}

// orderConfigs returns the configurations in the order they apply: the
// DeviceClasses' before the claim's, each in the order listed (the
// scheduler lists them so already; this does not rely on it).
func orderConfigs(cfgs []resourceapi.DeviceAllocationConfiguration) []indexedConfig {
	out := make([]indexedConfig, len(cfgs))
	for i, c := range cfgs {
		out[i] = indexedConfig{index: i, DeviceAllocationConfiguration: c}
	}
	slices.SortStableFunc(out, func(a, b indexedConfig) int {
		return sourceRank(a.Source) - sourceRank(b.Source)
	})
	return out
}

func sourceRank(s resourceapi.AllocationConfigSource) int {
	if s == resourceapi.AllocationConfigSourceClass {
		return 0
	}
	return 1
}

// claimParameters returns the umd parameters of the claim's devices: for
// each, the opaque configurations of this driver whose requests include
// the device's request (or that name none), merged in order. All devices
// must come out the same.
func (d *Driver) claimParameters(configs []indexedConfig, results []resourceapi.DeviceRequestAllocationResult) (Parameters, error) {
	var (
		params Parameters
		first  string
	)
	for i, r := range results {
		var raws [][]byte
		var from []indexedConfig
		for _, c := range configs {
			if c.Opaque == nil || c.Opaque.Driver != DriverName || !appliesTo(c.Requests, r.Request) {
				continue
			}
			raw, err := rawParameters(c.Opaque.Parameters.Raw, c.Opaque.Parameters.Object)
			if err != nil {
				return Parameters{}, fmt.Errorf("%s: %w", describeConfig(c), err)
			}
			raws = append(raws, raw)
			from = append(from, c)
		}
		p, err := parseNamed(func(i int) string { return describeConfig(from[i]) }, raws)
		if err != nil {
			return Parameters{}, fmt.Errorf("request %q: %w", r.Request, err)
		}
		if i == 0 {
			params, first = p, r.Request
			continue
		}
		if p != params {
			return Parameters{}, fmt.Errorf("requests %q and %q: %w (%+v and %+v): give the configuration to both", first, r.Request, ErrMixedParameters, params, p)
		}
	}
	return params, nil
}

// appliesTo reports whether a configuration listing requests applies to
// the device allocated for request (which may be "request/subrequest"):
// no list means every request, and naming a request covers its
// subrequests.
func appliesTo(requests []string, request string) bool {
	return len(requests) == 0 || slices.Contains(requests, request) || slices.Contains(requests, resourceclaim.BaseRequestRef(request))
}

// rawParameters returns an opaque configuration's parameters as JSON. The
// API server stores them as JSON (Raw); a decoded Object is encoded.
func rawParameters(raw []byte, obj any) ([]byte, error) {
	if len(raw) > 0 {
		return raw, nil
	}
	if obj != nil {
		js, err := json.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("%w: encoding parameters: %w", ErrInvalidParameters, err)
		}
		return js, nil
	}
	return nil, fmt.Errorf("%w: no parameters", ErrInvalidParameters)
}

func describeConfig(c indexedConfig) string {
	from := "the claim"
	if c.Source == resourceapi.AllocationConfigSourceClass {
		from = "the DeviceClass"
	}
	return fmt.Sprintf("status.allocation.devices.config[%d] (from %s)", c.index, from)
}

// UnprepareResourceClaims releases each claim's reservations and removes
// its CDI spec. A claim that is not prepared is fine: the kubelet may ask
// twice, or after a restart.
func (d *Driver) UnprepareResourceClaims(ctx context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	out := make(map[types.UID]error, len(claims))
	for _, c := range claims {
		if err := d.prep.Unprepare(ctx, string(c.UID)); err != nil {
			out[c.UID] = &ClaimError{Claim: c.Namespace + "/" + c.Name, UID: c.UID, Err: err}
			continue
		}
		out[c.UID] = nil
	}
	return out, nil
}

// HandleError is called with errors of the helper's background work. A
// recoverable one (publishing slices) is logged; any other (a gRPC server
// failed) is logged and stops the plugin.
func (d *Driver) HandleError(ctx context.Context, err error, msg string) {
	utilruntime.HandleErrorWithContext(ctx, err, msg)
	if !errors.Is(err, kubeletplugin.ErrRecoverable) {
		d.fatal(fmt.Errorf("%s: %w", msg, err))
	}
}

// WatchHealthStatus says that the driver does not report device health.
func (d *Driver) WatchHealthStatus(context.Context, chan<- kubeletplugin.DeviceHealthReport) error {
	return kubeletplugin.ErrHealthNotSupported
}

// DriverResources returns the inventory as the kubelet plugin helper
// publishes it for node: one pool named after the node, cut into slices
// as Slices cuts it (a split controller's counter set in the slice of its
// devices).
func (inv *Inventory) DriverResources(node string) resourceslice.DriverResources {
	var pool resourceslice.Pool
	for _, s := range inv.Slices(node, 0) {
		pool.Slices = append(pool.Slices, resourceslice.Slice{Devices: s.Spec.Devices, SharedCounters: s.Spec.SharedCounters})
	}
	return resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{node: pool}}
}

// PluginConfig configures a kubelet plugin.
type PluginConfig struct {
	// NodeName is the node's name: its pool's name and the slices'
	// spec.nodeName. Required.
	NodeName string
	// KubeClient talks to the API server: it reads claims and writes the
	// node's ResourceSlices. Required.
	KubeClient kubernetes.Interface
	// Inventory is what the node publishes; Preparer prepares claims on
	// it. Both required.
	Inventory *Inventory
	Preparer  *Preparer
	// RegistrarDir is where the kubelet looks for plugins' registration
	// sockets (<kubelet dir>/plugins_registry); PluginDir is this
	// plugin's own directory, for the socket the kubelet calls
	// (<kubelet dir>/plugins/umd.umdkit.io). Both required; created if
	// missing.
	RegistrarDir string
	PluginDir    string
}

// maxSocketPath is the longest path a unix socket may have on Linux
// (sun_path is 108 bytes, one of them the terminating NUL).
const maxSocketPath = 107

// A Plugin is umd's DRA kubelet plugin running: registered with the
// kubelet through a socket in RegistrarDir, serving prepare and unprepare
// on <PluginDir>/dra.sock, and keeping the node's ResourceSlices
// published.
type Plugin struct {
	helper *kubeletplugin.Helper
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// StartPlugin registers the plugin with the kubelet and starts publishing
// the inventory. It returns once the sockets listen and the slice
// controller has read the node's existing slices from the API server (so
// it waits, until ctx ends, while the API server cannot be reached); the
// slices are then created or updated in the background (errors doing so
// are logged and retried). Stop it with Stop; Done is closed if it fails
// on its own.
func StartPlugin(ctx context.Context, cfg PluginConfig) (*Plugin, error) {
	var missing []string
	for _, f := range []struct {
		name string
		ok   bool
	}{
		{"NodeName", cfg.NodeName != ""}, {"KubeClient", cfg.KubeClient != nil},
		{"Inventory", cfg.Inventory != nil}, {"Preparer", cfg.Preparer != nil},
		{"RegistrarDir", cfg.RegistrarDir != ""}, {"PluginDir", cfg.PluginDir != ""},
	} {
		if !f.ok {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("start plugin: %s required", strings.Join(missing, ", "))
	}
	for _, sock := range []string{filepath.Join(cfg.RegistrarDir, DriverName+"-reg.sock"), filepath.Join(cfg.PluginDir, "dra.sock")} {
		if len(sock) > maxSocketPath {
			return nil, fmt.Errorf("start plugin: socket path %s is %d bytes, a unix socket's may be at most %d: use a shorter kubelet directory", sock, len(sock), maxSocketPath)
		}
	}
	for _, dir := range []string{cfg.RegistrarDir, cfg.PluginDir} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("start plugin: %w", err)
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	d := NewDriver(cfg.NodeName, cfg.Preparer)
	d.fatal = cancel
	h, err := kubeletplugin.Start(ctx, d,
		kubeletplugin.DriverName(DriverName),
		kubeletplugin.KubeClient(cfg.KubeClient),
		kubeletplugin.NodeName(cfg.NodeName),
		kubeletplugin.RegistrarDirectoryPath(cfg.RegistrarDir),
		kubeletplugin.PluginDataDirectoryPath(cfg.PluginDir),
		kubeletplugin.HealthService(false),
	)
	if err != nil {
		cancel(err)
		return nil, fmt.Errorf("start plugin: %w", err)
	}
	if err := h.PublishResources(ctx, cfg.Inventory.DriverResources(cfg.NodeName)); err != nil {
		h.Stop()
		cancel(err)
		return nil, fmt.Errorf("start plugin: publishing slices: %w", err)
	}
	return &Plugin{helper: h, ctx: ctx, cancel: cancel}, nil
}

// Done is closed when the plugin stops: Stop was called, the context
// StartPlugin got ended, or a server failed (Err says which).
func (p *Plugin) Done() <-chan struct{} { return p.ctx.Done() }

// Err returns why the plugin stopped, nil while it runs.
func (p *Plugin) Err() error {
	if p.ctx.Err() == nil {
		return nil
	}
	return context.Cause(p.ctx)
}

// Stop unregisters the plugin (its sockets are removed), stops publishing
// and waits for the helper's goroutines. The published slices stay: the
// kubelet removes a node's slices when it goes away, and a restarted
// plugin takes them over.
func (p *Plugin) Stop() {
	p.helper.Stop()
	p.cancel(errors.New("plugin stopped"))
}
