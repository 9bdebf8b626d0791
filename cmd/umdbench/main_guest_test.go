//go:build guest

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/internal/fdleak"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/qemu/guest/guestdev"
)

// fioJSON is the part of umdbench's JSON the guest tests look at, under
// fio's names.
type fioJSON struct {
	Jobs []struct {
		JobName string `json:"jobname"`
		Error   int    `json:"error"`
		Read    fioDirJSON
		Write   fioDirJSON
		UMD     struct {
			Device   string  `json:"device"`
			Verified uint64  `json:"verified_blocks"`
			IOs      uint64  `json:"ios"`
			SQ       uint64  `json:"sq_doorbells"`
			CQ       uint64  `json:"cq_doorbells"`
			Shadow   uint64  `json:"shadow_only_doorbells"`
			Syscalls *uint64 `json:"syscalls"`
		} `json:"umd"`
	} `json:"jobs"`
}

type fioDirJSON struct {
	IOPS    float64 `json:"iops"`
	BW      float64 `json:"bw"`
	Runtime float64 `json:"runtime"`
	IOs     uint64  `json:"total_ios"`
	LatNS   struct {
		Min        float64            `json:"min"`
		Max        float64            `json:"max"`
		Mean       float64            `json:"mean"`
		Percentile map[string]float64 `json:"percentile"`
	} `json:"lat_ns"`
}

func umdbenchJSON(t *testing.T, args ...string) fioJSON {
	t.Helper()
	code, out, errOut := umdbench(t, append(args, "-o", "json")...)
	if code != exitOK {
		t.Fatalf("umdbench %q: exit %d: %s", args, code, errOut)
	}
	var doc fioJSON
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("umdbench %q: %v:\n%s", args, err, out)
	}
	return doc
}

// checkDir checks one direction's figures are plausible for a TCG guest:
// some I/O, not more than 10 M IOPS, ordered percentiles.
func checkDir(t *testing.T, what string, d fioDirJSON) {
	t.Helper()
	if d.IOs == 0 || d.IOPS < 10 || d.IOPS > 10e6 || d.Runtime <= 0 {
		t.Errorf("%s: %d I/Os, %.0f IOPS over %v ms", what, d.IOs, d.IOPS, d.Runtime)
		return
	}
	p := d.LatNS.Percentile
	seq := []float64{d.LatNS.Min, p["50.000000"], p["90.000000"], p["99.000000"], p["99.900000"], p["99.990000"], d.LatNS.Max}
	for i := 1; i < len(seq); i++ {
		if seq[i] < seq[i-1] || seq[i] <= 0 {
			t.Errorf("%s: min, p50, p90, p99, p99.9, p99.99, max = %v: not ordered", what, seq)
			break
		}
	}
	if d.LatNS.Mean < d.LatNS.Min || d.LatNS.Mean > d.LatNS.Max {
		t.Errorf("%s: mean %v outside [%v, %v]", what, d.LatNS.Mean, d.LatNS.Min, d.LatNS.Max)
	}
}

// TestGuestCompletionModes runs a short verified random mix on a real
// (QEMU) NVMe through VFIO in each completion mode.
func TestGuestCompletionModes(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	for _, mode := range []string{"poll", "irq", "adaptive"} {
		t.Run(mode, func(t *testing.T) {
			doc := umdbenchJSON(t, "--rw", "randrw", "--bs", "4k", "--iodepth", "8", "--runtime", "2s", "--size", "16m",
				"--time_based", "--verify", "--completion", mode, bdf)
			if len(doc.Jobs) != 1 {
				t.Fatalf("%d jobs, want 1", len(doc.Jobs))
			}
			j := doc.Jobs[0]
			if j.Error != 0 || j.UMD.Device != bdf || j.UMD.Verified == 0 {
				t.Errorf("error %d, device %q, %d blocks verified", j.Error, j.UMD.Device, j.UMD.Verified)
			}
			checkDir(t, mode+" read", j.Read)
			checkDir(t, mode+" write", j.Write)
			if j.Read.Runtime < 1900 || j.Read.Runtime > 4000 {
				t.Errorf("runtime %v ms for --runtime 2s", j.Read.Runtime)
			}
			t.Logf("%s: %.0f read + %.0f write IOPS, read p50 %.1f µs p99 %.1f µs", mode, j.Read.IOPS, j.Write.IOPS,
				j.Read.LatNS.Percentile["50.000000"]/1000, j.Read.LatNS.Percentile["99.000000"]/1000)
		})
	}
}

