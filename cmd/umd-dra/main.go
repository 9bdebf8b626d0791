// Command umd-dra is umd's Kubernetes DRA (resource.k8s.io/v1) driver:
// `umd-dra run` is the kubelet plugin of one node. It publishes the
// node's umd devices as ResourceSlices, registers with the kubelet, and
// prepares each claim the kubelet hands it by reserving what the claim
// asks for in umdd (the broker) under the claim's UID and writing the CDI
// spec that gives the container umdd's socket and the claim's identity.
// Two helper commands print what the plugin would publish and check claim
// parameters, without a cluster. All of it is built on package dra.
//
//	umd-dra run --node NAME --socket PATH [--kubeconfig FILE] [--sysfs DIR] …
//	umd-dra slices --node NAME [--sysfs DIR] [--socket PATH]
//	umd-dra params FILE…
//
// Run `umd-dra --help` for the details.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/dra"
	"github.com/umdkit/umd/pcie"
)

const usageText = `umd-dra — umd's Kubernetes Dynamic Resource Allocation driver (umd.umdkit.io)

Usage:
  umd-dra run --node NAME --socket PATH [options]
      the kubelet plugin of this node; runs until SIGTERM or SIGINT
  umd-dra slices --node NAME [--sysfs DIR] [--socket PATH] [--generation N]
      print, as YAML, the ResourceSlices this node would publish
  umd-dra params FILE…
      decode, merge (in order), default and check UmdClaimParameters
      documents (YAML or JSON), and print the result

What run does:
  1. scans --sysfs for NVMe controllers bound to vfio-pci (and their SR-IOV
     VFs bound to vfio-pci) and asks umdd (--socket) for each one's model,
     serial, namespaces and capacity: these are the node's devices, each
     controller whole and as --shares named shares (nvme-…-share-0, …);
  2. registers with the kubelet: a socket umd.umdkit.io-reg.sock in
     <kubelet-dir>/plugins_registry, and the DRA service (gRPC v1 and
     v1beta1) on <kubelet-dir>/plugins/umd.umdkit.io/dra.sock;
  3. publishes the devices in ResourceSlices through the API server
     (--kubeconfig): one pool named after the node;
  4. on each claim the kubelet prepares: merges the claim's umd parameters
     (the DeviceClass's opaque configurations first, then the claim's;
     each applies to the requests it names), asks umdd to reserve them on
     every allocated device under the claim's UID, writes the CDI spec
     <cdi-dir>/umd.umdkit.io-<claim UID>.json (umdd's socket mounted at
     --container-socket, UMD_CLAIM, UMD_MODE, UMD_DEVICE_<name>=<BDF>,<grant>;
     an exclusive claim gets the device's /dev/vfio nodes instead) and
     records the claim in <state-dir>/umd-dra-checkpoint.json. A claim
     that cannot be prepared gets an error naming it and the field at
     fault, which the kubelet shows in the pod's events;
  5. on unprepare: releases the claim in umdd, removes its spec and record.
  Both are idempotent and survive a restart of umd-dra, the kubelet or
  umdd. On SIGTERM or SIGINT it unregisters and removes its sockets; the
  slices stay until the kubelet sees the driver gone.

Claim parameters (opaque, driver umd.umdkit.io, apiVersion
umd.umdkit.io/v1alpha1, kind UmdClaimParameters): queuePairs (1-64,
default 1), queueDepth (2-4096, default 64), poolBytes (multiple of 4096,
default 4 MiB), completion (poll|irq, default irq), mode
(mediated|trusted|vf|exclusive, default mediated). docs/dra.md has all of
it; deploy/dra has DeviceClasses and example claims.

Options of run:
  --node NAME              this node's name (default: $NODE_NAME); required
  --socket PATH            umdd's socket; required. umd-dra's uid must be one
                           of umdd's reservers (root by default)
  --kubeconfig FILE        kubeconfig for the API server (default: $KUBECONFIG;
                           neither: the pod's service account)
  --sysfs DIR|FILE         sysfs root to scan (default /sys), or a snapshot
                           file ("umdprobe snapshot"), as umdd --simulate takes
  --kubelet-dir DIR        the kubelet's root directory (default /var/lib/kubelet)
  --state-dir DIR          where the checkpoint is kept
                           (default <kubelet-dir>/plugins/umd.umdkit.io)
  --cdi-dir DIR            where CDI specs are written, as the container
                           runtime reads them (default /var/run/cdi)
  --container-socket PATH  where containers find umdd's socket
                           (default /run/umd/umdd.sock)
  --shares N               publish each controller whose queue pairs umdd
                           reports also as N named shares (default 4, 0 to
                           32; fewer if it has fewer queue pairs): claims on
                           shares of one controller get sessions on it side
                           by side; the scheduler needs the
                           DRAPartitionableDevices feature (Kubernetes 1.34)
  --v N                    log verbosity (klog); 6 logs every gRPC call

Options of slices:
  --node NAME              node name: the pool's name and the slices' nodeName (required)
  --sysfs DIR|FILE         sysfs root to scan (default /sys), or a snapshot file
  --socket PATH            umdd's socket, to add model, serial, namespaces, capacity
  --generation N           the pool's generation (default 1)
  --shares N               as for run (default 4)
`

