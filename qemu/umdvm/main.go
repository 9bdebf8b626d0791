// Command umdvm boots the umd QEMU guest and runs commands or tests in it.
// `make vm` and `make test` call it; see docs/testing.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/umdkit/umd/qemu"
)

const usage = `umdvm boots a QEMU guest (TCG, q35, emulated Intel IOMMU, emulated NVMe
controllers bound to vfio-pci) and runs something in it as root.

Usage:
  umdvm run  [flags] [--] COMMAND...   run a shell command in the guest
  umdvm test [flags] [PACKAGES...]     run the guest tests (//go:build guest)
  umdvm fetch [-kernel K]              download the guest kernels into the cache
  umdvm deps [-with fio]               install the host tools the guest needs
  umdvm bench-compare [flags]          umdbench against fio on the kernel's nvme driver,
                                       in one boot on one emulated NVMe (make bench-compare)
  umdvm topologies                     list the topologies

The project's commands (everything under cmd/) are built static and are on
the guest's PATH. The exit status of umdvm run is the guest command's; a
guest that does not boot, panics or times out fails with status 125 and
prints the end of its console log.

Examples:
  umdvm run -topology cards -- ls /dev/vfio
  umdvm run -kernel 6.1 -driver nvme -- 'cat /sys/block/nvme0n1/size'
  umdvm test -kernel 6.1 ./vfio/ ./pcie/
  umdvm run -with fio -driver nvme -- 'fio --name=r --filename=/dev/nvme0n1 --direct=1 --rw=randread --runtime=3'

Flags:
`

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		fmt.Fprint(os.Stderr, usage)
		newFlags("run").PrintDefaults()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	code := 0
	switch os.Args[1] {
	case "run":
		code, err = cmdRun(ctx, os.Args[2:])
	case "test":
		code, err = cmdTest(ctx, os.Args[2:])
	case "fetch":
		err = cmdFetch(os.Args[2:])
	case "deps":
		err = cmdDeps(os.Args[2:])
	case "bench-compare":
		code, err = cmdBenchCompare(ctx, os.Args[2:])
	case "topologies":
		for _, n := range qemu.TopologyNames() {
			t := qemu.Topologies[n]
			fmt.Printf("%-8s %d NVMe: %s\n", n, len(t.Controllers()), t.Description)
		}
	default:
		err = fmt.Errorf("unknown subcommand %q (run umdvm --help)", os.Args[1])
		code = 2
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "umdvm:", err)
		if code == 0 {
			code = 125
		}
	}
	os.Exit(code)
}

type options struct {
	fs       *flag.FlagSet
	kernel   string
	topology string
	driver   string
	aio      string
	timeout  time.Duration
	memory   int
	huge     int
	console  bool
	verbose  bool
	with     string
	qemuArgs string
}

func newFlags(name string) *flag.FlagSet { return parseOptions(name).fs }

func parseOptions(name string) *options {
	o := &options{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	o.fs.StringVar(&o.kernel, "kernel", envOr("KERNEL", qemu.DefaultKernel), "guest kernel: 6.1 or 6.12 ($KERNEL)")
	o.fs.StringVar(&o.topology, "topology", envOr("TOPOLOGY", "single"), "device topology: "+strings.Join(qemu.TopologyNames(), ", ")+" ($TOPOLOGY)")
	o.fs.StringVar(&o.driver, "driver", envOr("DRIVER", "vfio-pci"), "driver for the NVMe functions: vfio-pci or nvme ($DRIVER)")
	o.fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "bound on the whole run, boot included")
	o.fs.StringVar(&o.aio, "aio", envOr("AIO", ""), "how QEMU does the emulated disks' host I/O (-drive aio=): io_uring or threads ($AIO; default io_uring where the host allows it, else threads; threads is QEMU's own default)")
	o.fs.IntVar(&o.memory, "memory", 2048, "guest memory in MiB")
	o.fs.IntVar(&o.huge, "hugepages", 128, "2 MiB hugepages reserved in the guest")
	o.fs.BoolVar(&o.console, "console", false, "copy the kernel console to stderr as it comes")
	o.fs.BoolVar(&o.verbose, "v", false, "verbose: show every test's output")
	o.fs.StringVar(&o.qemuArgs, "qemu-args", "", "more QEMU arguments, split at white space, after the topology's devices: to try a device no topology has, e.g. '-drive file=/tmp/z.img,if=none,id=z,format=raw -device nvme,serial=z1,id=z1,msix_qsize=1 -device nvme-ns,bus=z1,drive=z,zoned=on' (make the image first: truncate -s 64M /tmp/z.img)")
	o.fs.StringVar(&o.with, "with", "", "host programs to carry into the guest with their shared libraries, comma-separated: fio (installed on the host first when missing), spdk_nvme_perf (built by you: Debian does not package SPDK)")
	return o
}

// withPrograms returns the names given to -with.
func (o *options) withPrograms() []string {
	var names []string
	for _, n := range strings.Split(o.with, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	return names
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// moduleRoot finds the directory holding go.mod, from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the umd module (no go.mod found)")
		}
		dir = parent
	}
}

