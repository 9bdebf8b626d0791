package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// stopComponent stops one of the node's processes ("umd-dra", "kubelet")
// and forgets it, so that it can be started again under the same name
// (its log goes on in the same file).
func (n *Node) stopComponent(name string) error {
	n.mu.Lock()
	p := n.procs[name]
	delete(n.procs, name)
	n.mu.Unlock()
	if p == nil {
		return fmt.Errorf("node %s: no %s is running", n.Name, name)
	}
	if err := p.stop(); err != nil {
		return fmt.Errorf("node %s: stopping %s: %w", n.Name, name, err)
	}
	return nil
}

func (n *Node) proc(name string) *process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.procs[name]
}

// RestartPlugin stops the node's umd-dra (SIGTERM: it unregisters and
// removes its sockets; its checkpoint and CDI specs stay) and starts it
// again with the same arguments, returning once it listens on its DRA
// and registration sockets again. The kubelet then registers it anew on
// its own (its plugin watcher sees the registration socket appear).
func (n *Node) RestartPlugin(ctx context.Context) error {
	if n.UmddSocket == "" {
		return fmt.Errorf("node %s has no umd devices, so no umd-dra", n.Name)
	}
	if err := n.stopComponent("umd-dra"); err != nil {
		return err
	}
	if err := n.startPlugin(ctx); err != nil {
		return err
	}
	socks := []string{
		filepath.Join(n.KubeletDir, "plugins", "umd.umdkit.io", "dra.sock"),
		filepath.Join(n.KubeletDir, "plugins_registry", "umd.umdkit.io-reg.sock"),
	}
	return waitFor(ctx, n.proc("umd-dra"), "umd-dra's sockets on node "+n.Name, nodeTimeout, func(context.Context) error {
		for _, s := range socks {
			if err := dialable(s); err != nil {
				return err
			}
		}
		return nil
	})
}

// RestartKubelet stops the node's kubelet and starts it again over the
// same root directory (its checkpoints, the plugin registrations it
// rediscovers, the pods containerd still runs), with fresh ports; it
// returns once the new kubelet answers on its healthz endpoint and the
// node is Ready (see startKubelet).
func (n *Node) RestartKubelet(ctx context.Context) error {
	if err := n.stopComponent("kubelet"); err != nil {
		return err
	}
	return n.startKubelet(ctx)
}

// WaitPod waits until the node's kubelet lists the pod in its pod
// resources API (<kubelet-dir>/pod-resources/kubelet.sock). A restarted
// kubelet knows its running pods again only once its API server source
// has synced; a pod deleted before then is torn down as an orphan, and
// the kubelet unprepares its claims only in its DRA manager's reconcile
// loop, up to 60 s later.
func (n *Node) WaitPod(ctx context.Context, namespace, name string) error {
	sock := filepath.Join(n.KubeletDir, "pod-resources", "kubelet.sock")
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("node %s: the kubelet's pod resources API: %w", n.Name, err)
	}
	defer conn.Close()
	client := podresourcesv1.NewPodResourcesListerClient(conn)
	return waitFor(ctx, n.proc("kubelet"), "the kubelet of node "+n.Name+" to know pod "+namespace+"/"+name, nodeTimeout, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		resp, err := client.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
		if err != nil {
			return err
		}
		for _, p := range resp.GetPodResources() {
			if p.GetNamespace() == namespace && p.GetName() == name {
				return nil
			}
		}
		return fmt.Errorf("%d pods listed, not this one", len(resp.GetPodResources()))
	})
}
