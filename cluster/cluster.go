package cluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Timeouts of the waits Start and AddNode make. Generous, as the machines
// these run on are small and busy; a component that fails fails fast
// anyway (its exit ends the wait).
const (
	etcdTimeout      = 60 * time.Second
	apiserverTimeout = 120 * time.Second
	controlTimeout   = 120 * time.Second
	nodeTimeout      = 180 * time.Second
)

// Config says what cluster to start.
type Config struct {
	// BinDir holds the binaries cluster/build.sh builds (etcd,
	// kube-apiserver, …, containerd, ctr, cni/); see [FindBinaries].
	BinDir string
	// Dir is the work directory everything lives in (certificates,
	// etcd's data, logs, every node's state). Empty: a new directory
	// under os.TempDir. Removed by Stop unless Keep.
	Dir string
	// ModuleDir is umd's source tree, where the pause and test images'
	// programs and umdd, umd-dra and umdprobe are built from. Empty: found
	// above the working directory.
	ModuleDir string
	// NodeIP is the address kubelets register and serve on. The kubelet
	// refuses a loopback node IP, so it is the first global IPv4 address
	// of an interface that is up unless set.
	NodeIP string
	// Keep leaves Dir in place after Stop (for reading the logs).
	Keep bool
	// Logf, if set, is told what Start and Stop are doing.
	Logf func(format string, args ...any)
}

// Cluster is a running control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) on 127.0.0.1 and the nodes
// added to it.
type Cluster struct {
	cfg Config
	// ID is short and random: it names what the cluster makes outside
	// Dir (cgroups, bridges), so two clusters never share any.
	ID  string
	Dir string
	// Kubeconfig is the path of an admin kubeconfig (system:masters).
	Kubeconfig string
	// REST and Client reach the apiserver as admin.
	REST   *rest.Config
	Client kubernetes.Interface
	// PauseImage and TestImage are the archives of the local images
	// nodes import (built by the first AddNode).
	PauseImage, TestImage string

	ca     *authority
	nodeIP string
	server string // https://127.0.0.1:port
	pki    string
	logs   string
	bins   string // umd's own programs, built by Start
	mu     sync.Mutex
	procs  []*process // control plane, in start order
	nodes  []*Node
	// sharedMade are the directories of devicePluginSocket that did not
	// exist at Start: the nodes' kubelets make them, Stop removes them.
	sharedMade []string
	stopOnce   sync.Once
	stopErr    error

	buildOnce sync.Once
	buildErr  error
}

// Images the nodes import; pods name them with imagePullPolicy: Never.
const (
	PauseImageName = "umd.local/pause:1"
	TestImageName  = "umd.local/umdprobe:1"
)

// Start makes the cluster's certificates and starts etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler, returning when the apiserver is ready and the
// controller-manager has made the default service account. On an error
// everything started is stopped again.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	c := &Cluster{cfg: cfg}
	if c.ID, err = randomHex(3); err != nil {
		return nil, err
	}
	if listening(devicePluginSocket) {
		return nil, fmt.Errorf("a kubelet already listens on %s: this host runs Kubernetes, and the test cluster's kubelets would take that socket over (the kubelet does not let one move it); use a host without a kubelet", devicePluginSocket)
	}
	c.sharedMade = missing(kubeletSharedDirs)
	if err := c.prepareDirs(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()
	if c.nodeIP, err = nodeIP(cfg.NodeIP); err != nil {
		return nil, err
	}
	if err := c.haveBinaries("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"); err != nil {
		return nil, err
	}
	c.logf("cluster %s in %s", c.ID, c.Dir)
	if err := c.makePKI(); err != nil {
		return nil, err
	}
	if err := c.startControlPlane(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) logf(format string, args ...any) {
	if c.cfg.Logf != nil {
		c.cfg.Logf(format, args...)
	}
}

func (c *Cluster) prepareDirs() error {
	dir := c.cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "umdcluster-")
		if err != nil {
			return fmt.Errorf("cluster work dir: %w", err)
		}
		dir = d
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	c.Dir = abs
	c.pki = filepath.Join(abs, "pki")
	c.logs = filepath.Join(abs, "logs")
	c.bins = filepath.Join(abs, "bin")
	for _, d := range []string{c.pki, c.logs, c.bins, filepath.Join(abs, "nodes")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("cluster work dir: %w", err)
		}
	}
	return os.WriteFile(filepath.Join(abs, "cluster-id"), []byte(c.ID+"\n"), 0o644)
}

