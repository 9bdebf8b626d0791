//go:build cluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// sharedController is the controller the shares test splits: node-b's
// 0000:61:00.0 (qemu-numa), an address no other node has, so a selector
// on it names one controller of the cluster.
const (
	sharedNode       = "node-b"
	sharedBDF        = "0000:61:00.0"
	sharedController = "nvme-0000-61-00-0"
)

// deviceClasses creates the shipped DeviceClasses named (if not there
// yet).
func deviceClasses(t *testing.T, names ...string) {
	t.Helper()
	found := 0
	for _, doc := range yamlDocs(t, filepath.Join(moduleDir, "deploy/dra/deviceclasses.yaml")) {
		var dc resourcev1.DeviceClass
		decode(t, doc, &dc)
		if !contains(names, dc.Name) {
			continue
		}
		_, err := testCluster.Client.ResourceV1().DeviceClasses().Create(context.Background(), &dc, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		found++
	}
	if found != len(names) {
		t.Fatalf("deploy/dra/deviceclasses.yaml has %d of the DeviceClasses %q", found, names)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// onController is a claim template for one device of class on the shared
// controller: one polled queue pair, a 4 MiB pool.
func onController(name, class string) *resourcev1.ResourceClaimTemplate {
	tmpl := claimTemplate(name, fmt.Sprintf(`device.attributes["resource.kubernetes.io"].pciBusID == %q`, sharedBDF))
	tmpl.Spec.Spec.Devices.Requests[0].Exactly.DeviceClassName = class
	params := []byte(`{"apiVersion":"umd.umdkit.io/v1alpha1","kind":"UmdClaimParameters","queuePairs":1,"poolBytes":4194304,"completion":"poll"}`)
	tmpl.Spec.Spec.Devices.Config[0].Opaque.Parameters = runtime.RawExtension{Raw: params}
	return tmpl
}

// holdingPod runs `umdprobe claim ARGS…` on a claim from template
// and, beside it, the pause program, which keeps the pod (and so its
// claim's allocation and reservation) alive after umdprobe is done.
func holdingPod(name, template string, args ...string) *corev1.Pod {
	pod := probePod(name, template, args...)
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
		Name: "hold", Image: PauseImageName, ImagePullPolicy: corev1.PullNever,
	})
	return pod
}

// podClaim returns the pod's one ResourceClaim, allocated.
func podClaim(t *testing.T, pod *corev1.Pod) *resourcev1.ResourceClaim {
	t.Helper()
	st := pod.Status.ResourceClaimStatuses
	if len(st) != 1 || st[0].ResourceClaimName == nil {
		t.Fatalf("pod %s: claim statuses %+v", pod.Name, st)
	}
	c, err := testCluster.Client.ResourceV1().ResourceClaims(pod.Namespace).Get(context.Background(), *st[0].ResourceClaimName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status.Allocation == nil || len(c.Status.Allocation.Devices.Results) != 1 {
		t.Fatalf("claim %s of pod %s: allocation %+v", c.Name, pod.Name, c.Status.Allocation)
	}
	return c
}

// publishedDevice returns device as the node's ResourceSlices publish it,
// with the slice's counter sets.
func publishedDevice(t *testing.T, nodeName, device string) (resourcev1.Device, []resourcev1.CounterSet) {
	t.Helper()
	l, err := testCluster.Client.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + nodeName})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range l.Items {
		for _, d := range s.Spec.Devices {
			if d.Name == device {
				return d, s.Spec.SharedCounters
			}
		}
	}
	t.Fatalf("node %s publishes no device %s", nodeName, device)
	return resourcev1.Device{}, nil
}

func stringAttr(d resourcev1.Device, name string) string {
	if a, ok := d.Attributes[resourcev1.QualifiedName(name)]; ok && a.StringValue != nil {
		return *a.StringValue
	}
	return ""
}