type usageError struct{ error }

type options struct {
	cmd        string
	node       string
	sysfs      string
	socket     string
	generation int64
	files      []string
	// run
	kubeconfig      string
	kubeletDir      string
	stateDir        string
	cdiDir          string
	containerSocket string
	verbosity       int
	shares          int // run, slices
}

// defaultShares is how many named shares run and slices split each
// controller into (whose queue pairs umdd reports).
const defaultShares = 4

// parseArgs parses a command line; getenv supplies the defaults taken
// from the environment (NODE_NAME, KUBECONFIG).
func parseArgs(args []string, getenv func(string) string) (options, error) {
	var o options
	if len(args) == 0 {
		return o, usageError{errors.New("no command (run, slices or params)")}
	}
	o.cmd = args[0]
	fs := flag.NewFlagSet("umd-dra "+o.cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	switch o.cmd {
	case "run":
		fs.StringVar(&o.node, "node", getenv("NODE_NAME"), "")
		fs.StringVar(&o.socket, "socket", "", "")
		fs.StringVar(&o.kubeconfig, "kubeconfig", getenv("KUBECONFIG"), "")
		fs.StringVar(&o.sysfs, "sysfs", "/sys", "")
		fs.StringVar(&o.kubeletDir, "kubelet-dir", "/var/lib/kubelet", "")
		fs.StringVar(&o.stateDir, "state-dir", "", "")
		fs.StringVar(&o.cdiDir, "cdi-dir", "/var/run/cdi", "")
		fs.StringVar(&o.containerSocket, "container-socket", dra.DefaultContainerSocket, "")
		fs.IntVar(&o.verbosity, "v", 0, "")
		fs.IntVar(&o.shares, "shares", defaultShares, "")
	case "slices":
		fs.StringVar(&o.node, "node", "", "")
		fs.StringVar(&o.sysfs, "sysfs", "/sys", "")
		fs.StringVar(&o.socket, "socket", "", "")
		fs.Int64Var(&o.generation, "generation", 1, "")
		fs.IntVar(&o.shares, "shares", defaultShares, "")
	case "params":
	default:
		return o, usageError{fmt.Errorf("unknown command %q (run, slices or params)", o.cmd)}
	}
	if err := fs.Parse(args[1:]); err != nil {
		return o, usageError{err}
	}
	o.files = fs.Args()
	if o.shares < 0 || o.shares > dra.MaxShares {
		return o, usageError{fmt.Errorf("%s: --shares %d: want 0 to %d", o.cmd, o.shares, dra.MaxShares)}
	}
	switch o.cmd {
	case "run":
		switch {
		case o.node == "":
			return o, usageError{errors.New("run: --node (or $NODE_NAME) is required")}
		case o.socket == "":
			return o, usageError{errors.New("run: --socket (umdd's) is required: claims are reserved there")}
		case !filepath.IsAbs(o.containerSocket):
			return o, usageError{fmt.Errorf("run: --container-socket %q must be an absolute path", o.containerSocket)}
		case o.verbosity < 0:
			return o, usageError{fmt.Errorf("run: --v %d must be 0 or more", o.verbosity)}
		case fs.NArg() > 0:
			return o, usageError{fmt.Errorf("run: unexpected arguments %q", fs.Args())}
		}
		if o.stateDir == "" {
			o.stateDir = pluginDir(o.kubeletDir)
		}
	case "slices":
		switch {
		case o.node == "":
			return o, usageError{errors.New("slices: --node is required")}
		case fs.NArg() > 0:
			return o, usageError{fmt.Errorf("slices: unexpected arguments %q", fs.Args())}
		}
	case "params":
		if fs.NArg() == 0 {
			return o, usageError{errors.New("params: no files")}
		}
	}
	return o, nil
}

func registrarDir(kubeletDir string) string { return filepath.Join(kubeletDir, "plugins_registry") }
func pluginDir(kubeletDir string) string    { return filepath.Join(kubeletDir, "plugins", dra.DriverName) }

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" || a == "help" }

func main() {
	args := os.Args[1:]
	if len(args) > 0 && isHelp(args[0]) || len(args) > 1 && isHelp(args[1]) {
		fmt.Print(usageText)
		return
	}
	o, err := parseArgs(args, os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "umd-dra: %v\nRun umd-dra --help for usage.\n", err)
		os.Exit(2)
	}
	if o.cmd == "run" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		err = runPlugin(ctx, o, kubeClient, os.Stderr)
	} else {
		err = run(o, os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "umd-dra: %v\n", err)
		os.Exit(1)
	}
}