// buildPrograms builds pause, umdd, umd-dra and umdprobe (static) into
// Dir/bin and writes the pause and test image archives, once: the first
// AddNode does it (the control plane alone needs none of them).
func (c *Cluster) buildPrograms(ctx context.Context) error {
	c.buildOnce.Do(func() { c.buildErr = c.build(ctx) })
	return c.buildErr
}

func (c *Cluster) build(ctx context.Context) error {
	mod := c.cfg.ModuleDir
	if mod == "" {
		var err error
		if mod, err = FindModule(); err != nil {
			return err
		}
	}
	c.logf("building pause, umdd, umd-dra, umdprobe")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", c.bins+"/",
		"./cluster/pause", "./cmd/umdd", "./cmd/umd-dra", "./cmd/umdprobe")
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building umd's programs in %s: %v\n%s", mod, err, out)
	}
	c.PauseImage = filepath.Join(c.Dir, "pause.oci.tar")
	c.TestImage = filepath.Join(c.Dir, "umdprobe.oci.tar")
	pause := Image{Name: PauseImageName, Files: map[string]string{"/pause": filepath.Join(c.bins, "pause")}, Entrypoint: []string{"/pause"}}
	if err := pause.WriteArchiveFile(c.PauseImage); err != nil {
		return err
	}
	test := Image{Name: TestImageName, Files: map[string]string{"/usr/bin/umdprobe": filepath.Join(c.bins, "umdprobe")}, Entrypoint: []string{"/usr/bin/umdprobe"}}
	return test.WriteArchiveFile(c.TestImage)
}

// Program returns the path of one of umd's programs Start built
// ("umdd", "umd-dra", "umdprobe", "pause").
func (c *Cluster) Program(name string) string { return filepath.Join(c.bins, name) }

func (c *Cluster) makePKI() (err error) {
	if c.ca, err = newAuthority(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.pki, "ca.crt"), c.ca.certPEM, 0o644)
}

func (c *Cluster) caFile() string { return filepath.Join(c.pki, "ca.crt") }

// haveBinaries checks that cluster/build.sh built names.
func (c *Cluster) haveBinaries(names ...string) error {
	for _, b := range names {
		if _, err := os.Stat(c.bin(b)); err != nil {
			return fmt.Errorf("cluster binaries in %q: %w (run cluster/build.sh)", c.cfg.BinDir, err)
		}
	}
	return nil
}

// bin is the path of a cluster binary.
func (c *Cluster) bin(name string) string { return filepath.Join(c.cfg.BinDir, name) }

// FeatureGates are the alpha features every component runs with (the
// apiserver, controller-manager, scheduler and kubelets alike):
// DRAPartitionableDevices lets umd-dra publish a controller whole and as
// named shares that consume one counter of its queue pairs, so the
// scheduler never gives the whole and a share at once, nor more shares
// than fit (docs/dra.md). Without it the apiserver drops the counters.
const FeatureGates = "DRAPartitionableDevices=true"

func (c *Cluster) start(name string, bin string, args ...string) (*process, error) {
	p, err := startProcess(name, c.logs, bin, args, nil)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	ports, err := freePorts(5)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort, kcmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	if err := c.startEtcd(ctx, etcdClient, etcdPeer); err != nil {
		return err
	}
	if err := c.startAPIServer(ctx, apiPort, etcdClient); err != nil {
		return err
	}
	if err := c.startControllerManager(ctx, kcmPort); err != nil {
		return err
	}
	return c.startScheduler(ctx, schedPort)
}

func (c *Cluster) startEtcd(ctx context.Context, client, peer int) error {
	cu := fmt.Sprintf("http://127.0.0.1:%d", client)
	pu := fmt.Sprintf("http://127.0.0.1:%d", peer)
	p, err := c.start("etcd", c.bin("etcd"),
		"--name=umd", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+cu, "--advertise-client-urls="+cu,
		"--listen-peer-urls="+pu, "--initial-advertise-peer-urls="+pu,
		"--initial-cluster=umd="+pu, "--initial-cluster-state=new",
		// A test cluster's data is thrown away; fsync only slows it.
		"--unsafe-no-fsync=true", "--log-level=warn")
	if err != nil {
		return err
	}
	c.logf("etcd on %s", cu)
	hc := &http.Client{Timeout: 2 * time.Second}
	return waitFor(ctx, p, "etcd's /health", etcdTimeout, func(context.Context) error {
		return httpOK(hc, cu+"/health", `"health":"true"`)
	})
}

