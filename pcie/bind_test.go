package pcie

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/pcie/pcietest"

	"github.com/umdkit/umd/internal/mountinfo"
)

// bindEnv is a fake machine to bind on: a sysfs tree with an emulated
// kernel behind it, a fake /proc and a state directory.
type bindEnv struct {
	tr   *pcietest.Tree
	k    *pcietest.Kernel
	proc *pcietest.Proc
	opts BindOptions
}

func newBindEnv(t *testing.T, tr *pcietest.Tree) *bindEnv {
	t.Helper()
	e := &bindEnv{tr: tr, k: tr.Kernel(), proc: tr.NewProc()}
	e.opts = BindOptions{
		SysfsRoot: tr.Root,
		ProcRoot:  e.proc.Root,
		StateDir:  t.TempDir(),
		Modprobe:  e.k.Modprobe,
		Timeout:   time.Second,
		write:     e.k.Write,
		geteuid:   func() int { return 0 },
	}
	return e
}

func mustBDF(t *testing.T, s string) BDF {
	t.Helper()
	b, err := ParseBDF(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func bdfs(t *testing.T, ss ...string) []BDF {
	var out []BDF
	for _, s := range ss {
		out = append(out, mustBDF(t, s))
	}
	return out
}

// state is what binding may change: every function's driver and
// driver_override, and the state files.
func (e *bindEnv) state(t *testing.T) string {
	t.Helper()
	s, err := Scan(Options{SysfsRoot: e.tr.Root, IDs: &IDs{}})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range s.Functions {
		b.WriteString(f.BDF.String() + " " + f.Driver + " " + f.DriverOverride + "\n")
	}
	ents, _ := os.ReadDir(e.opts.StateDir)
	for _, en := range ents {
		if strings.HasPrefix(en.Name(), ".") {
			continue // the lock
		}
		b.WriteString("state " + en.Name() + "\n")
	}
	return b.String()
}

func (e *bindEnv) driverOf(t *testing.T, bdf string) (driver, override string) {
	t.Helper()
	d, err := readDriver(e.tr.Root, mustBDF(t, bdf))
	if err != nil {
		t.Fatal(err)
	}
	o, err := os.ReadFile(filepath.Join(e.tr.Root, "bus/pci/devices", bdf, "driver_override"))
	if err != nil {
		t.Fatal(err)
	}
	return d, strings.TrimSpace(string(o))
}

func stepKinds(steps []Step) string {
	var ks []string
	for _, s := range steps {
		ks = append(ks, string(s.Kind))
	}
	return strings.Join(ks, " ")
}

func TestBindDryRun(t *testing.T) {
	t.Parallel()
	e := newBindEnv(t, pcietest.Sample(t))
	e.opts.DryRun = true
	e.opts.geteuid = func() int { return 1000 } // a dry run needs no root
	before := e.state(t)
	p, err := Bind(bdfs(t, "0000:07:00.0", "0000:03:00.0"), e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.state(t); got != before || len(e.k.Writes) != 0 || len(e.k.Loaded) != 0 {
		t.Errorf("a dry run changed something: writes %q, modules %q", e.k.Writes, e.k.Loaded)
	}
	if len(p.Functions) != 2 || !p.DryRun || len(p.Setup) != 0 {
		t.Fatalf("plan = %+v", p)
	}
	f := p.Functions[0]
	if f.BDF.String() != "0000:07:00.0" || f.Nothing || f.Driver != "nvme" || f.Target != "vfio-pci" {
		t.Errorf("first function = %+v", f)
	}
	if got, want := stepKinds(f.Steps), "record write write write wait"; got != want {
		t.Errorf("steps %q, want %q", got, want)
	}
	want := []string{
		filepath.Join(e.tr.Root, "bus/pci/devices/0000:07:00.0/driver_override") + "<-vfio-pci",
		filepath.Join(e.tr.Root, "bus/pci/drivers/nvme/unbind") + "<-0000:07:00.0",
		filepath.Join(e.tr.Root, "bus/pci/drivers_probe") + "<-0000:07:00.0",
	}
	for i, s := range f.Steps[1:4] {
		if got := s.Path + "<-" + s.Value; got != want[i] {
			t.Errorf("step %d: %s, want %s", i+1, got, want[i])
		}
	}
	if g := p.Functions[1]; !g.Nothing || len(g.Steps) != 0 {
		t.Errorf("03:00.0 is on vfio-pci already, yet: %+v", g)
	}
	text := p.String()
	for _, w := range []string{
		"0000:07:00.0: record that it was bound to nvme with driver_override none",
		"0000:07:00.0: unbind it from nvme",
		"0000:03:00.0: nothing to do (already bound to vfio-pci)",
	} {
		if !strings.Contains(text, w) {
			t.Errorf("plan text lacks %q:\n%s", w, text)
		}
	}
}

func TestBindDryRunLoadsModule(t *testing.T) {
	t.Parallel()
	e := newBindEnv(t, pcietest.Sample(t))
	e.opts.DryRun = true
	e.opts.Driver = "uio_pci_generic"
	p, err := Bind(bdfs(t, "0000:03:00.0"), e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Setup) != 1 || p.Setup[0].Kind != StepModprobe || p.Setup[0].Value != "uio_pci_generic" || len(e.k.Loaded) != 0 {
		t.Errorf("setup %+v, loaded %q", p.Setup, e.k.Loaded)
	}
}

func TestBindRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		setup  func(e *bindEnv)
		bdfs   []string
		is     error
		errMsg string
	}{
		{
			name:   "not root",
			setup:  func(e *bindEnv) { e.opts.geteuid = func() int { return 1000 } },
			bdfs:   []string{"0000:07:00.0"},
			is:     ErrNotRoot,
			errMsg: "binding to vfio-pci: not running as root: writing driver_override and the driver's bind files needs root (run with sudo, or try --dry-run)",
		},
		{
			name:   "group not viable",
			bdfs:   []string{"0000:00:1f.2"},
			is:     ErrGroupNotViable,
			errMsg: "binding 0000:00:1f.2 to vfio-pci: IOMMU group 20 is not viable: its member 0000:00:1f.0 is bound to the host driver lpc_ich (bind it to vfio-pci as well, or unbind it)",
		},
		{
			name:   "bridge",
			bdfs:   []string{"0000:00:05.0"},
			is:     ErrNotEndpoint,
			errMsg: "binding 0000:00:05.0 to vfio-pci: not an endpoint: 0000:00:05.0 is a root port, and vfio-pci takes only endpoints",
		},
		{
			name:   "no such function",
			bdfs:   []string{"0000:07:00.0", "0000:ff:00.0"},
			is:     ErrNoFunction,
			errMsg: "binding to vfio-pci: no such PCI function: 0000:ff:00.0",
		},
		{
			name: "namespace mounted",
			setup: func(e *bindEnv) {
				e.tr.NVMeNamespace("0000:07:00.0", "nvme0", "241:0", pcietest.Namespace{Disk: "nvme0n1", Dev: "259:0"})
				e.proc.Mount("259:0", "/mnt/my data")
			},
			bdfs:   []string{"0000:07:00.0"},
			is:     ErrInUse,
			errMsg: "binding 0000:07:00.0 to vfio-pci: 0000:07:00.0 is in use through nvme: nvme0n1 is mounted on /mnt/my data (unmount, stop or close them first)",
		},
		{
			name: "partition mounted and swap, multipath",
			setup: func(e *bindEnv) {
				e.tr.NVMeNamespace("0000:07:00.0", "nvme2", "241:2", pcietest.Namespace{Disk: "nvme2n1", Dev: "259:4",
					Partitions: map[string]string{"nvme2n1p1": "259:5", "nvme2n1p2": "259:6"}, Multipath: true})
				e.proc.Mount("259:5", "/boot")
				e.proc.Swap("/dev/nvme2n1p2")
			},
			bdfs:   []string{"0000:07:00.0"},
			is:     ErrInUse,
			errMsg: "nvme2n1p1 is mounted on /boot, nvme2n1p2 is used as swap",
		},
		{
			name: "held by device-mapper",
			setup: func(e *bindEnv) {
				e.tr.NVMeNamespace("0000:07:00.0", "nvme0", "241:0", pcietest.Namespace{Disk: "nvme0n1", Dev: "259:0", Holders: []string{"dm-0"}})
			},
			bdfs:   []string{"0000:07:00.0"},
			is:     ErrInUse,
			errMsg: "nvme0n1 is held by dm-0",
		},
		{
			name: "open by a process",
			setup: func(e *bindEnv) {
				// The controller's character device number is
				// /dev/null's, so a real file descriptor matches.
				e.tr.NVMeNamespace("0000:07:00.0", "nvme0", "1:3", pcietest.Namespace{Disk: "nvme0n1", Dev: "259:0"})
				e.proc.Open(4242, "fio", 7, "/dev/null")
				e.proc.Open(4243, "cat", 1, "/dev/zero") // 1:5, not ours
			},
			bdfs:   []string{"0000:07:00.0"},
			is:     ErrInUse,
			errMsg: "0000:07:00.0 is in use through nvme: nvme0 is open by process 4242 (fio) (unmount",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newBindEnv(t, pcietest.Sample(t))
			if tc.setup != nil {
				tc.setup(e)
			}
			before := e.state(t)
			_, err := Bind(bdfs(t, tc.bdfs...), e.opts)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.errMsg) {
				t.Errorf("err = %v\nwant errors.Is %v and containing %q", err, tc.is, tc.errMsg)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error is more than one line: %q", err)
			}
			if got := e.state(t); got != before || len(e.k.Writes) != 0 || len(e.k.Loaded) != 0 {
				t.Errorf("a refusal changed something: writes %q, modules %q", e.k.Writes, e.k.Loaded)
			}
			// A dry run refuses the same way (save for root).
			if !errors.Is(tc.is, ErrNotRoot) {
				e.opts.DryRun = true
				if _, err2 := Bind(bdfs(t, tc.bdfs...), e.opts); err2 == nil || err2.Error() != err.Error() {
					t.Errorf("dry run: %v", err2)
				}
			}
		})
	}
}

