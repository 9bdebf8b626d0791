package cluster

import "testing"

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
