//go:build cluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// umddState is what `umdd status -o json` says, as far as these tests
// read it.
type umddState struct {
	Devices []struct {
		BDF        string `json:"bdf"`
		MaxQueues  int    `json:"max_queues"`
		FreeQueues int    `json:"free_queues"`
		Lent       string `json:"lent"`
		Failed     string `json:"failed"`
	} `json:"devices"`
	Clients []struct {
		Device string `json:"device"`
	} `json:"clients"`
	Reservations []struct {
		Claim  string `json:"claim"`
		Device string `json:"device"`
	} `json:"reservations"`
}

func readUmdd(t *testing.T, n *Node) (umddState, string) {
	t.Helper()
	raw := umddStatus(t, n)
	var s umddState
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatalf("umdd status of %s: %v: %s", n.Name, err, raw)
	}
	return s, raw
}

// umddIdle says what umdd on n still holds: nil when it has no
// reservation, no session and every queue pair free.
func umddIdle(t *testing.T, n *Node) error {
	s, raw := readUmdd(t, n)
	switch {
	case len(s.Devices) == 0:
		return fmt.Errorf("umdd status lists no devices: %s", raw)
	case len(s.Reservations) > 0:
		return fmt.Errorf("umdd still holds reservations: %s", raw)
	}
	for _, c := range s.Clients { // the asking connection is one
		if c.Device != "" {
			return fmt.Errorf("umdd still has a session on %s: %s", c.Device, raw)
		}
	}
	for _, d := range s.Devices {
		if d.FreeQueues != d.MaxQueues || d.Lent != "" || d.Failed != "" {
			return fmt.Errorf("%s: %d of %d queue pairs free, lent %q, failed %q: %s", d.BDF, d.FreeQueues, d.MaxQueues, d.Lent, d.Failed, raw)
		}
	}
	return nil
}

// holds reports whether umdd on n holds a reservation of the claim.
func holds(t *testing.T, n *Node, claimUID string) bool {
	s, _ := readUmdd(t, n)
	for _, r := range s.Reservations {
		if r.Claim == claimUID {
			return true
		}
	}
	return false
}

// healthz is the URL of the healthz endpoint of the node's kubelet.
func (n *Node) healthz() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.kubeletHealthz
}

