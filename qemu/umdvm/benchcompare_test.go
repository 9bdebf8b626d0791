package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const fioOut = `fio: some warning before the JSON
{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "4k-randread-qd1",
      "error" : 0,
      "read" : {
        "bw_bytes" : 2097152,
        "iops" : 512.0,
        "total_ios" : 512,
        "lat_ns" : {
          "mean" : 1950.5,
          "max" : 61437717822,
          "percentile" : { "50.000000" : 1800, "99.000000" : 4096 }
        }
      }
    }
  ],
  "disk_util" : [ { "name" : "nvme0n1", "read_ios" : 400 } ]
}
`

const umdOut = `{
  "umdbench version": "umdbench-1",
  "jobs": [
    {"jobname": "0000:00:01.0/0", "error": 0,
     "read": {"bw_bytes": 4194304, "iops": 1024, "total_ios": 1024,
              "lat_ns": {"mean": 1000, "percentile": {"99.000000": 2000}}},
     "umd": {"ios": 1500}}
  ]
}
`

// spdkOut has the lines of spdk_nvme_perf's output that parseSPDK reads,
// in its layout (-L adds the percentile summary).
const spdkOut = `Initializing NVMe Controllers
Attached to NVMe Controller at 0000:00:01.0 [1b36:0010]
========================================================
                                                                           Latency(us)
Device Information                     :       IOPS      MiB/s    Average        min        max
PCIE (0000:00:01.0) NSID 1 from core  0:   15013.50      58.65      66.03      18.55    8406.22
========================================================
Total                                  :   15013.50      58.65      66.03      18.55    8406.22

Summary latency data for PCIE (0000:00:01.0) NSID 1                  from core 0:
=================================================================================
  1.00000% :    25.000us
 99.00000% :   180.250us
 99.90000% :   900.000us
`

func TestParseSPDK(t *testing.T) {
	r, err := parseSPDK([]byte(spdkOut))
	if err != nil {
		t.Fatal(err)
	}
	if r.IOPS != 15013.50 || r.MiBps != 58.65 || r.MeanUS != 66.03 || r.P99US != 180.25 || r.MaxUS != 8406.22 || !r.HaveData {
		t.Errorf("%+v", r)
	}
	if _, err := parseSPDK([]byte("EAL: No free 2048 kB hugepages reported\nUnable to initialize SPDK env\n")); err == nil || !strings.Contains(err.Error(), "hugepages") {
		t.Errorf("no Total line: %v, want an error quoting the first line", err)
	}
}

func TestParsePhase(t *testing.T) {
	r, err := parsePhase([]byte(fioOut))
	if err != nil {
		t.Fatal(err)
	}
	if r.IOPS != 512 || r.MiBps != 2 || r.MeanUS != 1.9505 || r.P99US != 4.096 || r.MaxUS != 61437717.822 || r.IOs != 512 || !r.HaveData {
		t.Errorf("fio: %+v", r)
	}
	r, err = parsePhase([]byte(umdOut))
	if err != nil {
		t.Fatal(err)
	}
	if r.IOPS != 1024 || r.MiBps != 4 || r.IOs != 1500 {
		t.Errorf("umdbench: %+v (want its umd.ios, ramp included)", r)
	}
	if _, err := parsePhase([]byte("fio: engine io_uring not loadable\n")); err == nil || !strings.Contains(err.Error(), "not loadable") {
		t.Errorf("no JSON: %v", err)
	}
}

