package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/internal/bench"
	"github.com/umdkit/umd/internal/fdleak"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/pcie/pcietest"
)

func TestMain(m *testing.M) { fdleak.Main(m) }

// umdbench runs the command and returns its exit status and output.
func umdbench(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestFlagsFioNames(t *testing.T) {
	o, sels, err := parseArgs([]string{
		"--rw=randrw", "0000:03:00.0", "--rwmixread", "70", "--bs=128k", "--iodepth", "32",
		"--numjobs=2", "--runtime", "2", "--time_based", "--size=1g", "--ramp_time", "500ms",
		"--verify", "--verify_pass", "4", "--completion", "adaptive", "--nsid", "2", "class=nvme",
		"-o", "json", "--offset", "1m", "--data_pointer", "sgl", "--clocksource=clock_gettime", "--", "--odd",
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"0000:03:00.0", "class=nvme", "--odd"}; strings.Join(sels, " ") != strings.Join(want, " ") {
		t.Errorf("selectors %q, want %q", sels, want)
	}
	w, err := o.workload()
	if err != nil {
		t.Fatal(err)
	}
	want := bench.Workload{
		RW: bench.RandReadWrite, RWMixRead: 70, BlockSize: 128 << 10, IODepth: 32,
		Runtime: 2 * time.Second, TimeBased: true, RampTime: 500 * time.Millisecond, Size: 1 << 30, Offset: 1 << 20,
		Verify: true, VerifyPass: 4, Completion: bench.Adaptive, PollSpins: 1000, Seed: 0x5eed,
		DataPointer: nvmelike.DataPointerSGL, Clock: bench.ClockGettime,
	}
	if w != want {
		t.Errorf("workload\n %+v\nwant\n %+v", w, want)
	}
	if o.numjobs != 2 || o.nsid.String() != "2" || o.nsid.several() || o.format != "json" {
		t.Errorf("numjobs %d nsid %s format %q", o.numjobs, &o.nsid, o.format)
	}
	if o.given["bs"] != "131072" || o.given["rw"] != "randrw" {
		t.Errorf("global options %v", o.given)
	}
}

// TestNSIDList: --nsid takes one ID, several, or all.
func TestNSIDList(t *testing.T) {
	for _, c := range []struct {
		arg     string
		want    string
		several bool
	}{
		{"", "1", false},
		{"3", "3", false},
		{"2,1", "2,1", true},
		{"1, 4", "1,4", true},
		{"all", "all", true},
	} {
		args := []string{"03:00.0"}
		if c.arg != "" {
			args = append(args, "--nsid", c.arg)
		}
		o, _, err := parseArgs(args)
		if err != nil {
			t.Fatalf("--nsid %q: %v", c.arg, err)
		}
		if o.nsid.String() != c.want || o.nsid.several() != c.several {
			t.Errorf("--nsid %q: %s, several %v; want %s, %v", c.arg, &o.nsid, o.nsid.several(), c.want, c.several)
		}
	}
}

func TestFlagsDefaults(t *testing.T) {
	o, _, err := parseArgs(nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := o.workload()
	if err != nil {
		t.Fatal(err)
	}
	// fio's defaults, and ten seconds time-based when neither time nor
	// size is given.
	if w.RW != bench.SeqRead || w.BlockSize != 4096 || w.IODepth != 1 || w.RWMixRead != 50 ||
		w.Runtime != 10*time.Second || !w.TimeBased || w.Completion != bench.Poll || w.VerifyPass != 1 ||
		w.DataPointer != nvmelike.DataPointerAuto || w.Clock != bench.DefaultClockSource() {
		t.Errorf("defaults: %+v", w)
	}
	for _, args := range [][]string{{"--rwmixwrite", "30"}, {"--verify=crc32c"}, {"--verify=0"}, {"--size", "4k"}, {"--runtime", "3"}} {
		o, _, err := parseArgs(args)
		if err != nil {
			t.Fatal(err)
		}
		w, err := o.workload()
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		switch args[0] {
		case "--rwmixwrite":
			if w.RWMixRead != 70 {
				t.Errorf("--rwmixwrite 30 gives rwmixread %d", w.RWMixRead)
			}
		case "--verify=crc32c":
			if !w.Verify {
				t.Error("--verify=crc32c is off")
			}
		case "--verify=0":
			if w.Verify {
				t.Error("--verify=0 is on")
			}
		case "--runtime":
			if w.Runtime != 3*time.Second || !w.TimeBased {
				t.Errorf("--runtime 3 alone: %+v; want 3 s, time-based", w)
			}
		case "--size":
			if w.Size != 4096 || w.TimeBased || w.Runtime != 0 {
				t.Errorf("--size 4k alone: %+v", w)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--rw", "trim", "--sim"}, "--rw \"trim\""},
		{[]string{"--bs", "4x", "--sim"}, "size \"4x\""},
		{[]string{"--bs", "1000", "--sim"}, "not a multiple of 512"},
		{[]string{"--iodepth", "0", "--sim"}, "--iodepth 0"},
		{[]string{"--runtime", "soon", "--sim"}, "time \"soon\""},
		{[]string{"--completion", "spin", "--sim"}, "--completion \"spin\""},
		{[]string{"--completion", "irq", "--sim"}, "runs polled"},
		{[]string{"--rwmixread", "60", "--rwmixwrite", "60", "--sim"}, "do not add up"},
		{[]string{"--verify=md5", "--sim"}, "crc32c only"},
		{[]string{"--sim", "03:00.0"}, "takes no selectors"},
		{[]string{"--sim", "--rw", "randread", "--verify"}, "starts empty every run"},
		{[]string{"--nosuchflag"}, "nosuchflag"},
		{[]string{"-o", "xml", "--sim"}, "want text or json"},
		{[]string{"--rw", "read"}, "name the devices"},
		{[]string{"bogus=1"}, "bad selector \"bogus=1\""},
		{[]string{"--sim", "--sim_lba", "1000"}, "LBA size 1000"},
		{[]string{"--sim", "--trace_faults"}, "--trace_faults needs a device"},
		{[]string{"--sim", "--shadow_doorbells", "maybe"}, "want on or off"},
		{[]string{"--sim", "--plot", "run.pdf"}, "unknown plot format \".pdf\""},
		{[]string{"--sim", "--data_pointer", "list"}, "--data_pointer \"list\""},
		{[]string{"--sim", "--clocksource", "gettimeofday"}, "want cpu or clock_gettime"},
		{[]string{"--sim", "--runtime", "0"}, "needs a time above zero"},
		{[]string{"--nsid", "0", "03:00.0"}, "want namespace IDs from 1"},
		{[]string{"--nsid", "1,x", "03:00.0"}, "want namespace IDs from 1"},
		{[]string{"--nsid", "2,1,2", "03:00.0"}, "namespace 2 twice"},
		{[]string{"--sim", "--nsid", "2"}, "one namespace, 1"},
		{[]string{"--sim", "--runtime", "0", "--size", "1m", "--time_based"}, "needs a time above zero"},
	} {
		code, _, errOut := umdbench(t, c.args...)
		if code != exitUsage || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "--help") {
			t.Errorf("umdbench %q: exit %d, %q; want exit 2 saying %q", c.args, code, errOut, c.want)
		}
	}
}

func TestHelp(t *testing.T) {
	code, out, _ := umdbench(t, "--help")
	if code != exitOK {
		t.Fatalf("--help: exit %d", code)
	}
	for _, want := range []string{"Examples:", "--rw MODE", "--iodepth", "--verify", "--completion", "-o json", "--sim", "0.2 µs", "Selectors pick", "Exit status", "--trace_faults"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// TestSelectDevices picks devices from a fake sysfs: the device on the
// kernel's nvme driver is refused with the command that fixes it.
func TestSelectDevices(t *testing.T) {
	root := pcietest.Sample(t).Root
	bdfs, err := selectDevices(root, []string{"class=nvme", "driver=vfio-pci"})
	if err != nil || strings.Join(bdfs, " ") != "0000:03:00.0 0000:04:00.0 0000:08:00.0 0000:09:00.0 0000:81:00.0" {
		t.Errorf("class=nvme driver=vfio-pci: %v, %v", bdfs, err)
	}
	// A card's selector picks its switch ports too; they are skipped.
	bdfs, err = selectDevices(root, []string{"card=0000:01:00.0"})
	if err != nil || strings.Join(bdfs, " ") != "0000:03:00.0 0000:04:00.0" {
		t.Errorf("card=0000:01:00.0: %v, %v", bdfs, err)
	}
	_, err = selectDevices(root, []string{"07:00.0"})
	if err == nil || !strings.Contains(err.Error(), "bound to nvme, not vfio-pci") || !strings.Contains(err.Error(), "umdprobe bind 0000:07:00.0") {
		t.Errorf("07:00.0 on nvme: %v", err)
	}
	_, err = selectDevices(root, []string{"0a:00.0"})
	if !errors.Is(err, errNoMatch) || !strings.Contains(err.Error(), "0000:0a:00.0 (class 0x020000)") {
		t.Errorf("an Ethernet function: %v", err)
	}
	code, _, errOut := umdbench(t, "--sysfs", root, "0000:55:00.0")
	if code != exitNoMatch || !strings.Contains(errOut, "no PCI function matches") {
		t.Errorf("no match: exit %d, %q", code, errOut)
	}
}

// TestSimEveryPattern runs umdbench --sim for each --rw mode with verify
// and JSON output, as a user would.
func TestSimEveryPattern(t *testing.T) {
	for _, rw := range []string{"write", "randwrite", "rw", "randrw", "read", "randread"} {
		t.Run(rw, func(t *testing.T) {
			args := []string{"--sim", "--rw", rw, "--bs", "4k", "--iodepth", "8", "--numjobs", "2", "--size", "1m", "--verify", "-o", "json"}
			if rw == "read" || rw == "randread" {
				// Each --sim run has a fresh, zeroed namespace: reads
				// verify nothing there; check them without --verify.
				args = []string{"--sim", "--rw", rw, "--bs", "4k", "--iodepth", "8", "--numjobs", "2", "--runtime", "200ms", "--time_based", "-o", "json"}
			}
			code, out, errOut := umdbench(t, args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var doc struct {
				Jobs []struct {
					JobName string `json:"jobname"`
					Read    struct {
						IOPS  float64 `json:"iops"`
						BW    float64 `json:"bw"`
						LatNS struct {
							Percentile map[string]float64 `json:"percentile"`
						} `json:"lat_ns"`
					} `json:"read"`
					Write struct {
						IOPS float64 `json:"iops"`
					} `json:"write"`
					UMD struct {
						Verified uint64 `json:"verified_blocks"`
					} `json:"umd"`
				} `json:"jobs"`
				UMD struct {
					Sim struct {
						AllocsPerIO float64 `json:"allocs_per_io"`
					} `json:"sim"`
				} `json:"umd"`
			}
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			if len(doc.Jobs) != 2 {
				t.Fatalf("%d jobs", len(doc.Jobs))
			}
			for _, j := range doc.Jobs {
				if j.Read.IOPS+j.Write.IOPS <= 0 {
					t.Errorf("%s: no IOPS", j.JobName)
				}
				if strings.Contains(rw, "read") || strings.HasSuffix(rw, "rw") {
					if j.Read.IOPS <= 0 || j.Read.LatNS.Percentile["99.990000"] <= 0 {
						t.Errorf("%s: read IOPS %g, p99.99 %g", j.JobName, j.Read.IOPS, j.Read.LatNS.Percentile["99.990000"])
					}
				}
				if strings.Contains(rw, "w") && j.UMD.Verified == 0 {
					t.Errorf("%s: verified nothing", j.JobName)
				}
			}
		})
	}
}

func TestSimTextAndOutputFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "out.txt")
	code, out, errOut := umdbench(t, "--sim", "--rw", "randread", "--iodepth", "4", "--runtime", "200ms", "--output", file)
	if code != exitOK || out != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"randread, bs 4 KiB, iodepth 4", "sim/0", "P99.9", "ALLOCS/IO", "HOST cycles/IO", "SYSCALLS/IO"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("output lacks %q:\n%s", want, b)
		}
	}
	if errOut != "" {
		t.Errorf("stderr is not a terminal, yet umdbench wrote %q", errOut)
	}
}

// TestSimPlot draws a --sim run: the SVG parses as XML and holds the
// latency histogram of the reads and the IOPS of the one job.
func TestSimPlot(t *testing.T) {
	file := filepath.Join(t.TempDir(), "run.svg")
	code, _, errOut := umdbench(t, "--sim", "--rw", "randread", "--iodepth", "4", "--runtime", "300ms", "--plot", file, "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Panels []struct {
			Lines []struct {
				Name   string `xml:"data-name,attr"`
				Points string `xml:"points,attr"`
			} `xml:"polyline"`
		} `xml:"g"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("--plot wrote no XML: %v", err)
	}
	if len(doc.Panels) != 2 {
		t.Fatalf("%d panels, want latency and IOPS", len(doc.Panels))
	}
	for i, want := range []string{"read", "total"} {
		l := doc.Panels[i].Lines
		if len(l) != 1 || l[0].Name != want || len(strings.Fields(l[0].Points)) < 2 {
			t.Errorf("panel %d: series %+v, want one named %s with points", i, l, want)
		}
	}
	// The same as a PNG.
	pngFile := filepath.Join(t.TempDir(), "run.PNG")
	if code, _, errOut := umdbench(t, "--sim", "--rw", "randread", "--iodepth", "4", "--runtime", "300ms", "--plot", pngFile); code != exitOK {
		t.Fatalf("--plot run.PNG: exit %d: %s", code, errOut)
	}
	f, err := os.Open(pngFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("--plot run.PNG wrote no PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 400 || b.Dy() < 400 {
		t.Errorf("PNG of %v", b)
	}
}

// TestDataOnly checks that namespaces formatted with metadata are refused
// with what the format is, and those without are taken.
func TestDataOnly(t *testing.T) {
	formats := []nvmelike.LBAFormat{{LBADS: 9}, {LBADS: 12, MS: 8}, {LBADS: 9, MS: 16}}
	for _, c := range []struct {
		flbas uint8
		want  string // "" for no error
	}{
		{0x00, ""},
		{0x01, "8 bytes of metadata per 4096-byte block, in a separate buffer"},
		{0x12, "16 bytes of metadata per 512-byte block, after each block's data"},
	} {
		ns := &nvmelike.IdentifyNamespace{NSID: 3, FLBAS: c.flbas, NLBAF: 2, LBAF: formats}
		ns.LBASize = 1 << formats[ns.Format()].LBADS
		err := dataOnly("0000:03:00.0", ns)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("FLBAS %#x: %v", c.flbas, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "namespace 3")):
			t.Errorf("FLBAS %#x: %v; want it to say %q", c.flbas, err, c.want)
		}
	}
}

// TestCommandSetTakes: a zoned namespace takes reads and sequential
// writes, not random or mixed ones; a key value namespace takes neither.
func TestCommandSetTakes(t *testing.T) {
	for _, c := range []struct {
		csi  uint8
		rw   bench.RW
		want string // "" for no error
	}{
		{nvmelike.CSINVM, bench.RandWrite, ""},
		{nvmelike.CSIZoned, bench.RandRead, ""},
		{nvmelike.CSIZoned, bench.SeqWrite, ""},
		{nvmelike.CSIZoned, bench.RandWrite, "--rw randwrite: 0000:03:00.0 namespace 2 is zoned (ZNS)"},
		{nvmelike.CSIZoned, bench.SeqReadWrite, "--rw rw: 0000:03:00.0 namespace 2 is zoned"},
		{nvmelike.CSIKeyValue, bench.SeqRead, "namespace 2 speaks the key value command set"},
	} {
		err := commandSetTakes("0000:03:00.0", 2, c.csi, c.rw)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("CSI %d, %v: %v; want %q", c.csi, c.rw, err, c.want)
		}
	}
}

// TestRegionBeyondNamespace: an --offset at or past the end of the
// namespace, or more jobs than it has blocks of --bs, fail the run with
// the namespace's size and what was asked for.
func TestRegionBeyondNamespace(t *testing.T) {
	for _, args := range [][]string{
		{"--offset", "2m"},
		{"--offset", "1m"},
		{"--numjobs", "300", "--bs", "4k"},
	} {
		args = append([]string{"--sim", "--sim_size", "1m", "--runtime", "100ms"}, args...)
		code, _, errOut := umdbench(t, args...)
		if code != exitFailure || !strings.Contains(errOut, "holds 1 MiB") || !strings.Contains(errOut, "less than one --bs") {
			t.Errorf("umdbench %q: exit %d, %q; want exit 1 saying the namespace leaves a job less than one --bs", args, code, errOut)
		}
	}
	if code, _, errOut := umdbench(t, "--sim", "--sim_size", "1m", "--runtime", "100ms", "--offset", "1020k", "--bs", "4k"); code != exitOK {
		t.Errorf("the last 4 KiB of the namespace: exit %d, %q", code, errOut)
	}
}