// TestGuestInterruptSyscalls: with interrupts at QD1 every I/O ends in at
// most one wait, and the wait is one system call, WaitThread's epoll_wait
// (a ppoll and a read were two: 2.0 per I/O here). The runtime's
// preemption signals and the hand-offs that follow add a few a second.
func TestGuestInterruptSyscalls(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	doc := umdbenchJSON(t, "--rw", "randread", "--bs", "4k", "--iodepth", "1", "--runtime", "2s", "--completion", "irq", bdf)
	if len(doc.Jobs) != 1 {
		t.Fatalf("%d jobs, want 1", len(doc.Jobs))
	}
	j := doc.Jobs[0].UMD
	if j.Syscalls == nil {
		t.Fatal("umd.syscalls missing: the job's system calls were not counted (tracefs is mounted in the guest)")
	}
	perIO := float64(*j.Syscalls) / float64(j.IOs)
	t.Logf("QD1 with interrupts: %d system calls for %d I/Os, %.3f per I/O", *j.Syscalls, j.IOs, perIO)
	// At most one wait per I/O (fewer when a completion is already there
	// to poll), each one system call.
	if j.IOs < 100 || *j.Syscalls == 0 || perIO > 1.5 {
		t.Errorf("%d system calls for %d I/Os (%.2f per I/O): want at most one wait per I/O, of one system call", *j.Syscalls, j.IOs, perIO)
	}
}

// TestGuestJobsAndDevices runs two jobs on every vfio-pci NVMe of the
// topology at once.
func TestGuestJobsAndDevices(t *testing.T) {
	guest.Require(t)
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	doc := umdbenchJSON(t, "--rw", "randread", "--bs", "4k", "--iodepth", "4", "--numjobs", "2", "--runtime", "1s", "class=nvme", "driver=vfio-pci")
	if len(doc.Jobs) != 2*len(bdfs) {
		t.Fatalf("%d jobs for %d devices × 2", len(doc.Jobs), len(bdfs))
	}
	perDevice := map[string]int{}
	for _, j := range doc.Jobs {
		perDevice[j.UMD.Device]++
		checkDir(t, j.JobName, j.Read)
	}
	for _, bdf := range bdfs {
		if perDevice[bdf] != 2 {
			t.Errorf("%s ran %d jobs, want 2", bdf, perDevice[bdf])
		}
	}
}

// TestGuestVerifyMismatch writes a region with verify pass 5, then reads
// it expecting pass 6, then corrupts one block behind umdbench's back
// through the library: both mismatches are reported with their LBA.
func TestGuestVerifyMismatch(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	const offset = 8 << 20 // 16384 in 512-byte LBAs
	region := []string{"--bs", "4k", "--iodepth", "4", "--size", "1m", "--offset", "8m", "--verify", bdf}

	if code, out, errOut := umdbench(t, append([]string{"--rw", "write", "--verify_pass", "5"}, region...)...); code != exitOK {
		t.Fatalf("writing pass 5: exit %d: %s%s", code, out, errOut)
	}
	code, out, errOut := umdbench(t, append([]string{"--rw", "read", "--verify_pass", "5"}, region...)...)
	if code != exitOK || !strings.Contains(out, "verify: 2048 blocks checked") {
		t.Fatalf("reading pass 5 back: exit %d: %s%s", code, out, errOut)
	}

	// At depth 1 the first block read is the first one checked; deeper,
	// the device may complete a later block first.
	code, _, errOut = umdbench(t, append(append([]string{"--rw", "read", "--verify_pass", "6"}, region...), "--iodepth", "1")...)
	want := fmt.Sprintf("verify failed on %s namespace 1 at LBA %d: pass expected 6, found 5", bdf, offset/512)
	if code != exitFailure || !strings.Contains(errOut, want) {
		t.Errorf("reading pass 5 as pass 6: exit %d, %q; want exit 1 and %q", code, errOut, want)
	}

	// Flip one byte of LBA 16384+1000 on the device itself.
	lba := uint64(offset/512 + 1000)
	corrupt(t, bdf, lba)
	code, _, errOut = umdbench(t, append([]string{"--rw", "read", "--verify_pass", "5"}, region...)...)
	want = fmt.Sprintf("at LBA %d: checksum expected", lba)
	if code != exitFailure || !strings.Contains(errOut, want) {
		t.Errorf("reading a corrupted block: exit %d, %q; want exit 1 and %q", code, errOut, want)
	}
}

