package cluster

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestNodeStopOrder: Stop stops a node's components in the reverse of
// the order AddNode starts them, also after one of them was restarted
// (and so started last), and forgets them.
func TestNodeStopOrder(t *testing.T) {
	dir := t.TempDir()
	id, err := randomHex(4)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{
		Name: "order", Dir: dir, logs: dir, procs: map[string]*process{},
		c: &Cluster{cfg: Config{BinDir: filepath.Join(dir, "no-bin")}},
		state: nodeState{
			Name: "order", Dir: dir, PodLogsDir: filepath.Join(dir, "pod-logs"),
			Cgroup: "umd-test-" + id, Bridge: "umdbt" + id, CNINetwork: "umd-test-" + id,
		},
	}
	stopped := filepath.Join(dir, "stopped")
	start := func(name string) {
		t.Helper()
		// Says its name when SIGTERM stops it, once it has said it is
		// ready to.
		ready := filepath.Join(dir, name+".ready")
		os.Remove(ready)
		script := "trap 'echo " + name + " >>" + stopped + "; exit 0' TERM; : >" + ready + "; while :; do sleep 1 & wait $!; done"
		p, err := n.start(name, "/bin/sh", "-c", script)
		if err != nil {
			t.Fatal(err)
		}
		if err := waitFor(context.Background(), p, name+" to trap SIGTERM", 10*time.Second, func(context.Context) error {
			_, err := os.Stat(ready)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, p := range n.procs {
			p.stop()
		}
	}()
	for _, c := range components {
		start(c)
	}
	if _, err := n.start("helper", "/bin/true"); err == nil {
		t.Error("a node started a process that is no component")
	}
	if err := n.stopComponent("umdd"); err != nil {
		t.Fatal(err)
	}
	os.Remove(stopped)
	start("umdd")
	if err := n.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	b, err := os.ReadFile(stopped)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(components)
	slices.Reverse(want)
	if got := strings.Fields(string(b)); !slices.Equal(got, want) {
		t.Fatalf("stopped %q, want %q", got, want)
	}
	if len(n.procs) != 0 {
		t.Fatalf("after Stop the node still has %d processes", len(n.procs))
	}
}
