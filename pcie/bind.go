package pcie

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Binding moves PCI functions between kernel drivers through sysfs, the
// way the kernel documents for vfio-pci:
//
//	echo vfio-pci > /sys/bus/pci/devices/BDF/driver_override
//	echo BDF > /sys/bus/pci/drivers/CURRENT/unbind
//	echo BDF > /sys/bus/pci/drivers_probe
//
// Before writing anything, Bind and Unbind look at everything that would
// make the move harmful or useless and refuse, changing nothing, when they
// find one: the caller is not root, the IOMMU is off, the IOMMU group has
// a member on a host driver, a namespace of the device is mounted, held
// or open. What a function was bound to before is kept in a small state
// file per function (under DefaultStateDir), so that Unbind, in another
// process or after a reboot of the tool, can put it back.

// Defaults of BindOptions.
const (
	DefaultDriver      = "vfio-pci"
	DefaultStateDir    = "/run/umd/bind"
	DefaultProcRoot    = "/proc"
	DefaultBindTimeout = 10 * time.Second
)

// Errors Bind and Unbind refuse with; each refusal wraps one of them, and
// nothing has been changed when one is returned.
var (
	// ErrNotRoot: writing driver_override and the bind files needs root.
	ErrNotRoot = errors.New("not running as root")
	// ErrIOMMUOff: the function has no IOMMU group, so vfio-pci cannot
	// give it to user space.
	ErrIOMMUOff = errors.New("the IOMMU is off")
	// ErrGroupNotViable: another member of the function's IOMMU group is
	// bound to a host driver; the concrete error is a *GroupError.
	ErrGroupNotViable = errors.New("IOMMU group not viable")
	// ErrInUse: a block device of the function is mounted, held by
	// another block device, or open; the concrete error is an
	// *InUseError.
	ErrInUse = errors.New("device in use")
	// ErrNotEndpoint: the function is a bridge or port, which vfio-pci
	// does not take.
	ErrNotEndpoint = errors.New("not an endpoint")
	// ErrNoFunction: no PCI function has the address given.
	ErrNoFunction = errors.New("no such PCI function")
)

// Errors of carrying a plan out.
var (
	// ErrDriverUnavailable: the driver is not loaded and modprobe could
	// not load it.
	ErrDriverUnavailable = errors.New("driver not available")
	// ErrBindTimeout: the kernel did not bind the function to the
	// driver in time (the driver's probe failed, or is slow).
	ErrBindTimeout = errors.New("driver did not take the function")
)

// HarmlessGroupDrivers are the drivers that may hold other members of an
// IOMMU group while one member is used through vfio-pci: the kernel's
// own list (vfio_dev_driver_allowed) of vfio-pci, pci-stub and pcieport.
// A switch port sharing a group with the NVMe below it, as QEMU's xio3130
// downstream ports do, is bound to pcieport and does no harm. Members
// with no driver at all are harmless too.
var HarmlessGroupDrivers = []string{"vfio-pci", "pci-stub", "pcieport"}

// A GroupError names the member of an IOMMU group that makes it not
// viable, and the host driver it is bound to.
type GroupError struct {
	Group  int
	Member BDF
	Driver string
}

func (e *GroupError) Error() string {
	return fmt.Sprintf("IOMMU group %d is not viable: its member %s is bound to the host driver %s (bind it to vfio-pci as well, or unbind it)",
		e.Group, e.Member, e.Driver)
}

// Unwrap makes errors.Is(err, ErrGroupNotViable) true.
func (e *GroupError) Unwrap() error { return ErrGroupNotViable }