// corrupt reads logical block lba of namespace 1, flips a byte of its
// data and writes it back.
func corrupt(t *testing.T, bdf string, lba uint64) {
	t.Helper()
	ctx, dev, done := openBriefly(t, bdf)
	defer done()
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	buf, err := dev.Alloc(512)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(buf)
	r := nvmelike.ReadCommand(1, lba, 1, buf)
	if _, err := q.Exec(ctx, &r); err != nil {
		t.Fatal(err)
	}
	buf.Bytes[400] ^= 0x40
	w := nvmelike.WriteCommand(1, lba, 1, buf)
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}
}

// TestGuestErrors checks what a user sees for a namespace that does not
// exist and a region beyond the namespace.
func TestGuestErrors(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--nsid", "99", bdf}, "no active namespace 99"},
		{[]string{"--size", "100g", bdf}, "goes beyond " + bdf + " namespace 1"},
	} {
		code, _, errOut := umdbench(t, c.args...)
		if code != exitFailure || !strings.Contains(errOut, c.want) {
			t.Errorf("umdbench %q: exit %d, %q; want exit 1 saying %q", c.args, code, errOut, c.want)
		}
	}
}

// TestGuestBinary runs the umdbench on the guest's PATH, as a user does,
// and checks its table.
func TestGuestBinary(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	var out bytes.Buffer
	cmd := exec.Command("umdbench", "--rw", "read", "--bs", "128k", "--iodepth", "4", "--runtime", "1s", bdf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	for _, want := range []string{"read, bs 128 KiB, iodepth 4", bdf + "/0", "P99.99", "CPU:", "doorbells:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

// TestGuestTraceFaults runs with the DMA-fault tracer attached: a healthy
// run reports zero faults, in the text and in the JSON.
func TestGuestTraceFaults(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	code, out, errOut := umdbench(t, "--rw", "randrw", "--bs", "4k", "--iodepth", "8", "--verify", "--runtime", "1s", "--trace_faults", bdf)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "DMA faults traced during the run: 0") {
		t.Errorf("the report does not count faults:\n%s", out)
	}
	code, js, errOut := umdbench(t, "--rw", "randread", "--bs", "4k", "--runtime", "1s", "--trace_faults", "-o", "json", bdf)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var doc struct {
		UMD struct {
			DMAFaults *struct {
				Count int `json:"count"`
			} `json:"dma_faults"`
		} `json:"umd"`
	}
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.UMD.DMAFaults == nil || doc.UMD.DMAFaults.Count != 0 {
		t.Errorf("JSON dma_faults = %+v, want a count of 0", doc.UMD.DMAFaults)
	}
}

// TestGuestShadowDoorbells runs a verified mix with shadow doorbells on
// (QEMU's nvme offers Doorbell Buffer Config) and off, polled and with
// interrupts: the data must stay right either way, and off must never
// leave an update in memory only. (QEMU 7.2 sets each event index to the
// tail it has just processed, so on saves no MMIO writes there either;
// the test logs the counts.)
func TestGuestShadowDoorbells(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	for _, mode := range []string{"poll", "irq"} {
		t.Run(mode, func(t *testing.T) {
			for _, shadow := range []string{"on", "off"} {
				doc := umdbenchJSON(t, "--rw", "randrw", "--bs", "4k", "--iodepth", "32", "--runtime", "1s", "--size", "8m",
					"--time_based", "--verify", "--completion", mode, "--shadow_doorbells", shadow, bdf)
				if len(doc.Jobs) != 1 {
					t.Fatalf("%d jobs, want 1", len(doc.Jobs))
				}
				j := doc.Jobs[0]
				if j.Error != 0 || j.UMD.Verified == 0 || j.UMD.IOs == 0 {
					t.Errorf("shadow %s: error %d, %d blocks verified, %d I/Os", shadow, j.Error, j.UMD.Verified, j.UMD.IOs)
				}
				t.Logf("shadow %s: %d I/Os, %d SQ + %d CQ MMIO doorbell writes, %d shadow only", shadow, j.UMD.IOs, j.UMD.SQ, j.UMD.CQ, j.UMD.Shadow)
				if shadow == "off" && j.UMD.Shadow != 0 {
					t.Errorf("shadow off: %d doorbell updates written to shadow doorbells only", j.UMD.Shadow)
				}
			}
		})
	}
}

// serveBroker serves bdf with a broker of its own (trusted sessions if
// trusted) until the test ends or the server is closed; it returns the
// server and its socket.
func serveBroker(t *testing.T, bdf string, trusted bool) (*broker.Server, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "umdd.sock")
	s, err := broker.NewServer(broker.Config{Socket: sock})
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	if err := s.AddDevice(ctx, dev, broker.Access{Trusted: trusted}); err != nil {
		dev.Close()
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		s.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, sock
}

// namespaces opens bdf for a moment and returns its active namespaces.
func namespaces(t *testing.T, bdf string) []uint32 {
	t.Helper()
	_, dev, done := openBriefly(t, bdf)
	defer done()
	return dev.Controller().Namespaces()
}

// openBriefly opens bdf through the library with a small pool, for a
// test to use before or after umdbench does; done closes it and ends ctx.
func openBriefly(t *testing.T, bdf string) (ctx context.Context, dev *umd.Device, done func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 4 << 20})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return ctx, dev, func() {
		dev.Close()
		cancel()
	}
}