func run(o options, w io.Writer) error {
	switch o.cmd {
	case "slices":
		return printSlices(o, w)
	default:
		return checkParams(o, w)
	}
}

// kubeClient makes a client from a kubeconfig file, or from the pod's
// service account when there is none.
func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		if kubeconfig == "" {
			return nil, fmt.Errorf("no --kubeconfig, and not in a pod (%w)", err)
		}
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.UserAgent = "umd-dra"
	return kubernetes.NewForConfig(cfg)
}

// runPlugin runs the kubelet plugin until ctx ends (nil: a signal asked
// it to stop) or the plugin fails (its error).
func runPlugin(ctx context.Context, o options, newClient func(string) (kubernetes.Interface, error), logw io.Writer) error {
	var lf flag.FlagSet
	klog.InitFlags(&lf)
	if err := lf.Set("v", fmt.Sprint(o.verbosity)); err != nil {
		return err
	}

	inv, err := inventory(o.sysfs, o.socket, o.shares)
	if err != nil {
		return err
	}
	prep, err := dra.NewPreparer(dra.PreparerConfig{
		StateDir:        o.stateDir,
		CDIDir:          o.cdiDir,
		Socket:          o.socket,
		ContainerSocket: o.containerSocket,
		Inventory:       inv,
		Reserver:        dra.NewBrokerReserver(o.socket),
	})
	if err != nil {
		return err
	}
	client, err := newClient(o.kubeconfig)
	if err != nil {
		return err
	}
	p, err := dra.StartPlugin(ctx, dra.PluginConfig{
		NodeName:     o.node,
		KubeClient:   client,
		Inventory:    inv,
		Preparer:     prep,
		RegistrarDir: registrarDir(o.kubeletDir),
		PluginDir:    pluginDir(o.kubeletDir),
	})
	if err != nil && ctx.Err() != nil {
		// Stopped while starting (StartPlugin waits for the API server).
		fmt.Fprintf(logw, "umd-dra: stopped while starting: %v\n", context.Cause(ctx))
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(logw, "umd-dra: node %s: publishing %d devices; registered in %s; serving %s\n",
		o.node, len(inv.Devices()), registrarDir(o.kubeletDir), filepath.Join(pluginDir(o.kubeletDir), "dra.sock"))
	<-p.Done()
	p.Stop()
	if ctx.Err() != nil {
		fmt.Fprintf(logw, "umd-dra: stopped: %v\n", context.Cause(ctx))
		return nil
	}
	return p.Err()
}

// inventory scans sysfs and, with umdd's socket, adds what umdd's
// device list says of each device.
func inventory(sysfs, socket string, shares int) (*dra.Inventory, error) {
	sys, err := scan(sysfs)
	if err != nil {
		return nil, err
	}
	var ids dra.IdentitySource
	if socket != "" {
		c, err := broker.Dial(socket)
		if err != nil {
			return nil, fmt.Errorf("umdd at %s (is it running?): %w", socket, err)
		}
		devs, err := c.Devices()
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("listing umdd's devices: %w", err)
		}
		m, err := dra.BrokerIdentities(devs)
		if err != nil {
			return nil, err
		}
		ids = m
	}
	return dra.PublishWith(sys, ids, dra.PublishOptions{Shares: shares})
}

// scan scans the sysfs tree at root: a directory, or a snapshot file
// ("umdprobe snapshot"), as umdd --simulate takes, restored into a
// temporary directory for the scan.
func scan(path string) (*pcie.System, error) {
	root, cleanup, err := pcie.OpenTree(path)
	if err != nil {
		return nil, fmt.Errorf("--sysfs: %w", err)
	}
	defer cleanup()
	return pcie.Scan(pcie.Options{SysfsRoot: root})
}

func printSlices(o options, w io.Writer) error {
	inv, err := inventory(o.sysfs, o.socket, o.shares)
	if err != nil {
		return err
	}
	out, err := yaml.Marshal(inv.Slices(o.node, o.generation))
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

func checkParams(o options, w io.Writer) error {
	configs := make([][]byte, 0, len(o.files))
	for _, f := range o.files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		configs = append(configs, js)
	}
	p, err := dra.ParseParameters(configs...)
	if err != nil {
		// Configuration i is file i.
		msg := err.Error()
		for i := len(o.files) - 1; i >= 0; i-- { // "configuration 10" before "configuration 1"
			msg = strings.ReplaceAll(msg, fmt.Sprintf("configuration %d", i), o.files[i])
		}
		return errors.New(msg)
	}
	out, err := yaml.Marshal(p)
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}