// BindOptions say where to bind to and where sysfs, procfs and the state
// files are. The zero value binds to vfio-pci on the running system.
type BindOptions struct {
	// Driver to bind to; "" means DefaultDriver (vfio-pci). Unbind
	// ignores it.
	Driver string
	// DryRun plans and checks everything, refusals included, but writes
	// nothing, loads no module and needs no root.
	DryRun bool
	// SysfsRoot, ProcRoot and StateDir replace /sys, /proc and
	// DefaultStateDir ("" means the default).
	SysfsRoot string
	ProcRoot  string
	StateDir  string
	// Modprobe loads a kernel module; nil runs `modprobe NAME`.
	Modprobe func(module string) error
	// Timeout bounds the wait for a driver to take a function; 0 means
	// DefaultBindTimeout.
	Timeout time.Duration

	// Seams for tests: write replaces writing a sysfs file (a test
	// emulates the kernel behind it), geteuid os.Geteuid.
	write   func(path, value string) error
	geteuid func() int
}

func (o *BindOptions) defaults() {
	if o.Driver == "" {
		o.Driver = DefaultDriver
	}
	if o.SysfsRoot == "" {
		o.SysfsRoot = DefaultSysfsRoot
	}
	if o.ProcRoot == "" {
		o.ProcRoot = DefaultProcRoot
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultBindTimeout
	}
	if o.Modprobe == nil {
		o.Modprobe = modprobe
	}
	if o.write == nil {
		o.write = writeSysfs
	}
	if o.geteuid == nil {
		o.geteuid = os.Geteuid
	}
}

// StepKind is what one step of a Plan does.
type StepKind string

// Step kinds.
const (
	StepModprobe StepKind = "modprobe" // load Value, a kernel module
	StepRecord   StepKind = "record"   // save the function's driver and override in Path
	StepWrite    StepKind = "write"    // write Value to the sysfs file Path
	StepWait     StepKind = "wait"     // wait until the function is bound to Value ("" any driver or none)
	StepForget   StepKind = "forget"   // remove the state file Path
)

// A Step is one thing Bind or Unbind does, in order.
type Step struct {
	Kind  StepKind `json:"kind"`
	BDF   *BDF     `json:"bdf,omitempty"`
	Path  string   `json:"path,omitempty"`
	Value string   `json:"value,omitempty"`
	// Say is the step as a sentence for people.
	Say string `json:"say"`
}

// A FunctionPlan is what will happen to one function.
type FunctionPlan struct {
	BDF BDF `json:"bdf"`
	// Driver and Override are the function's driver and driver_override
	// now ("" for none).
	Driver   string `json:"driver"`
	Override string `json:"driver_override"`
	// Target is the driver it will be bound to; "" for none or, when
	// Unbind has no record, whichever driver the kernel picks.
	Target string `json:"target"`
	// Record is what the state file says the function had before umd
	// first bound it; nil if there is none.
	Record *BindRecord `json:"record,omitempty"`
	// Nothing is true when the function is already as asked.
	Nothing bool   `json:"nothing_to_do"`
	Steps   []Step `json:"steps"`
}

// A Plan is what Bind or Unbind does (or, with DryRun, would do).
type Plan struct {
	Op        string         `json:"op"` // "bind" or "unbind"
	Driver    string         `json:"driver,omitempty"`
	DryRun    bool           `json:"dry_run"`
	Setup     []Step         `json:"setup,omitempty"` // modules to load first
	Functions []FunctionPlan `json:"functions"`
}

// Steps returns every step in order.
func (p *Plan) Steps() []Step {
	steps := append([]Step(nil), p.Setup...)
	for _, f := range p.Functions {
		steps = append(steps, f.Steps...)
	}
	return steps
}

// String describes the plan, one line per step, for people.
func (p *Plan) String() string {
	var b strings.Builder
	for _, s := range p.Setup {
		fmt.Fprintf(&b, "%s\n", s.Say)
	}
	for _, f := range p.Functions {
		if f.Nothing {
			fmt.Fprintf(&b, "%s: nothing to do (%s)\n", f.BDF, nothingReason(p, f))
			continue
		}
		for _, s := range f.Steps {
			fmt.Fprintf(&b, "%s: %s\n", f.BDF, s.Say)
		}
	}
	return b.String()
}