func TestGroupErrorFields(t *testing.T) {
	t.Parallel()
	e := newBindEnv(t, pcietest.Sample(t))
	_, err := Bind(bdfs(t, "0000:00:1f.3"), e.opts)
	var ge *GroupError
	if !errors.As(err, &ge) || ge.Group != 20 || ge.Member.String() != "0000:00:1f.0" || ge.Driver != "lpc_ich" {
		t.Fatalf("err = %v (%+v)", err, ge)
	}
	// Bound together, the group's members do not block each other;
	// ahci and friends have no block devices in the tree.
	p, err := Bind(bdfs(t, "0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"), e.opts)
	if err != nil || len(p.Functions) != 3 {
		t.Fatalf("binding the whole group: %v", err)
	}
}

func TestBindIOMMUOff(t *testing.T) {
	t.Parallel()
	tr := pcietest.New(t)
	tr.Add(pcietest.Func{BDF: "0000:00:03.0", Vendor: pcietest.VendorRedHat, Device: pcietest.DeviceNVMe, Class: pcietest.ClassNVMe, Driver: "nvme"})
	e := newBindEnv(t, tr)
	_, err := Bind(bdfs(t, "0000:00:03.0"), e.opts)
	if !errors.Is(err, ErrIOMMUOff) || !strings.Contains(err.Error(), "0000:00:03.0 has no IOMMU group, so vfio-pci cannot hand it to user space (turn the IOMMU on: intel_iommu=on") {
		t.Errorf("err = %v", err)
	}
	// Another driver does not need the IOMMU.
	e.opts.DryRun = true
	e.opts.Driver = "uio_pci_generic"
	if _, err := Bind(bdfs(t, "0000:00:03.0"), e.opts); err != nil {
		t.Errorf("binding to uio_pci_generic: %v", err)
	}
}