func TestPhaseSplitter(t *testing.T) {
	var raw, log bytes.Buffer
	p := newPhaseSplitter(&raw, &log)
	in := "@@device 0000:00:01.0\n@@phase w0-e2\n" + fioOut + "@@end w0-e2 0\n@@ios w0-e2 777\n@@cpu w0-e2 150 3\nmodprobe: oops\n"
	// In odd pieces, as a serial port delivers it.
	for len(in) > 0 {
		n := min(len(in), 7)
		if _, err := io.WriteString(p, in[:n]); err != nil {
			t.Fatal(err)
		}
		in = in[n:]
	}
	if raw.String() != "@@device 0000:00:01.0\n@@phase w0-e2\n"+fioOut+"@@end w0-e2 0\n@@ios w0-e2 777\n@@cpu w0-e2 150 3\nmodprobe: oops\n" {
		t.Errorf("raw output changed")
	}
	if got := p.outputs["w0-e2"].String(); got != fioOut {
		t.Errorf("phase output %q", got)
	}
	if p.status["w0-e2"] != "0" || p.ios["w0-e2"] != 777 {
		t.Errorf("status %q, ios %d", p.status["w0-e2"], p.ios["w0-e2"])
	}
	// 150 ticks of 10 ms in 3 s: half a CPU.
	if got := p.cpu["w0-e2"]; got != 0.5 {
		t.Errorf("cpu %v, want 0.5", got)
	}
	if len(p.lines) != 1 || p.lines[0] != "device 0000:00:01.0" {
		t.Errorf("lines %q", p.lines)
	}
	for _, want := range []string{"4k randread qd1, fio io_uring", "guest: modprobe: oops"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, log.String())
		}
	}
}

func TestCompareTable(t *testing.T) {
	results := map[string]phaseResult{
		phaseID(0, 0): {IOPS: 3000, MiBps: 11.7, MeanUS: 300, P99US: 500, IOs: 1000, SQ: 1000, CQ: 1000, HaveData: true},
		phaseID(0, 1): {IOPS: 1500, IOs: 100, SQ: 100, CQ: 100, HaveData: true},
		phaseID(0, 2): {IOPS: 1000, IOs: 100, SQ: 100, CQ: 120, HaveData: true},
		phaseID(0, 4): {Err: "exit status 1"},
		phaseID(0, 6): {IOPS: 1200, CPUs: 0.6, HaveData: true},
	}
	var b bytes.Buffer
	if err := compareTable(&b, results, nil, comparePlan{repeat: 1, boots: 1}); err != nil {
		t.Fatal(err)
	}
	row := func(engine string) []string { return qd1Row(t, b.String(), engine) }
	// "4k randread qd1 fio io_uring 1000 ... 2.200 3.00 1.50"
	f := row("fio io_uring")
	if got := f[len(f)-3:]; got[0] != "2.200" || got[1] != "3.00" || got[2] != "1.50" {
		t.Errorf("io_uring row %q: want 2.200 doorbells/IO and ratios 3.00 (poll) 1.50 (irq)", f)
	}
	// 60 % of a vCPU at 1,200 IOPS: 500 µs per I/O.
	if f := row("spdk perf irq"); f[len(f)-1] != "1.25" || f[len(f)-2] != "2.50" || f[len(f)-5] != "60" || f[len(f)-4] != "500.0" {
		t.Errorf("spdk perf irq row %q: want CPU 60 %% and 500.0 µs/IO, ratios 2.50 (poll) 1.25 (irq)", f)
	}
	if f := row("umd poll"); f[len(f)-1] != "2.000" {
		t.Errorf("umd poll row %q: want 2.000 doorbells/IO and no ratio", f)
	}
	if !strings.Contains(b.String(), "exit status 1") || !strings.Contains(b.String(), "not run") {
		t.Errorf("failed and missing phases are not shown:\n%s", b.String())
	}
}

