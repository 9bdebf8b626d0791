package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/umdkit/umd/internal/size"
	"github.com/umdkit/umd/qemu"
)

// umdvm bench-compare runs umdbench (user space, vfio-pci), SPDK's
// spdk_nvme_perf (user space, vfio-pci; when the host has it) and fio (the
// kernel's nvme driver) on the same emulated NVMe controller in one boot,
// and prints one table of them with umd's ratios to the others and QEMU's
// count of doorbell writes per I/O.

// compareWorkload is a row group of the table.
type compareWorkload struct {
	name string
	rw   string // fio's and umdbench's --rw
	bs   string
	qd   int
}

var compareWorkloads = []compareWorkload{
	{"4k randread qd1", "randread", "4k", 1},
	{"4k randread qd8", "randread", "4k", 8},
	{"4k randread qd32", "randread", "4k", 32},
	{"4k randread qd128", "randread", "4k", 128},
	{"128k read qd1", "read", "128k", 1},
	{"128k read qd32", "read", "128k", 32},
}

// compareEngine is a row of a group: umdbench in a completion mode,
// spdk_nvme_perf polled or with interrupts, or fio with an ioengine.
type compareEngine struct {
	name       string
	completion string // umdbench's --completion; "" for the others
	spdk       bool   // spdk_nvme_perf
	spdkIRQ    bool   // its -E: sleep on the queue's MSI-X eventfd (epoll)
	ioengine   string // fio's --ioengine
	hipri      bool   // fio io_uring's polled completions
}

var compareEngines = []compareEngine{
	{name: "umd poll", completion: "poll"},
	{name: "umd irq", completion: "irq"},
	{name: "fio io_uring", ioengine: "io_uring"},
	{name: "fio io_uring hipri", ioengine: "io_uring", hipri: true},
	{name: "fio libaio", ioengine: "libaio"},
	{name: "spdk perf poll", spdk: true},
	{name: "spdk perf irq", spdk: true, spdkIRQ: true},
}

// mode is the completion mode a user-space engine is compared in: "poll"
// or "irq" ("" for fio).
func (e compareEngine) mode() string {
	switch {
	case e.umd():
		return e.completion
	case e.spdkIRQ:
		return "irq"
	case e.spdk:
		return "poll"
	}
	return ""
}

func (e compareEngine) umd() bool { return e.completion != "" }
func (e compareEngine) fio() bool { return e.ioengine != "" }

// runs is how many times the engine's phases run with -repeat repeat: fio
// once (umd is several times faster), the user-space engines repeat
// times.
func (e compareEngine) runs(repeat int) int {
	if e.fio() {
		return 1
	}
	return max(repeat, 1)
}

// comparePlan is how many times each phase runs: repeat times in a boot
// (fio once: compareEngine.runs), in each of boots guest boots. Figures
// move between boots as well as within one, and not the same way for
// every engine (docs/performance.md), so paired runs in several boots
// say more than as many in one.
type comparePlan struct{ repeat, boots int }

// perBoot is how many runs of e one boot has.
func (p comparePlan) perBoot(e compareEngine) int { return e.runs(p.repeat) }

// runs is how many runs of e the table has, over every boot.
func (p comparePlan) runs(e compareEngine) int { return p.perBoot(e) * max(p.boots, 1) }

// several reports whether the user-space engines run more than once.
func (p comparePlan) several() bool { return max(p.repeat, 1)*max(p.boots, 1) > 1 }

// inBoot turns the phase ID a guest script gave boot b's run into its ID
// among every boot's runs: run r of boot b is run b*perBoot+r, so the
// user-space engines' k-th runs are still the same boot's same
// repetition and pair as before. e is the phase's engine; ok is false
// (and id returned as it is) for an ID that is not a phase's.
func (p comparePlan) inBoot(id string, b int) (all string, e int, ok bool) {
	w, e, r, ok := parsePhaseID(id)
	if !ok {
		return id, 0, false
	}
	return repPhaseID(w, e, b*p.perBoot(compareEngines[e])+r), e, true
}

// runsOf is every run of workload w on engine e in results, over every
// boot, in order (a run that gave nothing is a zero phaseResult).
func (p comparePlan) runsOf(results map[string]phaseResult, w, e int) []phaseResult {
	runs := make([]phaseResult, 0, p.runs(compareEngines[e]))
	for r := range p.runs(compareEngines[e]) {
		runs = append(runs, results[repPhaseID(w, e, r)])
	}
	return runs
}

// bytesOf turns a workload's block size ("4k", "128k") into bytes, for
// spdk_nvme_perf's -o.
func bytesOf(bs string) int64 {
	n, _ := size.Parse(bs) // compareWorkloads' sizes parse
	return n
}

// phaseID names the run of workload w on engine e in marks and output.
func phaseID(w, e int) string { return fmt.Sprintf("w%d-e%d", w, e) }

// repPhaseID names repetition r of that run (-repeat): phaseID for the
// first, "w0-e1-r2" for the third.
func repPhaseID(w, e, r int) string {
	if r == 0 {
		return phaseID(w, e)
	}
	return fmt.Sprintf("w%d-e%d-r%d", w, e, r)
}

