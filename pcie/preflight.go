package pcie

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Preflight ("doctor") checks what umd needs of a machine before it can
// drive a device from user space, and says for every shortfall what to
// do about it. It only reads.

// Status is the outcome of one check.
type Status string

// Statuses, from good to bad.
const (
	StatusPass Status = "pass"
	StatusWarn Status = "warn" // works, but not as well as it could, or needs attention
	StatusFail Status = "fail" // umd cannot drive the device until this is fixed
)

// A Check is one finding of Preflight.
type Check struct {
	// ID names the check: "iommu", "vfio-modules", "vfio-container",
	// "function", "hugepages", "memlock", "privileges".
	ID string `json:"id"`
	// Subject is what was checked when the check repeats (a function's
	// address); "" otherwise.
	Subject string `json:"subject,omitempty"`
	Status  Status `json:"status"`
	// Detail says what was found, one sentence or a few clauses.
	Detail string `json:"detail"`
	// Remedy is the command or setting that fixes a warn or fail.
	Remedy string `json:"remedy,omitempty"`
}

// A Report is the outcome of Preflight, checks in a fixed order.
type Report struct {
	Checks []Check `json:"checks"`
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool { return r.count(StatusFail) > 0 }

func (r *Report) count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// Summary says how many checks passed, warned and failed.
func (r *Report) Summary() string {
	return fmt.Sprintf("%d passed, %d warnings, %d failed", r.count(StatusPass), r.count(StatusWarn), r.count(StatusFail))
}

// DefaultMemlockNeeded is the locked memory PreflightOptions assumes a
// run needs when it is not told: the admin and a few I/O queue pairs
// plus a 64 MiB buffer pool.
const DefaultMemlockNeeded = 64 << 20

// DefaultDevRoot is where device files are.
const DefaultDevRoot = "/dev"

// PreflightOptions say what to check and where to look.
type PreflightOptions struct {
	// Functions are the functions to check for use with vfio-pci; nil
	// means every function bound to vfio-pci now.
	Functions []BDF
	// MemlockNeeded is the locked memory, in bytes, a run needs;
	// 0 means DefaultMemlockNeeded.
	MemlockNeeded uint64
	// SysfsRoot, ProcRoot and DevRoot replace /sys, /proc and /dev.
	SysfsRoot string
	ProcRoot  string
	DevRoot   string

	// Seams for tests.
	geteuid   func() int
	getrlimit func() (cur, max uint64, err error)
	access    func(path string) error
}

func (o *PreflightOptions) defaults() {
	if o.SysfsRoot == "" {
		o.SysfsRoot = DefaultSysfsRoot
	}
	if o.ProcRoot == "" {
		o.ProcRoot = DefaultProcRoot
	}
	if o.DevRoot == "" {
		o.DevRoot = DefaultDevRoot
	}
	if o.MemlockNeeded == 0 {
		o.MemlockNeeded = DefaultMemlockNeeded
	}
	if o.geteuid == nil {
		o.geteuid = os.Geteuid
	}
	if o.getrlimit == nil {
		o.getrlimit = func() (uint64, uint64, error) {
			var rl unix.Rlimit
			err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl)
			return rl.Cur, rl.Max, err
		}
	}
	if o.access == nil {
		o.access = func(p string) error { return unix.Access(p, unix.R_OK|unix.W_OK) }
	}
}

// Preflight runs every check. It fails only when sysfs cannot be read at
// all, or a function asked for does not exist; everything else is a
// finding in the report.
func Preflight(opts PreflightOptions) (*Report, error) {
	opts.defaults()
	s, err := Scan(Options{SysfsRoot: opts.SysfsRoot, IDs: &IDs{Source: "none"}})
	if err != nil {
		return nil, fmt.Errorf("preflight: %w", err)
	}
	fns, err := lookupFunctions(s, opts.Functions)
	if err != nil {
		return nil, fmt.Errorf("preflight: %w", err)
	}
	if opts.Functions == nil {
		for _, f := range s.Functions {
			if f.Driver == "vfio-pci" {
				fns = append(fns, f)
			}
		}
	}
	r := &Report{}
	r.Checks = append(r.Checks, checkIOMMU(&opts), checkVFIOModules(&opts), checkVFIOContainer(&opts))
	r.Checks = append(r.Checks, checkFunctions(s, fns, opts.Functions == nil, &opts)...)
	r.Checks = append(r.Checks, checkHugepages(&opts), checkMemlock(&opts), checkPrivileges(&opts))
	return r, nil
}

