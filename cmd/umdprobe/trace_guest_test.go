//go:build guest

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf/rlimit"
	"github.com/umdkit/umd"
	"github.com/umdkit/umd/dmatrace"
	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu/guest"
)

// never is an IOVA no umd Space hands out: 256 GiB, inside the guest
// IOMMU's 39-bit address space.
const never = 0x40_0000_0000

// syncBuffer is a bytes.Buffer two goroutines can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func vfioFunction(t *testing.T) string {
	t.Helper()
	if d := guest.Driver(); d != "" && d != "vfio-pci" {
		t.Skipf("the guest bound its NVMe functions to %s, not vfio-pci", d)
	}
	return guest.DriverFunctions(t, "vfio-pci")[0]
}

// TestGuestTrace runs `umdprobe trace --duration 5s -o json` while the
// test opens a controller through umd and sends it Identify Controller
// with PRP1 at an IOVA never mapped: the controller's DMA write faults
// in the IOMMU, and trace prints the fault, unattributed (umdprobe does
// not own the device), with the map and unmap events of umd's pool.
func TestGuestTrace(t *testing.T) {
	guest.Require(t)
	bdf := vfioFunction(t)
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"trace", "--duration", "5s", "-o", "json"}, &stdout, &stderr) }()
	// Loading and verifying the eBPF programs can take seconds under a
	// loaded TCG host: allow 30, but stop at once if trace gave up.
	for start := time.Now(); !strings.Contains(stderr.String(), "umdprobe: tracing with"); time.Sleep(10 * time.Millisecond) {
		select {
		case code := <-done:
			t.Fatalf("trace ended (exit %d) before it started: %q", code, stderr.String())
		default:
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("trace did not start in 30 s: %q", stderr.String())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := dev.Space().Lookup(never); ok {
		t.Fatalf("IOVA 0x%x is in the ledger: %v", uint64(never), r)
	}
	cmd := nvmelike.IdentifyCommand(nvmelike.IdentifyCNSController, 0, nvmelike.Buffer{Bytes: make([]byte, nvmelike.IdentifyDataSize), IOVA: never})
	cpl, err := dev.Controller().Admin(ctx, &cmd)
	t.Logf("Identify with PRP1 at never-mapped IOVA 0x%x: status %#x, %v", uint64(never), cpl.Status, err)
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}

	var code int
	select {
	case code = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("trace --duration 5s did not stop")
	}
	t.Logf("stderr:\n%s", stderr.String())
	if code != exitOK {
		t.Fatalf("trace: exit %d", code)
	}
	var fault, mapped, unmapped bool
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var ev struct {
			Schema, Kind, BDF, IOVA, Direction, Attribution string
			Owned                                           *bool
			PID                                             int
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Schema != schemaTraceEvent {
			t.Fatalf("line %q: %v", line, err)
		}
		switch {
		case ev.Kind == "fault" && ev.BDF == bdf && ev.IOVA == "0x4000000000":
			t.Logf("fault: %s", line)
			if ev.Direction != "write" || ev.Owned == nil || *ev.Owned || ev.Attribution != notOwned {
				t.Errorf("fault line %s: want a write, not owned by this process", line)
			}
			fault = true
		case ev.Kind == "fault":
			t.Errorf("unexpected fault: %s", line)
		case ev.Kind == "map" && ev.PID == os.Getpid():
			if !mapped {
				t.Logf("map: %s", line)
			}
			mapped = true
		case ev.Kind == "unmap" && ev.PID == os.Getpid():
			if !unmapped {
				t.Logf("unmap: %s", line)
			}
			unmapped = true
		}
	}
	if !fault || !mapped || !unmapped {
		t.Errorf("fault at 0x%x by %s seen: %t; map and unmap events by this process: %t, %t", uint64(never), bdf, fault, mapped, unmapped)
	}
}