func nothingReason(p *Plan, f FunctionPlan) string {
	if p.Op == "bind" {
		return "already bound to " + f.Driver
	}
	if f.Driver == "" {
		return "bound to no driver, and umd has no record of binding it"
	}
	return "bound to " + f.Driver + ", and umd has no record of binding it"
}

// Bind binds the functions to opts.Driver (vfio-pci by default), loading
// the driver's module if needed, and records each function's previous
// driver so Unbind can restore it. Functions already bound to the driver
// are left alone. It refuses, with an error wrapping ErrNotRoot,
// ErrIOMMUOff, ErrGroupNotViable, ErrNotEndpoint or ErrInUse and nothing
// changed, when any function may not be moved (the IOMMU and group
// checks apply when binding to vfio-pci). With opts.DryRun it only plans.
// The plan is returned even with a refusal, to show what was found.
//
// A driver module that cannot be loaded stops Bind before anything is
// changed. Functions are then moved one after the other; if one fails
// part way (the driver's probe fails or times out), it is put back on its
// old driver and the error says so, while the functions before it stay
// moved, with records that let Unbind restore them.
func Bind(bdfs []BDF, opts BindOptions) (*Plan, error) {
	opts.defaults()
	return plan(bdfs, &opts, planBind)
}

// plan plans, and unless this is a dry run or a refusal, takes the state
// directory's lock, plans again (another umd process may have moved
// things meanwhile) and carries the plan out.
func plan(bdfs []BDF, opts *BindOptions, planner func([]BDF, *BindOptions) (*Plan, error)) (*Plan, error) {
	p, err := planner(bdfs, opts)
	if err != nil || opts.DryRun || !needsWork(p) {
		return p, err
	}
	unlock, err := lockStateDir(opts.StateDir)
	if err != nil {
		return p, fmt.Errorf("%sing: %w", p.Op, err)
	}
	defer unlock()
	if p, err = planner(bdfs, opts); err != nil {
		return p, err
	}
	return p, execute(p, opts)
}

// Unbind restores the functions to the driver and driver_override they
// had before Bind first moved them, as its state file records, and
// forgets the record. A function without a record has its
// driver_override cleared and is unbound and re-probed, so the kernel
// gives it to the driver that claims it by ID (or none). It refuses like
// Bind when the caller is not root or the device is in use.
func Unbind(bdfs []BDF, opts BindOptions) (*Plan, error) {
	opts.defaults()
	return plan(bdfs, &opts, planUnbind)
}

// bindScan reads the system with hex IDs only: binding needs no names.
func bindScan(opts *BindOptions) (*System, error) {
	return Scan(Options{SysfsRoot: opts.SysfsRoot, IDs: &IDs{Source: "none"}})
}

func lookupFunctions(s *System, bdfs []BDF) ([]*Function, error) {
	var fns []*Function
	seen := map[BDF]bool{}
	for _, b := range bdfs {
		if seen[b] {
			continue
		}
		seen[b] = true
		f := s.Function(b)
		if f == nil {
			return nil, fmt.Errorf("%w: %s", ErrNoFunction, b)
		}
		fns = append(fns, f)
	}
	return fns, nil
}

func (o *BindOptions) rootCheck(op string) error {
	if o.DryRun || o.geteuid() == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w: writing driver_override and the driver's bind files needs root (run with sudo, or try --dry-run)", op, ErrNotRoot)
}

func (o *BindOptions) devDir(b BDF) string {
	return filepath.Join(o.SysfsRoot, "bus", "pci", "devices", b.String())
}

func (o *BindOptions) driverDir(name string) string {
	return filepath.Join(o.SysfsRoot, "bus", "pci", "drivers", name)
}

func (o *BindOptions) driverLoaded(name string) bool {
	_, err := os.Stat(o.driverDir(name))
	return err == nil
}

