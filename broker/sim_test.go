package broker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/nvmelike"
)

// startSim runs a server with the server's default pool page size (2 MiB
// hugepages, which this host may not have) and simulated devices.
func startSim(t *testing.T, cfg Config, bdfs ...string) *Server {
	t.Helper()
	cfg.Socket = filepath.Join(t.TempDir(), "umdd.sock")
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, bdf := range bdfs {
		if err := s.AddSimulated(context.Background(), bdf, SimOptions{Blocks: 4096}, self()); err != nil {
			t.Fatal(err)
		}
	}
	serveInTest(t, s)
	return s
}

// TestSimulatedMediated does mediated I/O on a simulated device both ways
// (by pool offset and as client-encoded commands with a PRP list), and
// checks that trusted sessions are refused with a clear reason.
func TestSimulatedMediated(t *testing.T) {
	s := startSim(t, Config{}, "0000:03:00.0")
	c := dial(t, s.cfg.Socket)
	devs, err := c.Devices()
	if err != nil || len(devs) != 1 || !devs[0].Simulated || devs[0].Serial != "sim-0000:03:00.0" ||
		len(devs[0].Namespaces) != 1 || devs[0].Namespaces[0].Blocks != 4096 || devs[0].Namespaces[0].LBASize != 512 || devs[0].MaxQueues < 1 {
		t.Fatalf("devices %+v, %v", devs, err)
	}
	sess, err := c.OpenSession("0000:03:00.0", SessionOptions{Queues: 2, PoolBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if sess.Pool.PageSize() != hugepage.Page4K || len(sess.Interrupts) != 2 {
		t.Fatalf("pool page size %d (want 4 KiB memfd pages), %d interrupts", sess.Pool.PageSize(), len(sess.Interrupts))
	}
	pool := sess.Pool.Bytes()
	for i := range 64 << 10 {
		pool[i] = byte(i*31 + i>>9)
	}
	if err := sess.Write(0, 1, 100, 128, 0); err != nil {
		t.Fatal(err)
	}
	if err := sess.Flush(1, 1); err != nil {
		t.Fatal(err)
	}
	if err := sess.Read(1, 1, 100, 128, 64<<10); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pool[64<<10:128<<10], pool[:64<<10]) {
		t.Fatal("read back differs from what was written")
	}
	if n, err := sess.Interrupts[1].TryRead(); n != 2 || err != nil {
		t.Fatalf("queue 1's eventfd counted %d completions (%v), want 2", n, err)
	}
	// A command the client encoded: read 16 KiB (4 pages, so a PRP list
	// at pool offset 192 KiB) of LBAs 100.. into pool offset 128 KiB.
	base := sess.Layout.PoolIOVA
	data, list := uint64(128<<10), uint64(192<<10)
	for i := range 3 {
		binary.LittleEndian.PutUint64(pool[list+uint64(i)*8:], base+data+uint64(i+1)*4096)
	}
	cmd := CommandRequest{Queue: 0, Opcode: nvmelike.CmdRead, NSID: 1, CDW: [6]uint32{100, 0, 31}, PRP1: base + data, PRP2: base + list}
	if status, _, err := sess.Exec(cmd); err != nil || status != 0 {
		t.Fatalf("client-encoded read: status 0x%x, %v", status, err)
	}
	if !bytes.Equal(pool[data:data+16<<10], pool[:16<<10]) {
		t.Fatal("client-encoded read differs from what was written")
	}
	cmd.PRP1 = base + 255<<10 // runs past the pool
	if _, _, err := sess.Exec(cmd); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("a command past the pool: %v, want ErrBadRequest", err)
	}

	_, err = dial(t, s.cfg.Socket).OpenSession("0000:03:00.0", SessionOptions{Mode: ModeTrusted, PoolBytes: 4096})
	if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "simulated: trusted sessions need a VFIO device") {
		t.Fatalf("a trusted session on a simulated device: %v", err)
	}
	_, err = c.Reserve(Reservation{Claim: "t", Device: "0000:03:00.0", Mode: ModeTrusted, Queues: 1, Depth: 8, PoolBytes: 4096})
	if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "simulated") {
		t.Fatalf("a trusted reservation on a simulated device: %v", err)
	}
}

