//go:build cluster

// The cluster tests start a real control plane once per `go test` run
// (TestMain) and, for the tests that need them, two nodes with umdd and
// the umd DRA plugin. Run as root:
//
//	go test -tags cluster -v ./cluster/
//
// UMD_CLUSTER_BIN names cluster/build.sh's bin dir (else the script runs
// and builds what is missing); UMD_CLUSTER_KEEP=1 keeps the work dir and
// its logs.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

var (
	testCluster *Cluster
	moduleDir   string

	nodesOnce sync.Once
	nodesErr  error
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "cluster tests: run as root (they start kubelets and containerd)")
		return 1
	}
	var err error
	if moduleDir, err = FindModule(); err != nil {
		fmt.Fprintln(os.Stderr, "cluster tests:", err)
		return 1
	}
	// A cold cache builds Kubernetes: tens of minutes on a small machine.
	bctx, bcancel := context.WithTimeout(context.Background(), time.Hour)
	defer bcancel()
	bin, err := FindBinaries(bctx, moduleDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster tests:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	testCluster, err = Start(ctx, Config{
		BinDir: bin, ModuleDir: moduleDir,
		Keep: os.Getenv("UMD_CLUSTER_KEEP") != "",
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "cluster: "+f+"\n", a...) },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster tests: starting the control plane:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "cluster: control plane ready in %v\n", time.Since(start).Round(time.Millisecond))
	code := m.Run()
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "cluster tests: %s: %v\n", what, err)
		if code == 0 {
			code = 1
		}
	}
	// Stop leaves nothing behind (see stop_test.go).
	fp, err := clusterFootprint(testCluster)
	if err != nil {
		fail("reading the cluster's footprint", err)
	}
	if err := testCluster.Stop(); err != nil {
		fail("stopping the cluster", err)
	}
	if fp != nil {
		left, err := fp.leftovers()
		if err == nil && len(left) > 0 {
			err = errors.New(strings.Join(left, "\n"))
		}
		if err != nil {
			fail("after Stop", err)
		} else {
			fmt.Fprintf(os.Stderr, "cluster: stopped, nothing left (%d processes checked)\n", len(fp.procs))
		}
	}
	return code
}

// needNodes starts the two nodes the whole-cluster tests share, once:
// node-a with the qemu-cards topology (its devices on no NUMA node),
// node-b with qemu-numa (two devices on NUMA node 1).
func needNodes(t *testing.T) {
	t.Helper()
	nodesOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		for _, n := range []NodeConfig{
			{Name: "node-a", Devices: filepath.Join(moduleDir, "pcie/testdata/snapshots/qemu-cards.txt")},
			{Name: "node-b", Devices: filepath.Join(moduleDir, "pcie/testdata/snapshots/qemu-numa.txt")},
		} {
			if _, nodesErr = testCluster.AddNode(ctx, n); nodesErr != nil {
				return
			}
		}
		t.Logf("nodes ready in %v", time.Since(start).Round(time.Millisecond))
	})
	if nodesErr != nil {
		t.Fatalf("starting the nodes: %v", nodesErr)
	}
}

// yamlDocs splits a multi-document YAML file, dropping empty documents.
func yamlDocs(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---")) {
		var probe map[string]any
		if err := yaml.Unmarshal(d, &probe); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(probe) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func kindOf(t *testing.T, doc []byte) string {
	t.Helper()
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		t.Fatal(err)
	}
	return tm.Kind
}

func decode(t *testing.T, doc []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		t.Fatalf("decoding %s: %v", doc, err)
	}
}