// compareScript is the guest's script: every umdbench and spdk_nvme_perf
// phase on vfio-pci (workload by workload), then the function rebound to
// the kernel's nvme driver (with poll queues, for hipri) and every fio
// phase. Each phase is framed on stdout by
// "@@phase ID" and "@@end ID STATUS" and on the status port by "mark
// begin ID" and "mark end ID", after a quiet gap so the host can tell the
// phases' doorbell writes apart by time.
// Only phases selected (nil: all) are run; the user-space ones repeat
// times (at least once), one repetition after the other for each workload.
func compareScript(runtime, ramp time.Duration, selected func(w, e int) bool, repeat int) string {
	if selected == nil {
		selected = func(int, int) bool { return true }
	}
	var b strings.Builder
	secs := func(d time.Duration) string { return fmt.Sprintf("%g", d.Seconds()) }
	// Each phase's engine runs in the background while the script
	// samples the CPU time of its process (every thread; /proc/PID/stat's
	// utime + stime, in USER_HZ ticks) over cpuWindow.
	cpuFrom, cpuFor := cpuWindow(runtime, ramp)
	fmt.Fprintf(&b, "cpu_from=%d\ncpu_for=%d\n", cpuFrom, cpuFor)
	b.WriteString(`set -u
mark() { echo "mark $*" > /dev/ttyS2; }
# ticks PID: the process's user + system CPU time in ticks (fields 14 and
# 15 of /proc/PID/stat, counted after the parenthesised command name).
ticks() {
	read -r st 2>/dev/null < "/proc/$1/stat" || return
	st=${st##*) }
	set -- $st
	echo $((${12} + ${13}))
}
phase() {
	id=$1
	shift
	sleep 0.3
	echo "@@phase $id"
	mark begin "$id"
	"$@" &
	pid=$!
	sleep "$cpu_from"
	c0=$(ticks $pid)
	sleep "$cpu_for"
	c1=$(ticks $pid)
	wait $pid
	rc=$?
	mark end "$id"
	echo "@@end $id $rc"
	if [ -n "$c0" ] && [ -n "$c1" ]; then echo "@@cpu $id $((c1 - c0)) $cpu_for"; fi
}
bdf=$(ls /sys/bus/pci/drivers/vfio-pci | grep -m1 :)
[ -n "$bdf" ] || { echo "bench-compare: no NVMe function on vfio-pci"; exit 1; }
echo "@@device $bdf"
`)
	// The user-space engines take turns workload by workload (and
	// repetition by repetition), umd and SPDK next to each other in each
	// completion mode, in the opposite order every other time: figures
	// drift over a boot (docs/performance.md), and whichever ran second
	// in every pair would gain from it.
	var userSpace []int
	for _, mode := range []string{"poll", "irq"} {
		for ei, e := range compareEngines {
			if e.mode() == mode {
				userSpace = append(userSpace, ei)
			}
		}
	}
	spdkHeader := false
	turn := 0
	reps := compareEngines[userSpace[0]].runs(repeat) // every user-space engine's
	for wi, w := range compareWorkloads {
		for r := range reps {
			order := slices.Clone(userSpace)
			if turn%2 == 1 {
				slices.Reverse(order)
			}
			turn++
			for _, ei := range order {
				e := compareEngines[ei]
				switch {
				case !selected(wi, ei):
				case e.umd():
					fmt.Fprintf(&b, "phase %s umdbench --rw %s --bs %s --iodepth %d --runtime %ss --ramp_time %ss --completion %s -o json \"$bdf\"\n",
						repPhaseID(wi, ei, r), w.rw, w.bs, w.qd, secs(runtime), secs(ramp), e.completion)
				case e.spdk:
					if !spdkHeader {
						// DPDK maps its hugepages from a hugetlbfs mount
						// and keeps its lock files in /var/tmp; umdbench
						// gives its hugepages back when it exits.
						// Newer SPDKs initialise OpenSSL, which
						// fails without a configuration file, and
						// the guest has none.
						b.WriteString(`mkdir -p /dev/hugepages /var/tmp
grep -qs ' /dev/hugepages ' /proc/mounts || mount -t hugetlbfs nodev /dev/hugepages
[ -e /usr/lib/ssl/openssl.cnf ] || export OPENSSL_CONF=/dev/null
`)
						spdkHeader = true
					}
					// -a: warm-up seconds, as the others' ramp; -L:
					// latency percentiles. It takes whole seconds.
					// --iova-mode pa: DPDK's own choice, IOVA =
					// virtual address, lies above the 39 bits QEMU's
					// intel-iommu translates by default, and DPDK 22.11
					// under SPDK v25 fails to start ("IOVA exceeding
					// limits of current DMA mask"); physical addresses
					// of a 2 GiB guest fit, and the I/O path is the same.
					irq := ""
					if e.spdkIRQ {
						irq = " -E"
					}
					fmt.Fprintf(&b, "phase %s spdk_nvme_perf -r \"trtype:PCIe traddr:$bdf\" --iova-mode pa -q %d -o %d -w %s -t %d -a %d -L%s\n",
						repPhaseID(wi, ei, r), w.qd, bytesOf(w.bs), w.rw, wholeSeconds(runtime), wholeSeconds(ramp), irq)
				}
			}
		}
	}
	b.WriteString(`# To the kernel's nvme driver, with polled queues for io_uring's hipri.
echo "$bdf" > /sys/bus/pci/drivers/vfio-pci/unbind
echo > "/sys/bus/pci/devices/$bdf/driver_override"
modprobe nvme poll_queues=2 || { echo "bench-compare: modprobe nvme failed"; exit 1; }
echo "$bdf" > /sys/bus/pci/drivers_probe 2>/dev/null
i=0
while [ -z "$(ls -d /sys/bus/pci/devices/$bdf/nvme/nvme*/nvme*n1 2>/dev/null)" ] && [ $i -lt 200 ]; do
	sleep 0.05
	i=$((i + 1))
done
blk=$(ls -d /sys/bus/pci/devices/$bdf/nvme/nvme*/nvme*n1 2>/dev/null | head -n1)
[ -n "$blk" ] || { echo "bench-compare: no namespace appeared on the nvme driver"; exit 1; }
dev=/dev/${blk##*/}
i=0
while [ ! -b "$dev" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
echo "@@nvme $dev poll_queues=$(cat /sys/module/nvme/parameters/poll_queues) io_poll=$(cat /sys/block/${blk##*/}/queue/io_poll)"
# fiophase ID CMD...: a phase, then the reads the block device completed
# in it, ramp included (the first field of its stat file): fio reports
# only those after the ramp.
reads() { read -r n _ < "/sys/block/${blk##*/}/stat"; echo "$n"; }
fiophase() {
	r0=$(reads)
	phase "$@"
	echo "@@ios $1 $(($(reads) - r0))"
}
`)
	for wi, w := range compareWorkloads {
		for ei, e := range compareEngines {
			if !e.fio() || !selected(wi, ei) {
				continue
			}
			hipri := ""
			if e.hipri {
				hipri = " --hipri=1"
			}
			fmt.Fprintf(&b, "fiophase %s fio --name=%s --filename=\"$dev\" --direct=1 --rw=%s --bs=%s --iodepth=%d --ioengine=%s%s --runtime=%s --ramp_time=%s --time_based --thread --lat_percentiles=1 --output-format=json\n",
				phaseID(wi, ei), strings.ReplaceAll(w.name, " ", "-"), w.rw, w.bs, w.qd, e.ioengine, hipri, secs(runtime), secs(ramp))
		}
	}
	return b.String()
}