// TestSimulatedGrant: a reservation on a simulated device, opened by
// grant, polled; released with the session live, its queues are deleted
// on the controller and can be made again.
func TestSimulatedGrant(t *testing.T) {
	s := startSim(t, Config{}, "0000:03:00.0", "0000:04:00.0")
	admin := dial(t, s.cfg.Socket)
	g, err := admin.Reserve(Reservation{Claim: "pod", Device: "0000:04:00.0", Queues: 4, Depth: 32, PoolBytes: 1 << 20, Polled: true})
	if err != nil {
		t.Fatal(err)
	}
	pod := dial(t, s.cfg.Socket)
	sess, err := pod.OpenGrant("0000:04:00.0", g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(sess.Layout.Queues) != 4 || len(sess.Interrupts) != 0 || sess.Pool.Size() != 1<<20 {
		t.Fatalf("layout %+v", sess.Layout)
	}
	copy(sess.Pool.Bytes(), "simulated and reserved")
	if err := sess.Write(3, 1, 4095, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := admin.Release("pod"); err != nil {
		t.Fatal(err)
	}
	if err := sess.Read(3, 1, 4095, 1, 512); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("I/O after the release: %v", err)
	}
	if d := s.Devices(0, 0)[1]; d.FreeQueues != d.MaxQueues {
		t.Fatalf("%d of %d queue pairs free after the release", d.FreeQueues, d.MaxQueues)
	}
	again, err := dial(t, s.cfg.Socket).OpenSession("0000:04:00.0", SessionOptions{Queues: 4, PoolBytes: 8192})
	if err != nil {
		t.Fatalf("a session after the release: %v", err)
	}
	if err := again.Read(0, 1, 4095, 1, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(again.Pool.Bytes(), []byte("simulated and reserved")) {
		t.Fatal("the namespace lost what the released session wrote")
	}
}

func TestSimOptionsRefused(t *testing.T) {
	s, err := NewServer(Config{Socket: "unused"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, o := range []SimOptions{{LBASize: 1000}, {LBASize: 256}, {Blocks: 1 << 40}, {MaxQueues: 65}} {
		if err := s.AddSimulated(context.Background(), "0000:03:00.0", o, self()); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	if err := s.AddSimulated(context.Background(), "0000:03:00.0", SimOptions{Blocks: 8}, self()); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSimulated(context.Background(), "0000:03:00.0", SimOptions{Blocks: 8}, self()); err == nil {
		t.Error("the same address served twice")
	}
}

// TestReleaseDuringIO: releasing a claim while its client is in the middle
// of I/O ends the session cleanly: the client's next request fails with
// ErrDisconnected, and every queue pair is free for a new session.
func TestReleaseDuringIO(t *testing.T) {
	s := startSim(t, Config{}, "0000:03:00.0")
	admin := dial(t, s.cfg.Socket)
	g, err := admin.Reserve(Reservation{Claim: "busy", Device: "0000:03:00.0", Queues: 4, Depth: 8, PoolBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	pod := dial(t, s.cfg.Socket)
	sess, err := pod.OpenGrant("0000:03:00.0", g.ID)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			if i == 10 {
				close(started)
			}
			if err := sess.Write(i%4, 1, uint64(i%4000), 64, 0); err != nil {
				ended <- err
				return
			}
		}
	}()
	<-started
	if err := admin.Release("busy"); err != nil {
		t.Fatal(err)
	}
	if err := <-ended; !errors.Is(err, ErrDisconnected) {
		t.Fatalf("the client's I/O ended with %v, want ErrDisconnected", err)
	}
	// Every queue pair of the controller can be made again: the
	// released session's were deleted on it.
	d := s.Devices(0, 0)[0]
	if d.FreeQueues != d.MaxQueues || d.MaxQueues%4 != 0 {
		t.Fatalf("%d of %d queue pairs free after the release", d.FreeQueues, d.MaxQueues)
	}
	for i := 0; i < d.MaxQueues; i += 4 {
		if _, err := dial(t, s.cfg.Socket).OpenSession("0000:03:00.0", SessionOptions{Queues: 4, PoolBytes: 4096}); err != nil {
			t.Fatalf("queue pairs %d-%d after the release: %v", i+1, i+4, err)
		}
	}
}

// TestFailureReported: a device whose controller is reset under the
// broker (here the software controller's FunctionReset; in the guest a
// reset through sysfs) is reported on Failures once, with the reason;
// mediated I/O on it fails with it meanwhile, and retiring it hangs up its
// clients while the other device stays served.
func TestFailureReported(t *testing.T) {
	s := startSim(t, Config{}, "0000:03:00.0", "0000:04:00.0")
	c := dial(t, s.cfg.Socket)
	sess, err := c.OpenSession("0000:03:00.0", SessionOptions{Queues: 1, PoolBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Read(0, 1, 0, 8, 0); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	b := s.devices["0000:03:00.0"].b.(*simBackend)
	s.mu.Unlock()
	b.sc.FunctionReset()
	if err := sess.Read(0, 1, 0, 8, 0); err == nil || !strings.Contains(err.Error(), nvmelike.ErrNotReady.Error()) {
		t.Errorf("read after the reset: %v, want the controller's reason", err)
	}
	var f Failure
	select {
	case f = <-s.Failures():
	case <-time.After(10 * nvmelike.CheckInterval): // bounds a hang, measures nothing
		t.Fatal("no failure reported")
	}
	if f.BDF != "0000:03:00.0" || !errors.Is(f.Err, nvmelike.ErrNotReady) {
		t.Fatalf("failure %+v, want 0000:03:00.0 with ErrNotReady", f)
	}
	select {
	case f := <-s.Failures():
		t.Fatalf("reported again: %+v", f)
	case <-time.After(2 * nvmelike.CheckInterval):
	}
	// Closing a controller reset from outside says so, nothing else.
	if err := s.Retire(f.BDF, "its controller failed"); err != nil && !errors.Is(err, nvmelike.ErrNotReady) {
		t.Errorf("Retire: %v", err)
	}
	if err := sess.Read(0, 1, 0, 8, 0); !errors.Is(err, ErrDisconnected) {
		t.Errorf("read after retiring: %v, want ErrDisconnected", err)
	}
	c2 := dial(t, s.cfg.Socket)
	other, err := c2.OpenSession("0000:04:00.0", SessionOptions{Queues: 1, PoolBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Read(0, 1, 0, 8, 0); err != nil {
		t.Errorf("the other device: %v", err)
	}
}
