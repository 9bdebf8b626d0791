package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/umdkit/umd/pcie"
)

// NodeConfig says what one node is.
type NodeConfig struct {
	// Name is the node's name in the cluster (a DNS label).
	Name string
	// Devices, if set, is a pcie snapshot file
	// (pcie/testdata/snapshots/*.txt) or a sysfs tree: the node then runs
	// umdd serving simulated controllers for the NVMe functions bound to
	// vfio-pci in it, and the umd DRA plugin publishing them. Empty: a
	// node without umd devices.
	Devices string
}

// Node is one kubelet with its own containerd, root directories, ports
// and cgroup root, and, if it has devices, its umdd and umd-dra.
type Node struct {
	Name string
	// Dir holds everything of the node: containerd's root and state,
	// the kubelet's root dir, the CDI spec dir, logs, umdd's socket.
	Dir        string
	KubeletDir string
	CDIDir     string
	// Sysfs is the (restored) sysfs tree umdd and umd-dra read; empty
	// without devices.
	Sysfs string
	// UmddSocket is umdd's socket on the host; empty without devices.
	UmddSocket string

	c          *Cluster
	cfg        NodeConfig
	index      int
	state      nodeState
	ctrdSocket string
	logs       string
	mu         sync.Mutex
	procs      map[string]*process
	// kubeletHealthz is the URL of the running kubelet's healthz
	// endpoint (startKubelet sets it).
	kubeletHealthz string
	stopOnce       sync.Once
	stopErr        error
}

// components are a node's processes in the order AddNode starts them
// (umdd and umd-dra only with devices); Stop stops them in reverse.
var components = []string{"containerd", "umdd", "kubelet", "umd-dra"}

// nodeState is what cleaning up a node needs, saved in the cluster's
// state.json so that `umdcluster down` can do it without the process
// that started it.
type nodeState struct {
	Name       string `json:"name"`
	Dir        string `json:"dir"`
	Cgroup     string `json:"cgroup"`      // top-level cgroup name in every v1 hierarchy
	Bridge     string `json:"bridge"`      // the CNI bridge's link name
	CNINetwork string `json:"cni_network"` // the CNI network's name
	PodLogsDir string `json:"pod_logs_dir"`
}

