package bench

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// TestJSONLayout decodes the JSON back as fio's tools would and checks
// fio's field names and units.
func TestJSONLayout(t *testing.T) {
	d := openSim(t, 512, 8<<20)
	w := Workload{RW: RandReadWrite, RWMixRead: 50, BlockSize: 4096, IODepth: 4, Size: 1 << 20}
	r := runSim(t, d, w, 2)
	if r.Err() != nil {
		t.Fatal(r.Err())
	}
	var buf bytes.Buffer
	if err := WriteJSON(&buf, r, map[string]string{"rw": "randrw"}); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	for _, k := range []string{"timestamp", "time", "global options", "jobs"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("top level lacks %q", k)
		}
	}
	jobs, _ := doc["jobs"].([]any)
	if len(jobs) != 2 {
		t.Fatalf("%d jobs in JSON, want 2", len(jobs))
	}
	for i, raw := range jobs {
		job := raw.(map[string]any)
		if job["jobname"] != r.Jobs[i].Name {
			t.Errorf("jobname %v, want %s", job["jobname"], r.Jobs[i].Name)
		}
		for _, dir := range []string{"read", "write"} {
			dj, ok := job[dir].(map[string]any)
			if !ok {
				t.Fatalf("job %d lacks %q", i, dir)
			}
			for _, k := range []string{"io_bytes", "io_kbytes", "bw_bytes", "bw", "iops", "runtime", "total_ios", "clat_ns", "lat_ns"} {
				if _, ok := dj[k]; !ok {
					t.Errorf("job %d %s lacks %q", i, dir, k)
				}
			}
			s := &r.Jobs[i].Read
			if dir == "write" {
				s = &r.Jobs[i].Write
			}
			if dj["io_bytes"].(float64) != float64(s.Bytes) || dj["total_ios"].(float64) != float64(s.IOs) {
				t.Errorf("job %d %s: io_bytes %v total_ios %v, want %d %d", i, dir, dj["io_bytes"], dj["total_ios"], s.Bytes, s.IOs)
			}
			if iops := dj["iops"].(float64); iops <= 0 {
				t.Errorf("job %d %s: iops %v", i, dir, iops)
			}
			// bw is KiB/s, as in fio.
			bw, iops := dj["bw"].(float64), dj["iops"].(float64)
			if want := iops * 4; bw < want*0.99-1 || bw > want*1.01+1 {
				t.Errorf("job %d %s: bw %v KiB/s with %v IOPS of 4 KiB", i, dir, bw, iops)
			}
			for _, lk := range []string{"clat_ns", "lat_ns"} {
				lat := dj[lk].(map[string]any)
				pct, ok := lat["percentile"].(map[string]any)
				if !ok {
					t.Fatalf("job %d %s %s lacks percentile", i, dir, lk)
				}
				for _, k := range []string{"50.000000", "90.000000", "99.000000", "99.900000", "99.990000"} {
					v, ok := pct[k].(float64)
					if !ok || v < lat["min"].(float64) || v > lat["max"].(float64) {
						t.Errorf("job %d %s %s percentile %q = %v, outside [min, max]", i, dir, lk, k, pct[k])
					}
				}
				if lat["N"].(float64) != float64(s.IOs) || lat["mean"].(float64) <= 0 {
					t.Errorf("job %d %s %s: N %v mean %v", i, dir, lk, lat["N"], lat["mean"])
				}
			}
		}
		umd := job["umd"].(map[string]any)
		if umd["device"] != "sim" {
			t.Errorf("job %d: umd.device %v", i, job["umd"])
		}
		// The job thread's system calls where they were counted, else
		// nothing.
		sc, counted := umd["syscalls"]
		if want := r.Jobs[i].SyscallsErr == ""; counted != want || (counted && sc.(float64) != float64(r.Jobs[i].Syscalls)) {
			t.Errorf("job %d: umd.syscalls %v (present %v), want present %v with %d", i, sc, counted, want, r.Jobs[i].Syscalls)
		}
	}
	sim := doc["umd"].(map[string]any)["sim"].(map[string]any)
	// A count where the host has tracefs and perf rights, else the reason.
	sc, _ := sim["syscalls_per_io"].(string)
	if _, err := strconv.ParseFloat(sc, 64); err != nil && !strings.HasPrefix(sc, "not measured: ") {
		t.Errorf("umd.sim.syscalls_per_io %q", sc)
	}
	if sim["mmio_writes_per_io"].(float64) <= 0 || sim["device_ns_per_io"].(float64) <= 0 {
		t.Errorf("umd.sim: %v", sim)
	}
}

func TestTextReport(t *testing.T) {
	d := openSim(t, 512, 8<<20)
	w := Workload{RW: SeqWrite, BlockSize: 4096, IODepth: 4, Size: 1 << 20, Verify: true, VerifyPass: 1}
	r := runSim(t, d, w, 2)
	var buf bytes.Buffer
	if err := WriteText(&buf, r, "title"); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"JOB", "IOPS", "P99.99", "sim/0", "sim/1", "total", "write", "CPU:", "doorbells:", "verify: 4096 blocks checked", "SYSCALLS/IO", "not measured"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
