package cluster

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestShimSockets: the socket names match containerd's
// shim.SocketAddress (sha256 of address/namespace/id), for shims only.
func TestShimSockets(t *testing.T) {
	got := shimSockets([]string{"/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc", "-address", "/n/containerd.sock"})
	// printf %s /n/containerd.sock/k8s.io/abc | sha256sum
	want := "/run/containerd/s/b49c12cc27ee6d856016dd471cc1562b5e4e77d96e98397249bb6855b3d339bb"
	if len(got) != 2 || got[0] != want || got[1] != "/run/containerd/s/6bc56370802416331cc83b71414d1a2c341d2a978f38a27bd8df79ae70c1cbcb" {
		t.Fatalf("got %q, want %q and its debug socket", got, want)
	}
	if s := shimSockets([]string{"/usr/bin/kubelet", "-id", "abc"}); s != nil {
		t.Fatalf("a kubelet has shim sockets %q", s)
	}
	if s := shimSockets([]string{"/bin/containerd-shim-runc-v2", "-id", "abc"}); s != nil {
		t.Fatalf("a shim without namespace and address has sockets %q", s)
	}
}

func TestOwnResult(t *testing.T) {
	sb := []string{"995feb"}
	for name, want := range map[string]bool{
		"umd-abc123-node-a-995feb-eth0": true,  // the node's bridge network
		"cni-loopback-995feb-lo":        true,  // containerd's loopback of its sandbox
		"cni-loopback-123456-lo":        false, // another runtime's sandbox
		"umd-abc123-node-b-777777-eth0": false, // another node
	} {
		if got := ownResult(name, "umd-abc123-node-a", sb); got != want {
			t.Errorf("ownResult(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestKillCgroupIn: killCgroupIn kills every process listed in the
// cgroup tree, in each hierarchy it is given (deep cgroups too, a
// hierarchy without the tree skipped), and returns once none is listed;
// it reads no mount table itself, so a fake tree of cgroup.procs files
// stands in for the hierarchies.
func TestKillCgroupIn(t *testing.T) {
	dir := t.TempDir()
	h1, h2, h3 := filepath.Join(dir, "cpu"), filepath.Join(dir, "memory"), filepath.Join(dir, "pids")
	procs := []string{
		filepath.Join(h1, "umd-x", "kubepods", "pod1", "cgroup.procs"),
		filepath.Join(h2, "umd-x", "cgroup.procs"),
	}
	for _, d := range []string{filepath.Dir(procs[0]), filepath.Dir(procs[1]), filepath.Join(h3, "other")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	pid := []byte(strconv.Itoa(sleeper.Process.Pid) + "\n")
	for _, p := range procs {
		if err := os.WriteFile(p, pid, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// As the kernel does: a process gone is listed no more.
	waited := make(chan error, 1)
	go func() {
		err := sleeper.Wait()
		for _, p := range procs {
			os.WriteFile(p, nil, 0o644)
		}
		waited <- err
	}()
	start := time.Now()
	if err := killCgroupIn([]string{h1, h2, h3}, "umd-x"); err != nil {
		sleeper.Process.Kill()
		t.Fatal(err)
	}
	if d := time.Since(start); d > stopGrace/2 {
		t.Errorf("took %v", d)
	}
	var ee *exec.ExitError
	err := <-waited
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the process in the cgroup ended with %v, want SIGKILL", err)
	}
	if err := killCgroupIn([]string{h1, h2, h3}, "umd-none"); err != nil {
		t.Fatalf("no such cgroup: %v", err)
	}
}

// TestCleanShared: the shared device-plugin socket is removed only once
// nothing listens on it, and of the directories the cluster made only the
// empty ones go.
func TestCleanShared(t *testing.T) {
	root := t.TempDir()
	made := []string{filepath.Join(root, "kubelet"), filepath.Join(root, "kubelet", "device-plugins")}
	other := filepath.Join(root, "kept")
	for _, d := range append(made, other) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got := missing(append(made, filepath.Join(root, "absent"))); len(got) != 1 || got[0] != filepath.Join(root, "absent") {
		t.Errorf("missing = %v, want only the absent dir", got)
	}
	sock := filepath.Join(made[1], "kubelet.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if !listening(sock) {
		t.Fatal("listening = false with a listener")
	}
	// A kubelet still serves it: it stays, and so do its directories.
	if err := cleanShared(sock, made); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("a live socket was removed: %v", err)
	}
	l.Close()
	if listening(sock) {
		t.Fatal("listening = true after Close")
	}
	// Stale now: it goes, and the directories the cluster made with it;
	// one it did not make stays.
	if err := cleanShared(sock, made); err != nil {
		t.Fatal(err)
	}
	for _, d := range made {
		if _, err := os.Lstat(d); err == nil {
			t.Errorf("%s is still there", d)
		}
	}
	if _, err := os.Lstat(other); err != nil {
		t.Errorf("a directory the cluster did not make: %v", err)
	}
	// A directory that is not empty is kept, without an error.
	if err := os.MkdirAll(made[1], 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(made[1], "someone-else"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cleanShared(sock, made); err != nil {
		t.Errorf("directories in use: %v", err)
	}
	if _, err := os.Lstat(made[1]); err != nil {
		t.Errorf("a directory with a file in it was removed: %v", err)
	}
}