func (c *Cluster) startAPIServer(ctx context.Context, port, etcdPort int) error {
	dir := filepath.Join(c.pki, "apiserver")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	serving, servingKey, err := c.ca.issueFiles(c.pki, "apiserver", certRequest{
		commonName: "kube-apiserver", server: true,
		ips: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(c.nodeIP), net.ParseIP("10.0.0.1")},
		dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	})
	if err != nil {
		return err
	}
	kc, kcKey, err := c.ca.issueFiles(c.pki, "apiserver-kubelet-client", certRequest{commonName: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true})
	if err != nil {
		return err
	}
	saKey, saPub, err := serviceAccountKey(c.pki)
	if err != nil {
		return err
	}
	c.server = fmt.Sprintf("https://127.0.0.1:%d", port)
	p, err := c.start("kube-apiserver", c.bin("kube-apiserver"),
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		// Advertised in the kubernetes Service's endpoints, which may not
		// be loopback; nothing in the tests dials it.
		"--advertise-address="+c.nodeIP, "--endpoint-reconciler-type=none",
		"--cert-dir="+dir, "--tls-cert-file="+serving, "--tls-private-key-file="+servingKey,
		"--client-ca-file="+c.caFile(),
		"--kubelet-client-certificate="+kc, "--kubelet-client-key="+kcKey,
		// Nodes are named, not resolvable: reach kubelets by address.
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--profiling=false",
		// Two busy cores: no flow-control bookkeeping.
		"--enable-priority-and-fairness=false",
		"--feature-gates="+FeatureGates)
	if err != nil {
		return err
	}
	admin, err := c.writeKubeconfig("admin", certRequest{commonName: "umd-admin", orgs: []string{"system:masters"}, client: true})
	if err != nil {
		return err
	}
	c.Kubeconfig = admin
	if c.REST, err = restConfig(admin); err != nil {
		return err
	}
	if c.Client, err = kubernetes.NewForConfig(c.REST); err != nil {
		return err
	}
	c.logf("kube-apiserver on %s", c.server)
	return waitFor(ctx, p, "the apiserver's /readyz", apiserverTimeout, func(ctx context.Context) error {
		b, err := c.Client.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return err
		}
		if string(b) != "ok" {
			return fmt.Errorf("/readyz says %q", b)
		}
		return nil
	})
}

func (c *Cluster) startControllerManager(ctx context.Context, port int) error {
	kc, err := c.writeKubeconfig("controller-manager", certRequest{commonName: "system:kube-controller-manager", client: true})
	if err != nil {
		return err
	}
	p, err := c.start("kube-controller-manager", c.bin("kube-controller-manager"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+filepath.Join(c.pki, "controller-manager"),
		"--leader-elect=false",
		// Each controller acts as its own service account, with the
		// roles the apiserver bootstraps for it.
		"--use-service-account-credentials=true",
		// The token controller and the root CA publisher make pods'
		// service account volumes work.
		"--root-ca-file="+c.caFile(),
		"--service-account-private-key-file="+filepath.Join(c.pki, "sa.key"),
		"--controllers=*", "--profiling=false",
		"--feature-gates="+FeatureGates)
	if err != nil {
		return err
	}
	return waitFor(ctx, p, "the default service account and kube-root-ca.crt", controlTimeout, func(ctx context.Context) error {
		if _, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return err
		}
		_, err := c.Client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err
	})
}

func (c *Cluster) startScheduler(ctx context.Context, port int) error {
	kc, err := c.writeKubeconfig("scheduler", certRequest{commonName: "system:kube-scheduler", client: true})
	if err != nil {
		return err
	}
	p, err := c.start("kube-scheduler", c.bin("kube-scheduler"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+filepath.Join(c.pki, "scheduler"),
		"--leader-elect=false", "--profiling=false",
		"--feature-gates="+FeatureGates)
	if err != nil {
		return err
	}
	// /healthz is always allowed without credentials; the serving
	// certificate is the scheduler's own self-signed one.
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	return waitFor(ctx, p, "the scheduler's /healthz", controlTimeout, func(context.Context) error {
		return httpOK(hc, fmt.Sprintf("https://127.0.0.1:%d/healthz", port), "ok")
	})
}

// httpOK GETs url and wants status 200 and a body containing want.
func httpOK(hc *http.Client, url, want string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
		return fmt.Errorf("GET %s: %s: %q", url, resp.Status, b)
	}
	return nil
}