func planBind(bdfs []BDF, opts *BindOptions) (*Plan, error) {
	p := &Plan{Op: "bind", Driver: opts.Driver, DryRun: opts.DryRun}
	s, err := bindScan(opts)
	if err != nil {
		return p, fmt.Errorf("binding to %s: %w", opts.Driver, err)
	}
	fns, err := lookupFunctions(s, bdfs)
	if err != nil {
		return p, fmt.Errorf("binding to %s: %w", opts.Driver, err)
	}
	binding := map[BDF]bool{}
	for _, f := range fns {
		binding[f.BDF] = true
	}

	for _, f := range fns {
		fp := FunctionPlan{BDF: f.BDF, Driver: f.Driver, Override: f.DriverOverride, Target: opts.Driver}
		rec, err := readRecord(opts.StateDir, f.BDF)
		if err != nil {
			return p, fmt.Errorf("binding %s to %s: %w", f.BDF, opts.Driver, err)
		}
		fp.Record = rec
		if f.Driver == opts.Driver {
			fp.Nothing, fp.Steps = true, []Step{}
			p.Functions = append(p.Functions, fp)
			continue
		}
		if err := checkBind(s, f, binding, opts); err != nil {
			return p, fmt.Errorf("binding %s to %s: %w", f.BDF, opts.Driver, err)
		}
		fp.Steps = bindSteps(f, rec == nil, opts)
		p.Functions = append(p.Functions, fp)
	}
	if err := opts.rootCheck("binding to " + opts.Driver); err != nil && needsWork(p) {
		return p, err
	}
	if needsWork(p) && !opts.driverLoaded(opts.Driver) {
		p.Setup = append(p.Setup, modprobeStep(opts.Driver))
	}
	return p, nil
}

func needsWork(p *Plan) bool {
	for _, f := range p.Functions {
		if !f.Nothing {
			return true
		}
	}
	return false
}

func modprobeStep(driver string) Step {
	return Step{Kind: StepModprobe, Value: driver, Say: fmt.Sprintf("load the %s module (modprobe %s)", driver, driver)}
}

// checkBind returns why f may not be bound to opts.Driver, or nil.
// binding holds every function being bound in the same call: they count
// as bound to the driver already.
func checkBind(s *System, f *Function, binding map[BDF]bool, opts *BindOptions) error {
	if opts.Driver == "vfio-pci" {
		if f.IOMMUGroup == NoIOMMUGroup {
			return fmt.Errorf("%w: %s has no IOMMU group, so vfio-pci cannot hand it to user space (turn the IOMMU on: intel_iommu=on or amd_iommu=on on the kernel command line, and VT-d/AMD-Vi in the firmware; see umdprobe doctor)",
				ErrIOMMUOff, f.BDF)
		}
		for _, m := range s.Group(f.IOMMUGroup) {
			mf := s.Function(m)
			if m == f.BDF || binding[m] || mf == nil || isHarmlessDriver(mf.Driver) {
				continue
			}
			return &GroupError{Group: f.IOMMUGroup, Member: m, Driver: mf.Driver}
		}
	}
	if f.Bridge {
		return fmt.Errorf("%w: %s is a %s, and %s takes only endpoints", ErrNotEndpoint, f.BDF, f.Role, opts.Driver)
	}
	if f.Driver != "" {
		uses, err := findUses(opts.SysfsRoot, opts.ProcRoot, f.BDF)
		if err != nil {
			return fmt.Errorf("checking whether %s is in use: %w", f.BDF, err)
		}
		if len(uses) > 0 {
			return &InUseError{BDF: f.BDF, Driver: f.Driver, Uses: uses}
		}
	}
	return nil
}

func isHarmlessDriver(d string) bool {
	if d == "" {
		return true
	}
	for _, h := range HarmlessGroupDrivers {
		if d == h {
			return true
		}
	}
	return false
}