// AddNode starts a node: containerd (importing the pause and test
// images), umdd if the node has devices, the kubelet, and umd-dra; it
// returns when the node is Ready and, with devices, its ResourceSlices
// are published. On an error the node is stopped again (and the error
// quotes the failing component's log).
func (c *Cluster) AddNode(ctx context.Context, cfg NodeConfig) (_ *Node, err error) {
	if cfg.Name == "" || strings.ContainsAny(cfg.Name, "/ _") {
		return nil, fmt.Errorf("node name %q: want a DNS label", cfg.Name)
	}
	if err := c.haveBinaries("kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "cni/bridge", "cni/host-local", "cni/loopback"); err != nil {
		return nil, err
	}
	c.mu.Lock()
	for _, n := range c.nodes {
		if n.Name == cfg.Name {
			c.mu.Unlock()
			return nil, fmt.Errorf("node %q already exists", cfg.Name)
		}
	}
	n := &Node{Name: cfg.Name, c: c, cfg: cfg, index: len(c.nodes), procs: map[string]*process{}}
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	n.Dir = filepath.Join(c.Dir, "nodes", cfg.Name)
	n.KubeletDir = filepath.Join(n.Dir, "kubelet")
	n.CDIDir = filepath.Join(n.Dir, "cdi")
	n.logs = filepath.Join(n.Dir, "logs")
	n.ctrdSocket = filepath.Join(n.Dir, "containerd", "containerd.sock")
	n.state = nodeState{
		Name:       cfg.Name,
		Dir:        n.Dir,
		Cgroup:     fmt.Sprintf("umd-%s-%s", c.ID, cfg.Name),
		Bridge:     fmt.Sprintf("umdb%s%d", c.ID, n.index),
		CNINetwork: fmt.Sprintf("umd-%s-%s", c.ID, cfg.Name),
		PodLogsDir: filepath.Join(n.Dir, "pod-logs"),
	}
	for _, d := range []string{n.KubeletDir, n.CDIDir, n.logs, n.state.PodLogsDir, filepath.Dir(n.ctrdSocket)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("node %s: %w", cfg.Name, err)
		}
	}
	if err := c.saveState(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("node %s: %w", cfg.Name, err), n.Stop())
		}
	}()
	c.logf("node %s in %s", cfg.Name, n.Dir)
	if err := c.buildPrograms(ctx); err != nil {
		return nil, err
	}
	if err := n.makeCgroups(); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	if err := n.importImages(ctx); err != nil {
		return nil, err
	}
	if cfg.Devices != "" {
		if err := n.restoreSysfs(); err != nil {
			return nil, err
		}
		if err := n.startUmdd(ctx); err != nil {
			return nil, err
		}
	}
	if err := n.startKubelet(ctx); err != nil {
		return nil, err
	}
	if cfg.Devices != "" {
		if err := n.startPlugin(ctx); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func (n *Node) start(name, bin string, args ...string) (*process, error) {
	return n.startEnv(name, bin, nil, args...)
}

// startEnv is start with extra environment variables.
func (n *Node) startEnv(name, bin string, env []string, args ...string) (*process, error) {
	if !slices.Contains(components, name) {
		return nil, fmt.Errorf("node %s: %q is no component (Stop would not stop it)", n.Name, name)
	}
	p, err := startProcess(name, n.logs, bin, args, env)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.procs[name] = p
	n.mu.Unlock()
	return p, nil
}

// Log returns the path of a component's log on this node ("containerd",
// "kubelet", "umdd", "umd-dra").
func (n *Node) Log(component string) string { return filepath.Join(n.logs, component+".log") }

// containerdConfig is containerd 2's configuration (version 3) for one
// node: everything under the node's dir, CRI with CDI from the node's
// spec dir, the local pause image, runc with its state under the node
// too, and no TCP listeners but the streaming server on a free port.
const containerdConfig = `version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "%[6]d"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %[7]q

[plugins."io.containerd.cri.v1.runtime"]
  enable_cdi = true
  cdi_spec_dirs = [%[8]q]
  netns_mounts_under_state_dir = true
  # Containers' OOM scores no lower than containerd's own: lowering one
  # needs CAP_SYS_RESOURCE, which test VMs may not grant even to root
  # (runc then fails with "can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = %[9]q
        Root = %[10]q
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%[11]q]
    conf_dir = %[12]q
    max_conf_num = 1
`

// cniConfig is the node's pod network: a bridge of its own with
// host-local addresses; pods need no routes off the node.
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [{
    "type": "bridge",
    "bridge": %q,
    "isGateway": false,
    "ipMasq": false,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": "10.244.%d.0/24"}]],
      "dataDir": %q
    }
  }]
}
`

func (n *Node) startContainerd(ctx context.Context) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	d := filepath.Join(n.Dir, "containerd")
	cniConf := filepath.Join(d, "cni-conf")
	if err := os.MkdirAll(cniConf, 0o755); err != nil {
		return err
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		return fmt.Errorf("runc is not installed (apt-get install runc; `make test-cluster` does): %w", err)
	}
	conf := fmt.Sprintf(cniConfig, n.state.CNINetwork, n.state.Bridge, 200+n.index, filepath.Join(d, "cni-ipam"))
	if err := os.WriteFile(filepath.Join(cniConf, "10-umd.conflist"), []byte(conf), 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf(containerdConfig, filepath.Join(d, "root"), filepath.Join(d, "state"),
		n.ctrdSocket, n.ctrdSocket+".ttrpc", filepath.Join(d, "opt"), ports[0],
		PauseImageName, n.CDIDir, runc, filepath.Join(d, "runc"),
		filepath.Join(n.c.cfg.BinDir, "cni"), cniConf)
	cfgPath := filepath.Join(d, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	// containerd finds its shim on PATH.
	p, err := n.startEnv("containerd", n.c.bin("containerd"),
		[]string{"PATH=" + n.c.cfg.BinDir + ":" + os.Getenv("PATH")}, "--config", cfgPath)
	if err != nil {
		return err
	}
	return waitFor(ctx, p, "containerd's socket", nodeTimeout, func(context.Context) error {
		return dialable(n.ctrdSocket)
	})
}

// ctr runs the ctr client against the node's containerd in the CRI's
// namespace.
func (n *Node) ctr(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	full := append([]string{"--address", n.ctrdSocket, "--namespace", "k8s.io"}, args...)
	out, err := exec.CommandContext(ctx, n.c.bin("ctr"), full...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// importImages imports the pause and test images, unpacked for the
// overlayfs snapshotter the CRI uses.
func (n *Node) importImages(ctx context.Context) error {
	for _, img := range []string{n.c.PauseImage, n.c.TestImage} {
		if _, err := n.ctr(ctx, "images", "import", "--snapshotter", "overlayfs", img); err != nil {
			return n.procs["containerd"].failure("importing %s: %v", filepath.Base(img), err)
		}
	}
	out, err := n.ctr(ctx, "images", "ls", "-q")
	if err != nil {
		return err
	}
	for _, name := range []string{PauseImageName, TestImageName} {
		if !strings.Contains(string(out), name) {
			return fmt.Errorf("image %s missing after import; containerd has:\n%s", name, out)
		}
	}
	return nil
}

// restoreSysfs makes the node's sysfs tree: a snapshot file is restored
// into Dir/sysfs, a directory is used as it is.
func (n *Node) restoreSysfs() error {
	st, err := os.Stat(n.cfg.Devices)
	if err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	if st.IsDir() {
		n.Sysfs = n.cfg.Devices
		return nil
	}
	n.Sysfs = filepath.Join(n.Dir, "sysfs")
	if err := os.MkdirAll(n.Sysfs, 0o755); err != nil {
		return err
	}
	f, err := os.Open(n.cfg.Devices)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pcie.RestoreSnapshot(f, n.Sysfs); err != nil {
		return fmt.Errorf("devices %s: %w", n.cfg.Devices, err)
	}
	return nil
}

// startUmdd starts umdd serving simulated controllers for the node's
// devices (the host has no VFIO) on Dir/umdd.sock.
func (n *Node) startUmdd(ctx context.Context) error {
	n.UmddSocket = filepath.Join(n.Dir, "umdd.sock")
	p, err := n.start("umdd", n.c.Program("umdd"), "--simulate", n.Sysfs, "--socket", n.UmddSocket)
	if err != nil {
		return err
	}
	return waitFor(ctx, p, "umdd's socket", nodeTimeout, func(context.Context) error {
		return dialable(n.UmddSocket)
	})
}

// kubeletConfig is the node's KubeletConfiguration: cgroupfs under the
// node's own cgroup root (cgroup v1 allowed), its own ports, pod log dir
// and volume plugin dir, client certificates from the cluster CA, and
// neither image garbage collection nor disk-pressure eviction (the
// images are imported, never pulled); DRAPartitionableDevices on, as
// FeatureGates turns it on in the control plane.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]q
port: %[2]d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %[3]d
tlsCertFile: %[4]q
tlsPrivateKeyFile: %[5]q
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[6]q}
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: %[7]q
cgroupDriver: cgroupfs
cgroupRoot: %[8]q
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failSwapOn: false
failCgroupV1: false
podLogsDir: %[9]q
volumePluginDir: %[10]q
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
maxPods: 30
resolvConf: /etc/resolv.conf
serializeImagePulls: false
featureGates: {DRAPartitionableDevices: true}
`