// writeKubeconfig issues a client certificate for r and writes
// Dir/pki/name.kubeconfig with it, the CA and the server embedded.
func (c *Cluster) writeKubeconfig(name string, r certRequest) (string, error) {
	cert, key, err := c.ca.issue(r)
	if err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: umd
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: umd
  context: {cluster: umd, user: %s}
current-context: umd
`, c.server, b64(c.ca.certPEM), name, b64(cert), b64(key), name)
	path := filepath.Join(c.pki, name+".kubeconfig")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// restConfig is a client configuration from the kubeconfig at path (one
// writeKubeconfig wrote).
func restConfig(path string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Timeout = 30 * time.Second
	return cfg, nil
}

// Nodes returns the nodes added so far.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Stop stops every node (see [Node.Stop]) and then the control plane,
// removes the kubelets' device-plugin socket and the directories they made
// for it (a fixed path all nodes share), and removes Dir unless
// Config.Keep. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		for _, n := range c.Nodes() {
			errs = append(errs, n.Stop())
		}
		c.mu.Lock()
		procs := c.procs
		c.procs = nil
		c.mu.Unlock()
		for i := len(procs) - 1; i >= 0; i-- {
			errs = append(errs, procs[i].stop())
		}
		errs = append(errs, cleanShared(devicePluginSocket, c.sharedMade))
		if !c.cfg.Keep && c.Dir != "" {
			errs = append(errs, removeAll(c.Dir))
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// removeAll is os.RemoveAll that first unmounts anything left below dir,
// so a forgotten mount fails loudly instead of having its contents
// deleted through it.
func removeAll(dir string) error {
	if err := unmountBelow(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// nodeIP picks the address kubelets use: want if set, else the first
// global unicast IPv4 address of an interface that is up.
func nodeIP(want string) (string, error) {
	if want != "" {
		if net.ParseIP(want) == nil {
			return "", fmt.Errorf("node IP %q is not an IP address", want)
		}
		return want, nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("finding a node IP: %w", err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String(), nil
			}
		}
	}
	return "", errors.New("finding a node IP: no interface that is up has a global IPv4 address (the kubelet refuses loopback); set Config.NodeIP")
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// FindModule returns umd's source tree: the nearest directory at or above
// the working directory whose go.mod declares module
// github.com/umdkit/umd.
func FindModule() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			line, _ := bufio.NewReader(f).ReadString('\n')
			f.Close()
			if strings.TrimSpace(line) == "module github.com/umdkit/umd" {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("umd's source tree (go.mod of github.com/umdkit/umd) is not at or above the working directory")
		}
		dir = parent
	}
}

// FindBinaries returns the directory of the cluster binaries:
// $UMD_CLUSTER_BIN if set, else what cluster/build.sh in moduleDir prints
// (it builds whatever is missing first, which takes long only once).
func FindBinaries(ctx context.Context, moduleDir string) (string, error) {
	if d := os.Getenv("UMD_CLUSTER_BIN"); d != "" {
		return d, nil
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(moduleDir, "cluster", "build.sh"))
	cmd.Dir = moduleDir
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("cluster/build.sh: %w", err)
	}
	lines := strings.Fields(strings.TrimSpace(string(out)))
	if len(lines) == 0 {
		return "", errors.New("cluster/build.sh printed no bin dir")
	}
	return lines[len(lines)-1], nil
}

// state is what `umdcluster down` needs to clean up after a cluster whose
// process is gone: written to Dir/state.json as nodes are added.
type state struct {
	ID    string      `json:"id"`
	Nodes []nodeState `json:"nodes"`
	// SharedMade: Cluster.sharedMade.
	SharedMade []string `json:"shared_made,omitempty"`
}

func (c *Cluster) saveState() error {
	s := state{ID: c.ID, SharedMade: c.sharedMade}
	for _, n := range c.Nodes() {
		s.Nodes = append(s.Nodes, n.state)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Dir, "state.json"), b, 0o644)
}

// Clean stops and removes what a cluster left in dir when the process
// that started it is gone: every component by its pid file, then each
// node's pods, mounts, cgroups and bridge (see state.json), the kubelets'
// device-plugin socket and the directories they made for it, then dir.
func Clean(dir string) error {
	var errs []error
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	var s state
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cluster state in %s: %w", dir, err)
	}
	for _, ns := range s.Nodes {
		errs = append(errs, stopPidFiles(filepath.Join(ns.Dir, "logs")))
		errs = append(errs, ns.clean())
	}
	errs = append(errs, stopPidFiles(filepath.Join(dir, "logs")))
	errs = append(errs, cleanShared(devicePluginSocket, s.SharedMade))
	errs = append(errs, removeAll(dir))
	return errors.Join(errs...)
}