// cpuWindow is when the guest script samples a phase's CPU, in whole
// seconds from the phase's start (sleep takes those everywhere): after the
// ramp and the engine's start-up (DPDK's EAL), for all but the last second
// or two of the run.
func cpuWindow(runtime, ramp time.Duration) (from, length int) {
	return wholeSeconds(ramp) + 1, max(1, int(runtime/time.Second)-2)
}

// wholeSeconds rounds d up to whole seconds, at least 1.
func wholeSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// phaseSplitter takes the guest's output line by line: it keeps each
// phase's output, shows progress on log, and passes every line to raw.
type phaseSplitter struct {
	raw, log io.Writer
	mu       sync.Mutex
	partial  []byte
	current  string
	outputs  map[string]*bytes.Buffer
	status   map[string]string
	ios      map[string]uint64  // "@@ios ID N": I/Os the kernel counted
	cpu      map[string]float64 // "@@cpu ID TICKS SECONDS": CPUs the engine kept busy
	lines    []string           // other "@@" lines outside phases
}

func newPhaseSplitter(raw, log io.Writer) *phaseSplitter {
	return &phaseSplitter{raw: raw, log: log, outputs: map[string]*bytes.Buffer{}, status: map[string]string{}, ios: map[string]uint64{}, cpu: map[string]float64{}}
}

func (p *phaseSplitter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.raw.Write(b); err != nil {
		return 0, err
	}
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.line(string(bytes.TrimRight(p.partial[:i], "\r")))
		p.partial = p.partial[i+1:]
	}
	return len(b), nil
}

func (p *phaseSplitter) line(l string) {
	f := strings.Fields(l)
	switch {
	case len(f) >= 2 && f[0] == "@@phase":
		p.current = f[1]
		p.outputs[p.current] = &bytes.Buffer{}
		fmt.Fprintf(p.log, "bench-compare: %s\n", phaseTitle(f[1]))
	case len(f) >= 3 && f[0] == "@@end":
		p.status[f[1]] = f[2]
		p.current = ""
	case p.current != "":
		p.outputs[p.current].WriteString(l + "\n")
	case len(f) == 3 && f[0] == "@@ios":
		if n, err := strconv.ParseUint(f[2], 10, 64); err == nil {
			p.ios[f[1]] = n
		}
	case len(f) == 4 && f[0] == "@@cpu":
		// /proc counts CPU time in USER_HZ ticks, 100 a second on
		// every Linux architecture umd runs on.
		ticks, err1 := strconv.ParseFloat(f[2], 64)
		secs, err2 := strconv.ParseFloat(f[3], 64)
		if err1 == nil && err2 == nil && secs > 0 {
			p.cpu[f[1]] = ticks / 100 / secs
		}
	case strings.HasPrefix(l, "@@"):
		p.lines = append(p.lines, strings.TrimPrefix(l, "@@"))
		fmt.Fprintf(p.log, "bench-compare: %s\n", strings.TrimPrefix(l, "@@"))
	default:
		fmt.Fprintf(p.log, "guest: %s\n", l)
	}
}

// phaseTitle turns "w2-e3" into "4k randread qd32, fio io_uring hipri"
// and "w2-e0-r1" into "4k randread qd32, umd poll, run 2".
func phaseTitle(id string) string {
	w, e, r, ok := parsePhaseID(id)
	if !ok {
		return id
	}
	t := compareWorkloads[w].name + ", " + compareEngines[e].name
	if r > 0 {
		t += fmt.Sprintf(", run %d", r+1)
	}
	return t
}