// testNamespace makes a namespace for one test (deleted after it) and
// waits for its default service account, which pods need.
func testNamespace(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	cs := testCluster.Client
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	err := waitFor(ctx, nil, "the default service account in "+name, time.Minute, func(ctx context.Context) error {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// exactDefaults applies what the apiserver defaults in a v1 claim spec
// (allocationMode ExactCount with count 1), so a spec read back can be
// compared with the one sent.
func exactDefaults(spec *resourcev1.DeviceClaim) {
	for i := range spec.Requests {
		e := spec.Requests[i].Exactly
		if e == nil {
			continue
		}
		if e.AllocationMode == "" {
			e.AllocationMode = resourcev1.DeviceAllocationModeExactCount
		}
		if e.AllocationMode == resourcev1.DeviceAllocationModeExactCount && e.Count == 0 {
			e.Count = 1
		}
	}
}

func specDiff(t *testing.T, what string, sent, got any) {
	t.Helper()
	if !apiequality.Semantic.DeepEqual(sent, got) {
		s, _ := json.MarshalIndent(sent, "", "  ")
		g, _ := json.MarshalIndent(got, "", "  ")
		t.Errorf("%s: read back differs\nsent: %s\ngot:  %s", what, s, g)
	}
}

// TestDeviceClassesAndClaimsRoundTrip creates the shipped DeviceClasses
// (the apiserver compiles their CEL selectors) and example claims, and
// reads each back with the spec it was given.
func TestDeviceClassesAndClaimsRoundTrip(t *testing.T) {
	ctx := context.Background()
	cs := testCluster.Client
	ns := testNamespace(t, "roundtrip")
	classes := 0
	for _, doc := range yamlDocs(t, filepath.Join(moduleDir, "deploy/dra/deviceclasses.yaml")) {
		if k := kindOf(t, doc); k != "DeviceClass" {
			t.Fatalf("deviceclasses.yaml holds a %s", k)
		}
		var dc resourcev1.DeviceClass
		decode(t, doc, &dc)
		created, err := cs.ResourceV1().DeviceClasses().Create(ctx, &dc, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating DeviceClass %s: %v", dc.Name, err)
		}
		t.Cleanup(func() {
			_ = cs.ResourceV1().DeviceClasses().Delete(context.Background(), created.Name, metav1.DeleteOptions{})
		})
		got, err := cs.ResourceV1().DeviceClasses().Get(ctx, dc.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		specDiff(t, "DeviceClass "+dc.Name, dc.Spec, got.Spec)
		classes++
	}
	claims := 0
	for _, path := range []string{"deploy/dra/claims.yaml", "deploy/dra/claimtemplates.yaml"} {
		for _, doc := range yamlDocs(t, filepath.Join(moduleDir, path)) {
			switch k := kindOf(t, doc); k {
			case "ResourceClaim":
				var rc resourcev1.ResourceClaim
				decode(t, doc, &rc)
				if _, err := cs.ResourceV1().ResourceClaims(ns).Create(ctx, &rc, metav1.CreateOptions{}); err != nil {
					t.Fatalf("creating ResourceClaim %s: %v", rc.Name, err)
				}
				got, err := cs.ResourceV1().ResourceClaims(ns).Get(ctx, rc.Name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				exactDefaults(&rc.Spec.Devices)
				specDiff(t, "ResourceClaim "+rc.Name, rc.Spec, got.Spec)
			case "ResourceClaimTemplate":
				var rt resourcev1.ResourceClaimTemplate
				decode(t, doc, &rt)
				if _, err := cs.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, &rt, metav1.CreateOptions{}); err != nil {
					t.Fatalf("creating ResourceClaimTemplate %s: %v", rt.Name, err)
				}
				got, err := cs.ResourceV1().ResourceClaimTemplates(ns).Get(ctx, rt.Name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				exactDefaults(&rt.Spec.Spec.Devices)
				specDiff(t, "ResourceClaimTemplate "+rt.Name, rt.Spec, got.Spec)
			default:
				t.Fatalf("%s holds a %s", path, k)
			}
			claims++
		}
	}
	if classes < 2 || claims < 2 {
		t.Fatalf("round-tripped %d classes and %d claims; the deploy files hold more", classes, claims)
	}
}

// TestResourceSlicesRoundTrip creates the ResourceSlices dra's testdata
// holds (what umd-dra publishes for each topology), under node names no
// kubelet uses, and reads each back unchanged.
func TestResourceSlicesRoundTrip(t *testing.T) {
	ctx := context.Background()
	cs := testCluster.Client
	files, err := filepath.Glob(filepath.Join(moduleDir, "dra/testdata/slices-*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dra/testdata/slices-*.yaml: %v", err)
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var slices []resourcev1.ResourceSlice
		if err := yaml.UnmarshalStrict(b, &slices); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		prefix := "rt-" + strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "slices-"), ".yaml") + "-"
		for _, s := range slices {
			s.Name = prefix + s.Name
			if s.Spec.NodeName != nil {
				node := prefix + *s.Spec.NodeName
				s.Spec.NodeName = &node
			}
			s.Spec.Pool.Name = prefix + s.Spec.Pool.Name
			if _, err := cs.ResourceV1().ResourceSlices().Create(ctx, &s, metav1.CreateOptions{}); err != nil {
				t.Fatalf("%s: creating ResourceSlice %s: %v", filepath.Base(f), s.Name, err)
			}
			name := s.Name
			t.Cleanup(func() {
				_ = cs.ResourceV1().ResourceSlices().Delete(context.Background(), name, metav1.DeleteOptions{})
			})
			got, err := cs.ResourceV1().ResourceSlices().Get(ctx, s.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			specDiff(t, "ResourceSlice "+s.Name, s.Spec, got.Spec)
			n++
		}
	}
	t.Logf("%d ResourceSlices from %d files round-tripped", n, len(files))
}

// TestDeviceClassBrokenCELRefused: the apiserver compiles a DeviceClass's
// CEL selector on create and refuses one that does not compile, naming
// the field.
func TestDeviceClassBrokenCELRefused(t *testing.T) {
	dc := &resourcev1.DeviceClass{
		ObjectMeta: metav1.ObjectMeta{Name: "broken.umd.umdkit.io"},
		Spec: resourcev1.DeviceClassSpec{Selectors: []resourcev1.DeviceSelector{{
			CEL: &resourcev1.CELDeviceSelector{Expression: `device.driver == "umd.umdkit.io" &&`},
		}}},
	}
	_, err := testCluster.Client.ResourceV1().DeviceClasses().Create(context.Background(), dc, metav1.CreateOptions{})
	if err == nil {
		_ = testCluster.Client.ResourceV1().DeviceClasses().Delete(context.Background(), dc.Name, metav1.DeleteOptions{})
		t.Fatal("a DeviceClass whose CEL expression does not compile was accepted")
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("want an Invalid error, got %v", err)
	}
	if !strings.Contains(err.Error(), "spec.selectors[0].cel.expression") || !strings.Contains(err.Error(), "compilation failed") {
		t.Fatalf("the error does not name the expression's compile failure: %v", err)
	}
	t.Logf("refused: %v", err)
}

// TestPlainPod: a node without umd devices (node-c: containerd, runc,
// the kubelet) runs a pod from the locally imported test image, sandboxed
// by the local pause image, and the pod's log comes back through the
// apiserver.
func TestPlainPod(t *testing.T) {
	ctx := context.Background()
	if _, err := testCluster.AddNode(ctx, NodeConfig{Name: "node-c"}); err != nil {
		t.Fatal(err)
	}
	cs := testCluster.Client
	ns := testNamespace(t, "plain")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "plain"},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: new(int64),
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": "node-c"},
			Containers: []corev1.Container{{
				Name:            "probe",
				Image:           TestImageName,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"/usr/bin/umdprobe", "--help"},
			}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, log := containerDone(t, ns, "plain", "probe", 3*time.Minute)
	if got.Spec.NodeName != "node-c" {
		t.Fatalf("pod ran on %q, want node-c", got.Spec.NodeName)
	}
	if !strings.Contains(log, "umdprobe") {
		t.Fatalf("the pod's log is not umdprobe's help:\n%s", log)
	}
}

// claimTemplate is a ResourceClaimTemplate asking for one umd device
// matching cel (if not empty), with parameters for one polled queue pair
// and a small pool.
func claimTemplate(name, cel string) *resourcev1.ResourceClaimTemplate {
	req := resourcev1.DeviceRequest{Name: "nvme", Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: "umd.umdkit.io"}}
	if cel != "" {
		req.Exactly.Selectors = []resourcev1.DeviceSelector{{CEL: &resourcev1.CELDeviceSelector{Expression: cel}}}
	}
	params := []byte(`{"apiVersion":"umd.umdkit.io/v1alpha1","kind":"UmdClaimParameters","queuePairs":1,"queueDepth":32,"poolBytes":4194304,"completion":"poll"}`)
	return &resourcev1.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: resourcev1.ResourceClaimTemplateSpec{Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{
			Requests: []resourcev1.DeviceRequest{req},
			Config: []resourcev1.DeviceClaimConfiguration{{
				Requests: []string{"nvme"},
				DeviceConfiguration: resourcev1.DeviceConfiguration{Opaque: &resourcev1.OpaqueDeviceConfiguration{
					Driver: "umd.umdkit.io", Parameters: runtime.RawExtension{Raw: params},
				}},
			}},
		}}},
	}
}