// TestPluginAndKubeletRestart: a pod holds a claim on node-a (its probe
// container verifies I/O through it and ends; a pause container keeps the
// pod running). umd-dra is stopped and started again, then the kubelet
// (the test waits until the new kubelet lists the pod again: see
// Node.WaitPod): umdd still holds the claim throughout, and deleting the
// pod afterwards still unprepares it, through the restarted plugin from
// its checkpoint: umdd then holds nothing, within the 2 minutes the wait
// allows (it takes about a second).
func TestPluginAndKubeletRestart(t *testing.T) {
	needNodes(t)
	deviceClass(t)
	ctx := context.Background()
	cs := testCluster.Client
	ns := testNamespace(t, "restart")
	if _, err := cs.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, claimTemplate("held", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := holdingPod("held", "held", "--verify", "8")
	pod.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "node-a"}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, log := containerDone(t, ns, "held", "probe", 3*time.Minute)
	if !strings.Contains(log, "verified 8 blocks") {
		t.Fatalf("the probe's log shows no verified I/O:\n%s", log)
	}
	if p.Status.Phase != corev1.PodRunning {
		t.Fatalf("pod is %s with its pause container, want Running", p.Status.Phase)
	}
	if len(p.Status.ResourceClaimStatuses) != 1 || p.Status.ResourceClaimStatuses[0].ResourceClaimName == nil {
		t.Fatalf("pod's claim statuses: %+v", p.Status.ResourceClaimStatuses)
	}
	claimName := *p.Status.ResourceClaimStatuses[0].ResourceClaimName
	claim, err := cs.ResourceV1().ResourceClaims(ns).Get(ctx, claimName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uid := string(claim.UID)
	n := node(t, "node-a")
	if !holds(t, n, uid) {
		t.Fatalf("umdd on node-a does not hold claim %s while its pod runs: %s", uid, umddStatus(t, n))
	}

	start := time.Now()
	if err := n.RestartPlugin(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("umd-dra restarted in %v", time.Since(start).Round(time.Millisecond))
	if !holds(t, n, uid) {
		t.Fatalf("umdd lost claim %s over a plugin restart: %s", uid, umddStatus(t, n))
	}
	start = time.Now()
	oldHealthz := n.healthz()
	if err := n.RestartKubelet(ctx); err != nil {
		t.Fatal(err)
	}
	// RestartKubelet returns with the new kubelet healthy: it answers at
	// once, on its own (fresh) port.
	if h := n.healthz(); h == oldHealthz {
		t.Errorf("the restarted kubelet's healthz is still %s, the old one's", h)
	} else if err := httpOK(&http.Client{Timeout: 2 * time.Second}, h, "ok"); err != nil {
		t.Fatalf("RestartKubelet returned before the new kubelet was healthy: %v", err)
	}
	if err := n.WaitPod(ctx, ns, "held"); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubelet restarted and knows the pod again in %v", time.Since(start).Round(time.Millisecond))
	if !holds(t, n, uid) {
		t.Fatalf("umdd lost claim %s over a kubelet restart: %s", uid, umddStatus(t, n))
	}
	if p, err := cs.CoreV1().Pods(ns).Get(ctx, "held", metav1.GetOptions{}); err != nil || p.Status.Phase != corev1.PodRunning {
		t.Fatalf("after the restarts the pod is %v (%v), want Running", p.Status.Phase, err)
	}

	start = time.Now()
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "held", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = waitFor(ctx, nil, "the claim to be released in umdd", 2*time.Minute, func(ctx context.Context) error {
		if _, err := cs.CoreV1().Pods(ns).Get(ctx, "held", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("pod still there (%v)", err)
		}
		if _, err := cs.ResourceV1().ResourceClaims(ns).Get(ctx, claimName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("claim %s still there (%v)", claimName, err)
		}
		return umddIdle(t, n)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, nodeLogs())
	}
	t.Logf("pod deleted and claim released in umdd in %v", time.Since(start).Round(time.Millisecond))
}

// sameCardTemplate asks for two umd devices on one card
// (matchAttribute umd.umdkit.io/card), with claimTemplate's parameters.
func sameCardTemplate(name string) *resourcev1.ResourceClaimTemplate {
	tmpl := claimTemplate(name, "")
	spec := &tmpl.Spec.Spec.Devices
	spec.Requests[0].Exactly.AllocationMode = resourcev1.DeviceAllocationModeExactCount
	spec.Requests[0].Exactly.Count = 2
	card := resourcev1.FullyQualifiedName("umd.umdkit.io/card")
	spec.Constraints = []resourcev1.DeviceConstraint{{Requests: []string{"nvme"}, MatchAttribute: &card}}
	return tmpl
}

// TestSameCardClaim: a claim for two devices on one card, on node-a
// (qemu-cards: two cards with two controllers each, one card with one)
// gets two distinct devices whose published card attribute is the same,
// and the pod verifies I/O on both.
func TestSameCardClaim(t *testing.T) {
	needNodes(t)
	deviceClass(t)
	ctx := context.Background()
	cs := testCluster.Client
	ns := testNamespace(t, "same-card")
	if _, err := cs.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, sameCardTemplate("pair"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	claims := watchClaims(t, ns)
	pod := probePod("pair", "pair", "--verify", "16")
	pod.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "node-a"}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, log := containerDone(t, ns, "pair", "probe", 3*time.Minute)
	t.Logf("pod ran on %s:\n%s", got.Spec.NodeName, log)
	if len(got.Status.ResourceClaimStatuses) != 1 || got.Status.ResourceClaimStatuses[0].ResourceClaimName == nil {
		t.Fatalf("pod's claim statuses: %+v", got.Status.ResourceClaimStatuses)
	}
	claim := claims.allocated(t, *got.Status.ResourceClaimStatuses[0].ResourceClaimName)
	res := claim.Status.Allocation.Devices.Results
	if len(res) != 2 || res[0].Device == res[1].Device {
		t.Fatalf("claim allocated %+v, want two distinct devices", res)
	}
	var cards []string
	for _, r := range res {
		if r.Driver != "umd.umdkit.io" || r.Pool != "node-a" {
			t.Fatalf("allocated %+v, want umd.umdkit.io devices of pool node-a", r)
		}
		d, _ := publishedDevice(t, "node-a", r.Device)
		card, ok := d.Attributes["umd.umdkit.io/card"]
		if !ok || card.StringValue == nil {
			t.Fatalf("device %s has no card attribute: %+v", r.Device, d.Attributes)
		}
		cards = append(cards, *card.StringValue)
		bdf := pciBusID(t, "node-a", r.Device)
		if !strings.Contains(log, "device "+bdf+": verified 16 blocks") {
			t.Errorf("the pod's log shows no verified I/O on %s (%s):\n%s", r.Device, bdf, log)
		}
	}
	if cards[0] != cards[1] {
		t.Fatalf("the two devices are on cards %q and %q, want one card", cards[0], cards[1])
	}
	t.Logf("allocated %s and %s, both on card %s", res[0].Device, res[1].Device, cards[0])
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "pair", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n := node(t, "node-a")
	if err := waitFor(ctx, nil, "the pair to be released in umdd", 2*time.Minute, func(context.Context) error { return umddIdle(t, n) }); err != nil {
		t.Fatalf("%v\n%s", err, nodeLogs())
	}
}