// TestSharesOfOneController: umd-dra publishes node-b's 0000:61:00.0
// whole and as four named shares consuming one counter of its queue pairs
// (the apiserver keeps the counters: DRAPartitionableDevices). Two pods,
// each with a claim for a share of that controller, both get one, on the
// same controller, and umdprobe in each verifies I/O through its own
// reservation while the other's is held (one after the other: both
// write from LBA 0 of namespace 1, and concurrent runs would read each
// other's stamps); umdd holds both reservations on the controller at
// once. A claim for the whole controller meanwhile stays Pending with the
// scheduler's reason; once the share pods are gone and umdd has released
// their claims, a pod claiming the whole controller gets it and verifies
// I/O too.
func TestSharesOfOneController(t *testing.T) {
	needNodes(t)
	start := time.Now()
	since := func() time.Duration { return time.Since(start).Round(100 * time.Millisecond) }
	deviceClasses(t, "umd.umdkit.io", "share.umd.umdkit.io")
	ctx := context.Background()
	cs := testCluster.Client
	ns := testNamespace(t, "shares")

	// What node-b publishes: the controller consumes all of its counter
	// set, each share a quarter.
	whole, sets := publishedDevice(t, sharedNode, sharedController)
	if len(whole.ConsumesCounters) != 1 || whole.ConsumesCounters[0].CounterSet != sharedController {
		t.Fatalf("%s consumes %+v, want its own counter set (is DRAPartitionableDevices on in the apiserver?)", sharedController, whole.ConsumesCounters)
	}
	var total int64
	for _, s := range sets {
		if s.Name == sharedController {
			q := s.Counters["queue-pairs"].Value
			total = q.Value()
		}
	}
	share0, _ := publishedDevice(t, sharedNode, sharedController+"-share-0")
	q := share0.ConsumesCounters[0].Counters["queue-pairs"].Value
	if total == 0 || q.Value() != total/4 || stringAttr(share0, "umd.umdkit.io/controller") != sharedController {
		t.Fatalf("counter set %+v, share-0 consumes %s and names controller %q: want a quarter of the set's queue pairs and %s",
			sets, q.String(), stringAttr(share0, "umd.umdkit.io/controller"), sharedController)
	}
	t.Logf("%s: %d queue pairs, shares of %d", sharedController, total, q.Value())

	for _, tmpl := range []*resourcev1.ResourceClaimTemplate{
		onController("share", "share.umd.umdkit.io"), onController("whole", "umd.umdkit.io"),
	} {
		if _, err := cs.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, tmpl, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	var claims []*resourcev1.ResourceClaim
	for _, name := range []string{"share-a", "share-b"} {
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, holdingPod(name, "share", "--verify", "64"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pod, log := containerDone(t, ns, name, "probe", 3*time.Minute)
		if pod.Status.Phase != corev1.PodRunning {
			t.Fatalf("pod %s is %s with its pause container, want Running", name, pod.Status.Phase)
		}
		claim := podClaim(t, pod)
		res := claim.Status.Allocation.Devices.Results[0]
		t.Logf("%v: %s on %s got %s:\n%s", since(), name, pod.Spec.NodeName, res.Device, log)
		if pod.Spec.NodeName != sharedNode || res.Pool != sharedNode || !strings.HasPrefix(res.Device, sharedController+"-share-") {
			t.Fatalf("%s: on node %s, allocated %s of pool %s; want a share of %s on %s", name, pod.Spec.NodeName, res.Device, res.Pool, sharedController, sharedNode)
		}
		if !strings.Contains(log, "claim "+string(claim.UID)) || !strings.Contains(log, "device "+sharedBDF+": verified 64 blocks") {
			t.Fatalf("%s's log shows no verified I/O of claim %s on %s:\n%s", name, claim.UID, sharedBDF, log)
		}
		claims = append(claims, claim)
	}
	a, b := claims[0].Status.Allocation.Devices.Results[0].Device, claims[1].Status.Allocation.Devices.Results[0].Device
	if a == b {
		t.Fatalf("both claims were allocated %s", a)
	}
	da, _ := publishedDevice(t, sharedNode, a)
	db, _ := publishedDevice(t, sharedNode, b)
	if ca, cb := stringAttr(da, "umd.umdkit.io/controller"), stringAttr(db, "umd.umdkit.io/controller"); ca != cb || ca != sharedController {
		t.Fatalf("the shares %s and %s name controllers %q and %q, want both %s", a, b, ca, cb, sharedController)
	}

	// umdd holds both claims' reservations on the one controller.
	held := umddReservations(t)
	for _, c := range claims {
		found := false
		for _, r := range held {
			found = found || r.Claim == string(c.UID) && r.Device == sharedBDF
		}
		if !found {
			t.Errorf("umdd holds no reservation of claim %s on %s: %+v", c.UID, sharedBDF, held)
		}
	}

	// The whole controller, while shares of it are allocated: Pending.
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, probePod("whole", "whole", "--verify", "64"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cond := waitUnschedulable(t, ns, "whole")
	t.Logf("%v: whole controller while shared: PodScheduled=False %s: %s", since(), cond.Reason, cond.Message)
	if !strings.Contains(cond.Message, "cannot allocate all claims") {
		t.Errorf("the reason does not say the claim cannot be allocated: %q", cond.Message)
	}
	time.Sleep(3 * time.Second)
	if p, err := cs.CoreV1().Pods(ns).Get(ctx, "whole", metav1.GetOptions{}); err != nil || p.Spec.NodeName != "" {
		t.Fatalf("the whole-controller pod: %v, on %q; want it Pending on no node while the shares are held", err, p.Spec.NodeName)
	}

	// Once the shares are released the whole controller is allocatable.
	// A fresh pod asks for it: the pending one would be scheduled as soon
	// as the share claims are deleted, possibly before the kubelet has
	// unprepared them, and then wait for the kubelet's next sync of the
	// pod (about a minute) after umd-dra's ErrDeviceInUse.
	for _, name := range []string{"whole", "share-a", "share-b"} {
		if err := cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
	}
	waitReleased(t, "the shares' claims")
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, probePod("whole-after", "whole", "--verify", "64"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, log := containerDone(t, ns, "whole-after", "probe", 3*time.Minute)
	t.Logf("%v: whole controller once the shares were released, on %s:\n%s", since(), pod.Spec.NodeName, log)
	if pod.Spec.NodeName != sharedNode || !strings.Contains(log, "device "+sharedBDF+": verified 64 blocks") {
		t.Fatalf("the whole-controller pod ran on %s:\n%s", pod.Spec.NodeName, log)
	}
}

// umddReservations returns the reservations umdd on the shared node
// holds.
func umddReservations(t *testing.T) []struct {
	Claim  string `json:"claim"`
	Device string `json:"device"`
	Name   string `json:"name"`
} {
	t.Helper()
	var st struct {
		Reservations []struct {
			Claim  string `json:"claim"`
			Device string `json:"device"`
			Name   string `json:"name"`
		} `json:"reservations"`
	}
	raw := umddStatus(t, node(t, sharedNode))
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("umdd status: %v: %s", err, raw)
	}
	return st.Reservations
}

// waitReleased waits until umdd on the shared node holds nothing on the
// shared controller (what names the claims, for the error).
func waitReleased(t *testing.T, what string) {
	t.Helper()
	err := waitFor(context.Background(), nil, "umdd to release "+what, 2*time.Minute, func(context.Context) error {
		for _, r := range umddReservations(t) {
			if r.Device == sharedBDF {
				return fmt.Errorf("umdd still holds claim %s on %s", r.Claim, sharedBDF)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, nodeLogs())
	}
}

// One claim asking for two shares: the scheduler may well give it two
// shares of one controller (here it must: the selector names one). Each
// share is its own reservation in umdd, named after the share, with its
// own grant, and umdprobe in the pod verifies I/O through both; deleting
// the pod releases both.
func TestTwoSharesInOneClaim(t *testing.T) {
	needNodes(t)
	deviceClasses(t, "share.umd.umdkit.io")
	ctx := context.Background()
	cs := testCluster.Client
	ns := testNamespace(t, "twoshares")
	tmpl := onController("two", "share.umd.umdkit.io")
	tmpl.Spec.Spec.Devices.Requests[0].Exactly.AllocationMode = resourcev1.DeviceAllocationModeExactCount
	tmpl.Spec.Spec.Devices.Requests[0].Exactly.Count = 2
	if _, err := cs.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, tmpl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, holdingPod("two", "two", "--verify", "64"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, log := containerDone(t, ns, "two", "probe", 3*time.Minute)
	st := pod.Status.ResourceClaimStatuses
	if len(st) != 1 || st[0].ResourceClaimName == nil {
		t.Fatalf("pod two: claim statuses %+v", st)
	}
	claim, err := cs.ResourceV1().ResourceClaims(ns).Get(ctx, *st[0].ResourceClaimName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var shares []string
	if claim.Status.Allocation != nil {
		for _, r := range claim.Status.Allocation.Devices.Results {
			shares = append(shares, r.Device)
		}
	}
	t.Logf("pod two on %s got %v:\n%s", pod.Spec.NodeName, shares, log)
	if len(shares) != 2 || shares[0] == shares[1] || !strings.HasPrefix(shares[0], sharedController+"-share-") || !strings.HasPrefix(shares[1], sharedController+"-share-") {
		t.Fatalf("allocated %v, want two shares of %s", shares, sharedController)
	}
	if n := strings.Count(log, "device "+sharedBDF+": verified 64 blocks"); n != 2 {
		t.Fatalf("the pod verified I/O on %d of its two devices:\n%s", n, log)
	}
	var names []string
	for _, r := range umddReservations(t) {
		if r.Claim == string(claim.UID) && r.Device == sharedBDF {
			names = append(names, r.Name)
		}
	}
	if len(names) != 2 || !contains(names, shares[0]) || !contains(names, shares[1]) {
		t.Errorf("umdd holds claim %s's reservations on %s under the names %q, want the shares %q", claim.UID, sharedBDF, names, shares)
	}
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "two", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	waitReleased(t, "the two shares' claim")
}
