package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/umdkit/umd/internal/size"
	"github.com/umdkit/umd/pcie"
)

// Exit codes; see doc.go.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitNoMatch  = 3
	schemaList   = "umd.pcie.functions/v1"
	schemaTopo   = "umd.pcie.topology/v1"
	defaultWidth = 40 // of the NAME column of list
)

const usageText = `umdprobe finds the PCI functions of this machine and shows how they hang
together: host bridges, root ports, switches, endpoints, and the cards they
form (a switch with everything below it, or a device on a root port of its
own).

Usage:
  umdprobe [list] [flags] [SELECTOR...]  one line per function: address, card, name,
                                         driver, IOMMU group, NUMA node, link
  umdprobe tree [flags] [SELECTOR...]    the topology as a tree, annotated, then the cards
                                         (umdprobe -t is the same)
  umdprobe show [flags] SELECTOR...      everything known about the selected functions:
                                         BARs, capabilities, MSI-X, SR-IOV, links, peers
  umdprobe snapshot [flags]              the PCI part of sysfs as text, for a bug report
                                         or a test fixture (pcie.RestoreSnapshot reads it)
  umdprobe bind [flags] SELECTOR...      hand the selected functions to vfio-pci (or --driver),
                                         remembering their driver for unbind; refuses, changing
                                         nothing, when the IOMMU is off, the IOMMU group has a
                                         member on a host driver, a namespace is mounted or open,
                                         or you are not root
  umdprobe unbind [flags] SELECTOR...    give them back to the driver they had before bind
                                         (or, with no record, to the driver the kernel picks)
  umdprobe doctor [flags] [SELECTOR...]  check this machine can run umd: IOMMU, VFIO modules,
                                         /dev/vfio, the functions (all on vfio-pci by default),
                                         hugepages, RLIMIT_MEMLOCK, privileges; each failure
                                         comes with its fix
  umdprobe identify [flags] [SELECTOR...]
                                         open NVMe controllers bound to vfio-pci (all of them by
                                         default) and show Identify Controller and every active
                                         namespace: serial, model, firmware, max transfer,
                                         optional commands, shadow doorbells, sizes, LBA formats
  umdprobe trace [flags] [SELECTOR...]   print IOMMU faults (DMAR kprobe, io_page_fault) and
                                         map/unmap events live, with eBPF, until Ctrl-C or
                                         --duration; selectors keep only those functions' faults
  umdprobe claim [--verify BLOCKS] [-o json]
                                         in a container prepared by the umd DRA driver: read the
                                         claim's environment (UMD_CLAIM, UMD_SOCKET, UMD_DEVICE_*),
                                         open each device's reservation at umdd by its grant and
                                         show it; --verify writes BLOCKS stamped blocks from LBA 0
                                         of namespace 1 (overwriting them) and reads them back

Examples:
  umdprobe                          every endpoint (add -a for bridges and ports too)
  umdprobe class=nvme               NVMe controllers only
  umdprobe driver=vfio-pci numa=1   what vfio-pci holds on NUMA node 1
  umdprobe 03:00.0 -o json          one function, as JSON
  umdprobe -t                       the whole tree with cards, groups, drivers, links
  umdprobe tree card=0000:01:00.0   one card's branch only
  umdprobe show 1b36:0010           details of every QEMU NVMe controller
  umdprobe --sysfs /tmp/sys         read a copy of another machine's /sys
  umdprobe bind --dry-run class=nvme driver=nvme
                                    what handing every NVMe now on the nvme driver to
                                    vfio-pci would do (nothing is changed)
  sudo umdprobe bind 03:00.0        give 0000:03:00.0 to vfio-pci
  sudo umdprobe unbind 03:00.0      and give it back to the driver it had
  sudo umdprobe bind --driver nvme card=0000:01:00.0
                                    give a card's endpoints to the kernel's nvme driver
  umdprobe doctor                   is this machine ready? (exit status 5 if not)
  umdprobe doctor 03:00.0 -o json   the same for one function, as JSON
  sudo umdprobe identify            every NVMe controller on vfio-pci, identified
  sudo umdprobe identify 03:00.0 -o json
                                    one controller, as JSON
  sudo umdprobe trace               DMA faults and IOMMU map/unmap events, live
  sudo umdprobe trace 03:00.0 --duration 10s -o json
                                    one function's faults for 10 s, one JSON object a line
  umdprobe claim --verify 64        in a pod: open the claim's devices, verify 64 blocks each

Flags:
  --sysfs DIR       read sysfs from DIR instead of /sys
  -o, --output FMT  text (the default; "table" also works) or json
  -a, --all         list: include host bridges, root ports, switch ports and bridges
  -t, --tree        the same as the tree command
  --pci-ids FILE    take names from this pci.ids file; "none" for hex IDs only
                    (default: the host's pci.ids, else a built-in copy)
  -n, --dry-run     bind, unbind: check and print the steps, change nothing (needs no root)
  --driver NAME     bind: the driver to bind to (default vfio-pci; the IOMMU and
                    group checks apply to vfio-pci only)
  --state-dir DIR   bind, unbind: where the drivers functions had before bind are
                    remembered (default /run/umd/bind)
  --memlock SIZE    doctor: the locked memory a run needs, such as 256M or 1G (default 64M)
  --duration D      trace: stop after D, such as 10s or 2m (default: at Ctrl-C)
  --verify BLOCKS   claim: write and read back BLOCKS blocks on each device
  --proc DIR, --dev DIR  read DIR instead of /proc, /dev (for tests)
  -h, --help        this help

`