// parsePhaseID is repPhaseID backwards: the workload, engine and
// repetition of "w2-e3" or "w2-e3-r1".
func parsePhaseID(id string) (w, e, r int, ok bool) {
	var err error
	if strings.Count(id, "-") == 2 {
		_, err = fmt.Sscanf(id, "w%d-e%d-r%d", &w, &e, &r)
		ok = r > 0 && repPhaseID(w, e, r) == id
	} else {
		_, err = fmt.Sscanf(id, "w%d-e%d", &w, &e)
		ok = phaseID(w, e) == id
	}
	return w, e, r, ok && err == nil && w >= 0 && e >= 0 && w < len(compareWorkloads) && e < len(compareEngines)
}

// phaseResult is what the table shows of one phase. umdbench's JSON
// follows fio's layout, so one parser reads both.
type phaseResult struct {
	IOPS   float64
	MiBps  float64
	MeanUS float64
	P99US  float64
	MaxUS  float64 // the slowest I/O
	IOs    uint64  // every I/O of the phase (ramp included, where known)
	SQ, CQ uint64  // doorbell MMIO writes QEMU traced during the phase
	// CPUs is how many guest CPUs the engine's process kept busy in
	// the middle of the run (1 = one vCPU all the time); 0: not sampled.
	CPUs     float64
	Err      string
	HaveData bool
	// Stalled: an I/O took longer than the whole phase, so the figures
	// measure a hang (the kernel driver's 30 s I/O timeout and its
	// recovery, seen with QEMU 7.2), not the engine's speed. The table
	// leaves such a run out of its row and says so.
	Stalled bool
}

// stalledIn reports whether an I/O of the run took longer than the
// whole phase, ramp included.
func (r phaseResult) stalledIn(phase time.Duration) bool {
	return r.HaveData && r.MaxUS > float64(phase/time.Microsecond)
}

// usable reports whether the run's figures belong in the table.
func (r phaseResult) usable() bool { return r.HaveData && !r.Stalled }

// fioJSON is the part of fio's --output-format=json (and umdbench's -o
// json) the table reads.
type fioJSON struct {
	Jobs []struct {
		Error int `json:"error"`
		Read  struct {
			IOPS     float64 `json:"iops"`
			BWBytes  float64 `json:"bw_bytes"`
			TotalIOs uint64  `json:"total_ios"`
			LatNS    struct {
				Mean       float64            `json:"mean"`
				Max        float64            `json:"max"`
				Percentile map[string]float64 `json:"percentile"`
			} `json:"lat_ns"`
		} `json:"read"`
		UMD *struct {
			IOs uint64 `json:"ios"`
		} `json:"umd"`
	} `json:"jobs"`
}

// parsePhase reads one phase's output: everything from the first "{" is
// the JSON document (fio and umdbench may print warnings before it).
func parsePhase(out []byte) (phaseResult, error) {
	var r phaseResult
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return r, fmt.Errorf("no JSON in the output: %s", firstLine(out))
	}
	var doc fioJSON
	if err := json.NewDecoder(bytes.NewReader(out[i:])).Decode(&doc); err != nil {
		return r, fmt.Errorf("reading the JSON: %w", err)
	}
	if len(doc.Jobs) == 0 {
		return r, errors.New("the JSON has no jobs")
	}
	var ramped uint64
	for _, j := range doc.Jobs {
		if j.Error != 0 {
			r.Err = fmt.Sprintf("job error %d", j.Error)
		}
		r.IOPS += j.Read.IOPS
		r.MiBps += j.Read.BWBytes / (1 << 20)
		if j.UMD != nil {
			ramped += j.UMD.IOs
		} else {
			ramped += j.Read.TotalIOs
		}
	}
	j := doc.Jobs[0]
	r.MeanUS = j.Read.LatNS.Mean / 1000
	for _, j := range doc.Jobs {
		r.MaxUS = max(r.MaxUS, j.Read.LatNS.Max/1000)
	}
	r.P99US = j.Read.LatNS.Percentile["99.000000"] / 1000
	// umdbench's umd.ios covers the ramp; fio's total_ios does not, so
	// the caller replaces it with the block device's own count.
	r.IOs = ramped
	r.HaveData = true
	return r, nil
}

// parseSPDK reads spdk_nvme_perf's text output: IOPS, MiB/s and mean
// latency from its "Total" line ("Total : IOPS MiB/s Average min max",
// latencies in µs) and the 99th percentile from -L's summary
// ("99.00000% : 123.456us"). It cannot count the I/Os of the warm-up;
// the caller estimates them.
func parseSPDK(out []byte) (phaseResult, error) {
	var r phaseResult
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 5 && f[0] == "Total" && f[1] == ":":
			var err error
			if r.IOPS, err = strconv.ParseFloat(f[2], 64); err != nil {
				return r, fmt.Errorf("the Total line %q: %w", l, err)
			}
			r.MiBps, _ = strconv.ParseFloat(f[3], 64)
			r.MeanUS, _ = strconv.ParseFloat(f[4], 64)
			if len(f) >= 7 {
				r.MaxUS, _ = strconv.ParseFloat(f[6], 64)
			}
			r.HaveData = true
		case len(f) == 3 && f[0] == "99.00000%" && f[1] == ":" && r.P99US == 0:
			r.P99US, _ = strconv.ParseFloat(strings.TrimSuffix(f[2], "us"), 64)
		}
	}
	if !r.HaveData {
		return r, fmt.Errorf("no Total line in the output: %s", firstLine(out))
	}
	return r, nil
}

