package pcie

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/umdkit/umd/pcie/pcietest"
)

// doctorEnv is a healthy machine: Sample's tree with an IOMMU, the VFIO
// modules, 2 MiB hugepages on two nodes, /dev/vfio, root.
type doctorEnv struct {
	tr   *pcietest.Tree
	proc *pcietest.Proc
	dev  string
	opts PreflightOptions
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newDoctorEnv(t *testing.T) *doctorEnv {
	e := &doctorEnv{tr: pcietest.Sample(t), dev: t.TempDir()}
	e.proc = e.tr.NewProc()
	e.tr.IOMMU("dmar0")
	root := e.tr.Root
	if err := os.MkdirAll(filepath.Join(root, "module", "vfio_iommu_type1"), 0o755); err != nil {
		t.Fatal(err)
	}
	hp := filepath.Join(root, "kernel/mm/hugepages/hugepages-2048kB")
	writeFile(t, filepath.Join(hp, "nr_hugepages"), "64\n")
	writeFile(t, filepath.Join(hp, "free_hugepages"), "60\n")
	writeFile(t, filepath.Join(root, "kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"), "0\n")
	writeFile(t, filepath.Join(root, "kernel/mm/hugepages/hugepages-1048576kB/free_hugepages"), "0\n")
	for i, n := range []string{"node0", "node1"} {
		nd := filepath.Join(root, "devices/system/node", n, "hugepages/hugepages-2048kB")
		writeFile(t, filepath.Join(nd, "nr_hugepages"), "32\n")
		writeFile(t, filepath.Join(nd, "free_hugepages"), []string{"32\n", "28\n"}[i])
	}
	writeFile(t, filepath.Join(e.proc.Root, "cmdline"), "console=ttyS0 intel_iommu=on quiet\n")
	writeFile(t, filepath.Join(e.proc.Root, "self/status"), "Name:\tumdprobe\nCapEff:\t0000000000000000\n")
	// Device files are links to /dev/null: character devices anyone
	// may stat.
	if err := os.MkdirAll(filepath.Join(e.dev, "vfio"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"vfio", "5", "6", "12", "14", "19", "23"} {
		if err := os.Symlink("/dev/null", filepath.Join(e.dev, "vfio", n)); err != nil {
			t.Fatal(err)
		}
	}
	e.opts = PreflightOptions{
		SysfsRoot: root, ProcRoot: e.proc.Root, DevRoot: e.dev,
		geteuid:   func() int { return 0 },
		getrlimit: func() (uint64, uint64, error) { return ^uint64(0), ^uint64(0), nil },
		access:    func(string) error { return nil },
	}
	return e
}

func findCheck(t *testing.T, r *Report, id, subject string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.ID == id && c.Subject == subject {
			return c
		}
	}
	t.Fatalf("no check %s %s in %+v", id, subject, r.Checks)
	return Check{}
}

func TestPreflightHealthy(t *testing.T) {
	t.Parallel()
	e := newDoctorEnv(t)
	r, err := Preflight(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Checks {
		if c.Status != StatusPass {
			t.Errorf("%s %s: %s: %s", c.ID, c.Subject, c.Status, c.Detail)
		}
	}
	// Every function on vfio-pci is checked when none is named.
	var fns []string
	for _, c := range r.Checks {
		if c.ID == "function" {
			fns = append(fns, c.Subject)
		}
	}
	if got := strings.Join(fns, " "); got != "0000:03:00.0 0000:04:00.0 0000:08:00.0 0000:09:00.0 0000:0a:02.1 0000:81:00.0" {
		t.Errorf("functions checked: %s", got)
	}
	if c := findCheck(t, r, "iommu", ""); c.Detail != "Intel VT-d (dmar0) is on, with 24 IOMMU groups" {
		t.Errorf("iommu: %q", c.Detail)
	}
	if c := findCheck(t, r, "hugepages", ""); c.Detail != "2 MiB pages: 64 reserved, 60 free (free/reserved per node: node0 32/32, node1 28/32); 1 GiB pages: 0 reserved, 0 free" {
		t.Errorf("hugepages: %q", c.Detail)
	}
	if r.Failed() || r.Summary() != "12 passed, 0 warnings, 0 failed" {
		t.Errorf("summary %s", r.Summary())
	}
}

func TestPreflightFindings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		setup         func(t *testing.T, e *doctorEnv)
		id, subject   string
		status        Status
		detail, fix   string
		functionsWant []string
	}{
		{
			name: "memlock too low",
			setup: func(t *testing.T, e *doctorEnv) {
				e.opts.getrlimit = func() (uint64, uint64, error) { return 8 << 20, 8 << 20, nil }
			},
			id:     "memlock",
			status: StatusFail,
			detail: "RLIMIT_MEMLOCK is 8 MiB (hard limit 8 MiB), less than the 64 MiB a run needs",
			fix:    "ulimit -l unlimited",
		},
		{
			name: "memlock lifted by CAP_IPC_LOCK",
			setup: func(t *testing.T, e *doctorEnv) {
				e.opts.getrlimit = func() (uint64, uint64, error) { return 8 << 20, 8 << 20, nil }
				writeFile(t, filepath.Join(e.proc.Root, "self/status"), "CapEff:\t000001ffffffffff\n")
			},
			id:     "memlock",
			status: StatusPass,
			detail: "but the process has CAP_IPC_LOCK, which lifts it",
		},
		{
			name: "IOMMU off on Intel",
			setup: func(t *testing.T, e *doctorEnv) {
				os.RemoveAll(filepath.Join(e.tr.Root, "class/iommu"))
				os.RemoveAll(filepath.Join(e.tr.Root, "kernel/iommu_groups"))
				writeFile(t, filepath.Join(e.proc.Root, "cpuinfo"), "vendor_id\t: GenuineIntel\n")
				writeFile(t, filepath.Join(e.proc.Root, "cmdline"), "quiet\n")
			},
			id:     "iommu",
			status: StatusFail,
			detail: "no IOMMU is enabled",
			fix:    "add intel_iommu=on to the kernel command line",
		},
		{
			name: "IOMMU turned off",
			setup: func(t *testing.T, e *doctorEnv) {
				os.RemoveAll(filepath.Join(e.tr.Root, "class/iommu"))
				os.RemoveAll(filepath.Join(e.tr.Root, "kernel/iommu_groups"))
				writeFile(t, filepath.Join(e.proc.Root, "cpuinfo"), "vendor_id\t: AuthenticAMD\n")
				writeFile(t, filepath.Join(e.proc.Root, "cmdline"), "amd_iommu=off quiet\n")
			},
			id:     "iommu",
			status: StatusFail,
			fix:    "remove amd_iommu=off from the kernel command line",
		},
		{
			name: "vfio's no-IOMMU mode",
			setup: func(t *testing.T, e *doctorEnv) {
				os.RemoveAll(filepath.Join(e.tr.Root, "class/iommu"))
				groups, err := os.ReadDir(filepath.Join(e.tr.Root, "kernel/iommu_groups"))
				if err != nil || len(groups) == 0 {
					t.Fatalf("the sample's IOMMU groups: %v, %v", groups, err)
				}
				for _, g := range groups {
					writeFile(t, filepath.Join(e.tr.Root, "kernel/iommu_groups", g.Name(), "name"), "vfio-noiommu\n")
				}
				writeFile(t, filepath.Join(e.proc.Root, "cpuinfo"), "vendor_id\t: GenuineIntel\n")
			},
			id:     "iommu",
			status: StatusFail,
			detail: "vfio's no-IOMMU groups",
			fix:    "turn vfio's no-IOMMU mode off",
		},
		{
			name: "function in vfio's no-IOMMU mode",
			setup: func(t *testing.T, e *doctorEnv) {
				os.Remove(filepath.Join(e.dev, "vfio/5"))
				if err := os.Symlink("/dev/null", filepath.Join(e.dev, "vfio/noiommu-5")); err != nil {
					t.Fatal(err)
				}
			},
			id: "function", subject: "0000:03:00.0",
			status: StatusFail,
			detail: "no-IOMMU mode (",
			fix:    "turn the IOMMU on and vfio's no-IOMMU mode off",
		},
		{
			name:   "modules",
			setup:  func(t *testing.T, e *doctorEnv) { os.RemoveAll(filepath.Join(e.tr.Root, "module/vfio_iommu_type1")) },
			id:     "vfio-modules",
			status: StatusFail,
			detail: "vfio_iommu_type1 not loaded",
			fix:    "modprobe -a vfio_iommu_type1",
		},
		{
			name:   "no container device",
			setup:  func(t *testing.T, e *doctorEnv) { os.Remove(filepath.Join(e.dev, "vfio/vfio")) },
			id:     "vfio-container",
			status: StatusFail,
			detail: "vfio/vfio does not exist",
			fix:    "modprobe vfio",
		},
		{
			name:  "no access",
			setup: func(t *testing.T, e *doctorEnv) { e.opts.access = func(string) error { return os.ErrPermission } },
			id:    "function", subject: "0000:03:00.0",
			status: StatusFail,
			detail: "/vfio/5 is not readable and writable by this user",
			fix:    "run as root",
		},
		{
			name:  "function on nvme",
			setup: func(t *testing.T, e *doctorEnv) { e.opts.Functions = bdfs(t, "0000:07:00.0") },
			id:    "function", subject: "0000:07:00.0",
			status: StatusFail,
			detail: "bound to nvme, not vfio-pci",
			fix:    "umdprobe bind 0000:07:00.0",
		},
		{
			name:  "group not viable",
			setup: func(t *testing.T, e *doctorEnv) { e.opts.Functions = bdfs(t, "0000:00:1f.2") },
			id:    "function", subject: "0000:00:1f.2",
			status: StatusFail,
			detail: "IOMMU group 20 is not viable: 0000:00:1f.0 is bound to the host driver lpc_ich",
			fix:    "umdprobe bind 0000:00:1f.2 0000:00:1f.0",
		},
		{
			name: "group open by another process",
			setup: func(t *testing.T, e *doctorEnv) {
				writeFile(t, filepath.Join(e.tr.Root, "class/vfio/14/dev"), "1:3\n")
				e.proc.Open(777, "umdd", 9, "/dev/null")
				e.opts.Functions = bdfs(t, "0000:09:00.0")
			},
			id: "function", subject: "0000:09:00.0",
			status: StatusWarn,
			detail: "; but vfio/14 is open by process 777 (umdd)",
		},
		{
			name: "nothing on vfio-pci",
			setup: func(t *testing.T, e *doctorEnv) {
				for _, b := range []string{"0000:03:00.0", "0000:04:00.0", "0000:08:00.0", "0000:09:00.0", "0000:0a:02.1", "0000:81:00.0"} {
					e.tr.Remove(b, "driver")
				}
			},
			id:     "function",
			status: StatusWarn,
			detail: "no PCI function is bound to vfio-pci",
		},
		{
			name: "no hugepages",
			setup: func(t *testing.T, e *doctorEnv) {
				writeFile(t, filepath.Join(e.tr.Root, "kernel/mm/hugepages/hugepages-2048kB/free_hugepages"), "0\n")
			},
			id:     "hugepages",
			status: StatusFail,
			fix:    "echo 512 > /proc/sys/vm/nr_hugepages",
		},
		{
			name:   "not root",
			setup:  func(t *testing.T, e *doctorEnv) { e.opts.geteuid = func() int { return 1000 } },
			id:     "privileges",
			status: StatusWarn,
			detail: "running as uid 1000, not root",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newDoctorEnv(t)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			r, err := Preflight(e.opts)
			if err != nil {
				t.Fatal(err)
			}
			c := findCheck(t, r, tc.id, tc.subject)
			if c.Status != tc.status || !strings.Contains(c.Detail, tc.detail) || !strings.Contains(c.Remedy, tc.fix) {
				t.Errorf("%s: %s\n  detail %q\n  remedy %q\nwant %s, %q, %q", c.ID, c.Status, c.Detail, c.Remedy, tc.status, tc.detail, tc.fix)
			}
			if (c.Status == StatusFail) != r.Failed() && tc.id != "iommu" {
				t.Errorf("Failed() = %v", r.Failed())
			}
		})
	}
}

func TestPreflightUnknownFunction(t *testing.T) {
	t.Parallel()
	e := newDoctorEnv(t)
	e.opts.Functions = bdfs(t, "0000:ee:00.0")
	if _, err := Preflight(e.opts); !errors.Is(err, ErrNoFunction) {
		t.Errorf("err = %v", err)
	}
}