// probePod runs `umdprobe claim` with args in the test image, with one
// claim from template.
func probePod(name, template string, args ...string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: new(int64),
			AutomountServiceAccountToken:  new(bool),
			Containers: []corev1.Container{{
				Name:            "probe",
				Image:           TestImageName,
				ImagePullPolicy: corev1.PullNever,
				Command:         append([]string{"/usr/bin/umdprobe", "claim"}, args...),
				Resources:       corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "umd"}}},
			}},
			ResourceClaims: []corev1.PodResourceClaim{{Name: "umd", ResourceClaimTemplateName: &template}},
		},
	}
}

// deviceClass creates the shipped catch-all DeviceClass if it is not
// there yet.
func deviceClass(t *testing.T) {
	t.Helper()
	for _, doc := range yamlDocs(t, filepath.Join(moduleDir, "deploy/dra/deviceclasses.yaml")) {
		var dc resourcev1.DeviceClass
		decode(t, doc, &dc)
		if dc.Name != "umd.umdkit.io" {
			continue
		}
		_, err := testCluster.Client.ResourceV1().DeviceClasses().Create(context.Background(), &dc, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("deploy/dra/deviceclasses.yaml has no DeviceClass umd.umdkit.io")
}

// waitPod polls pod name until ready accepts it, for up to timeout, and
// returns it as last read.
func waitPod(ns, name string, timeout time.Duration, ready func(*corev1.Pod) error) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := waitFor(context.Background(), nil, "pod "+name, timeout, func(ctx context.Context) error {
		p, err := testCluster.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = p
		return ready(p)
	})
	return pod, err
}

// containerDone waits for a container of the pod to end, wants it to have
// exited 0, and returns the pod and the container's log; a failure
// reports the pod's status, events and the container's and nodes' logs.
func containerDone(t *testing.T, ns, pod, container string, timeout time.Duration) (*corev1.Pod, string) {
	t.Helper()
	var term *corev1.ContainerStateTerminated
	p, err := waitPod(ns, pod, timeout, func(p *corev1.Pod) error {
		for _, st := range p.Status.ContainerStatuses {
			if st.Name == container && st.State.Terminated != nil {
				term = st.State.Terminated
				return nil
			}
		}
		return fmt.Errorf("container %s has not ended; phase %s", container, p.Status.Phase)
	})
	log, lerr := testCluster.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(context.Background())
	if lerr != nil {
		log = []byte(fmt.Sprintf("(no log: %v)", lerr))
	}
	if err != nil || term.ExitCode != 0 {
		t.Fatalf("pod %s container %s: %v (terminated %+v)\nstatus: %s\nevents:\n%s\nlog:\n%s\n%s", pod, container, err, term, podStatus(p), events(ns), log, nodeLogs())
	}
	return p, string(log)
}

func podStatus(p *corev1.Pod) string {
	if p == nil {
		return "(none)"
	}
	b, _ := json.MarshalIndent(p.Status, "", "  ")
	return string(b)
}

func events(ns string) string {
	l, err := testCluster.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range l.Items {
		fmt.Fprintf(&b, "  %s %s/%s: %s: %s\n", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
	}
	return b.String()
}

// nodeLogs quotes the ends of the nodes' kubelet and plugin logs.
func nodeLogs() string {
	var b strings.Builder
	for _, n := range testCluster.Nodes() {
		for _, c := range []string{"kubelet", "umd-dra", "umdd"} {
			fmt.Fprintf(&b, "--- %s %s ---\n%s\n", n.Name, c, logTail(n.Log(c)))
		}
	}
	return b.String()
}

// umddStatus is `umdd status -o json` of a node.
func umddStatus(t *testing.T, n *Node) string {
	t.Helper()
	out, err := exec.Command(testCluster.Program("umdd"), "status", "--socket", n.UmddSocket, "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("umdd status on %s: %v: %s", n.Name, err, out)
	}
	return string(out)
}

func node(t *testing.T, name string) *Node {
	t.Helper()
	for _, n := range testCluster.Nodes() {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no node %s", name)
	return nil
}

// pciBusID is the PCI address a node's ResourceSlices publish for device.
func pciBusID(t *testing.T, nodeName, device string) string {
	t.Helper()
	d, _ := publishedDevice(t, nodeName, device)
	id := stringAttr(d, "resource.kubernetes.io/pciBusID")
	if id == "" {
		t.Fatalf("device %s of node %s has no pciBusID attribute", device, nodeName)
	}
	return id
}

// claimWatch records the last state of every ResourceClaim of a
// namespace seen with an allocation.
type claimWatch struct {
	mu     sync.Mutex
	claims map[string]*resourcev1.ResourceClaim
}

func watchClaims(t *testing.T, ns string) *claimWatch {
	t.Helper()
	w, err := testCluster.Client.ResourceV1().ResourceClaims(ns).Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	cw := &claimWatch{claims: map[string]*resourcev1.ResourceClaim{}}
	go func() {
		for ev := range w.ResultChan() {
			if c, ok := ev.Object.(*resourcev1.ResourceClaim); ok && c.Status.Allocation != nil {
				cw.mu.Lock()
				cw.claims[c.Name] = c
				cw.mu.Unlock()
			}
		}
	}()
	return cw
}

// allocated returns the claim name as last seen allocated.
func (cw *claimWatch) allocated(t *testing.T, name string) *resourcev1.ResourceClaim {
	t.Helper()
	var c *resourcev1.ResourceClaim
	err := waitFor(context.Background(), nil, "claim "+name+" allocated", 30*time.Second, func(context.Context) error {
		cw.mu.Lock()
		defer cw.mu.Unlock()
		if c = cw.claims[name]; c == nil {
			return fmt.Errorf("not seen allocated")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPodClaimVerifiedIO: a pod with a claim from a ResourceClaimTemplate
// is scheduled on a node with umd devices, gets the CDI edits umd-dra
// prepared (umdd's socket, its claim and grant in the environment), and
// umdprobe in it writes and reads back 64 blocks through its reservation.
// Deleting the pod releases everything: umdd then holds no session and
// no reservation of the claim.
func TestPodClaimVerifiedIO(t *testing.T) {
	needNodes(t)
	deviceClass(t)
	ctx := context.Background()
	cs := testCluster.Client
	ns := testNamespace(t, "verified-io")
	if _, err := cs.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, claimTemplate("one", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The claim controller deletes a template's claim as soon as its pod
	// is done, so the claim is watched from before the pod exists.
	claims := watchClaims(t, ns)
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, probePod("probe", "one", "--verify", "64"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, log := containerDone(t, ns, "probe", "probe", 3*time.Minute)
	t.Logf("pod ran on %s:\n%s", pod.Spec.NodeName, log)
	if !strings.Contains(log, "verified 64 blocks") || !strings.Contains(log, " ok") {
		t.Fatalf("the pod's log shows no verified I/O:\n%s", log)
	}
	if len(pod.Status.ResourceClaimStatuses) != 1 || pod.Status.ResourceClaimStatuses[0].ResourceClaimName == nil {
		t.Fatalf("pod's claim statuses: %+v", pod.Status.ResourceClaimStatuses)
	}
	claim := claims.allocated(t, *pod.Status.ResourceClaimStatuses[0].ResourceClaimName)
	uid := string(claim.UID)
	if !strings.Contains(log, "claim "+uid) {
		t.Errorf("the pod's log does not name its claim %s:\n%s", uid, log)
	}
	res := claim.Status.Allocation.Devices.Results
	if len(res) != 1 || res[0].Driver != "umd.umdkit.io" || res[0].Pool != pod.Spec.NodeName {
		t.Errorf("claim allocated %+v, want one umd.umdkit.io device of pool %s", res, pod.Spec.NodeName)
	} else if bdf := pciBusID(t, pod.Spec.NodeName, res[0].Device); !strings.Contains(log, "device "+bdf+": verified") {
		t.Errorf("the pod's log does not show I/O on the allocated device %s (%s):\n%s", res[0].Device, bdf, log)
	}
	n := node(t, pod.Spec.NodeName)
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "probe", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := waitFor(ctx, nil, "the claim to be released in umdd", 2*time.Minute, func(ctx context.Context) error {
		if _, err := cs.CoreV1().Pods(ns).Get(ctx, "probe", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("pod still there (%v)", err)
		}
		if _, err := cs.ResourceV1().ResourceClaims(ns).Get(ctx, claim.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("claim %s still there (%v)", claim.Name, err)
		}
		st := umddStatus(t, n)
		if strings.Contains(st, uid) {
			return fmt.Errorf("umdd still holds claim %s: %s", uid, st)
		}
		var s struct {
			Devices []struct {
				BDF        string `json:"bdf"`
				MaxQueues  int    `json:"max_queues"`
				FreeQueues int    `json:"free_queues"`
			} `json:"devices"`
			Clients []struct {
				Device string `json:"device"`
			} `json:"clients"`
			Reservations []json.RawMessage `json:"reservations"`
		}
		if err := json.Unmarshal([]byte(st), &s); err != nil {
			return fmt.Errorf("umdd status: %v: %s", err, st)
		}
		if len(s.Devices) == 0 {
			return fmt.Errorf("umdd status lists no devices: %s", st)
		}
		if len(s.Reservations) > 0 {
			return fmt.Errorf("umdd still holds reservations: %s", st)
		}
		for _, c := range s.Clients { // the asking connection is one
			if c.Device != "" {
				return fmt.Errorf("umdd still has a session on %s: %s", c.Device, st)
			}
		}
		for _, d := range s.Devices {
			if d.FreeQueues != d.MaxQueues {
				return fmt.Errorf("%s: %d of %d queue pairs free: %s", d.BDF, d.FreeQueues, d.MaxQueues, st)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, nodeLogs())
	}
}

// TestUnsatisfiableClaimPending: a claim no published device satisfies
// (NUMA node 7) keeps its pod Pending, and the pod's PodScheduled
// condition carries the scheduler's reason.
func TestUnsatisfiableClaimPending(t *testing.T) {
	needNodes(t)
	deviceClass(t)
	ctx := context.Background()
	cs := testCluster.Client
	ns := testNamespace(t, "unsatisfiable")
	tmpl := claimTemplate("numa7", `device.attributes["umd.umdkit.io"].numaNode == 7`)
	if _, err := cs.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, tmpl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, probePod("nowhere", "numa7"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cond := waitUnschedulable(t, ns, "nowhere")
	t.Logf("PodScheduled=False %s: %s", cond.Reason, cond.Message)
	if !strings.Contains(cond.Message, "cannot allocate all claims") {
		t.Errorf("the reason does not say the claim cannot be allocated: %q", cond.Message)
	}
	// Still Pending a while later: nothing retried it onto a node.
	time.Sleep(5 * time.Second)
	p, err := cs.CoreV1().Pods(ns).Get(ctx, "nowhere", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
		t.Fatalf("pod is %s on %q, want Pending on no node", p.Status.Phase, p.Spec.NodeName)
	}
}

// waitUnschedulable waits (up to 2 minutes) for the scheduler to mark
// pod name unschedulable, and returns that PodScheduled condition; the
// pod being bound to a node instead fails t (at the timeout, saying so).
func waitUnschedulable(t *testing.T, ns, name string) corev1.PodCondition {
	t.Helper()
	var cond corev1.PodCondition
	err := waitFor(context.Background(), nil, "the scheduler's verdict on pod "+name, 2*time.Minute, func(ctx context.Context) error {
		p, err := testCluster.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Spec.NodeName != "" {
			return fmt.Errorf("scheduled on %s", p.Spec.NodeName)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				cond = c
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", p.Status.Conditions)
	})
	if err != nil {
		t.Fatal(err)
	}
	return cond
}

// TestNUMASelectorPlacesPod: only node-b (qemu-numa) has devices on NUMA
// node 1, so a claim selecting numaNode == 1 lands the pod there, and its
// I/O is verified too.
func TestNUMASelectorPlacesPod(t *testing.T) {
	needNodes(t)
	deviceClass(t)
	ctx := context.Background()
	cs := testCluster.Client
	ns := testNamespace(t, "numa")
	tmpl := claimTemplate("numa1", `device.attributes["umd.umdkit.io"].numaNode == 1`)
	if _, err := cs.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, tmpl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, probePod("numa1", "numa1", "--verify", "8"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, log := containerDone(t, ns, "numa1", "probe", 3*time.Minute)
	if pod.Spec.NodeName != "node-b" {
		t.Fatalf("pod ran on %q, want node-b (the only node with NUMA node 1 devices)", pod.Spec.NodeName)
	}
	if !strings.Contains(log, "verified 8 blocks") {
		t.Fatalf("no verified I/O in the log:\n%s", log)
	}
	t.Logf("on %s:\n%s", pod.Spec.NodeName, log)
}