// bindSteps moves f to opts.Driver: override, unbind, probe, wait.
func bindSteps(f *Function, record bool, opts *BindOptions) []Step {
	b := f.BDF
	var steps []Step
	if record {
		steps = append(steps, Step{Kind: StepRecord, BDF: &b, Path: recordPath(opts.StateDir, b),
			Value: f.Driver,
			Say:   fmt.Sprintf("record that it was bound to %s with driver_override %s, in %s", orNone(f.Driver), orNone(f.DriverOverride), recordPath(opts.StateDir, b))})
	}
	steps = append(steps, Step{Kind: StepWrite, BDF: &b, Path: filepath.Join(opts.devDir(b), "driver_override"), Value: opts.Driver,
		Say: fmt.Sprintf("set driver_override to %s", opts.Driver)})
	if f.Driver != "" {
		steps = append(steps, unbindStep(b, f.Driver, opts))
	}
	steps = append(steps, probeStep(b, opts),
		Step{Kind: StepWait, BDF: &b, Value: opts.Driver, Say: fmt.Sprintf("wait until %s has taken it", opts.Driver)})
	return steps
}

func unbindStep(b BDF, driver string, opts *BindOptions) Step {
	return Step{Kind: StepWrite, BDF: &b, Path: filepath.Join(opts.driverDir(driver), "unbind"), Value: b.String(),
		Say: fmt.Sprintf("unbind it from %s", driver)}
}

func probeStep(b BDF, opts *BindOptions) Step {
	return Step{Kind: StepWrite, BDF: &b, Path: filepath.Join(opts.SysfsRoot, "bus", "pci", "drivers_probe"), Value: b.String(),
		Say: "ask the kernel to probe it (drivers_probe)"}
}