// startKubelet writes the kubelet's configuration (fresh ports) and
// starts it, returning once it answers on its healthz endpoint and the
// node is Ready.
func (n *Node) startKubelet(ctx context.Context) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	pki := filepath.Join(n.Dir, "pki")
	if err := os.MkdirAll(pki, 0o755); err != nil {
		return err
	}
	serving, servingKey, err := n.c.ca.issueFiles(pki, "kubelet", certRequest{
		commonName: "system:node:" + n.Name, server: true,
		ips: []net.IP{net.ParseIP(n.c.nodeIP), net.ParseIP("127.0.0.1")}, dns: []string{n.Name, "localhost"},
	})
	if err != nil {
		return err
	}
	kc, err := n.c.writeKubeconfig("node-"+n.Name, certRequest{commonName: "system:node:" + n.Name, orgs: []string{"system:nodes"}, client: true})
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(kubeletConfig, n.c.nodeIP, ports[0], ports[1], serving, servingKey, n.c.caFile(),
		"unix://"+n.ctrdSocket, "/"+n.state.Cgroup, n.state.PodLogsDir, filepath.Join(n.Dir, "volume-plugins"))
	cfgPath := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := n.start("kubelet", n.c.bin("kubelet"),
		"--config="+cfgPath, "--kubeconfig="+kc, "--root-dir="+n.KubeletDir,
		"--cert-dir="+pki, "--hostname-override="+n.Name, "--node-ip="+n.c.nodeIP)
	if err != nil {
		return err
	}
	// Healthy first: after a restart the node is still Ready in the API,
	// as the old kubelet last reported it.
	healthz := fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[1])
	n.mu.Lock()
	n.kubeletHealthz = healthz
	n.mu.Unlock()
	if err := waitHealthy(ctx, p, "the kubelet of node "+n.Name, healthz, nodeTimeout); err != nil {
		return err
	}
	return waitFor(ctx, p, "node "+n.Name+" to be Ready", nodeTimeout, func(ctx context.Context) error {
		node, err := n.c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("condition Ready is %s: %s", cond.Status, cond.Message)
			}
		}
		return errors.New("no Ready condition yet")
	})
}