// TestGuestNamespaces runs jobs on several namespaces of each device at
// once: --nsid all on every device (two jobs on each namespace, verified,
// named BDF/nsN/i), a list on one device, through the broker too, and a
// list naming a namespace a device lacks.
func TestGuestNamespaces(t *testing.T) {
	guest.Require(t)
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	want := map[string]int{} // "BDF/nsN" → jobs
	multi := ""
	for _, bdf := range bdfs {
		ids := namespaces(t, bdf)
		for _, id := range ids {
			want[fmt.Sprintf("%s/ns%d", bdf, id)] = 2
		}
		if len(ids) > 1 && multi == "" {
			multi = bdf
		}
	}
	if multi == "" {
		t.Skipf("no device of this topology has more than one namespace (%v)", bdfs)
	}
	check := func(what string, doc fioJSON, want map[string]int) {
		t.Helper()
		got := map[string]int{}
		for _, j := range doc.Jobs {
			name := j.JobName[:strings.LastIndexByte(j.JobName, '/')]
			got[name]++
			if j.Error != 0 || j.UMD.Verified == 0 || !strings.HasPrefix(name, j.UMD.Device+"/ns") {
				t.Errorf("%s: job %s on %s: error %d, %d blocks verified", what, j.JobName, j.UMD.Device, j.Error, j.UMD.Verified)
			}
			d := j.Read
			if d.IOs == 0 {
				d = j.Write // a writing pattern
			}
			checkDir(t, what+" "+j.JobName, d)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: jobs per namespace %v, want %v", what, got, want)
		}
	}
	doc := umdbenchJSON(t, "--nsid", "all", "--numjobs", "2", "--rw", "randrw", "--bs", "4k", "--iodepth", "4",
		"--runtime", "1s", "--size", "2m", "--time_based", "--verify", "class=nvme", "driver=vfio-pci")
	check("--nsid all", doc, want)

	two := map[string]int{multi + "/ns2": 1, multi + "/ns1": 1}
	doc = umdbenchJSON(t, "--nsid", "2,1", "--rw", "write", "--bs", "4k", "--iodepth", "4", "--size", "1m", "--verify", multi)
	check("--nsid 2,1", doc, two)

	code, _, errOut := umdbench(t, "--nsid", "1,99", "--runtime", "1s", multi)
	if code != exitFailure || !strings.Contains(errOut, "no active namespace 99") {
		t.Errorf("--nsid 1,99: exit %d, %q", code, errOut)
	}

	_, sock := serveBroker(t, multi, true) // holds multi from here on
	doc = umdbenchJSON(t, "--broker", sock, "--nsid", "all", "--rw", "randrw", "--bs", "4k", "--iodepth", "4",
		"--runtime", "1s", "--size", "1m", "--time_based", "--verify", "--completion", "irq")
	all := map[string]int{}
	for k := range want {
		if strings.HasPrefix(k, multi+"/") {
			all[k] = 1
		}
	}
	check("--broker --nsid all", doc, all)

}