const exitText = `
Exit status: 0 success; 1 sysfs unreadable, or a bind failed part way (the
function is put back); 2 usage error (bad command, flag or selector); 3 the
selectors matched nothing; 4 bind or unbind refused, nothing changed;
5 doctor found a failing check; 6 trace: this kernel or process cannot
trace DMA faults (the message says what is missing). identify exits 1
when any selected function could not be identified, after showing the
others; claim exits 1 when a device could not be opened or verified,
after showing the others.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the parsed flags.
type options struct {
	sysfs  string
	output string
	all    bool
	tree   bool
	pciIDs string
	help   bool

	driver   string
	dryRun   bool
	stateDir string
	proc     string
	dev      string
	memlock  uint64
	duration time.Duration
	verify   int
}

// usageError is an error in how umdprobe was called: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// run is main without the process: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	err := runErr(args, stdout, stderr)
	var ue usageError
	var reported reportedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &reported):
		return exitFailure
	case errors.Is(err, errTraceUnsupported):
		fmt.Fprintf(stderr, "umdprobe: %v\n", err)
		return exitNotSupported
	case errors.Is(err, errNoMatch):
		fmt.Fprintf(stderr, "umdprobe: %v\n", err)
		return exitNoMatch
	case errors.Is(err, errRefused):
		fmt.Fprintf(stderr, "umdprobe: %v\n", err)
		return exitRefused
	case errors.Is(err, errChecksFailed):
		return exitCheckFailed
	case errors.As(err, &ue) || errors.Is(err, pcie.ErrBadSelector):
		fmt.Fprintf(stderr, "umdprobe: %v\nRun umdprobe --help for usage.\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "umdprobe: %v\n", err)
	return exitFailure
}

// errNoMatch is returned when selectors were given and matched nothing.
var errNoMatch = errors.New("no PCI function matches")

func runErr(args []string, stdout, stderr io.Writer) error {
	var opt options
	fs := flag.NewFlagSet("umdprobe", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by run, help by us
	fs.StringVar(&opt.sysfs, "sysfs", pcie.DefaultSysfsRoot, "")
	fs.StringVar(&opt.output, "o", "text", "")
	fs.StringVar(&opt.output, "output", "text", "")
	fs.BoolVar(&opt.all, "a", false, "")
	fs.BoolVar(&opt.all, "all", false, "")
	fs.BoolVar(&opt.tree, "t", false, "")
	fs.BoolVar(&opt.tree, "tree", false, "")
	fs.StringVar(&opt.pciIDs, "pci-ids", "", "")
	fs.BoolVar(&opt.help, "h", false, "")
	fs.BoolVar(&opt.help, "help", false, "")
	fs.StringVar(&opt.driver, "driver", "", "")
	fs.BoolVar(&opt.dryRun, "dry-run", false, "")
	fs.BoolVar(&opt.dryRun, "n", false, "")
	fs.StringVar(&opt.stateDir, "state-dir", "", "")
	fs.StringVar(&opt.proc, "proc", "", "")
	fs.StringVar(&opt.dev, "dev", "", "")
	fs.DurationVar(&opt.duration, "duration", 0, "")
	fs.IntVar(&opt.verify, "verify", 0, "")
	fs.Func("memlock", "", func(v string) error {
		n, err := parseSize(v)
		opt.memlock = n
		return err
	})

	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return usageError{err}
	}
	if opt.help {
		_, err := io.WriteString(stdout, usageText+pcie.SelectorHelp+"\n"+exitText)
		return err
	}

	cmd := "list"
	if len(pos) > 0 {
		switch pos[0] {
		case "list", "tree", "show", "snapshot", "bind", "unbind", "doctor", "identify", "trace", "claim":
			cmd, pos = pos[0], pos[1:]
		case "help":
			_, err := io.WriteString(stdout, usageText+pcie.SelectorHelp+"\n"+exitText)
			return err
		}
	}
	if opt.tree {
		if cmd != "list" && cmd != "tree" {
			return usageError{fmt.Errorf("-t makes no sense with %s", cmd)}
		}
		cmd = "tree"
	}
	switch opt.output {
	case "text", "table":
		opt.output = "text"
	case "json":
	default:
		return usageError{fmt.Errorf("unknown output format %q: want text or json", opt.output)}
	}

	if (opt.dryRun || opt.stateDir != "") && cmd != "bind" && cmd != "unbind" {
		return usageError{fmt.Errorf("--dry-run and --state-dir are for bind and unbind, not %s", cmd)}
	}
	if opt.driver != "" && cmd != "bind" {
		return usageError{fmt.Errorf("--driver is for bind, not %s (unbind restores what bind recorded)", cmd)}
	}
	if opt.memlock != 0 && cmd != "doctor" {
		return usageError{fmt.Errorf("--memlock is for doctor, not %s", cmd)}
	}
	if opt.duration != 0 && cmd != "trace" {
		return usageError{fmt.Errorf("--duration is for trace, not %s", cmd)}
	}
	if opt.duration < 0 {
		return usageError{fmt.Errorf("--duration %v is negative", opt.duration)}
	}
	if opt.verify != 0 && cmd != "claim" {
		return usageError{fmt.Errorf("--verify is for claim, not %s", cmd)}
	}
	if opt.verify < 0 || opt.verify > 1<<24 {
		return usageError{fmt.Errorf("--verify %d: want 1 to %d blocks", opt.verify, 1<<24)}
	}
	if cmd == "claim" {
		if len(pos) > 0 {
			return usageError{errors.New("claim takes no selectors: its devices are the claim's")}
		}
		return runClaim(stdout, opt.verify, opt)
	}

	if cmd == "snapshot" {
		if len(pos) > 0 {
			return usageError{errors.New("snapshot takes no selectors: it writes everything Scan reads")}
		}
		return pcie.WriteSnapshot(opt.sysfs, stdout)
	}

	sel, err := pcie.ParseSelector(pos...)
	if err != nil {
		return err
	}
	if (cmd == "show" || cmd == "bind" || cmd == "unbind") && sel.Empty() {
		return usageError{fmt.Errorf("%s needs a selector, such as 03:00.0 or class=nvme", cmd)}
	}
	if cmd == "doctor" && sel.Empty() {
		return runDoctor(stdout, nil, opt)
	}
	if cmd == "trace" && sel.Empty() {
		return runTrace(stdout, stderr, nil, opt)
	}

	ids, err := loadIDs(opt.pciIDs)
	if err != nil {
		return usageError{err}
	}
	sys, err := pcie.Scan(pcie.Options{SysfsRoot: opt.sysfs, IDs: ids})
	if err != nil {
		return err
	}
	picked := sys.Select(sel)
	if !sel.Empty() && len(picked) == 0 {
		return fmt.Errorf("%w %q", errNoMatch, sel.String())
	}

	switch cmd {
	case "bind", "unbind":
		return runBind(stdout, cmd, picked, opt)
	case "doctor":
		return runDoctor(stdout, targets(picked), opt)
	case "identify":
		return runIdentify(stdout, stderr, picked, !sel.Empty(), opt)
	case "trace":
		var bdfs []string
		for _, b := range targets(picked) {
			bdfs = append(bdfs, b.String())
		}
		return runTrace(stdout, stderr, traceBDFs(bdfs), opt)
	case "tree":
		return writeTree(stdout, sys, sel, opt)
	case "show":
		return writeShow(stdout, sys, picked, opt)
	}
	if sel.Empty() && !opt.all {
		picked = picked[:0]
		for _, f := range sys.Functions {
			if !f.Role.IsPort() && f.Role != pcie.RoleHostBridge && f.Role != pcie.RoleBridge && f.Role != pcie.RoleEventCollector {
				picked = append(picked, f)
			}
		}
	}
	return writeList(stdout, sys, picked, opt)
}

// parseInterspersed parses flags wherever they are among the arguments
// (the flag package alone stops at the first non-flag), and returns the
// rest in order. After "--" everything is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func loadIDs(path string) (*pcie.IDs, error) {
	switch path {
	case "":
		return nil, nil // pcie.Scan's default
	case "none":
		return &pcie.IDs{Source: "none"}, nil
	}
	return pcie.LoadIDs(path)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseSize parses a positive byte count as size.Parse does, with an
// optional K, M, G or T suffix (powers of 1024; a trailing "B" or "iB" is
// allowed).
func parseSize(s string) (uint64, error) {
	v, err := size.Parse(s)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%q is not a size such as 64M or 1G", s)
	}
	return uint64(v), nil
}

// shortBDF drops the domain when it is 0, as lspci does.
func shortBDF(b pcie.BDF) string {
	if b.Domain == 0 {
		return b.Short()
	}
	return b.String()
}

// orDash writes "-" for an empty value, so table columns stay aligned.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func numOrDash(n int) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// truncate cuts s to n runes, marking the cut with "…".
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return strings.TrimSpace(string(r[:n-1])) + "…"
}
