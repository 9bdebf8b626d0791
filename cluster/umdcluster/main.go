// Command umdcluster starts and stops the Kubernetes cluster umd's
// cluster tests run on (package cluster): etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler on 127.0.0.1, and nodes each
// with its own containerd and kubelet (and, given devices, umdd serving
// simulated controllers and the umd DRA plugin).
//
//	umdcluster up [--dir DIR] [--node NAME[=DEVICES]]… [--bin DIR]
//	umdcluster down [--dir DIR]
//
// Run as root. Run `umdcluster --help` for the details.
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

	"github.com/umdkit/umd/cluster"
)

const usageText = `umdcluster — a Kubernetes cluster on this machine for umd's tests

Usage:
  umdcluster up [--dir DIR] [--node NAME[=DEVICES]]… [--bin DIR]
      start a control plane and the nodes, print the KUBECONFIG line,
      and keep them running until SIGINT or SIGTERM (then stop them)
  umdcluster down [--dir DIR]
      stop and remove what an "up" left in DIR (after it was killed)

Everything lives in DIR: certificates, etcd's data, every component's log
(DIR/logs, DIR/nodes/NAME/logs), each node's containerd, kubelet root and
CDI spec dir. Outside DIR a node makes a cgroup root in each cgroup v1
hierarchy (umd-ID-NAME), a CNI bridge (umdbID…) and links in
/var/log/containers; stopping removes them all.

DEVICES is a pcie snapshot (pcie/testdata/snapshots/*.txt) or a sysfs
tree: the node then runs umdd --simulate over it and umd-dra publishing
its devices. The binaries come from cluster/build.sh (--bin, or
$UMD_CLUSTER_BIN, or running the script, which builds what is missing).

Example:
  umdcluster up --node node-a=pcie/testdata/snapshots/qemu-cards.txt &
  export KUBECONFIG=/tmp/umdcluster/pki/admin.kubeconfig
  kubectl get nodes,resourceslices
  kill %1

Options:
`

type usageError struct{ error }

type nodeFlags []cluster.NodeConfig

func (n *nodeFlags) String() string { return "" }

func (n *nodeFlags) Set(v string) error {
	name, devices, _ := strings.Cut(v, "=")
	if name == "" {
		return fmt.Errorf("node %q: want NAME or NAME=DEVICES", v)
	}
	*n = append(*n, cluster.NodeConfig{Name: name, Devices: devices})
	return nil
}

type options struct {
	cmd   string
	dir   string
	bin   string
	nodes nodeFlags
}

func parseArgs(args []string) (options, error) {
	var o options
	if len(args) == 0 {
		return o, usageError{errors.New("no command (up or down)")}
	}
	o.cmd = args[0]
	if o.cmd == "-h" || o.cmd == "--help" || o.cmd == "help" {
		return o, flag.ErrHelp
	}
	if o.cmd != "up" && o.cmd != "down" {
		return o, usageError{fmt.Errorf("unknown command %q (want up or down)", o.cmd)}
	}
	fs := flag.NewFlagSet("umdcluster "+o.cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.dir, "dir", filepath.Join(os.TempDir(), "umdcluster"), "the cluster's work directory")
	if o.cmd == "up" {
		fs.StringVar(&o.bin, "bin", "", "the directory of cluster/build.sh's binaries")
		fs.Var(&o.nodes, "node", "a node NAME, or NAME=DEVICES (repeatable; default one node, node-a)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, usageError{err}
	}
	if fs.NArg() > 0 {
		return o, usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if o.cmd == "up" && len(o.nodes) == 0 {
		o.nodes = nodeFlags{{Name: "node-a"}}
	}
	return o, nil
}

func main() {
	o, err := parseArgs(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Print(usageText)
		fmt.Println("  --dir DIR              the work directory (default $TMPDIR/umdcluster)")
		fmt.Println("  --node NAME[=DEVICES]  a node (up; repeatable; default node-a without devices)")
		fmt.Println("  --bin DIR              cluster/build.sh's bin directory (up)")
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "umdcluster: %v (see umdcluster --help)\n", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "umdcluster: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.cmd == "down" {
		return cluster.Clean(o.dir)
	}
	if _, err := os.Stat(o.dir); err == nil {
		return fmt.Errorf("%s exists: another cluster may use it (umdcluster down --dir %s removes it)", o.dir, o.dir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	bin := o.bin
	if bin == "" {
		mod, err := cluster.FindModule()
		if err != nil {
			return err
		}
		if bin, err = cluster.FindBinaries(ctx, mod); err != nil {
			return err
		}
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "umdcluster: "+format+"\n", args...) }
	c, err := cluster.Start(ctx, cluster.Config{BinDir: bin, Dir: o.dir, Logf: logf})
	if err != nil {
		return err
	}
	for _, n := range o.nodes {
		if _, err := c.AddNode(ctx, n); err != nil {
			return errors.Join(err, c.Stop())
		}
	}
	fmt.Printf("export KUBECONFIG=%s\n", c.Kubeconfig)
	logf("running; SIGINT or SIGTERM stops it")
	<-ctx.Done()
	logf("stopping")
	return c.Stop()
}