func listNames(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func iommuKind(unit string) string {
	switch {
	case strings.HasPrefix(unit, "dmar"):
		return "Intel VT-d"
	case strings.HasPrefix(unit, "ivhd"):
		return "AMD-Vi"
	case strings.Contains(unit, "smmu"):
		return "Arm SMMU"
	}
	return "IOMMU"
}

func checkIOMMU(o *PreflightOptions) Check {
	c := Check{ID: "iommu"}
	units := listNames(filepath.Join(o.SysfsRoot, "class", "iommu"))
	groups := listNames(filepath.Join(o.SysfsRoot, "kernel", "iommu_groups"))
	cmdline, _ := os.ReadFile(filepath.Join(o.ProcRoot, "cmdline"))
	args := strings.Fields(string(cmdline))
	hasArg := func(a string) bool {
		for _, x := range args {
			if x == a {
				return true
			}
		}
		return false
	}
	// vfio's unsafe no-IOMMU mode makes a group of its own for each
	// device it takes, with no IOMMU behind it.
	noIOMMU := len(units) == 0 && len(groups) > 0 && allNoIOMMU(o.SysfsRoot, groups)
	if len(groups) > 0 && !noIOMMU {
		c.Status = StatusPass
		kind := "an IOMMU"
		if len(units) > 0 {
			kind = fmt.Sprintf("%s (%s)", iommuKind(units[0]), strings.Join(units, ", "))
		}
		c.Detail = fmt.Sprintf("%s is on, with %d IOMMU groups", kind, len(groups))
		if hasArg("iommu=pt") {
			c.Detail += "; iommu=pt leaves host drivers' DMA untranslated, which is fine for vfio"
		}
		return c
	}
	c.Status = StatusFail
	cpu, _ := os.ReadFile(filepath.Join(o.ProcRoot, "cpuinfo"))
	intel := strings.Contains(string(cpu), "GenuineIntel")
	amd := strings.Contains(string(cpu), "AuthenticAMD")
	switch {
	case noIOMMU:
		c.Detail = fmt.Sprintf("the %d IOMMU groups are all vfio's no-IOMMU groups (vfio-noiommu, vfio's enable_unsafe_noiommu_mode): no IOMMU translates DMA, and umd maps its memory through one", len(groups))
	case len(units) > 0:
		c.Detail = fmt.Sprintf("%s is present (%s) but there are no IOMMU groups", iommuKind(units[0]), strings.Join(units, ", "))
	default:
		c.Detail = "no IOMMU is enabled (sysfs class/iommu and kernel/iommu_groups are empty), so vfio-pci cannot give devices to user space"
	}
	var off []string
	for _, a := range []string{"intel_iommu=off", "amd_iommu=off", "iommu=off"} {
		if hasArg(a) {
			off = append(off, a)
		}
	}
	fix := "add %s to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and enable %s in the firmware setup, then reboot"
	switch {
	case len(off) > 0:
		c.Remedy = fmt.Sprintf("remove %s from the kernel command line and reboot", strings.Join(off, " "))
	case intel:
		c.Remedy = fmt.Sprintf(fix, "intel_iommu=on", "VT-d")
	case amd:
		c.Remedy = fmt.Sprintf(fix, "amd_iommu=on", "AMD-Vi (IOMMU)")
	default:
		c.Remedy = fmt.Sprintf(fix, "intel_iommu=on (Intel) or amd_iommu=on (AMD)", "VT-d or AMD-Vi")
	}
	if noIOMMU {
		c.Remedy += "; and turn vfio's no-IOMMU mode off (echo N > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode, and drop vfio.enable_unsafe_noiommu_mode=1 wherever it is set)"
	}
	return c
}

// allNoIOMMU reports whether every IOMMU group is one vfio made in its
// no-IOMMU mode (kernel/iommu_groups/N/name is vfio-noiommu).
func allNoIOMMU(sysfsRoot string, groups []string) bool {
	for _, g := range groups {
		name, err := os.ReadFile(filepath.Join(sysfsRoot, "kernel", "iommu_groups", g, "name"))
		if err != nil || strings.TrimSpace(string(name)) != "vfio-noiommu" {
			return false
		}
	}
	return true
}

func checkVFIOModules(o *PreflightOptions) Check {
	c := Check{ID: "vfio-modules"}
	var missing []string
	if _, err := os.Stat(filepath.Join(o.SysfsRoot, "bus", "pci", "drivers", "vfio-pci")); err != nil {
		missing = append(missing, "vfio_pci")
	}
	if _, err := os.Stat(filepath.Join(o.SysfsRoot, "module", "vfio_iommu_type1")); err != nil {
		missing = append(missing, "vfio_iommu_type1")
	}
	if len(missing) == 0 {
		c.Status = StatusPass
		c.Detail = "vfio-pci and vfio_iommu_type1 are loaded"
		return c
	}
	c.Status = StatusFail
	c.Detail = strings.Join(missing, " and ") + " not loaded"
	c.Remedy = "modprobe -a " + strings.Join(missing, " ") + " (to load at boot: list them in /etc/modules-load.d/vfio.conf)"
	return c
}

// charDev stats p (following links) and says whether it is a character
// device, and its number.
func charDev(p string) (string, bool, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", false, err
	}
	if fi.Mode().Type() != fs.ModeDevice|fs.ModeCharDevice {
		return "", false, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return "", false, err
	}
	return fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))), true, nil
}

