//go:build vm

// These tests boot real guests from the host to check the harness's own
// contract: output and exit status come back, and a guest that panics or
// hangs is reported with its console. They need QEMU and the guest
// kernels, so they carry the vm tag: `make test-guest` runs them with
// `go test -tags vm ./qemu/`.

package qemu

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func testConfig(t *testing.T, script string) Config {
	t.Helper()
	if err := CheckHostTools(); err != nil {
		t.Fatal(err)
	}
	cache, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	k, err := LookupKernel(DefaultKernel)
	if err != nil {
		t.Fatal(err)
	}
	u, err := (&Fetcher{Cache: cache, Log: os.Stderr}).Unpacked(k)
	if err != nil {
		t.Fatal(err)
	}
	top, _ := LookupTopology("single")
	return Config{Kernel: u, Topology: top, Cache: cache, Script: "#!/bin/sh\n" + script + "\n", Timeout: 2 * time.Minute}
}

func TestRunReturnsOutputAndStatus(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, `echo "out $UMD_GUEST $UMD_TOPOLOGY"; echo err >&2; [ -t 1 ] && echo tty; exit 7`)
	var out strings.Builder
	cfg.Stdout = &out
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 7 {
		t.Errorf("exit code %d, want 7", res.ExitCode)
	}
	if got := out.String(); got != "out 1 single\nerr\n" {
		t.Errorf("output %q, want %q", got, "out 1 single\nerr\n")
	}
	if res.Boot <= 0 || res.Total < res.Boot {
		t.Errorf("boot %v, total %v", res.Boot, res.Total)
	}
	t.Logf("guest ready after %v, done after %v", res.Boot, res.Total)
}

func TestRunReportsPanic(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "echo c > /proc/sysrq-trigger; sleep 60")
	_, err := Run(context.Background(), cfg)
	var ge *GuestError
	if !errors.As(err, &ge) {
		t.Fatalf("err = %v, want a GuestError", err)
	}
	if !strings.Contains(ge.Console, "Kernel panic") {
		t.Errorf("the console shown lacks the panic:\n%s", ge.Console)
	}
	if log, err := os.ReadFile(ge.ConsoleLog); err != nil || !strings.Contains(string(log), "sysrq") {
		t.Errorf("the kept console log lacks the crash (%v)", err)
	}
	if _, err := os.Stat(ge.ConsoleLog); err != nil {
		t.Errorf("console log not kept: %v", err)
	}
	os.RemoveAll(strings.TrimSuffix(ge.ConsoleLog, "/console.log"))
}

func TestRunTimesOut(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "sleep 600")
	cfg.Timeout = 20 * time.Second
	start := time.Now()
	_, err := Run(context.Background(), cfg)
	var ge *GuestError
	if !errors.As(err, &ge) || !strings.Contains(ge.Reason, "timed out") {
		t.Fatalf("err = %v, want a timeout GuestError", err)
	}
	if d := time.Since(start); d > cfg.Timeout+15*time.Second {
		t.Errorf("run took %v with a %v timeout", d, cfg.Timeout)
	}
	os.RemoveAll(strings.TrimSuffix(ge.ConsoleLog, "/console.log"))
}

// TestRunCountsTraceEvents: the guest reads 64 blocks with O_DIRECT
// through the kernel's nvme driver between two marks, idle before and
// after; the counter sees at least one SQ and one CQ doorbell write per
// read inside the marks, and none in a second, idle, phase.
//
// A mark is stamped when the host reads it, and the guest's echo returns
// before its serial driver has sent the line: on a loaded host the stamp
// came late enough to miss 56 of the 64 reads. The guest therefore
// idles after each begin mark and before each end mark, so a stamp up
// to half a second late still brackets the work.
func TestRunCountsTraceEvents(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, `mark() { echo "mark $*" > /dev/ttyS2; }
sleep 0.3
mark begin io
sleep 0.5
dd if=/dev/nvme0n1 of=/dev/null bs=4096 count=64 iflag=direct 2>/dev/null || exit 3
sleep 0.3
mark end io
sleep 0.3
mark begin idle
sleep 0.5
mark end idle`)
	cfg.Driver = "nvme"
	cfg.Trace = &TraceCounter{Events: DoorbellEvents}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exit code %d", res.ExitCode)
	}
	ph := cfg.Trace.Phases()
	if len(ph) != 2 || ph[0].Name != "io" || ph[1].Name != "idle" {
		t.Fatalf("phases %+v, want io and idle", ph)
	}
	for i, want := range []uint64{64, 0} {
		sq := cfg.Trace.Count(DoorbellEvents[0], ph[i].Begin, ph[i].End)
		cq := cfg.Trace.Count(DoorbellEvents[1], ph[i].Begin, ph[i].End)
		t.Logf("%s: %d SQ and %d CQ doorbell writes", ph[i].Name, sq, cq)
		if (want > 0 && (sq < want || cq < want || sq > 4*want)) || (want == 0 && sq+cq != 0) {
			t.Errorf("%s: %d SQ and %d CQ doorbell writes, want about %d each", ph[i].Name, sq, cq, want)
		}
	}
}