// spdkHasInterrupts reports whether the spdk_nvme_perf at path has -E,
// interrupt-driven completion for PCIe controllers (SPDK v25.01 and
// later). It looks for the long option's name in the binary instead of
// running it: the binary needs its libraries found and hugepages to start.
func spdkHasInterrupts(path string) (bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("reading spdk_nvme_perf: %w", err)
	}
	return bytes.Contains(b, []byte("enable-interrupt\x00")), nil
}

func firstLine(b []byte) string {
	l, _, _ := bytes.Cut(bytes.TrimSpace(b), []byte("\n"))
	if len(l) == 0 {
		return "(nothing)"
	}
	return string(l)
}

// compareTable writes the table: a row per workload and engine run (or
// selected; nil selects all), with the ratio of umd's IOPS (polled and
// interrupt-driven) to each other row's. results holds every boot's runs
// under their IDs among all runs (comparePlan.inBoot). When the
// user-space engines ran more than once (plan.several) a row shows the
// run with the median IOPS (the lower of the middle two for an even
// count), how many runs gave a figure and their range, and the ratio of
// umd to SPDK is the median of the ratios within each repetition of each
// boot, the two engines having run side by side; umd to fio is umd's
// median run to fio's (fio runs once a boot).
func compareTable(out io.Writer, results map[string]phaseResult, selected func(w, e int) bool, plan comparePlan) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "WORKLOAD\tENGINE\tIOPS\tMiB/s\tMEAN µs\tP99 µs\tCPU %\tCPU µs/IO\tDOORBELLS/IO\tUMD POLL/THIS\tUMD IRQ/THIS\t"
	several := plan.several()
	if several {
		header += "RUNS\tIOPS MIN-MAX\t"
	}
	fmt.Fprintln(tw, header)
	columns := strings.Count(header, "\t")
	for wi, w := range compareWorkloads {
		// runs[ei][r]: engine ei's run r (fio runs once a boot).
		runs := make([][]phaseResult, len(compareEngines))
		umdRuns := map[string][]phaseResult{}
		for ei, e := range compareEngines {
			runs[ei] = plan.runsOf(results, wi, ei)
			if e.umd() {
				umdRuns[e.completion] = runs[ei]
			}
		}
		for ei, e := range compareEngines {
			_, ran := results[phaseID(wi, ei)]
			if !ran && selected != nil && !selected(wi, ei) {
				continue
			}
			have := withFigures(runs[ei])
			n := len(have)
			if n == 0 {
				why := "not run"
				for _, x := range runs[ei] {
					if x.Err != "" {
						why = x.Err
						break
					}
					if x.Stalled {
						why = fmt.Sprintf("stalled (an I/O took %.1fs)", x.MaxUS/1e6)
					}
				}
				// Every column empty and the reason after them, so
				// that it widens none.
				fmt.Fprintf(tw, "%s\t%s\t-\t%s%s\n", w.name, e.name, strings.Repeat("\t", columns-3), why)
				continue
			}
			r := median(have)
			db := "-"
			if r.IOs > 0 {
				db = fmt.Sprintf("%.3f", float64(r.SQ+r.CQ)/float64(r.IOs))
			}
			ratio := func(mode string) string {
				us, ok := umdRuns[mode]
				if e.umd() || !ok {
					return ""
				}
				var q float64
				if e.fio() {
					u := withFigures(us)
					if len(u) == 0 || r.IOPS == 0 {
						return ""
					}
					q = median(u).IOPS / r.IOPS
				} else {
					qs := pairedRatios(us, runs[ei])
					if len(qs) == 0 {
						return ""
					}
					q = medianOf(qs)
				}
				return fmt.Sprintf("%.2f", q)
			}
			cpuPct, cpuPerIO := "-", "-"
			if r.CPUs > 0 && r.IOPS > 0 {
				cpuPct = fmt.Sprintf("%.0f", 100*r.CPUs)
				cpuPerIO = fmt.Sprintf("%.1f", 1e6*r.CPUs/r.IOPS)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\t",
				w.name, e.name, r.IOPS, r.MiBps, r.MeanUS, r.P99US, cpuPct, cpuPerIO, db, ratio("poll"), ratio("irq"))
			if several {
				runsText := strconv.Itoa(n)
				if k := stalledRuns(runs[ei]); k > 0 {
					runsText += fmt.Sprintf(" (%d stalled)", k)
				}
				fmt.Fprintf(tw, "%s\t%.0f-%.0f\t", runsText, have[0].IOPS, have[n-1].IOPS)
			}
			fmt.Fprintln(tw)
		}
	}
	return tw.Flush()
}

// pairedRatios is us[k]'s IOPS over them[k]'s for every k where both
// runs gave a figure: the same repetition of two engines that ran side by
// side.
func pairedRatios(us, them []phaseResult) []float64 {
	var qs []float64
	for k := range min(len(us), len(them)) {
		if a, b := us[k], them[k]; a.usable() && b.usable() && b.IOPS > 0 {
			qs = append(qs, a.IOPS/b.IOPS)
		}
	}
	return qs
}