func checkVFIOContainer(o *PreflightOptions) Check {
	c := Check{ID: "vfio-container"}
	p := filepath.Join(o.DevRoot, "vfio", "vfio")
	num, isChr, err := charDev(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.Status, c.Detail, c.Remedy = StatusFail, p+" does not exist", "modprobe vfio (vfio-pci loads it)"
		return c
	case err != nil:
		c.Status, c.Detail = StatusFail, fmt.Sprintf("%s: %v", p, unwrapPath(err))
		return c
	case !isChr:
		c.Status, c.Detail, c.Remedy = StatusFail, p+" is not a character device", "remove it and reload vfio (modprobe -r vfio-pci vfio_iommu_type1 vfio; modprobe vfio-pci)"
		return c
	}
	if err := o.access(p); err != nil {
		c.Status, c.Detail = StatusFail, fmt.Sprintf("%s (%s) is not readable and writable by this user: %v", p, num, unwrapPath(err))
		c.Remedy = "run as root, or give the user access to /dev/vfio (a udev rule: SUBSYSTEM==\"vfio\", GROUP=\"vfio\", MODE=\"0660\")"
		return c
	}
	c.Status, c.Detail = StatusPass, fmt.Sprintf("%s (%s) is present, readable and writable", p, num)
	return c
}

func checkFunctions(s *System, fns []*Function, implicit bool, o *PreflightOptions) []Check {
	if len(fns) == 0 {
		c := Check{ID: "function", Status: StatusWarn, Detail: "no PCI function is bound to vfio-pci",
			Remedy: "umdprobe bind SELECTOR (for example umdprobe bind class=nvme driver=nvme); umdprobe doctor SELECTOR checks particular functions"}
		return []Check{c}
	}
	var out []Check
	for _, f := range fns {
		out = append(out, checkFunction(s, f, o))
	}
	return out
}