func overrideStep(b BDF, value string, opts *BindOptions) Step {
	say := "set driver_override to " + value
	if value == "" {
		say = "clear driver_override"
		value = "\n" // the kernel clears it on an empty line
	}
	return Step{Kind: StepWrite, BDF: &b, Path: filepath.Join(opts.devDir(b), "driver_override"), Value: value, Say: say}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func planUnbind(bdfs []BDF, opts *BindOptions) (*Plan, error) {
	p := &Plan{Op: "unbind", DryRun: opts.DryRun}
	s, err := bindScan(opts)
	if err != nil {
		return p, fmt.Errorf("unbinding: %w", err)
	}
	fns, err := lookupFunctions(s, bdfs)
	if err != nil {
		return p, fmt.Errorf("unbinding: %w", err)
	}
	modules := map[string]bool{}
	for _, f := range fns {
		fp := FunctionPlan{BDF: f.BDF, Driver: f.Driver, Override: f.DriverOverride}
		rec, err := readRecord(opts.StateDir, f.BDF)
		if err != nil {
			return p, fmt.Errorf("unbinding %s: %w", f.BDF, err)
		}
		fp.Record = rec
		b := f.BDF
		switch {
		case rec != nil && rec.Driver == f.Driver:
			// Already on the recorded driver: put the override back.
			fp.Target = rec.Driver
			if rec.DriverOverride != f.DriverOverride {
				fp.Steps = append(fp.Steps, overrideStep(b, rec.DriverOverride, opts))
			}
		case rec != nil:
			fp.Target = rec.Driver
			if rec.Driver == "" {
				fp.Steps = append(fp.Steps, overrideStep(b, rec.DriverOverride, opts), unbindStep(b, f.Driver, opts),
					Step{Kind: StepWait, BDF: &b, Say: "check that it is bound to no driver"})
				break
			}
			if !opts.driverLoaded(rec.Driver) {
				modules[rec.Driver] = true
			}
			fp.Steps = append(fp.Steps, overrideStep(b, rec.Driver, opts))
			if f.Driver != "" {
				fp.Steps = append(fp.Steps, unbindStep(b, f.Driver, opts))
			}
			fp.Steps = append(fp.Steps, probeStep(b, opts),
				Step{Kind: StepWait, BDF: &b, Value: rec.Driver, Say: fmt.Sprintf("wait until %s has taken it", rec.Driver)})
			if rec.DriverOverride != rec.Driver {
				fp.Steps = append(fp.Steps, overrideStep(b, rec.DriverOverride, opts))
			}
		case f.DriverOverride == "" && (f.Driver == "" || !wasOverridden(f.Driver)):
			fp.Nothing = true
		default:
			// No record: hand it back to the kernel's choice.
			fp.Steps = append(fp.Steps, overrideStep(b, "", opts))
			if f.Driver != "" {
				fp.Steps = append(fp.Steps, unbindStep(b, f.Driver, opts))
			}
			fp.Steps = append(fp.Steps, probeStep(b, opts),
				Step{Kind: StepWait, BDF: &b, Value: anyDriver, Say: "give the kernel a moment to bind the driver that claims it by ID, if any"})
		}
		if !fp.Nothing && rec != nil {
			fp.Steps = append(fp.Steps, Step{Kind: StepForget, BDF: &b, Path: recordPath(opts.StateDir, b), Say: "forget the record " + recordPath(opts.StateDir, b)})
		}
		if len(fp.Steps) == 0 {
			fp.Nothing, fp.Steps = true, []Step{}
		}
		if f.Driver != "" && f.Driver != fp.Target && !fp.Nothing {
			uses, err := findUses(opts.SysfsRoot, opts.ProcRoot, f.BDF)
			if err != nil {
				return p, fmt.Errorf("unbinding %s: checking whether it is in use: %w", f.BDF, err)
			}
			if len(uses) > 0 {
				return p, fmt.Errorf("unbinding %s: %w", f.BDF, &InUseError{BDF: f.BDF, Driver: f.Driver, Uses: uses})
			}
		}
		p.Functions = append(p.Functions, fp)
	}
	if err := opts.rootCheck("unbinding"); err != nil && needsWork(p) {
		return p, err
	}
	for _, m := range sortedStrings(modules) {
		p.Setup = append(p.Setup, modprobeStep(m))
	}
	return p, nil
}

// wasOverridden reports whether a driver only ever takes functions it is
// told to take (through driver_override or new_id): vfio-pci and
// pci-stub. Unbind without a record hands such functions back to the
// kernel; functions on other drivers are where the kernel put them.
func wasOverridden(driver string) bool { return driver == "vfio-pci" || driver == "pci-stub" }

// anyDriver as a StepWait value waits a little for any driver, and does
// not fail when none comes.
const anyDriver = "*"

// anyDriverWait is how long a wait for any driver lasts.
const anyDriverWait = 2 * time.Second

func sortedStrings(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// execute carries a plan out. A function whose steps fail part way is put
// back as its record says (best effort), and the error says so.
func execute(p *Plan, opts *BindOptions) error {
	op := "binding"
	if p.Op == "unbind" {
		op = "unbinding"
	}
	for _, s := range p.Setup {
		if err := runStep(s, nil, opts); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	for i := range p.Functions {
		fp := &p.Functions[i]
		var current *Function
		for _, s := range fp.Steps {
			if err := runStep(s, fp, opts); err != nil {
				err = fmt.Errorf("%s %s: %w", op, fp.BDF, err)
				if p.Op == "bind" {
					current = &Function{BDF: fp.BDF, Driver: fp.Driver, DriverOverride: fp.Override}
					if rerr := rollback(current, opts); rerr != nil {
						return fmt.Errorf("%w; putting it back on %s failed too: %v", err, orNone(fp.Driver), rerr)
					}
					return fmt.Errorf("%w (put back on %s)", err, orNone(fp.Driver))
				}
				return err
			}
		}
	}
	return nil
}

// rollback puts a function whose bind failed back on its driver.
func rollback(was *Function, opts *BindOptions) error {
	b := was.BDF
	cur, _ := readDriver(opts.SysfsRoot, b)
	steps := []Step{overrideStep(b, was.Driver, opts)}
	if cur != "" && cur != was.Driver {
		steps = append(steps, unbindStep(b, cur, opts))
	}
	if was.Driver != "" && cur != was.Driver {
		steps = append(steps, probeStep(b, opts), Step{Kind: StepWait, BDF: &b, Value: was.Driver})
	}
	steps = append(steps, overrideStep(b, was.DriverOverride, opts))
	for _, s := range steps {
		if err := runStep(s, nil, opts); err != nil {
			return err
		}
	}
	if rec, _ := readRecord(opts.StateDir, b); rec != nil && rec.Driver == was.Driver && rec.DriverOverride == was.DriverOverride {
		return forgetRecord(opts.StateDir, b)
	}
	return nil
}

func runStep(s Step, fp *FunctionPlan, opts *BindOptions) error {
	switch s.Kind {
	case StepModprobe:
		if opts.driverLoaded(s.Value) {
			return nil
		}
		if err := opts.Modprobe(s.Value); err != nil {
			return fmt.Errorf("%w: %s is not loaded and loading it failed: %v (run `modprobe %s` as root)", ErrDriverUnavailable, s.Value, err, s.Value)
		}
		if !waitFor(func() bool { return opts.driverLoaded(s.Value) }, opts.Timeout) {
			return fmt.Errorf("%w: modprobe %s succeeded but no PCI driver %s appeared", ErrDriverUnavailable, s.Value, s.Value)
		}
		return nil
	case StepRecord:
		return writeRecord(opts.StateDir, BindRecord{BDF: *s.BDF, Driver: fp.Driver, DriverOverride: fp.Override, BoundTo: fp.Target, Time: time.Now().UTC()})
	case StepForget:
		return forgetRecord(opts.StateDir, *s.BDF)
	case StepWrite:
		if err := opts.write(s.Path, s.Value); err != nil {
			return fmt.Errorf("writing %q to %s: %w", strings.TrimSpace(s.Value), s.Path, err)
		}
		return nil
	case StepWait:
		return waitDriver(*s.BDF, s.Value, opts)
	}
	return fmt.Errorf("unknown step kind %q", s.Kind)
}

// waitDriver waits until b is bound to want ("" no driver, anyDriver any
// driver or none after a short while).
func waitDriver(b BDF, want string, opts *BindOptions) error {
	timeout := opts.Timeout
	if want == anyDriver {
		timeout = min(timeout, anyDriverWait)
	}
	var got string
	ok := waitFor(func() bool {
		got, _ = readDriver(opts.SysfsRoot, b)
		if want == anyDriver {
			return got != ""
		}
		return got == want
	}, timeout)
	if ok || want == anyDriver {
		return nil
	}
	if want == "" {
		return fmt.Errorf("%w: %s is still bound to %s after %v", ErrBindTimeout, b, got, timeout)
	}
	return fmt.Errorf("%w: %s did not take %s within %v (it is bound to %s; see dmesg for the driver's complaint)",
		ErrBindTimeout, want, b, timeout, orNone(got))
}

func waitFor(cond func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readDriver returns the driver b is bound to now, "" for none.
func readDriver(root string, b BDF) (string, error) {
	t, err := os.Readlink(filepath.Join(root, "bus", "pci", "devices", b.String(), "driver"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return path.Base(t), nil
}

// writeSysfs writes value to an existing sysfs attribute in one write, as
// the kernel wants (no O_CREAT, no O_TRUNC).
func writeSysfs(p, value string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return unwrapPath(err)
	}
	_, werr := f.Write([]byte(value))
	cerr := f.Close()
	if werr != nil {
		return unwrapPath(werr)
	}
	return unwrapPath(cerr)
}

func modprobe(module string) error {
	out, err := exec.Command("modprobe", module).CombinedOutput()
	if err != nil {
		if msg := strings.TrimSpace(string(out)); msg != "" {
			return fmt.Errorf("%w: %s", err, msg)
		}
		return err
	}
	return nil
}