// prepare resolves the kernel and topology and builds the project's commands.
func (o *options) prepare() (qemu.Config, string, error) {
	var cfg qemu.Config
	if err := qemu.CheckHostTools(); err != nil {
		if err := qemu.EnsureHostTools(os.Stderr); err != nil {
			return cfg, "", err
		}
	}
	k, err := qemu.LookupKernel(o.kernel)
	if err != nil {
		return cfg, "", err
	}
	top, err := qemu.LookupTopology(o.topology)
	if err != nil {
		return cfg, "", err
	}
	cache, err := qemu.CacheDir()
	if err != nil {
		return cfg, "", err
	}
	f := &qemu.Fetcher{Cache: cache, Log: os.Stderr, Mirror: os.Getenv("UMD_DEBIAN_MIRROR"), SecurityMirror: os.Getenv("UMD_DEBIAN_SECURITY_MIRROR")}
	u, err := f.Unpacked(k)
	if err != nil {
		return cfg, "", err
	}
	root, err := moduleRoot()
	if err != nil {
		return cfg, "", err
	}
	bin, err := os.MkdirTemp("", "umdvm-bin-")
	if err != nil {
		return cfg, "", err
	}
	if err := qemu.BuildCommands(root, bin); err != nil {
		os.RemoveAll(bin)
		return cfg, "", err
	}
	files := map[string]string{"umd/bin": bin}
	for _, name := range o.withPrograms() {
		if err := qemu.EnsureHostProgram(os.Stderr, name); err != nil {
			return cfg, bin, err
		}
		more, err := qemu.HostProgramFiles(name, bin)
		if err != nil {
			return cfg, bin, err
		}
		maps.Copy(files, more)
	}
	if dirs, err := qemu.KernelModuleDirs(root); err != nil {
		return cfg, bin, err
	} else if len(dirs) > 0 {
		headers, err := f.Headers(u)
		if err != nil {
			return cfg, bin, err
		}
		kos, err := qemu.BuildKernelModules(cache, root, u.Release, headers, os.Stderr)
		if err != nil {
			return cfg, bin, err
		}
		for _, ko := range kos {
			files["lib/modules/"+u.Release+"/extra/"+filepath.Base(ko)] = ko
		}
	}
	cfg = qemu.Config{
		Kernel:    u,
		Topology:  top,
		Driver:    o.driver,
		Timeout:   o.timeout,
		MemoryMiB: o.memory,
		Hugepages: o.huge,
		DiskAIO:   o.aio,
		Cache:     cache,
		Stdout:    os.Stdout,
		Files:     files,
		ExtraArgs: strings.Fields(o.qemuArgs),
	}
	if cfg.DiskAIO == "" {
		cfg.DiskAIO = qemu.DefaultAIO() // resolved here, to be reported
	}
	if o.console {
		cfg.Console = os.Stderr
	}
	return cfg, bin, nil
}

func cmdRun(ctx context.Context, args []string) (int, error) {
	o := parseOptions("run")
	scriptFile := o.fs.String("script", "", "run this host shell script in the guest instead of COMMAND")
	if err := o.fs.Parse(args); err != nil {
		return 2, nil
	}
	if o.fs.NArg() == 0 && *scriptFile == "" {
		return 2, errors.New("run: no command given (umdvm run -- COMMAND...)")
	}
	cfg, bin, err := o.prepare()
	if bin != "" {
		defer os.RemoveAll(bin)
	}
	if err != nil {
		return 125, err
	}
	// One argument is a shell command line (as make vm RUN='...' passes
	// it); several are a command and its arguments.
	script := o.fs.Arg(0)
	if o.fs.NArg() > 1 {
		script = "exec " + qemu.ShellJoin(o.fs.Args())
	}
	if *scriptFile != "" {
		data, err := os.ReadFile(*scriptFile)
		if err != nil {
			return 125, err
		}
		script = string(data)
	}
	cfg.Script = "#!/bin/sh\n" + script + "\n"
	res, err := qemu.Run(ctx, cfg)
	if err != nil {
		return 125, err
	}
	fmt.Fprintf(os.Stderr, "umdvm: %s on %s (%s, disk aio=%s): guest ready in %.1fs, exit status %d after %.1fs\n",
		o.topology, cfg.Kernel.Release, o.driver, cfg.DiskAIO, res.Boot.Seconds(), res.ExitCode, res.Total.Seconds())
	return res.ExitCode, nil
}

func cmdDeps(args []string) error {
	o := parseOptions("deps")
	if err := o.fs.Parse(args); err != nil {
		return err
	}
	if err := qemu.EnsureHostTools(os.Stderr); err != nil {
		return err
	}
	for _, name := range o.withPrograms() {
		if err := qemu.EnsureHostProgram(os.Stderr, name); err != nil {
			return err
		}
	}
	return nil
}

func cmdFetch(args []string) error {
	o := parseOptions("fetch")
	all := true
	if err := o.fs.Parse(args); err != nil {
		return err
	}
	o.fs.Visit(func(f *flag.Flag) {
		if f.Name == "kernel" {
			all = false
		}
	})
	cache, err := qemu.CacheDir()
	if err != nil {
		return err
	}
	f := &qemu.Fetcher{Cache: cache, Log: os.Stderr, Mirror: os.Getenv("UMD_DEBIAN_MIRROR"), SecurityMirror: os.Getenv("UMD_DEBIAN_SECURITY_MIRROR")}
	for _, k := range qemu.Kernels {
		if !all && k.Name != o.kernel {
			continue
		}
		u, err := f.Unpacked(k)
		if err != nil {
			return err
		}
		fmt.Printf("%s\t%s\t%s\n", k.Name, u.Release, u.Root)
	}
	return nil
}