func checkFunction(s *System, f *Function, o *PreflightOptions) Check {
	c := Check{ID: "function", Subject: f.BDF.String()}
	fail := func(detail, remedy string) Check {
		c.Status, c.Detail, c.Remedy = StatusFail, detail, remedy
		return c
	}
	if f.IOMMUGroup == NoIOMMUGroup {
		return fail(fmt.Sprintf("%s has no IOMMU group", f.BDF), "turn the IOMMU on (see the iommu check)")
	}
	var peers []string
	for _, m := range s.Group(f.IOMMUGroup) {
		mf := s.Function(m)
		if m == f.BDF || mf == nil {
			continue
		}
		if !isHarmlessDriver(mf.Driver) {
			return fail(fmt.Sprintf("IOMMU group %d is not viable: %s is bound to the host driver %s", f.IOMMUGroup, m, mf.Driver),
				fmt.Sprintf("umdprobe bind %s %s (or unbind %s from %s)", f.BDF, m, m, mf.Driver))
		}
		peers = append(peers, fmt.Sprintf("%s on %s", m, orNone(mf.Driver)))
	}
	if f.Driver != "vfio-pci" {
		return fail(fmt.Sprintf("bound to %s, not vfio-pci", orNone(f.Driver)), "umdprobe bind "+f.BDF.String())
	}
	group := fmt.Sprintf("IOMMU group %d", f.IOMMUGroup)
	if len(peers) > 0 {
		group += " (with " + strings.Join(peers, ", ") + ")"
	}
	dev := filepath.Join(o.DevRoot, "vfio", strconv.Itoa(f.IOMMUGroup))
	noiommu := filepath.Join(o.DevRoot, "vfio", "noiommu-"+strconv.Itoa(f.IOMMUGroup))
	if _, isChr, _ := charDev(noiommu); isChr {
		return fail(fmt.Sprintf("bound to vfio-pci in vfio's unsafe no-IOMMU mode (%s): no IOMMU translates its DMA, and umd maps its memory through one", noiommu),
			"turn the IOMMU on and vfio's no-IOMMU mode off (see the iommu check)")
	}
	if _, isChr, err := charDev(dev); err != nil || !isChr {
		return fail(fmt.Sprintf("bound to vfio-pci, %s is viable, but %s is missing", group, dev), "rebind: umdprobe unbind "+f.BDF.String()+" && umdprobe bind "+f.BDF.String())
	}
	if err := o.access(dev); err != nil {
		return fail(fmt.Sprintf("bound to vfio-pci, %s is viable, but %s is not readable and writable by this user", group, dev),
			fmt.Sprintf("run as root, or chown the user %s (a udev rule: SUBSYSTEM==\"vfio\", OWNER=\"USER\")", dev))
	}
	c.Status = StatusPass
	c.Detail = fmt.Sprintf("bound to vfio-pci; %s is viable; %s is readable and writable", group, dev)
	if uses, _ := findUses(o.SysfsRoot, o.ProcRoot, f.BDF); len(uses) > 0 {
		var us []string
		for _, u := range uses {
			us = append(us, u.String())
		}
		c.Status = StatusWarn
		c.Detail += "; but " + strings.Join(us, ", ")
		c.Remedy = "only one process at a time may own a VFIO group: stop the other one, or go through umdd"
	}
	return c
}

// hugepageSize is one hugepage size's counts.
type hugepageSize struct {
	kB          uint64
	total, free uint64
	nodes       []string // "node0 64/64" (free/total), on machines with more than one node
}

func readHugepages(root string) []hugepageSize {
	var sizes []hugepageSize
	dir := filepath.Join(root, "kernel", "mm", "hugepages")
	nodes := listNames(filepath.Join(root, "devices", "system", "node"))
	var nodeNames []string
	for _, n := range nodes {
		if strings.HasPrefix(n, "node") {
			if _, err := strconv.Atoi(strings.TrimPrefix(n, "node")); err == nil {
				nodeNames = append(nodeNames, n)
			}
		}
	}
	readU := func(p string) uint64 {
		b, err := os.ReadFile(p)
		if err != nil {
			return 0
		}
		v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		return v
	}
	for _, name := range listNames(dir) {
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, "hugepages-"), "kB"), 10, 64)
		if err != nil {
			continue
		}
		h := hugepageSize{kB: kb, total: readU(filepath.Join(dir, name, "nr_hugepages")), free: readU(filepath.Join(dir, name, "free_hugepages"))}
		if len(nodeNames) > 1 {
			for _, n := range nodeNames {
				nd := filepath.Join(root, "devices", "system", "node", n, "hugepages", name)
				h.nodes = append(h.nodes, fmt.Sprintf("%s %d/%d", n, readU(filepath.Join(nd, "free_hugepages")), readU(filepath.Join(nd, "nr_hugepages"))))
			}
		}
		sizes = append(sizes, h)
	}
	sort.Slice(sizes, func(i, j int) bool { return sizes[i].kB < sizes[j].kB })
	return sizes
}