// startPlugin starts umd-dra on the node and waits for its
// ResourceSlices.
func (n *Node) startPlugin(ctx context.Context) error {
	p, err := n.start("umd-dra", n.c.Program("umd-dra"), "run",
		"--node", n.Name, "--kubeconfig", n.c.Kubeconfig,
		"--sysfs", n.Sysfs, "--socket", n.UmddSocket,
		"--kubelet-dir", n.KubeletDir, "--state-dir", filepath.Join(n.Dir, "dra-state"),
		"--cdi-dir", n.CDIDir)
	if err != nil {
		return err
	}
	return waitFor(ctx, p, "ResourceSlices of node "+n.Name, nodeTimeout, func(ctx context.Context) error {
		l, err := n.c.Client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name})
		if err != nil {
			return err
		}
		if len(l.Items) == 0 {
			return errors.New("none published yet")
		}
		return nil
	})
}

// deleteTasks kills and deletes every container task through containerd,
// so that their shims exit and clean up after themselves (their sockets,
// runc's state). Best effort: what is left is killed by cgroup and by
// command line afterwards.
func (n *Node) deleteTasks() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := n.ctr(ctx, "tasks", "ls", "-q")
	if err != nil {
		return
	}
	for _, id := range strings.Fields(string(out)) {
		_, _ = n.ctr(ctx, "tasks", "delete", "--force", id)
	}
}

// Stop stops the node and removes what it made outside its dir: its
// components in the reverse of their start order (umd-dra, the kubelet,
// umdd, containerd), every process in the node's pod cgroups (and
// containerd's shims with them) before containerd; then mounts below the
// node's dir, its cgroups, its bridge, the kubelet's links in
// /var/log/containers, and its Node object in the cluster. The dir itself
// stays (its logs); Cluster.Stop removes it.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		var errs []error
		n.mu.Lock()
		procs := n.procs
		n.procs = map[string]*process{}
		n.mu.Unlock()
		for i := len(components) - 1; i >= 0; i-- {
			name := components[i]
			p := procs[name]
			if name == "containerd" {
				if p != nil && !p.exited() {
					n.deleteTasks()
				}
				errs = append(errs, killCgroup(n.state.Cgroup))
			}
			if p != nil {
				errs = append(errs, p.stop())
			}
		}
		errs = append(errs, n.state.clean())
		errs = append(errs, n.deleteNodeObject())
		n.stopErr = errors.Join(errs...)
	})
	return n.stopErr
}

// deleteNodeObject deletes the Node object the node's kubelet registered,
// so that the scheduler stops placing pods on a node that is gone; the
// garbage collector then removes what the Node owns (its ResourceSlices)
// and the pod garbage collector its pods. A Node never registered is
// fine, and so is a cluster without a client (tests of the node alone).
func (n *Node) deleteNodeObject() error {
	if n.c == nil || n.c.Client == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := n.c.Client.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("node %s: deleting its Node object: %w", n.Name, err)
	}
	return nil
}