// xio3130Tree is the cards topology's first branch: an NVMe below a
// QEMU xio3130 downstream port, sharing its IOMMU group with the port.
func xio3130Tree(t *testing.T, portDriver string) *pcietest.Tree {
	tr := pcietest.New(t)
	bridge := func(bdf, parent, group, driver string, dev uint16) {
		tr.Add(pcietest.Func{BDF: bdf, Parent: parent, Vendor: pcietest.VendorTI, Device: dev, Class: pcietest.ClassBridge,
			Config: pcietest.NewConfig(pcietest.VendorTI, dev, pcietest.ClassBridge).Bytes(256), Driver: driver, IOMMUGroup: group})
	}
	bridge("0000:00:01.0", "", "1", "pcieport", pcietest.DeviceRootPort)
	bridge("0000:01:00.0", "0000:00:01.0", "5", "pcieport", pcietest.DeviceXIO3130Up)
	bridge("0000:02:00.0", "0000:01:00.0", "6", portDriver, pcietest.DeviceXIO3130Dn)
	tr.Add(pcietest.Func{BDF: "0000:03:00.0", Parent: "0000:02:00.0", Vendor: pcietest.VendorRedHat, Device: pcietest.DeviceNVMe,
		Class: pcietest.ClassNVMe, Driver: "nvme", IOMMUGroup: "6"})
	tr.IOMMU("dmar0")
	return tr
}