// TestGuestBroker runs umdbench as a client of a broker serving one
// device: verified I/O on a trusted session's queue pairs, polled and on
// interrupts, JSON as usual; the broker holds nothing afterwards. A
// broker that does not allow trusted sessions is refused with a hint.
func TestGuestBroker(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	s, sock := serveBroker(t, bdf, true)
	for _, mode := range []string{"poll", "irq"} {
		doc := umdbenchJSON(t, "--broker", sock, "--rw", "randrw", "--bs", "4k", "--iodepth", "8", "--numjobs", "2",
			"--runtime", "2s", "--size", "8m", "--time_based", "--verify", "--completion", mode)
		if len(doc.Jobs) != 2 {
			t.Fatalf("%s: %d jobs, want 2", mode, len(doc.Jobs))
		}
		for _, j := range doc.Jobs {
			if j.Error != 0 || j.UMD.Device != bdf || j.UMD.Verified == 0 {
				t.Errorf("%s: error %d, device %q, %d blocks verified", mode, j.Error, j.UMD.Device, j.UMD.Verified)
			}
			checkDir(t, mode+" read", j.Read)
		}
		t.Logf("through the broker, %s: %.0f read + %.0f write IOPS per job", mode, doc.Jobs[0].Read.IOPS, doc.Jobs[0].Write.IOPS)
		// The broker notices closed connections on its own goroutines.
		for start := time.Now(); len(s.Status()) != 0; time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > time.Second {
				t.Fatalf("the broker still holds %+v 1 s after umdbench ended", s.Status())
			}
		}
	}
	code, _, errOut := umdbench(t, "--broker", sock, "--rw", "read", "--runtime", "1s", "0000:99:00.0")
	if code != exitNoMatch || !strings.Contains(errOut, "0000:99:00.0") {
		t.Errorf("an unknown device through the broker: exit %d, %s", code, errOut)
	}
	s.Close() // the device is the next broker's
	_, sock2 := serveBroker(t, bdf, false)
	code, _, errOut = umdbench(t, "--broker", sock2, "--rw", "read", "--runtime", "1s")
	if code == exitOK || !strings.Contains(errOut, "--trusted") {
		t.Errorf("a broker without trusted sessions: exit %d, %s", code, errOut)
	}
}