// compareByBoot writes, for several boots, umd's IOPS against SPDK's in
// each completion mode and workload boot by boot: the median of that
// boot's paired ratios and how many of them umd led. Which engine is
// ahead can change from one boot to the next (docs/performance.md), and
// the main table's medians over every boot hide that. It writes nothing
// for one boot or without SPDK's runs.
func compareByBoot(out io.Writer, results map[string]phaseResult, plan comparePlan) error {
	if plan.boots < 2 {
		return nil
	}
	var rows []string
	for wi, w := range compareWorkloads {
		for _, mode := range []string{"poll", "irq"} {
			// umd's and SPDK's runs in this mode: as many of each, a
			// boot's side by side.
			var us, them []phaseResult
			perBoot := 0
			for ei, e := range compareEngines {
				switch {
				case e.mode() != mode:
				case e.umd():
					us, perBoot = plan.runsOf(results, wi, ei), plan.perBoot(e)
				default:
					them = plan.runsOf(results, wi, ei)
				}
			}
			row, paired := fmt.Sprintf("%s\t%s\t", w.name, mode), false
			for b := range plan.boots {
				lo, hi := b*perBoot, (b+1)*perBoot
				qs := pairedRatios(us[lo:hi], them[lo:hi])
				if len(qs) == 0 {
					row += "-\t"
					continue
				}
				ahead := 0
				for _, q := range qs {
					if q > 1 {
						ahead++
					}
				}
				row += fmt.Sprintf("%.2f (%d/%d)\t", medianOf(qs), ahead, len(qs))
				paired = true
			}
			if paired {
				rows = append(rows, row)
			}
		}
	}
	if len(rows) == 0 {
		return nil
	}
	fmt.Fprintln(out, "\numd against SPDK boot by boot: the median of each boot's paired ratios (how many of them umd led)")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := "WORKLOAD\tMODE\t"
	for b := range plan.boots {
		header += fmt.Sprintf("BOOT %d\t", b+1)
	}
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	return tw.Flush()
}

// withFigures returns the runs that gave a figure and did not stall, by
// IOPS, lowest first.
func withFigures(runs []phaseResult) []phaseResult {
	var have []phaseResult
	for _, r := range runs {
		if r.usable() {
			have = append(have, r)
		}
	}
	slices.SortStableFunc(have, func(a, b phaseResult) int { return cmp.Compare(a.IOPS, b.IOPS) })
	return have
}

// stalledRuns counts the runs left out because they stalled.
func stalledRuns(runs []phaseResult) int {
	n := 0
	for _, r := range runs {
		if r.Stalled {
			n++
		}
	}
	return n
}

// median is the run with the median IOPS of sorted (withFigures, not
// empty): the lower of the middle two for an even count, a run that
// happened.
func median(sorted []phaseResult) phaseResult { return sorted[(len(sorted)-1)/2] }

