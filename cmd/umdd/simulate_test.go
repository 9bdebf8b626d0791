package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/pcie"
)

const cardsSnapshot = "../../pcie/testdata/snapshots/qemu-cards.txt"

// startSimulated runs umdd's serve loop in this process with args and
// returns its socket; it stops (and its error is checked) when t ends.
func startSimulated(t *testing.T, args ...string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "umdd.sock")
	o, err := parseArgs(append([]string{"--socket", sock}, args...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	var log bytes.Buffer
	go func() { done <- serveUntil(ctx, &syncWriter{w: &log}, o, func(*broker.Server) { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("umdd stopped before listening: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("umdd did not listen within 20 s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("umdd: %v", err)
		}
	})
	return sock
}

// syncWriter is an io.Writer safe for the server's and the test's
// goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// nvmeOnVFIO lists what --simulate should serve of a snapshot: its
// NVMe-class functions bound to vfio-pci.
func nvmeOnVFIO(t *testing.T, snapshot string) []string {
	t.Helper()
	f, err := os.Open(snapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	if err := pcie.RestoreSnapshot(f, dir); err != nil {
		t.Fatal(err)
	}
	sys, err := pcie.Scan(pcie.Options{SysfsRoot: dir})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fn := range sys.Functions {
		if fn.Class == 0x010802 && fn.Driver == "vfio-pci" {
			out = append(out, fn.BDF.String())
		}
	}
	slices.Sort(out)
	return out
}

// TestSimulateSnapshot: umdd --simulate over a snapshot serves a software
// controller under each NVMe function on vfio-pci of it, and a client
// does verified mediated I/O through a reservation's grant; the status
// command shows the reservation.
func TestSimulateSnapshot(t *testing.T) {
	want := nvmeOnVFIO(t, cardsSnapshot)
	if len(want) < 2 {
		t.Fatalf("the snapshot has %d NVMe functions on vfio-pci: %v", len(want), want)
	}
	sock := startSimulated(t, "--simulate", cardsSnapshot, "--simulate-blocks", "8192")
	c, err := broker.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	devs, err := c.Devices()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range devs {
		if !d.Simulated || d.Namespaces[0].Blocks != 8192 {
			t.Errorf("device %+v: want simulated, 8192 blocks", d)
		}
		got = append(got, d.BDF)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("serves %v, the snapshot's NVMe functions on vfio-pci are %v", got, want)
	}
	g, err := c.Reserve(broker.Reservation{Claim: "snap", Device: want[1], Queues: 2, Depth: 16, PoolBytes: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := broker.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	sess, err := pod.OpenGrant(want[1], g.ID)
	if err != nil {
		t.Fatal(err)
	}
	pattern := bytes.Repeat([]byte("umdd --simulate "), 4096) // 64 KiB
	copy(sess.Pool.Bytes(), pattern)
	if err := sess.Write(1, 1, 8192-128, 128, 0); err != nil {
		t.Fatal(err)
	}
	if err := sess.Read(0, 1, 8192-128, 128, 64<<10); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sess.Pool.Bytes()[64<<10:128<<10], pattern) {
		t.Fatal("read back differs")
	}
	var out bytes.Buffer
	if err := run([]string{"status", "--socket", sock, "-o", "json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Reservations []broker.ReservationStatus `json:"reservations"`
	}
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Reservations) != 1 || st.Reservations[0].Claim != "snap" || !st.Reservations[0].InUse {
		t.Fatalf("status reservations %+v", st.Reservations)
	}
	// Trusted is refused with the reason.
	other, err := broker.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.OpenSession(want[0], broker.SessionOptions{Mode: broker.ModeTrusted, PoolBytes: 4096}); !errors.Is(err, broker.ErrState) || !strings.Contains(err.Error(), "simulated") {
		t.Fatalf("trusted on a simulated device: %v", err)
	}
}

// TestSimulateDirectory: --simulate also takes a sysfs directory, and
// selectors narrow what is served.
func TestSimulateDirectory(t *testing.T) {
	want := nvmeOnVFIO(t, cardsSnapshot)
	f, err := os.Open(cardsSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	if err := pcie.RestoreSnapshot(f, dir); err != nil {
		t.Fatal(err)
	}
	sock := startSimulated(t, "--simulate", dir, want[0])
	c, err := broker.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	devs, err := c.Devices()
	if err != nil || len(devs) != 1 || devs[0].BDF != want[0] {
		t.Fatalf("devices %+v, %v; want only %s", devs, err, want[0])
	}
}

func TestSimulateArgs(t *testing.T) {
	o, err := parseArgs([]string{"--socket", "s", "--simulate", "tree", "--simulate-blocks", "100", "--reservers", "0,1000", "--max-reserved", "2G"})
	if err != nil || o.simulate != "tree" || o.simBlocks != 100 || !slices.Equal(o.reservers, []uint32{0, 1000}) || o.maxReserve != 2<<30 {
		t.Fatalf("%+v, %v", o, err)
	}
	for _, bad := range [][]string{
		{"--socket", "s", "--simulate", "t", "--sysfs", "/sys"},
		{"--socket", "s", "--simulate", "t", "--vfs", "2"},
		{"--socket", "s", "--simulate", "t", "--simulate-blocks", "0"},
		{"--socket", "s", "--reservers", "root"},
	} {
		var ue usageError
		if _, err := parseArgs(bad); !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
	sock := filepath.Join(t.TempDir(), "u.sock")
	for _, tree := range []string{filepath.Join(t.TempDir(), "missing"), "main.go"} {
		o, err := parseArgs([]string{"--socket", sock, "--simulate", tree})
		if err != nil {
			t.Fatal(err)
		}
		if err := serveUntil(context.Background(), io.Discard, o, nil); err == nil {
			t.Errorf("--simulate %s: no error", tree)
		}
	}
}