func TestBindPortInGroupIsHarmless(t *testing.T) {
	t.Parallel()
	e := newBindEnv(t, xio3130Tree(t, "pcieport"))
	p, err := Bind(bdfs(t, "0000:03:00.0"), e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := e.driverOf(t, "0000:03:00.0"); d != "vfio-pci" || len(e.k.Loaded) != 1 || e.k.Loaded[0] != "vfio-pci" {
		t.Errorf("driver %q, modules loaded %q; plan:\n%s", d, e.k.Loaded, p)
	}

	e = newBindEnv(t, xio3130Tree(t, "shpchp"))
	_, err = Bind(bdfs(t, "0000:03:00.0"), e.opts)
	if !errors.Is(err, ErrGroupNotViable) || !strings.Contains(err.Error(), "its member 0000:02:00.0 is bound to the host driver shpchp") {
		t.Errorf("err = %v", err)
	}
}

func TestBindRoundTrip(t *testing.T) {
	t.Parallel()
	e := newBindEnv(t, pcietest.Sample(t))
	start := e.state(t)

	// nvme -> vfio-pci, recorded.
	if _, err := Bind(bdfs(t, "0000:07:00.0"), e.opts); err != nil {
		t.Fatal(err)
	}
	if d, o := e.driverOf(t, "0000:07:00.0"); d != "vfio-pci" || o != "vfio-pci" {
		t.Fatalf("after bind: driver %q, override %q", d, o)
	}
	rec, err := ReadBindRecord(e.opts.StateDir, mustBDF(t, "0000:07:00.0"))
	if err != nil || rec == nil || rec.Driver != "nvme" || rec.DriverOverride != "" || rec.BoundTo != "vfio-pci" {
		t.Fatalf("record %+v, %v", rec, err)
	}

	// Again: nothing to do, nothing written.
	n := len(e.k.Writes)
	p, err := Bind(bdfs(t, "0000:07:00.0"), e.opts)
	if err != nil || !p.Functions[0].Nothing || len(e.k.Writes) != n {
		t.Fatalf("second bind: %v, plan %+v, writes %q", err, p, e.k.Writes[n:])
	}

	// Restore: back on nvme, override cleared, record gone.
	if _, err := Unbind(bdfs(t, "0000:07:00.0"), e.opts); err != nil {
		t.Fatal(err)
	}
	if got := e.state(t); got != start {
		t.Errorf("after unbind:\n%s\nwant\n%s", got, start)
	}
	p, err = Unbind(bdfs(t, "0000:07:00.0"), e.opts)
	if err != nil || !p.Functions[0].Nothing {
		t.Errorf("second unbind: %v, %+v", err, p)
	}
}

// TestBindToOtherDriverAndBack is the guest's round trip on the fake:
// vfio-pci -> nvme (a driver that must be loaded first) -> restore.
func TestBindToOtherDriverAndBack(t *testing.T) {
	t.Parallel()
	tr := pcietest.Sample(t)
	e := newBindEnv(t, tr)
	tr.Write("0000:03:00.0", "driver_override", "vfio-pci\n") // as the guest's init leaves it
	if err := os.RemoveAll(filepath.Join(tr.Root, "bus/pci/drivers/nvme")); err != nil {
		t.Fatal(err)
	}
	tr.Remove("0000:07:00.0", "driver") // nvme is not loaded
	start := e.state(t)

	e.opts.Driver = "nvme"
	p, err := Bind(bdfs(t, "0000:03:00.0"), e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if d, o := e.driverOf(t, "0000:03:00.0"); d != "nvme" || o != "nvme" || len(p.Setup) != 1 || len(e.k.Loaded) != 1 {
		t.Fatalf("driver %q, override %q, setup %+v, loaded %q", d, o, p.Setup, e.k.Loaded)
	}
	// Taking it from nvme is refused while its namespace is mounted.
	tr.NVMeNamespace("0000:03:00.0", "nvme0", "241:0", pcietest.Namespace{Disk: "nvme0n1", Dev: "259:0"})
	e.proc.Mount("259:0", "/data")
	if _, err := Unbind(bdfs(t, "0000:03:00.0"), e.opts); !errors.Is(err, ErrInUse) {
		t.Fatalf("unbind of a mounted namespace: %v", err)
	}
	e.proc = tr.NewProc()
	e.opts.ProcRoot = e.proc.Root

	if _, err := Unbind(bdfs(t, "0000:03:00.0"), e.opts); err != nil {
		t.Fatal(err)
	}
	if got := e.state(t); got != start {
		t.Errorf("after unbind:\n%s\nwant\n%s", got, start)
	}
}

func TestUnbindWithoutRecord(t *testing.T) {
	t.Parallel()
	tr := pcietest.Sample(t)
	e := newBindEnv(t, tr)
	tr.Write("0000:03:00.0", "driver_override", "vfio-pci\n")
	p, err := Unbind(bdfs(t, "0000:03:00.0", "0000:07:00.0"), e.opts)
	if err != nil {
		t.Fatal(err)
	}
	// 03:00.0 goes to the driver that claims it by ID; 07:00.0 is on
	// nvme with no override and no record: nothing to do.
	if d, o := e.driverOf(t, "0000:03:00.0"); d != "nvme" || o != "(null)" {
		t.Errorf("03:00.0: driver %q, override %q", d, o)
	}
	if !p.Functions[1].Nothing || len(p.Functions[1].Steps) != 0 {
		t.Errorf("07:00.0: %+v", p.Functions[1])
	}
}

func TestBindFailureRollsBack(t *testing.T) {
	t.Parallel()
	e := newBindEnv(t, pcietest.Sample(t))
	e.opts.Timeout = 100 * time.Millisecond
	e.k.FailProbe["vfio-pci"] = true
	start := e.state(t)
	_, err := Bind(bdfs(t, "0000:07:00.0"), e.opts)
	if !errors.Is(err, ErrBindTimeout) || !strings.Contains(err.Error(), "(put back on nvme)") {
		t.Errorf("err = %v", err)
	}
	if got := e.state(t); got != start {
		t.Errorf("after a failed bind:\n%s\nwant\n%s", got, start)
	}
}

func TestBindModprobeFails(t *testing.T) {
	t.Parallel()
	e := newBindEnv(t, pcietest.Sample(t))
	e.opts.Driver = "nosuchdriver"
	start := e.state(t)
	_, err := Bind(bdfs(t, "0000:03:00.0"), e.opts)
	if !errors.Is(err, ErrDriverUnavailable) || !strings.Contains(err.Error(), "run `modprobe nosuchdriver` as root") {
		t.Errorf("err = %v", err)
	}
	if got := e.state(t); got != start || len(e.k.Writes) != 0 {
		t.Errorf("changed: writes %q", e.k.Writes)
	}
}

func TestGarbledRecord(t *testing.T) {
	t.Parallel()
	e := newBindEnv(t, pcietest.Sample(t))
	if err := os.WriteFile(filepath.Join(e.opts.StateDir, "0000:07:00.0.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Unbind(bdfs(t, "0000:07:00.0"), e.opts)
	if err == nil || !strings.Contains(err.Error(), "is garbled (remove it to start afresh)") {
		t.Errorf("err = %v", err)
	}
}

func TestUnescapeMount(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{`/mnt/a\040b`: "/mnt/a b", `/x\134`: `/x\`, `/y\0`: `/y\0`, "/plain": "/plain"} {
		if got := mountinfo.Unescape(in); got != want {
			t.Errorf("mountinfo.Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnbindHeldVFIOGroup(t *testing.T) {
	t.Parallel()
	tr := pcietest.Sample(t)
	e := newBindEnv(t, tr)
	// Group 14's character device has /dev/null's number, so a real
	// file descriptor matches.
	if err := os.MkdirAll(filepath.Join(tr.Root, "class/vfio/14"), 0o755); err != nil {
		t.Fatal(err)
	}
	tr.Write("0000:09:00.0", "driver_override", "vfio-pci\n")
	if err := os.WriteFile(filepath.Join(tr.Root, "class/vfio/14/dev"), []byte("1:3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.proc.Open(31337, "umdd", 5, "/dev/null")
	start := e.state(t)
	_, err := Unbind(bdfs(t, "0000:09:00.0"), e.opts)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "0000:09:00.0 is in use through vfio-pci: vfio/14 is open by process 31337 (umdd)") {
		t.Errorf("err = %v", err)
	}
	e.opts.Driver = "nvme"
	if _, err := Bind(bdfs(t, "0000:09:00.0"), e.opts); !errors.Is(err, ErrInUse) {
		t.Errorf("bind to nvme: %v", err)
	}
	if got := e.state(t); got != start || len(e.k.Writes) != 0 {
		t.Errorf("changed: writes %q", e.k.Writes)
	}
}
