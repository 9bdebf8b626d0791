package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	cdi "tags.cncf.io/container-device-interface/specs-go"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/broker/brokertest"
	"github.com/umdkit/umd/dra"
	"github.com/umdkit/umd/dra/dratest"
	"github.com/umdkit/umd/pcie"
)

func noEnv(string) string { return "" }

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"slices", "--node", "n1", "--sysfs", "/tmp/s", "--generation", "4"}, noEnv)
	if err != nil || o.node != "n1" || o.sysfs != "/tmp/s" || o.generation != 4 {
		t.Fatalf("%+v, %v", o, err)
	}
	o, err = parseArgs([]string{"params", "a.yaml", "b.yaml"}, noEnv)
	if err != nil || strings.Join(o.files, " ") != "a.yaml b.yaml" {
		t.Fatalf("%+v, %v", o, err)
	}
	env := map[string]string{"NODE_NAME": "from-env", "KUBECONFIG": "/etc/kube.conf"}
	o, err = parseArgs([]string{"run", "--socket", "/run/umdd.sock", "--kubelet-dir", "/k"}, func(k string) string { return env[k] })
	if err != nil || o.node != "from-env" || o.kubeconfig != "/etc/kube.conf" || o.sysfs != "/sys" || o.cdiDir != "/var/run/cdi" ||
		o.containerSocket != dra.DefaultContainerSocket || o.stateDir != "/k/plugins/umd.umdkit.io" ||
		registrarDir(o.kubeletDir) != "/k/plugins_registry" || o.shares != defaultShares {
		t.Errorf("run defaults: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"run", "--node", "n2", "--socket", "s", "--state-dir", "/st", "--v", "6", "--shares", "0"}, func(k string) string { return env[k] })
	if err != nil || o.node != "n2" || o.stateDir != "/st" || o.verbosity != 6 || o.shares != 0 {
		t.Errorf("run flags: %+v, %v", o, err)
	}
	for _, bad := range [][]string{
		{}, {"serve"}, {"slices"}, {"slices", "--node", "n", "extra"}, {"params"}, {"slices", "--bogus"},
		{"run", "--socket", "s"}, {"run", "--node", "n"}, {"run", "--node", "n", "--socket", "s", "x"},
		{"run", "--node", "n", "--socket", "s", "--container-socket", "rel/umdd.sock"},
		{"run", "--node", "n", "--socket", "s", "--v", "-1"},
		{"run", "--node", "n", "--socket", "s", "--shares", "33"}, {"slices", "--node", "n", "--shares", "-1"},
	} {
		var ue usageError
		if _, err := parseArgs(bad, noEnv); !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
}

func restoreSnapshot(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open("../../pcie/testdata/snapshots/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	if err := pcie.RestoreSnapshot(f, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSlicesCommand(t *testing.T) {
	dir := restoreSnapshot(t, "qemu-numa.txt")
	var out bytes.Buffer
	if err := run(options{cmd: "slices", node: "n1", sysfs: dir, generation: 1}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nodeName: n1", "name: nvme-0000-61-00-0", "string: pci0000:60", "driver: umd.umdkit.io"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// --sysfs takes a snapshot file as well as a tree, with the same result.
func TestSlicesFromSnapshotFile(t *testing.T) {
	var fromDir, fromFile bytes.Buffer
	if err := run(options{cmd: "slices", node: "n1", sysfs: restoreSnapshot(t, "qemu-cards.txt"), generation: 1}, &fromDir); err != nil {
		t.Fatal(err)
	}
	if err := run(options{cmd: "slices", node: "n1", sysfs: "../../pcie/testdata/snapshots/qemu-cards.txt", generation: 1}, &fromFile); err != nil {
		t.Fatal(err)
	}
	if fromFile.String() != fromDir.String() || !strings.Contains(fromFile.String(), "nvme-0000-09-00-0") {
		t.Errorf("from the file:\n%s\nfrom the tree:\n%s", fromFile.String(), fromDir.String())
	}
	err := run(options{cmd: "slices", node: "n1", sysfs: filepath.Join(t.TempDir(), "none")}, &fromFile)
	if err == nil || !strings.Contains(err.Error(), "--sysfs") {
		t.Errorf("missing tree: %v, want an error naming --sysfs", err)
	}
}

func TestParamsCommand(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	class := write("class.yaml", "apiVersion: umd.umdkit.io/v1alpha1\nkind: UmdClaimParameters\nmode: trusted\n")
	claim := write("claim.yaml", "apiVersion: umd.umdkit.io/v1alpha1\nkind: UmdClaimParameters\nqueuePairs: 3\n")
	bad := write("bad.yaml", "apiVersion: umd.umdkit.io/v1alpha1\nkind: UmdClaimParameters\nqueueDepth: 9999\n")
	var out bytes.Buffer
	if err := run(options{cmd: "params", files: []string{class, claim}}, &out); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "mode: trusted") || !strings.Contains(s, "queuePairs: 3") {
		t.Errorf("output:\n%s", s)
	}
	err := run(options{cmd: "params", files: []string{class, bad}}, &out)
	if err == nil || !strings.Contains(err.Error(), "queueDepth: 9999") {
		t.Errorf("bad depth: %v", err)
	}
	unknown := write("unknown.yaml", "apiVersion: umd.umdkit.io/v1alpha1\nkind: UmdClaimParameters\nqueues: 2\n")
	if err := run(options{cmd: "params", files: []string{class, unknown}}, &out); err == nil || !strings.Contains(err.Error(), unknown) {
		t.Errorf("unknown field: %v, want an error naming %s", err, unknown)
	}
}

// startUmdd serves a simulated controller at bdf, as umdd does on a host
// without VFIO; the test's uid may use it and reserve on it.
func startUmdd(t *testing.T, bdf string) (*broker.Server, string) {
	t.Helper()
	uid := uint32(os.Getuid())
	sock := filepath.Join(t.TempDir(), "umdd.sock")
	s, err := broker.NewServer(broker.Config{Socket: sock, Reservers: []uint32{uid}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddSimulated(context.Background(), bdf, broker.SimOptions{Blocks: 4096}, broker.Access{UIDs: []uint32{uid}}); err != nil {
		s.Close()
		t.Fatal(err)
	}
	brokertest.Serve(t, s)
	return s, sock
}

// `umd-dra run` against umdd serving a simulated controller and a fake
// API server, with the test as the kubelet: the node's slice carries
// umdd's identity of the device; a prepared claim's CDI spec names a
// grant that opens its reservation in umdd; unprepare releases it; and
// the end of the context (SIGTERM) stops the plugin cleanly, its sockets
// removed.
func TestRunPlugin(t *testing.T) {
	const bdf, device, node = "0000:61:00.0", "nvme-0000-61-00-0", "node-1"
	sysfs := restoreSnapshot(t, "qemu-numa.txt")
	umdd, umddSock := startUmdd(t, bdf)
	claim := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c", UID: "5e1f6a4c-8d0b-4c37-9a5e-0c2b1d3e4f50"},
		Status: resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{
			Results: []resourceapi.DeviceRequestAllocationResult{{Request: "nvme", Driver: dra.DriverName, Pool: node, Device: device}},
			Config: []resourceapi.DeviceAllocationConfiguration{{
				Source: resourceapi.AllocationConfigSourceClaim,
				DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
					Driver: dra.DriverName,
					Parameters: runtime.RawExtension{Raw: []byte(
						`{"apiVersion":"umd.umdkit.io/v1alpha1","kind":"UmdClaimParameters","queuePairs":2,"poolBytes":65536,"completion":"poll"}`)},
				}},
			}},
		}}},
	}
	client := dratest.FakeAPIServer(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, UID: "node-uid"}}, claim)
	dir := t.TempDir()
	o, err := parseArgs([]string{"run", "--node", node, "--socket", umddSock, "--sysfs", sysfs,
		"--kubelet-dir", filepath.Join(dir, "kubelet"), "--cdi-dir", filepath.Join(dir, "cdi")}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var logs bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- runPlugin(runCtx, o, func(string) (kubernetes.Interface, error) { return client, nil }, &logs)
	}()

	draSock := filepath.Join(pluginDir(o.kubeletDir), "dra.sock")
	regSock := filepath.Join(registrarDir(o.kubeletDir), dra.DriverName+"-reg.sock")
	slices := dratest.WaitForSlices(t, ctx, client)
	var published *resourceapi.Device
	for i, d := range slices[0].Spec.Devices {
		if d.Name == device {
			published = &slices[0].Spec.Devices[i]
		}
	}
	if published == nil {
		t.Fatalf("slice %+v lacks %s", slices[0].Spec, device)
	}
	if s := published.Attributes[dra.AttrSerial].StringValue; s == nil || *s != "sim-"+bdf {
		t.Errorf("serial %v, want umdd's sim-%s", s, bdf)
	}

	conn, err := grpc.NewClient("unix://"+draSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kubelet := drapb.NewDRAPluginClient(conn)
	ref := []*drapb.Claim{{Namespace: "default", Name: "c", Uid: string(claim.UID)}}
	prep, err := kubelet.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: ref})
	if err != nil {
		t.Fatal(err)
	}
	if r := prep.Claims[string(claim.UID)]; r == nil || r.Error != "" || len(r.Devices) != 1 {
		t.Fatalf("prepare: %+v", prep.Claims)
	}
	if rs := umdd.Reservations(); len(rs) != 1 || rs[0].Claim != string(claim.UID) || rs[0].Queues != 2 || rs[0].PoolBytes != 65536 || !rs[0].Polled {
		t.Errorf("umdd holds %+v, want the claim's 2 polled queue pairs and 64 KiB", rs)
	}

	// What the container gets: the spec's environment opens the grant.
	raw, err := os.ReadFile(filepath.Join(o.cdiDir, dra.DriverName+"-"+string(claim.UID)+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec cdi.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	env := append(spec.ContainerEdits.Env, spec.Devices[0].ContainerEdits.Env...)
	cl, err := broker.ClaimFromEnv(env)
	if err != nil || len(cl.Devices) != 1 || cl.Devices[0].BDF != bdf || cl.Socket != dra.DefaultContainerSocket {
		t.Fatalf("claim environment %q: %+v, %v", env, cl, err)
	}
	c, err := broker.Dial(umddSock) // the container's socket is this one, bind-mounted
	if err != nil {
		t.Fatal(err)
	}
	sess, err := c.OpenGrant(cl.Devices[0].BDF, cl.Devices[0].Grant)
	if err != nil {
		t.Errorf("opening the grant: %v", err)
	} else if err := sess.Write(1, 1, 0, 8, 0); err != nil { // its second queue pair: the grant has 2
		t.Errorf("writing through the grant: %v", err)
	}
	c.Close() // ends the session

	unprep, err := kubelet.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: ref})
	if err != nil || unprep.Claims[string(claim.UID)].GetError() != "" {
		t.Errorf("unprepare: %+v, %v", unprep, err)
	}
	if rs := umdd.Reservations(); len(rs) != 0 {
		t.Errorf("umdd still holds %+v after unprepare", rs)
	}

	stop() // as SIGTERM does
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("run did not return after its context ended")
	}
	for _, sock := range []string{draSock, regSock} {
		if _, err := os.Stat(sock); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after stop: %v", sock, err)
		}
	}
	if !strings.Contains(logs.String(), "publishing") {
		t.Errorf("log %q does not say what it serves", logs.String())
	}
}

// Without umdd, run stops at once and says where it looked.
func TestRunPluginNoUmdd(t *testing.T) {
	o, err := parseArgs([]string{"run", "--node", "n", "--socket", filepath.Join(t.TempDir(), "none.sock"),
		"--sysfs", restoreSnapshot(t, "qemu-numa.txt"), "--kubelet-dir", t.TempDir()}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	err = runPlugin(context.Background(), o, func(string) (kubernetes.Interface, error) { return fake.NewClientset(), nil }, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "none.sock") || !strings.Contains(err.Error(), "is it running?") {
		t.Errorf("%v, want an error naming umdd's socket", err)
	}
}
