// Command umd-dra is the start of umd's Kubernetes DRA (resource.k8s.io/v1)
// driver. It does not yet register with the kubelet: today it prints the
// ResourceSlices a node would publish and checks claim parameters, both
// built on package dra.
//
//	umd-dra slices --node NAME [--sysfs DIR] [--socket PATH]
//	umd-dra params FILE…
//
// Run `umd-dra --help` for the details.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/dra"
	"github.com/umdkit/umd/pcie"
)

const usageText = `umd-dra — umd's Kubernetes Dynamic Resource Allocation driver (in progress)

Usage:
  umd-dra slices --node NAME [--sysfs DIR] [--socket PATH] [--generation N]
      print, as YAML, the ResourceSlices this node would publish
  umd-dra params FILE…
      decode, merge (in order), default and check UmdClaimParameters
      documents (YAML or JSON), and print the result

What exists (package dra, see docs/dra.md):
  - the devices a node publishes: one per NVMe controller bound to vfio-pci,
    and one per enabled SR-IOV virtual function of such a controller that is
    bound to vfio-pci too, with the attributes resource.kubernetes.io/pcieRoot
    and pciBusID, umd.umdkit.io/numaNode, card, vendorID, deviceID,
    iommuGroup, function, physfn, and, from umdd's device list (--socket),
    model, serial, namespaces and the capacities storage and queuePairs;
  - the claim parameters (apiVersion umd.umdkit.io/v1alpha1, kind
    UmdClaimParameters): queuePairs, queueDepth, poolBytes, completion
    (poll|irq), mode (mediated|trusted|vf|exclusive), with defaults;
  - prepare and unprepare as a library (reserve through an interface, write
    a CDI spec, checkpoint), idempotent and restart-safe, tested with a fake
    reservation service;
  - DeviceClasses and example claims in deploy/dra.

What does not exist yet:
  - the kubelet plugin (registration, the gRPC prepare/unprepare service,
    publishing slices through the API server) on
    k8s.io/dynamic-resource-allocation/kubeletplugin;
  - reservations in umdd that outlive a client connection (the broker
    holds resources only while a client is connected), which prepare needs;
  - tests against a real API server, kubelet and container runtime.

Options:
`

type usageError struct{ error }

type options struct {
	cmd        string
	node       string
	sysfs      string
	socket     string
	generation int64
	files      []string
}

func parseArgs(args []string) (options, error) {
	var o options
	if len(args) == 0 {
		return o, usageError{errors.New("no command (slices or params)")}
	}
	o.cmd = args[0]
	fs := flag.NewFlagSet("umd-dra "+o.cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	switch o.cmd {
	case "slices":
		fs.StringVar(&o.node, "node", "", "node name: the pool's name and the slices' nodeName (required)")
		fs.StringVar(&o.sysfs, "sysfs", "/sys", "sysfs root to scan")
		fs.StringVar(&o.socket, "socket", "", "umdd's socket, to add what Identify says (model, serial, namespaces, capacity)")
		fs.Int64Var(&o.generation, "generation", 1, "the pool's generation")
	case "params":
	default:
		return o, usageError{fmt.Errorf("unknown command %q (slices or params)", o.cmd)}
	}
	if err := fs.Parse(args[1:]); err != nil {
		return o, usageError{err}
	}
	switch {
	case o.cmd == "slices" && o.node == "":
		return o, usageError{errors.New("slices: --node is required")}
	case o.cmd == "slices" && fs.NArg() > 0:
		return o, usageError{fmt.Errorf("slices: unexpected arguments %q", fs.Args())}
	case o.cmd == "params" && fs.NArg() == 0:
		return o, usageError{errors.New("params: no files")}
	}
	o.files = fs.Args()
	return o, nil
}

func main() {
	args := os.Args[1:]
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help") {
		fmt.Print(usageText)
		fmt.Print("  slices --node NAME      node name (required)\n  slices --sysfs DIR      sysfs root to scan (default /sys)\n  slices --socket PATH    umdd's socket, for model, serial, namespaces, capacity\n  slices --generation N   the pool's generation (default 1)\n")
		return
	}
	o, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "umd-dra: %v\nRun umd-dra --help for usage.\n", err)
		os.Exit(2)
	}
	if err := run(o, os.Stdout); err != nil {
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

func printSlices(o options, w io.Writer) error {
	sys, err := pcie.Scan(pcie.Options{SysfsRoot: o.sysfs})
	if err != nil {
		return err
	}
	var ids dra.IdentitySource
	if o.socket != "" {
		c, err := broker.Dial(o.socket)
		if err != nil {
			return err
		}
		devs, err := c.Devices()
		c.Close()
		if err != nil {
			return fmt.Errorf("listing umdd's devices: %w", err)
		}
		m, err := dra.BrokerIdentities(devs)
		if err != nil {
			return err
		}
		ids = m
	}
	inv, err := dra.Publish(sys, ids)
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