func formatKB(kb uint64) string {
	switch {
	case kb >= 1<<20 && kb%(1<<20) == 0:
		return fmt.Sprintf("%d GiB", kb>>20)
	case kb >= 1<<10 && kb%(1<<10) == 0:
		return fmt.Sprintf("%d MiB", kb>>10)
	}
	return fmt.Sprintf("%d KiB", kb)
}

func checkHugepages(o *PreflightOptions) Check {
	c := Check{ID: "hugepages"}
	sizes := readHugepages(o.SysfsRoot)
	if len(sizes) == 0 {
		c.Status, c.Detail = StatusFail, "the kernel offers no hugepages (no kernel/mm/hugepages in sysfs)"
		c.Remedy = "use a kernel with CONFIG_HUGETLBFS, or make pools of 4 KiB pages (hugepage.Page4K)"
		return c
	}
	var parts []string
	var free uint64
	for _, h := range sizes {
		p := fmt.Sprintf("%s pages: %d reserved, %d free", formatKB(h.kB), h.total, h.free)
		if len(h.nodes) > 0 && h.total > 0 {
			p += " (free/reserved per node: " + strings.Join(h.nodes, ", ") + ")"
		}
		parts = append(parts, p)
		free += h.free * h.kB
	}
	c.Detail = strings.Join(parts, "; ")
	need := o.MemlockNeeded
	switch {
	case free == 0:
		c.Status = StatusFail
		c.Remedy = "reserve some: echo 512 > /proc/sys/vm/nr_hugepages (1 GiB of 2 MiB pages), or hugepages=512 on the kernel command line"
	case free*1024 < need:
		c.Status = StatusWarn
		c.Detail += fmt.Sprintf("; %s free in all, less than the %s a run needs", formatKB(free), formatKB(need/1024))
		c.Remedy = "reserve more: echo N > /proc/sys/vm/nr_hugepages"
	default:
		c.Status = StatusPass
	}
	return c
}

// capIPCLock is CAP_IPC_LOCK's bit in /proc/PID/status's CapEff.
const capIPCLock = 14

func hasCapability(procRoot string, bit uint) bool {
	b, err := os.ReadFile(filepath.Join(procRoot, "self", "status"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<bit) != 0
		}
	}
	return false
}

func formatBytes(n uint64) string {
	if n == unix.RLIM_INFINITY {
		return "unlimited"
	}
	if n%1024 == 0 {
		return formatKB(n / 1024)
	}
	return fmt.Sprintf("%d bytes", n)
}

func checkMemlock(o *PreflightOptions) Check {
	c := Check{ID: "memlock"}
	cur, max, err := o.getrlimit()
	if err != nil {
		c.Status, c.Detail = StatusWarn, fmt.Sprintf("RLIMIT_MEMLOCK could not be read: %v", err)
		return c
	}
	limit := fmt.Sprintf("RLIMIT_MEMLOCK is %s (hard limit %s)", formatBytes(cur), formatBytes(max))
	switch {
	case hasCapability(o.ProcRoot, capIPCLock):
		c.Status, c.Detail = StatusPass, limit+", but the process has CAP_IPC_LOCK, which lifts it"
	case cur == unix.RLIM_INFINITY || cur >= o.MemlockNeeded:
		c.Status, c.Detail = StatusPass, fmt.Sprintf("%s, enough for the %s a run needs", limit, formatBytes(o.MemlockNeeded))
	default:
		c.Status = StatusFail
		c.Detail = fmt.Sprintf("%s, less than the %s a run needs (pinning DMA memory counts against it)", limit, formatBytes(o.MemlockNeeded))
		c.Remedy = "ulimit -l unlimited in the shell that starts it; `USER - memlock unlimited` in /etc/security/limits.conf; LimitMEMLOCK=infinity in a systemd unit; or run with CAP_IPC_LOCK"
	}
	return c
}

func checkPrivileges(o *PreflightOptions) Check {
	euid := o.geteuid()
	if euid == 0 {
		return Check{ID: "privileges", Status: StatusPass, Detail: "running as root"}
	}
	return Check{ID: "privileges", Status: StatusWarn,
		Detail: fmt.Sprintf("running as uid %d, not root: binding functions needs root; using a bound one needs read and write access to its /dev/vfio/N (see the function checks)", euid),
		Remedy: "sudo umdprobe bind SELECTOR once; then grant the user /dev/vfio/N with a udev rule"}
}