func TestCompareScript(t *testing.T) {
	s := compareScript(5*time.Second, time.Second, nil, 1)
	for _, want := range []string{
		"phase w0-e0 umdbench --rw randread --bs 4k --iodepth 1 --runtime 5s --ramp_time 1s --completion poll -o json",
		"phase w5-e1 umdbench --rw read --bs 128k --iodepth 32",
		"--completion irq",
		"modprobe nvme poll_queues=2",
		"fiophase w3-e3 fio --name=4k-randread-qd128 --filename=\"$dev\" --direct=1 --rw=randread --bs=4k --iodepth=128 --ioengine=io_uring --hipri=1 --runtime=5 --ramp_time=1",
		"--ioengine=libaio",
		"phase w0-e5 spdk_nvme_perf -r \"trtype:PCIe traddr:$bdf\" --iova-mode pa -q 1 -o 4096 -w randread -t 5 -a 1 -L\n",
		"phase w5-e5 spdk_nvme_perf -r \"trtype:PCIe traddr:$bdf\" --iova-mode pa -q 32 -o 131072 -w read -t 5 -a 1 -L\n",
		"phase w0-e6 spdk_nvme_perf -r \"trtype:PCIe traddr:$bdf\" --iova-mode pa -q 1 -o 4096 -w randread -t 5 -a 1 -L -E\n",
		"mount -t hugetlbfs nodev /dev/hugepages",
		"export OPENSSL_CONF=/dev/null",
		"--time_based --thread --lat_percentiles=1",
		"cpu_from=2\ncpu_for=3\n",
		"echo \"@@cpu $id $((c1 - c0)) $cpu_for\"",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	// Every umdbench phase comes before the rebind, every fio one after.
	rebind := strings.Index(s, "vfio-pci/unbind")
	if strings.LastIndex(s, "umdbench ") > rebind || strings.LastIndex(s, "spdk_nvme_perf ") > rebind || strings.Index(s, "fiophase w") < rebind {
		t.Error("phases out of order around the rebind")
	}
	// umdbench and spdk_nvme_perf take turns workload by workload, side
	// by side in each completion mode, in the opposite order every other
	// workload.
	at := func(id string) int { return strings.Index(s, "phase "+id+" ") }
	for _, order := range [][]string{
		{"w0-e0", "w0-e5", "w0-e1", "w0-e6", "w1-e6", "w1-e1", "w1-e5", "w1-e0", "w2-e0", "w2-e5"},
	} {
		for i := 1; i < len(order); i++ {
			if at(order[i-1]) > at(order[i]) {
				t.Errorf("user-space phases out of turn: %s at %d after %s at %d", order[i-1], at(order[i-1]), order[i], at(order[i]))
			}
		}
	}
	if n := strings.Count(s, "\nphase w") + strings.Count(s, "\nfiophase w"); n != len(compareWorkloads)*len(compareEngines) {
		t.Errorf("%d phases, want %d", n, len(compareWorkloads)*len(compareEngines))
	}
}

func TestCompareSelected(t *testing.T) {
	only := func(w, e int) bool { return w == 2 && e == 0 }
	s := compareScript(time.Second, time.Second, only, 1)
	if n := strings.Count(s, "\nphase w") + strings.Count(s, "\nfiophase w"); n != 1 || !strings.Contains(s, "phase w2-e0 umdbench") {
		t.Errorf("%d phases in the script, want only w2-e0:\n%s", n, s)
	}
	var b bytes.Buffer
	if err := compareTable(&b, map[string]phaseResult{phaseID(2, 0): {IOPS: 10, HaveData: true}}, only, comparePlan{repeat: 1, boots: 1}); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(b.String()), "\n"); len(lines) != 2 {
		t.Errorf("table of one phase:\n%s", b.String())
	}
}