// medianOf is the median of xs (not empty): the mean of the middle two
// for an even count.
func medianOf(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func cmdBenchCompare(ctx context.Context, args []string) (int, error) {
	o := parseOptions("bench-compare")
	runtime := o.fs.Duration("runtime", 5*time.Second, "measured time of each phase")
	ramp := o.fs.Duration("ramp", time.Second, "unmeasured ramp before each phase")
	run := o.fs.String("run", "", "run only the phases whose \"WORKLOAD, ENGINE\" matches this regular expression (e.g. 'qd32, umd')")
	repeat := o.fs.Int("repeat", 1, "run each umdbench and spdk_nvme_perf phase this many times, side by side and in turns, and show each row's median run and umd/SPDK as the median of the runs' paired ratios (single runs here move by 30-40 %)")
	boots := o.fs.Int("boots", 1, "boot the guest this many times, one after the other, and run every phase (with its -repeat) in each; the table takes every boot's runs, pairing umd and SPDK within a boot (which engine is ahead can change from one boot to the next)")
	doorbells := o.fs.Bool("doorbells", true, "count doorbell writes with QEMU's trace events (each costs QEMU a log line)")
	outDir := o.fs.String("o", "", "directory for the table, the guest's output and each phase's JSON (default bin/bench-compare/TIME)")
	spdk := o.fs.String("spdk", "auto", "run SPDK's spdk_nvme_perf too, polled and, if it has -E (SPDK v25.01 and later), with interrupts: on, off, or auto (when the host has it on PATH; Debian does not package it, see docs/performance.md)")
	if err := o.fs.Parse(args); err != nil {
		return 2, nil
	}
	withSPDK, spdkIRQ := false, false
	switch *spdk {
	case "on", "auto":
		if *spdk == "on" {
			// Not on PATH: the error says how to build it.
			if err := qemu.EnsureHostProgram(os.Stderr, "spdk_nvme_perf"); err != nil {
				return 2, fmt.Errorf("-spdk on: %w", err)
			}
		}
		path, err := exec.LookPath("spdk_nvme_perf")
		if err == nil {
			withSPDK = true
			if spdkIRQ, err = spdkHasInterrupts(path); err != nil {
				return 2, err
			}
		}
	case "off":
	default:
		return 2, fmt.Errorf("-spdk %q: want on, off or auto", *spdk)
	}
	if o.fs.NArg() > 0 {
		return 2, fmt.Errorf("bench-compare takes no arguments (got %q)", o.fs.Args())
	}
	if *repeat < 1 || *repeat > 100 {
		return 2, fmt.Errorf("-repeat %d: want 1 to 100", *repeat)
	}
	if *boots < 1 || *boots > 20 {
		return 2, fmt.Errorf("-boots %d: want 1 to 20", *boots)
	}
	plan := comparePlan{repeat: *repeat, boots: *boots}
	re, err := regexp.Compile(*run)
	if err != nil {
		return 2, fmt.Errorf("-run: %w", err)
	}
	selected := func(w, e int) bool {
		ce := compareEngines[e]
		return (withSPDK || !ce.spdk) && (spdkIRQ || !ce.spdkIRQ) && re.MatchString(phaseTitle(phaseID(w, e)))
	}
	phases := 0
	for w := range compareWorkloads {
		for e, ce := range compareEngines {
			if selected(w, e) {
				phases += ce.runs(*repeat)
			}
		}
	}
	if phases == 0 {
		return 2, fmt.Errorf("-run %q selects no phase", *run)
	}
	o.with = "fio"
	if withSPDK {
		o.with += ",spdk_nvme_perf"
	}
	o.driver = "vfio-pci"
	if o.aio == "" {
		// QEMU's own default, in which the reference figures
		// were measured; and with io_uring, QEMU 7.2 stalled the
		// kernel driver's polled queues (fio --hipri) at QD128 and at
		// 128 KiB QD32 (166 I/Os in 122 s; docs/performance.md).
		o.aio = qemu.AIOThreads
	}
	cfg, bin, err := o.prepare()
	if bin != "" {
		defer os.RemoveAll(bin)
	}
	if err != nil {
		return 125, err
	}
	if *outDir == "" {
		root, err := moduleRoot()
		if err != nil {
			return 125, err
		}
		*outDir = filepath.Join(root, "bin", "bench-compare", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(filepath.Join(*outDir, "phases"), 0o755); err != nil {
		return 125, err
	}
	cfg.Script = "#!/bin/sh\n" + compareScript(*runtime, *ramp, selected, *repeat)
	cfg.Timeout = 3*time.Minute + time.Duration(phases)*(*runtime+*ramp+20*time.Second)
	fmt.Fprintf(os.Stderr, "bench-compare: %d phases of %v (+%v ramp) a boot on %s, kernel %s, %d boot(s); output in %s\n",
		phases, *runtime, *ramp, o.topology, cfg.Kernel.Release, *boots, *outDir)

	results := map[string]phaseResult{}
	var (
		problems, lines   []string
		traceAll, traceOf uint64
		failed            error
		exitCode, booted  int
	)
	for b := range *boots {
		out, err := compareBoot(ctx, cfg, plan, b, *outDir, *doorbells, *runtime, *ramp)
		if err != nil && b == 0 {
			return 125, err
		}
		if err != nil {
			// The earlier boots' runs still make a table.
			exitCode, failed = 125, fmt.Errorf("boot %d: %w", b+1, err)
			break
		}
		booted++
		maps.Copy(results, out.results)
		problems = append(problems, out.problems...)
		lines = append(lines, out.lines...)
		traceAll += out.traceAll
		traceOf += out.traceOther
		if out.res.ExitCode != 0 {
			// The table shows what the boots so far gave.
			exitCode = out.res.ExitCode
			failed = fmt.Errorf("the guest script failed (exit status %d) in boot %d; see %s", out.res.ExitCode, b+1, out.log)
			break
		}
	}
	var table bytes.Buffer
	spdkText := ""
	switch {
	case spdkIRQ:
		spdkText = " and SPDK's spdk_nvme_perf (vfio-pci, polled and with interrupts)"
	case withSPDK:
		spdkText = " and SPDK's spdk_nvme_perf (vfio-pci, polled; this build has no -E for interrupts)"
	}
	bootText := "one boot"
	if *boots > 1 {
		bootText = fmt.Sprintf("%d boots", booted)
	}
	fmt.Fprintf(&table, "umd (umdbench, vfio-pci) against fio %s on the kernel's nvme driver%s, %s of the %q topology (QEMU nvme, TCG, disk aio=%s), kernel %s\n",
		"3.33", spdkText, bootText, o.topology, cfg.DiskAIO, cfg.Kernel.Release)
	cpuFrom, cpuFor := cpuWindow(*runtime, *ramp)
	if plan.several() {
		times := "once"
		if *repeat > 1 {
			times = fmt.Sprintf("%d times", *repeat)
		}
		fmt.Fprintf(&table, "umdbench and spdk_nvme_perf ran %s each in each boot, side by side: their rows show the run with the median IOPS, RUNS how many gave a figure (and how many stalled: an I/O slower than the whole phase, left out) and their range; umd/SPDK is the median of the ratios within each repetition, umd/fio umd's median run against fio's (once a boot)\n", times)
	}
	fmt.Fprintf(&table, "each phase %v after a %v ramp; latency from submission to completion; CPU: the engine process's user + system time (all threads) over %ds from %ds into the phase, as %% of one vCPU and per I/O at the phase's IOPS; ",
		*runtime, *ramp, cpuFor, cpuFrom)
	if *doorbells {
		table.WriteString("doorbells are QEMU's MMIO doorbell trace events (SQ + CQ) per I/O, ramp included")
		if withSPDK {
			table.WriteString(" (spdk perf's I/Os estimated as IOPS × (runtime + ramp))")
		}
		table.WriteString("\n\n")
	} else {
		table.WriteString("doorbells not counted (-doorbells=false)\n\n")
	}
	if err := compareTable(&table, results, selected, plan); err != nil {
		return 125, err
	}
	if err := compareByBoot(&table, results, comparePlan{repeat: *repeat, boots: booted}); err != nil {
		return 125, err
	}
	for _, l := range lines {
		fmt.Fprintf(&table, "\n%s", l)
	}
	if traceAll > 0 {
		fmt.Fprintf(&table, "\ntrace: %d lines read, %d not counted", traceAll, traceOf)
	}
	table.WriteString("\n")
	for _, p := range problems {
		fmt.Fprintf(&table, "problem: %s\n", p)
	}
	os.Stdout.Write(table.Bytes())
	if err := os.WriteFile(filepath.Join(*outDir, "table.txt"), table.Bytes(), 0o644); err != nil {
		return 125, err
	}
	fmt.Fprintf(os.Stderr, "bench-compare: table in %s\n", filepath.Join(*outDir, "table.txt"))
	switch {
	case failed != nil:
		return exitCode, failed
	case len(problems) > 0:
		return 1, fmt.Errorf("%d phase(s) failed", len(problems))
	}
	return 0, nil
}

// bootOutput is what one boot of bench-compare gave.
type bootOutput struct {
	results              map[string]phaseResult // by ID among every boot's runs
	problems, lines      []string
	traceAll, traceOther uint64 // QEMU trace lines read, and those not counted
	res                  qemu.Result
	log                  string // the guest's output
}

// compareBoot boots the guest once with cfg, whose Script runs the
// phases, and reads every phase's result, doorbell writes and CPU; b is
// the boot's index in plan. Each phase's output goes to
// outDir/phases/ID.out under its ID among every boot's runs
// (comparePlan.inBoot), the guest's output to outDir/guest.log
// (guest-bootN.log with several boots). An error is one the guest could
// not be run for; a failed script is in res.ExitCode.
func compareBoot(ctx context.Context, cfg qemu.Config, plan comparePlan, b int, outDir string, doorbells bool, runtime, ramp time.Duration) (bootOutput, error) {
	out := bootOutput{results: map[string]phaseResult{}}
	name := "guest.log"
	if plan.boots > 1 {
		name = fmt.Sprintf("guest-boot%d.log", b+1)
		fmt.Fprintf(os.Stderr, "bench-compare: boot %d of %d\n", b+1, plan.boots)
	}
	out.log = filepath.Join(outDir, name)
	guestLog, err := os.Create(out.log)
	if err != nil {
		return out, err
	}
	defer guestLog.Close()
	split := newPhaseSplitter(guestLog, os.Stderr)
	trace := &qemu.TraceCounter{Events: qemu.DoorbellEvents}
	cfg.Stdout = split
	if doorbells {
		cfg.Trace = trace
	}
	if out.res, err = qemu.Run(ctx, cfg); err != nil {
		return out, err
	}
	fmt.Fprintf(os.Stderr, "bench-compare: guest ready in %.1fs, done after %.1fs\n", out.res.Boot.Seconds(), out.res.Total.Seconds())

	marks := map[string]qemu.Phase{}
	for _, p := range trace.Phases() {
		marks[p.Name] = p
	}
	for id, buf := range split.outputs {
		all, e, ok := plan.inBoot(id, b)
		if err := os.WriteFile(filepath.Join(outDir, "phases", all+".out"), buf.Bytes(), 0o644); err != nil {
			return out, err
		}
		spdk := ok && compareEngines[e].spdk
		parse := parsePhase
		if spdk {
			parse = parseSPDK
		}
		r, perr := parse(buf.Bytes())
		if r.HaveData && spdk {
			// Its warm-up ran at about the measured rate.
			r.IOs = uint64(r.IOPS * float64(wholeSeconds(runtime)+wholeSeconds(ramp)))
		}
		if st := split.status[id]; st != "0" {
			r.Err = "exit status " + st
			out.problems = append(out.problems, fmt.Sprintf("%s: exit status %s: %s", phaseTitle(all), st, firstLine(buf.Bytes())))
		} else if perr != nil {
			r.Err = "no result"
			out.problems = append(out.problems, fmt.Sprintf("%s: %v", phaseTitle(all), perr))
		}
		if n, ok := split.ios[id]; ok {
			r.IOs = n
		}
		r.CPUs = split.cpu[id]
		if phase := runtime + ramp; r.stalledIn(phase) {
			r.Stalled = true
			out.lines = append(out.lines, fmt.Sprintf("stalled: %s: its slowest I/O took %.1fs, longer than the whole %v phase; left out of its row",
				phaseTitle(all), r.MaxUS/1e6, phase))
		}
		if m, ok := marks[id]; ok && doorbells {
			r.SQ = trace.Count(qemu.DoorbellEvents[0], m.Begin, m.End)
			r.CQ = trace.Count(qemu.DoorbellEvents[1], m.Begin, m.End)
		} else {
			r.IOs = 0 // no marks, no doorbell figure
		}
		out.results[all] = r
	}
	for _, l := range split.lines {
		if plan.boots > 1 {
			l = fmt.Sprintf("boot %d: %s", b+1, l)
		}
		out.lines = append(out.lines, l)
	}
	out.traceAll, out.traceOther = trace.Lines()
	return out, nil
}