// TestGuestTraceFailsCommand: a read whose PRP1 points at an IOVA never
// mapped, and one whose PRP1 points at a buffer unmapped just before,
// fault in the IOMMU; each fault, dispatched to the engine of the device
// this test owns, fails its read with a *dmatrace.DMAFaultError naming
// the command and what the ledger knows of the IOVA, at the queue pair's
// next Poll.
func TestGuestTraceFailsCommand(t *testing.T) {
	guest.Require(t)
	bdf := vfioFunction(t)
	_ = rlimit.RemoveMemlock() // as umdprobe trace does, for kernels before 5.11
	tr, err := dmatrace.Open(dmatrace.Options{Sources: dmatrace.SourceDMAR})
	if err != nil {
		t.Fatalf("kernel %s: %v", guest.Kernel(), err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	devs := []dmatrace.Device{{BDF: bdf, Book: dev.Space(), Engine: dev.Controller()}}

	// A buffer mapped for the device and unmapped again.
	mem, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	m, err := dev.Space().MapPool(mem, iommu.Owner{Name: "read buffer", Tag: "unmapped by the test"}, iommu.MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unmapped := m.IOVA()
	if err := m.Unmap(); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name    string
		buf     nvmelike.Buffer
		verdict dmatrace.Verdict
	}{
		{"never mapped", nvmelike.Buffer{Bytes: make([]byte, 512), IOVA: never}, dmatrace.NeverMapped},
		{"unmapped", nvmelike.Buffer{Bytes: mem[:512], IOVA: unmapped}, dmatrace.Unmapped},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got error
			called := 0
			read := nvmelike.ReadCommand(1, 0, 1, c.buf)
			if err := q.Submit(&read, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) { got = err; called++ }); err != nil {
				t.Fatal(err)
			}
			q.Ring()
			submitted := time.Now()
			// Poll only once the fault was dispatched: QEMU's nvme
			// completes the read, and may do so before the fault
			// interrupt arrives (see docs/tracing.md).
			var a dmatrace.Attribution
			for {
				ev, err := tr.Read(ctx)
				if err != nil {
					t.Fatalf("waiting for the fault: %v", err)
				}
				if f, ok := ev.(*dmatrace.Fault); ok && f.IOVA == c.buf.IOVA {
					var ok bool
					if a, ok = dmatrace.Dispatch(*f, devs); !ok {
						t.Fatalf("fault %v not dispatched to %s", f, bdf)
					}
					break
				}
			}
			t.Logf("fault %v after the doorbell: %v", time.Since(submitted), a)
			for called == 0 && ctx.Err() == nil {
				if _, err := q.Poll(0); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Millisecond)
			}
			t.Logf("the read failed with: %v", got)
			var fe *dmatrace.DMAFaultError
			if called != 1 || !errors.As(got, &fe) || !errors.Is(got, dmatrace.ErrDMAFault) {
				t.Fatalf("callback ran %d times with %v; want once with a DMA fault", called, got)
			}
			fa := fe.Attribution
			if !fa.HasCommand || fa.Command.Queue != q.ID() || fa.Command.Opcode != nvmelike.CmdRead || fa.Verdict != c.verdict ||
				fa.Fault.BDF != bdf || !fa.Fault.Write {
				t.Errorf("attribution %v; want the read on queue %d, a write by %s, %s", fa, q.ID(), bdf, c.verdict)
			}
			if c.verdict == dmatrace.Unmapped && (fa.Record.Owner.Name != "read buffer" || fa.Since <= 0) {
				t.Errorf("attributed to %v, unmapped %v before the fault; want the read buffer", fa.Record, fa.Since)
			}
			// The device completes the read after all: its completion
			// frees the tracker held since the failure.
			deadline := time.Now().Add(2 * time.Second)
			for q.Outstanding() > 0 && time.Now().Before(deadline) {
				q.Poll(0)
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("after the failure: %d outstanding, stats %+v", q.Outstanding(), q.Stats())
		})
	}
}