func TestSPDKHasInterrupts(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, content string
		want          bool
	}{
		// getopt's long option table holds the name as its own string;
		// the usage text's mention does not count.
		{"v25", "\x7fELF...io-depth\x00enable-interrupt\x00...", true},
		{"v23", "\x7fELF...io-depth\x00\t[--enable-interrupt enable it]\n\x00", false},
	} {
		path := filepath.Join(dir, c.name)
		if err := os.WriteFile(path, []byte(c.content), 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := spdkHasInterrupts(path)
		if err != nil || got != c.want {
			t.Errorf("%s: spdkHasInterrupts = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	if _, err := spdkHasInterrupts(filepath.Join(dir, "missing")); err == nil {
		t.Error("no error for a missing binary")
	}
}

// TestCompareRepeat: with -repeat the user-space phases run that many
// times, repetition by repetition in alternating order, fio once; the
// table shows each row's median run and umd/SPDK as the median of the
// paired ratios.
func TestCompareRepeat(t *testing.T) {
	s := compareScript(time.Second, time.Second, nil, 3)
	userSpace, fio := 0, 0
	for _, e := range compareEngines {
		if e.fio() {
			fio++
		} else {
			userSpace++
		}
	}
	if n := strings.Count(s, "\nphase w"); n != 3*userSpace*len(compareWorkloads) {
		t.Errorf("%d user-space phases, want %d", n, 3*userSpace*len(compareWorkloads))
	}
	if n := strings.Count(s, "\nfiophase w"); n != fio*len(compareWorkloads) {
		t.Errorf("%d fio phases, want %d", n, fio*len(compareWorkloads))
	}
	at := func(id string) int {
		i := strings.Index(s, "phase "+id+" ")
		if i < 0 {
			t.Fatalf("no phase %s", id)
		}
		return i
	}
	// Workload 0's three repetitions before workload 1's, the order
	// reversed every time.
	order := []string{"w0-e0", "w0-e6", "w0-e6-r1", "w0-e0-r1", "w0-e0-r2", "w0-e6-r2", "w1-e6", "w1-e0"}
	for i := 1; i < len(order); i++ {
		if at(order[i-1]) > at(order[i]) {
			t.Errorf("%s runs after %s", order[i-1], order[i])
		}
	}
	for _, id := range []string{"w0-e0-r2", "w5-e6-r1"} {
		w, e, r, ok := parsePhaseID(id)
		if !ok || repPhaseID(w, e, r) != id {
			t.Errorf("parsePhaseID(%q) = %d %d %d %v", id, w, e, r, ok)
		}
	}
	for _, bad := range []string{"w0-e0-r0", "w0-e0-rx", "w9-e0", "w0-e0-r1-r2"} {
		if _, _, _, ok := parsePhaseID(bad); ok {
			t.Errorf("parsePhaseID(%q) accepted", bad)
		}
	}
	if got := phaseTitle("w0-e1-r2"); got != "4k randread qd1, umd irq, run 3" {
		t.Errorf("phaseTitle = %q", got)
	}

	// umd irq (e1) against SPDK irq (e6), three repetitions: paired
	// 1000/2000, 3000/1000 and 1500/3000 give 0.5, 3 and 0.5 (median
	// 0.50), where the medians of each alone (1500 and 2000) would say
	// 0.75.
	results := map[string]phaseResult{
		repPhaseID(0, 1, 0): {IOPS: 1000, HaveData: true},
		repPhaseID(0, 1, 1): {IOPS: 3000, HaveData: true},
		repPhaseID(0, 1, 2): {IOPS: 1500, HaveData: true, CPUs: 0.3},
		repPhaseID(0, 6, 0): {IOPS: 2000, HaveData: true},
		repPhaseID(0, 6, 1): {IOPS: 1000, HaveData: true},
		repPhaseID(0, 6, 2): {IOPS: 3000, HaveData: true},
		repPhaseID(0, 2, 0): {IOPS: 500, HaveData: true},
		repPhaseID(0, 5, 1): {IOPS: 700, HaveData: true},
		repPhaseID(0, 5, 2): {Err: "exit status 1"},
	}
	var b bytes.Buffer
	if err := compareTable(&b, results, nil, comparePlan{repeat: 3, boots: 1}); err != nil {
		t.Fatal(err)
	}
	row := func(engine string) []string { return qd1Row(t, b.String(), engine) }
	// umd irq's median run is the 1500 one, its CPU column with it (30 %
	// of a vCPU: 200 µs per I/O).
	if f := row("umd irq"); f[5] != "1500" || f[9] != "30" || f[10] != "200.0" || f[len(f)-2] != "3" || f[len(f)-1] != "1000-3000" {
		t.Errorf("umd irq row %q: want the 1500 IOPS run, 30 %% and 200.0 µs/IO, 3 runs, 1000-3000", f)
	}
	if f := row("spdk perf irq"); f[6] != "2000" || f[len(f)-3] != "0.50" || f[len(f)-2] != "3" || f[len(f)-1] != "1000-3000" {
		t.Errorf("spdk perf irq row %q: want its 2000 IOPS run and umd irq/this 0.50, the median of the paired ratios", f)
	}
	// fio: umd irq's median run (1500) against fio's one run (500).
	if f := row("fio io_uring"); f[len(f)-3] != "3.00" || f[len(f)-2] != "1" {
		t.Errorf("fio io_uring row %q: want umd irq/this 3.00, 1 run", f)
	}
	// spdk perf poll: one run of three gave a figure; no umd poll run to
	// pair with it, and umd irq's run 2 (3000) pairs with it: 4.29.
	if f := row("spdk perf poll"); f[6] != "700" || f[len(f)-3] != "4.29" || f[len(f)-4] == "4.29" || f[len(f)-2] != "1" || f[len(f)-1] != "700-700" {
		t.Errorf("spdk perf poll row %q: want 700 IOPS, only umd irq/this 4.29, 1 run", f)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := medianOf(c.in); got != c.want {
			t.Errorf("medianOf(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	have := withFigures([]phaseResult{{IOPS: 4, HaveData: true}, {IOPS: 1, HaveData: true}, {Err: "x"}, {IOPS: 3, HaveData: true}, {IOPS: 2, HaveData: true}})
	if n, r := len(have), median(have); n != 4 || r.IOPS != 2 || have[0].IOPS != 1 || have[3].IOPS != 4 {
		t.Errorf("withFigures = %v, median %v; want the 4 with figures, lowest first, and the lower middle 2", have, r.IOPS)
	}
}

func TestCompareBoots(t *testing.T) {
	plan := comparePlan{repeat: 2, boots: 3}
	// Boot 2's (index 1) runs follow boot 1's: umd's second repetition
	// there is its fourth run in all, fio's only one its second.
	for _, c := range []struct {
		id   string
		b    int
		want string
	}{
		{"w0-e1", 0, "w0-e1"},
		{"w0-e1-r1", 1, "w0-e1-r3"},
		{"w3-e6", 2, "w3-e6-r4"},
		{"w0-e2", 1, "w0-e2-r1"},
		{"w0-e2", 2, "w0-e2-r2"},
	} {
		_, wantE, _, _ := parsePhaseID(c.id)
		if got, e, ok := plan.inBoot(c.id, c.b); !ok || got != c.want || e != wantE {
			t.Errorf("inBoot(%q, %d) = %q, engine %d, %v; want %q, engine %d", c.id, c.b, got, e, ok, c.want, wantE)
		}
	}
	if got, _, ok := plan.inBoot("device", 1); ok || got != "device" {
		t.Errorf("inBoot(\"device\", 1) = %q, %v; want it unchanged and not a phase", got, ok)
	}
	if !(comparePlan{repeat: 1, boots: 2}).several() || (comparePlan{repeat: 1, boots: 1}).several() {
		t.Error("several: want true for two boots of one run, false for one")
	}

	// Two boots of one run each. umd irq (e1) against SPDK irq (e6):
	// boot 1 2000/1000, boot 2 1000/4000, so the paired ratios are 2 and
	// 0.25 (median 1.12), while umd's best run against SPDK's worst
	// would say 2. fio (e2) ran once a boot: 400 and 600, median run
	// 400; umd irq's median run (1000) against it 2.50.
	one := comparePlan{repeat: 1, boots: 2}
	results := map[string]phaseResult{}
	for b, runs := range []map[string]float64{
		{"w0-e1": 2000, "w0-e6": 1000, "w0-e2": 400},
		{"w0-e1": 1000, "w0-e6": 4000, "w0-e2": 600},
	} {
		for id, iops := range runs {
			all, _, _ := one.inBoot(id, b)
			results[all] = phaseResult{IOPS: iops, HaveData: true}
		}
	}
	var b bytes.Buffer
	if err := compareTable(&b, results, nil, one); err != nil {
		t.Fatal(err)
	}
	row := func(engine string) []string { return qd1Row(t, b.String(), engine) }
	if f := row("spdk perf irq"); f[len(f)-3] != "1.12" || f[len(f)-2] != "2" || f[len(f)-1] != "1000-4000" {
		t.Errorf("spdk perf irq row %q: want umd irq/this 1.12 (the median of each boot's ratio), 2 runs, 1000-4000", f)
	}
	if f := row("fio io_uring"); f[len(f)-3] != "2.50" || f[len(f)-2] != "2" || f[len(f)-1] != "400-600" {
		t.Errorf("fio io_uring row %q: want umd irq/this 2.50, 2 runs (one a boot), 400-600", f)
	}

	// Boot by boot the median of 1.12 splits into 2.00 and 0.25; polled,
	// nothing ran, so no row.
	b.Reset()
	if err := compareByBoot(&b, results, one); err != nil {
		t.Fatal(err)
	}
	var irqRow []string
	for _, l := range strings.Split(b.String(), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[0] == "4k" {
			if f[3] != "irq" {
				t.Errorf("a by-boot row for %q, which had no runs: %q", f[3], l)
			}
			irqRow = f
		}
	}
	if want := []string{"4k", "randread", "qd1", "irq", "2.00", "(1/1)", "0.25", "(0/1)"}; !slices.Equal(irqRow, want) {
		t.Errorf("by-boot irq row %q, want %q:\n%s", irqRow, want, b.String())
	}
	b.Reset()
	if err := compareByBoot(&b, results, comparePlan{repeat: 2, boots: 1}); err != nil || b.Len() != 0 {
		t.Errorf("compareByBoot for one boot wrote %q (%v), want nothing", b.String(), err)
	}
}

// qd1Row returns the fields of table's "4k randread qd1" row for engine
// ("fio io_uring" is not "fio io_uring hipri"), failing t without one.
func qd1Row(t *testing.T, table, engine string) []string {
	t.Helper()
	e := strings.Fields(engine)
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) > 3+len(e) && strings.Join(f[:3], " ") == "4k randread qd1" && strings.Join(f[3:3+len(e)], " ") == engine && f[3+len(e)] != "hipri" {
			return f
		}
	}
	t.Fatalf("no row for %s:\n%s", engine, table)
	return nil
}

// A run that stalled (an I/O slower than the whole phase: the kernel
// driver's timeout and reset) is left out of its row's median, range and
// pairs, and counted; a row whose every run stalled says so.
func TestCompareStalled(t *testing.T) {
	fio, err := parsePhase([]byte(fioOut))
	if err != nil {
		t.Fatal(err)
	}
	if !fio.stalledIn(6*time.Second) || fio.stalledIn(62*time.Second) {
		t.Errorf("an I/O of 61.4 s: stalled in a 6 s phase %v, in a 62 s phase %v", fio.stalledIn(6*time.Second), fio.stalledIn(62*time.Second))
	}
	results := map[string]phaseResult{
		repPhaseID(0, 0, 0): {IOPS: 1000, HaveData: true},
		repPhaseID(0, 0, 1): {IOPS: 1200, HaveData: true},
		repPhaseID(0, 5, 0): {IOPS: 2000, HaveData: true},
		repPhaseID(0, 5, 1): {IOPS: 5, HaveData: true, Stalled: true, MaxUS: 61e6},
		repPhaseID(0, 2, 0): {IOPS: 1, HaveData: true, Stalled: true, MaxUS: 61.4e6},
		repPhaseID(0, 4, 0): {IOPS: 400, HaveData: true},
	}
	var b bytes.Buffer
	if err := compareTable(&b, results, nil, comparePlan{repeat: 2, boots: 1}); err != nil {
		t.Fatal(err)
	}
	row := func(engine string) []string { return qd1Row(t, b.String(), engine) }
	// SPDK: only the 2000 run counts, paired with umd's 1000: 0.50.
	if f := row("spdk perf poll"); f[6] != "2000" || !strings.Contains(strings.Join(f, " "), "0.50 1 (1 stalled) 2000-2000") {
		t.Errorf("spdk perf poll row %q: want 2000 IOPS, umd poll/this 0.50, 1 run and 1 stalled", f)
	}
	if f := row("fio io_uring"); !strings.Contains(strings.Join(f, " "), "stalled (an I/O took 61.4s)") {
		t.Errorf("fio io_uring row %q: want it marked stalled", f)
	}
	// The reason comes after the last column, so that it widens none.
	lines := strings.Split(b.String(), "\n")
	last := strings.Index(lines[0], "IOPS MIN-MAX")
	for _, l := range lines[1:] {
		if i := strings.Index(l, "stalled ("); i >= 0 && i < last {
			t.Errorf("row %q: the reason sits in a column (at %d, the last column at %d)", l, i, last)
		}
	}
	// The median of umd's two runs (the lower, 1000) against libaio's 400.
	if f := row("fio libaio"); f[len(f)-3] != "2.50" {
		t.Errorf("fio libaio row %q: want umd poll/this 2.50", f)
	}
}
