//go:build cluster

package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/umdkit/umd/internal/mountinfo"
)

// procID names a process across pid reuse: its pid and start time.
type procID struct {
	pid   int
	start string // field 22 of /proc/PID/stat
}

// procStat reads a process's state, process group and start time from
// /proc/PID/stat.
func procStat(pid int) (state string, pgid int, start string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, "", err
	}
	// pid (comm) state ppid pgrp … ; comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 20 {
		return "", 0, "", fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	pgid, err = strconv.Atoi(f[2])
	return f[0], pgid, f[19], err
}

// footprint is what a node or cluster made that its Stop promises to
// remove, seen while it runs.
type footprint struct {
	procs      map[procID]string // process → command line
	dirs       []string          // no mount may remain at or below these
	gone       []string          // paths that must not exist after Stop
	cgroups    []string          // top-level cgroup names
	bridges    []string
	logDirs    []string // pod log dirs: no link in /var/log/containers may point below them
	cniResults []string // files in /var/lib/cni/results
}

// footprintOf records the processes of the process groups led by
// leaders, those in the cgroup trees named cgroups, and those whose
// command line mentions one of dirs (containerd's shims), and the nodes'
// bridges, log links, CNI results and shim sockets.
func footprintOf(leaders []int, dirs []string, nodes []nodeState) (*footprint, error) {
	fp := &footprint{procs: map[procID]string{}, dirs: dirs}
	hs, err := hierarchies()
	if err != nil {
		return nil, err
	}
	in := map[int]bool{}
	for _, s := range nodes {
		fp.cgroups = append(fp.cgroups, s.Cgroup)
		fp.bridges = append(fp.bridges, s.Bridge)
		fp.logDirs = append(fp.logDirs, s.PodLogsDir)
		pids, err := cgroupPids(hs, s.Cgroup)
		if err != nil {
			return nil, err
		}
		for _, p := range pids {
			in[p] = true
		}
		if res, err := os.ReadDir(cniResults); err == nil {
			for _, r := range res {
				if ownResult(r.Name(), s.CNINetwork, s.sandboxIDs()) {
					fp.cniResults = append(fp.cniResults, filepath.Join(cniResults, r.Name()))
				}
			}
		}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		state, pgid, start, err := procStat(pid)
		if err != nil || state == "Z" {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cmd := strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
		mentions := slices.ContainsFunc(dirs, func(d string) bool { return strings.Contains(cmd, d+"/") })
		if in[pid] || mentions || slices.Contains(leaders, pgid) {
			fp.procs[procID{pid, start}] = cmd
			fp.gone = append(fp.gone, shimSockets(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"))...)
		}
	}
	return fp, nil
}

// nodeFootprint is n's footprint: its components' process groups, its
// pods' processes and its containerd's shims.
func nodeFootprint(n *Node) (*footprint, error) {
	n.mu.Lock()
	var leaders []int
	for _, p := range n.procs {
		leaders = append(leaders, p.cmd.Process.Pid)
	}
	n.mu.Unlock()
	return footprintOf(leaders, []string{n.Dir}, []nodeState{n.state})
}

// clusterFootprint is c's footprint: the control plane's and every
// node's, c.Dir itself (unless kept), and what the kubelets made at their
// shared device-plugin path.
func clusterFootprint(c *Cluster) (*footprint, error) {
	var leaders []int
	c.mu.Lock()
	for _, p := range c.procs {
		leaders = append(leaders, p.cmd.Process.Pid)
	}
	c.mu.Unlock()
	var states []nodeState
	for _, n := range c.Nodes() {
		states = append(states, n.state)
		n.mu.Lock()
		for _, p := range n.procs {
			leaders = append(leaders, p.cmd.Process.Pid)
		}
		n.mu.Unlock()
	}
	fp, err := footprintOf(leaders, []string{c.Dir}, states)
	if err != nil {
		return nil, err
	}
	if !c.cfg.Keep {
		fp.gone = append(fp.gone, c.Dir)
	}
	// The kubelets' shared device-plugin socket, and the directories
	// they made for it.
	if _, err := os.Lstat(devicePluginSocket); err == nil {
		fp.gone = append(fp.gone, devicePluginSocket)
	}
	fp.gone = append(fp.gone, c.sharedMade...)
	return fp, nil
}

// leftovers lists what of fp is still there.
func (fp *footprint) leftovers() ([]string, error) {
	var left []string
	for id, cmd := range fp.procs {
		if state, _, start, err := procStat(id.pid); err == nil && start == id.start && state != "Z" {
			left = append(left, fmt.Sprintf("process %d (%s) is alive: %s", id.pid, state, cmd))
		}
	}
	ms, err := mountinfo.Read("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		for _, d := range fp.dirs {
			if m.Point == d || strings.HasPrefix(m.Point, d+"/") {
				left = append(left, fmt.Sprintf("%s is mounted on %s", m.FSType, m.Point))
			}
		}
	}
	hs, err := hierarchies()
	if err != nil {
		return nil, err
	}
	for _, h := range hs {
		for _, cg := range fp.cgroups {
			if _, err := os.Stat(filepath.Join(h, cg)); err == nil {
				left = append(left, "cgroup "+filepath.Join(h, cg)+" exists")
			}
		}
	}
	for _, b := range fp.bridges {
		if _, err := os.Stat(filepath.Join("/sys/class/net", b)); err == nil {
			left = append(left, "bridge "+b+" exists")
		}
	}
	for _, p := range append(slices.Clone(fp.gone), fp.cniResults...) {
		if _, err := os.Lstat(p); err == nil {
			left = append(left, p+" exists")
		}
	}
	links, _ := os.ReadDir(containerLogLinks)
	for _, l := range links {
		p := filepath.Join(containerLogLinks, l.Name())
		target, err := os.Readlink(p)
		if err == nil && slices.ContainsFunc(fp.logDirs, func(d string) bool { return strings.HasPrefix(target, d+"/") }) {
			left = append(left, "log link "+p+" → "+target+" exists")
		}
	}
	slices.Sort(left)
	return left, nil
}

// TestNodeStopLeavesNothing: a node stopped while it runs a pod leaves
// nothing of what Node.Stop promises to remove: no process of its
// components' process groups, its pods' cgroups or its containerd's
// shims is alive, nothing is mounted below its dir, its cgroups, bridge,
// log links, CNI results, shim sockets and Node object are gone.
func TestNodeStopLeavesNothing(t *testing.T) {
	ctx := context.Background()
	n, err := testCluster.AddNode(ctx, NodeConfig{Name: "node-s"})
	if err != nil {
		t.Fatal(err)
	}
	cs := testCluster.Client
	ns := testNamespace(t, "stop")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hold"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": "node-s"},
			Containers:                    []corev1.Container{{Name: "hold", Image: PauseImageName, ImagePullPolicy: corev1.PullNever}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The pod of a node that is gone waits for the pod garbage
		// collector; do not leave it to the other tests.
		_ = cs.CoreV1().Pods(ns).Delete(context.Background(), "hold", metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	p, err := waitPod(ns, "hold", 3*time.Minute, func(p *corev1.Pod) error {
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nstatus: %s\nevents:\n%s\n%s", err, podStatus(p), events(ns), nodeLogs())
	}

	// Everything Stop must remove is there now (else the test proves
	// little): the pod's processes, shim, mounts, cgroups, bridge, log
	// link and CNI result.
	var fp *footprint
	err = waitFor(ctx, nil, "node-s's footprint", 30*time.Second, func(context.Context) error {
		if fp, err = nodeFootprint(n); err != nil {
			return err
		}
		hs, _ := hierarchies()
		pods, _ := cgroupPids(hs, n.state.Cgroup)
		ms, _ := mountsBelow(n.Dir)
		links := 0
		if ls, err := os.ReadDir(containerLogLinks); err == nil {
			for _, l := range ls {
				if target, err := os.Readlink(filepath.Join(containerLogLinks, l.Name())); err == nil && strings.HasPrefix(target, n.state.PodLogsDir+"/") {
					links++
				}
			}
		}
		_, brErr := os.Stat(filepath.Join("/sys/class/net", n.state.Bridge))
		if len(pods) == 0 || len(ms) == 0 || links == 0 || brErr != nil || len(fp.cniResults) == 0 || len(fp.gone) == 0 {
			return fmt.Errorf("pod processes %v, mounts %v, %d log links, bridge: %v, CNI results %v, shim sockets %v", pods, ms, links, brErr, fp.cniResults, fp.gone)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before Stop: %d processes, %d CNI results, shim sockets %v", len(fp.procs), len(fp.cniResults), fp.gone)

	start := time.Now()
	if err := n.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("stopped in %v", time.Since(start).Round(time.Millisecond))
	left, err := fp.leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("after Stop:\n%s", strings.Join(left, "\n"))
	}
	if _, err := cs.CoreV1().Nodes().Get(ctx, "node-s", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the Node object after Stop: %v, want not found", err)
	}
}