// TestGuestSimCosts: in the guest (tracefs mounted, root) --sim counts the
// job threads' system calls with the kernel's perf event, and splits the
// CPU time into device and host parts.
func TestGuestSimCosts(t *testing.T) {
	guest.Require(t)
	code, out, errOut := umdbench(t, "--sim", "--rw", "randread", "--iodepth", "32", "--runtime", "1s", "--disable_lat", "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var doc struct {
		UMD struct {
			Sim struct {
				Syscalls   string  `json:"syscalls_per_io"`
				DeviceNS   float64 `json:"device_ns_per_io"`
				HostNS     float64 `json:"host_ns_per_io"`
				HostCycles float64 `json:"host_cycles_per_io"`
				Allocs     float64 `json:"allocs_per_io"`
			} `json:"sim"`
		} `json:"umd"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.UMD.Sim
	sc, err := strconv.ParseFloat(s.Syscalls, 64)
	if err != nil || sc > 0.01 {
		t.Errorf("syscalls per I/O %q: want a count near 0 (the polled path makes none)", s.Syscalls)
	}
	if s.DeviceNS <= 0 || s.HostNS <= 0 || s.HostCycles <= s.HostNS || s.Allocs > 0.001 {
		t.Errorf("sim costs %+v", s)
	}
	t.Logf("guest --sim QD32: device %.0f ns, host %.0f ns = %.0f reference cycles per I/O, %s syscalls per I/O", s.DeviceNS, s.HostNS, s.HostCycles, s.Syscalls)
}

// TestGuestRemovalStopsTheRun unbinds the device of a long run from
// vfio-pci: umdbench stops, says why, prints the figures so far, and
// closes the device, which lets the unbind (which waits for it) finish.
// The function is bound to vfio-pci again after.
func TestGuestRemovalStopsTheRun(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	done := startRun(t, bdf, "--rw", "randread", "--iodepth", "8", "--runtime", "10m", "--time_based", "--completion", "irq", bdf)
	unbound := guest.Unbind(t, bdf)
	r := endOfRun(t, done, "the unbind")
	if r.code != exitFailure || !strings.Contains(r.errOut, "asked for "+bdf+" back") {
		t.Errorf("exit %d, stderr %q; want %d and why the run stopped", r.code, r.errOut, exitFailure)
	}
	if !strings.Contains(r.out, "IOPS") {
		t.Errorf("no figures for the run until the unbind:\n%s", r.out)
	}
	guest.WaitUnbound(t, unbound, runGuard, "umdbench returned")
}

// TestGuestResetStopsTheRun resets the function through sysfs in the
// middle of a run, polled and with interrupts: the run stops with the
// reason (the controller no longer ready, checked once completions stop
// coming), not after the 30 s a stall takes, gives the device back whole,
// and the next run on it works.
func TestGuestResetStopsTheRun(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	for _, mode := range []string{"poll", "irq"} {
		t.Run(mode, func(t *testing.T) {
			done := startRun(t, bdf, "--rw", "randread", "--iodepth", "8", "--runtime", "10m", "--time_based", "--completion", mode, bdf)
			if err := os.WriteFile("/sys/bus/pci/devices/"+bdf+"/reset", []byte("1"), 0); err != nil {
				t.Fatalf("resetting %s: %v", bdf, err)
			}
			r := endOfRun(t, done, "the reset")
			if r.code != exitFailure || !strings.Contains(r.errOut, nvmelike.ErrNotReady.Error()) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.errOut, exitFailure, nvmelike.ErrNotReady)
			}
			if !strings.Contains(r.out, "IOPS") {
				t.Errorf("no figures for the run until the reset:\n%s", r.out)
			}
			if code, _, errOut := umdbench(t, "--rw", "randread", "--runtime", "1s", "--completion", mode, bdf); code != exitOK {
				t.Errorf("the run after: exit %d: %s", code, errOut)
			}
		})
	}
}

// runGuard bounds how long the tests wait for a run to start or end: it
// catches a hang and measures nothing.
const runGuard = time.Minute

type runResult struct {
	code        int
	out, errOut string
}

// startRun runs umdbench with args in the background and returns once it
// has bdf's IOMMU group open and has had half a second to get going.
func startRun(t *testing.T, bdf string, args ...string) <-chan runResult {
	t.Helper()
	group := "/dev/vfio/" + guest.IOMMUGroup(t, bdf)
	done := make(chan runResult, 1)
	go func() {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, &out, &errOut)
		done <- runResult{code, out.String(), errOut.String()}
	}()
	for deadline := time.Now().Add(runGuard); !hasOpen(t, group); {
		if time.Now().After(deadline) {
			t.Fatalf("umdbench did not open %s within %v", group, runGuard)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // into the run proper
	return done
}

// endOfRun waits for a run startRun began to end after what.
func endOfRun(t *testing.T, done <-chan runResult, what string) runResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(runGuard):
		t.Fatalf("umdbench still running %v after %s", runGuard, what)
	}
	return runResult{}
}

// hasOpen reports whether this process has path open.
func hasOpen(t *testing.T, path string) bool {
	t.Helper()
	fds, err := fdleak.Take()
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range fds {
		if target == path {
			return true
		}
	}
	return false
}

// TestGuestQuirks runs umdbench on the quirks topology's controllers, each
// unlike the common case in one way, and checks each either works or is
// refused saying why: a controller memory buffer changes nothing; a zoned
// namespace takes reads and an in-order write, not random writes; a
// namespace formatted with metadata is refused; one MSI-X vector is shared
// by the admin queue and every job's queue; one I/O queue pair and 8 KiB
// transfers bound --numjobs and --bs; a disk that fails the host I/O of
// one LBA for reads and another for writes ends the run that meets it,
// naming the LBA and the media error, and leaves the others alone.
// Through the broker, the zoned and metadata namespaces are refused as
// directly.
func TestGuestQuirks(t *testing.T) {
	guest.Require(t)
	dev := guestdev.BySerial(t, "umd-quirk-cmb", "umd-quirk-zns", "umd-quirk-meta", "umd-quirk-1vec", "umd-quirk-small", "umd-quirk-media")
	cmb, zns, meta, onevec, small := dev["umd-quirk-cmb"], dev["umd-quirk-zns"], dev["umd-quirk-meta"], dev["umd-quirk-1vec"], dev["umd-quirk-small"]
	media := dev["umd-quirk-media"] // reads of LBA 1000 and writes of LBA 2000 fail
	for _, c := range []struct {
		args []string
		want string // in the error; "" when the run must pass
	}{
		{[]string{"--rw", "randrw", "--size", "4m", "--verify", "--completion", "irq", cmb}, ""},
		{[]string{"--rw", "randwrite", "--size", "4m", zns}, "is zoned (ZNS): it takes writes only at each zone's write pointer"},
		{[]string{"--rw", "rw", "--size", "4m", zns}, "is zoned (ZNS)"},
		// Zones fill as they are written and this leaves them full: one
		// run per boot (the default -count=1).
		{[]string{"--rw", "write", "--bs", "16k", "--size", "8m", "--verify", zns}, ""},
		{[]string{"--rw", "randread", "--size", "8m", "--verify", "--iodepth", "8", zns}, ""},
		{[]string{"--rw", "randread", "--size", "4m", meta}, "namespace 1 is formatted with 8 bytes of metadata per 512-byte block, in a separate buffer"},
		{[]string{"--rw", "randread", "--size", "4m", "--nsid", "2", meta}, "after each block's data (extended LBAs)"},
		{[]string{"--rw", "randrw", "--size", "2m", "--verify", "--completion", "irq", "--numjobs", "3", "--iodepth", "4", onevec}, ""},
		{[]string{"--rw", "randread", "--size", "2m", "--numjobs", "2", small}, "--numjobs 2: " + small + " grants 1 I/O queue pairs"},
		{[]string{"--rw", "randread", "--size", "2m", "--bs", "16k", small}, "--bs 16 KiB is larger than the largest transfer " + small + " takes (8 KiB)"},
		{[]string{"--rw", "randrw", "--size", "2m", "--bs", "8k", "--verify", "--completion", "irq", small}, ""},
		// 4 KiB I/Os over LBAs 992-1023 and 1992-2023: the one covering
		// the failing LBA fails.
		{[]string{"--rw", "read", "--offset", "496k", "--size", "16k", "--iodepth", "4", media}, "read of LBA 1000: nvme status sct 0x2 sc 0x81 (unrecovered read error)"},
		{[]string{"--rw", "write", "--offset", "996k", "--size", "16k", "--iodepth", "4", "--completion", "irq", media}, "write of LBA 2000: nvme status sct 0x2 sc 0x80 (write fault)"},
		// Its other blocks work: writes and reads, verified, that stop
		// short of both.
		{[]string{"--rw", "randrw", "--size", "480k", "--verify", media}, ""},
	} {
		code, out, errOut := umdbench(t, append(c.args, "-o", "json")...)
		if c.want != "" {
			if code == exitOK || !strings.Contains(errOut, c.want) {
				t.Errorf("umdbench %q: exit %d, %q; want an error saying %q", c.args, code, errOut, c.want)
			}
			continue
		}
		if code != exitOK {
			t.Errorf("umdbench %q: exit %d: %s", c.args, code, errOut)
			continue
		}
		var doc fioJSON
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("umdbench %q: %v", c.args, err)
		}
		for _, j := range doc.Jobs {
			if j.Error != 0 || j.UMD.IOs == 0 || j.UMD.Verified == 0 && slices.Contains(c.args, "--verify") {
				t.Errorf("umdbench %q: job %s: error %d, %d I/Os, %d blocks verified", c.args, j.JobName, j.Error, j.UMD.IOs, j.UMD.Verified)
			}
		}
	}

	// Through the broker the same refusals come from its listing, and
	// the zoned namespace still reads.
	for _, c := range []struct {
		bdf  string
		args []string
		want string
	}{
		{zns, []string{"--rw", "randwrite", "--size", "4m"}, "is zoned (ZNS)"},
		{zns, []string{"--rw", "randread", "--size", "4m"}, ""},
		{meta, []string{"--rw", "randread", "--size", "4m", "--nsid", "2"}, "after each block's data (extended LBAs)"},
	} {
		s, sock := serveBroker(t, c.bdf, true)
		args := append([]string{"--broker", sock}, c.args...)
		code, _, errOut := umdbench(t, args...)
		if c.want == "" && code != exitOK || c.want != "" && (code == exitOK || !strings.Contains(errOut, c.want)) {
			t.Errorf("umdbench %q: exit %d, %q; want %q", args, code, errOut, c.want)
		}
		s.Close()
	}
}
