//go:build guest

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu/guest"
)

// With runAsUmdd set, the test binary is umdd, with the arguments in
// umddArgs (separated by newlines).
const (
	runAsUmdd = "UMDD_TEST_MAIN"
	umddArgs  = "UMDD_TEST_ARGS"
)

func TestMain(m *testing.M) {
	if os.Getenv(runAsUmdd) == "1" {
		os.Args = append([]string{"umdd"}, strings.Split(os.Getenv(umddArgs), "\n")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestGuestDaemon runs umdd on one device, opens a session through it,
// asks for its status, and stops it with SIGTERM: it exits 0, removes its
// socket and leaves the device free for the next owner.
func TestGuestDaemon(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	sock := filepath.Join(t.TempDir(), "umdd.sock")
	cmd, stderr := startUmdd(t, "--socket", sock, "--mode", "0600", "--max-queues", "2", bdf)
	c := dialUmdd(t, sock, stderr)
	defer c.Close()
	var err error
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v, %v", fi, err)
	}
	devs, err := c.Devices()
	if err != nil || len(devs) != 1 || devs[0].BDF != bdf {
		t.Fatalf("devices %+v, %v", devs, err)
	}
	if _, err := c.OpenSession(bdf, broker.SessionOptions{Queues: 3, PoolBytes: 2 << 20}); err == nil {
		t.Fatal("a session over --max-queues 2 was granted")
	}
	c.Close()
	if c, err = broker.Dial(sock); err != nil {
		t.Fatal(err)
	}
	s, err := c.OpenSession(bdf, broker.SessionOptions{Queues: 2, PoolBytes: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	lba := s.Layout.Namespaces[0].LBASize
	mem := s.Pool.Bytes()
	for i := range 4 * lba {
		mem[i] = byte(i*13) ^ 0xc3
	}
	if err := s.Write(1, s.Layout.Namespaces[0].NSID, 32, 4, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Read(0, s.Layout.Namespaces[0].NSID, 32, 4, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mem[1<<20:1<<20+4*lba], mem[:4*lba]) {
		t.Fatal("read back through umdd differs")
	}
	var out bytes.Buffer
	if err := run([]string{"status", "--socket", sock, "-o", "json"}, &out, os.Stderr); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Clients []broker.ClientStatus `json:"clients"`
	}
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, cl := range st.Clients {
		if int(cl.PID) == os.Getpid() && cl.Device == bdf && len(cl.Queues) == 2 && cl.Commands == 2 {
			held++
		}
	}
	if held != 1 {
		t.Fatalf("status does not show this session: %s", out.String())
	}

	stopUmdd(t, cmd, stderr)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after shutdown: %v", err)
	}
	if err := s.Read(0, 1, 0, 1, 0); err == nil {
		t.Error("I/O through a stopped broker succeeded")
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 4 << 20})
	if err != nil {
		t.Fatalf("the device after umdd stopped: %v", err)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("umdd said:\n%s", stderr.String())
}

// startUmdd runs umdd (this test binary, as umdd) with args; it is killed
// when t ends if still running. Its stderr collects in the buffer.
func startUmdd(t *testing.T, args ...string) (*exec.Cmd, *logBuffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), runAsUmdd+"=1", umddArgs+"="+strings.Join(args, "\n"))
	stderr := &logBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, stderr
}

// logBuffer collects umdd's stderr, written by exec's copying goroutine
// while the test reads it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor reports whether the log holds s within guard.
func (b *logBuffer) waitFor(s string, guard time.Duration) bool {
	for start := time.Now(); !strings.Contains(b.String(), s); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > guard {
			return false
		}
	}
	return true
}

// dialUmdd connects to umdd's socket once it answers.
func dialUmdd(t *testing.T, sock string, stderr *logBuffer) *broker.Client {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := broker.Dial(sock)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("umdd did not answer in 30 s: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGuestDaemonRetiresOnRemoval unbinds one of two devices umdd
// serves, with a client's session on each, from vfio-pci: umdd hangs up
// the client of that device, closes it (the unbind, which waits for the
// device, completes) and lists it as failed, refusing new sessions on it,
// while the client of the other device goes on as before. Bound to
// vfio-pci again, it is served again after `umdd restore`.
func TestGuestDaemonRetiresOnRemoval(t *testing.T) {
	guest.Require(t)
	const guard = time.Minute // bounds a hang, measures nothing
	gone, kept := twoGroups(t)
	sock := filepath.Join(t.TempDir(), "umdd.sock")
	cmd, stderr := startUmdd(t, "--socket", sock, "--mode", "0600", gone, kept)
	session := func(bdf string) (*broker.Client, *broker.Session) {
		c := dialUmdd(t, sock, stderr)
		t.Cleanup(func() { c.Close() })
		s, err := c.OpenSession(bdf, broker.SessionOptions{Queues: 1, PoolBytes: 2 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return c, s
	}
	goneClient, goneSession := session(gone)
	keptClient, keptSession := session(kept)
	nsid := keptSession.Layout.Namespaces[0].NSID

	unbound := guest.Unbind(t, gone)
	guest.WaitUnbound(t, unbound, guard, "umdd was asked for "+gone)
	select {
	case <-goneClient.Done():
	case <-time.After(guard):
		t.Fatalf("the client of %s is still connected %v after the unbind", gone, guard)
	}
	if err := goneSession.Read(0, nsid, 0, 1, 0); !errors.Is(err, broker.ErrDisconnected) {
		t.Errorf("I/O on the unbound device: %v, want ErrDisconnected", err)
	}
	select {
	case <-keptClient.Done():
		t.Fatalf("the client of %s was hung up too", kept)
	default:
	}
	mem := keptSession.Pool.Bytes()
	lba := keptSession.Layout.Namespaces[0].LBASize
	for i := range lba {
		mem[i] = byte(i*7) ^ 0x5a
	}
	if err := keptSession.Write(0, nsid, 8, 1, 0); err != nil {
		t.Fatalf("writing to %s after %s was unbound: %v", kept, gone, err)
	}
	if err := keptSession.Read(0, nsid, 8, 1, 1<<20); err != nil || !bytes.Equal(mem[1<<20:1<<20+lba], mem[:lba]) {
		t.Fatalf("reading back from %s after %s was unbound: %v", kept, gone, err)
	}

	c := dialUmdd(t, sock, stderr)
	defer c.Close()
	devs, err := c.Devices()
	if err != nil || len(devs) != 2 {
		t.Fatalf("devices after the unbind: %+v, %v", devs, err)
	}
	for _, d := range devs {
		if failed := strings.Contains(d.Failed, "asked for it back"); failed != (d.BDF == gone) {
			t.Errorf("%s listed with Failed %q", d.BDF, d.Failed)
		}
	}
	if _, err := c.OpenSession(gone, broker.SessionOptions{Queues: 1, PoolBytes: 2 << 20}); !errors.Is(err, broker.ErrState) {
		t.Errorf("a session on the unbound %s: %v, want ErrState", gone, err)
	}
	// umdd logs this after Retire returns, which is after the device
	// closed and the unbind went on: it can come after the checks above.
	if !stderr.waitFor(gone+" closed and given back", guard) {
		t.Errorf("umdd's log does not say it gave %s back:\n%s", gone, stderr.String())
	}

	// Bound to vfio-pci again, it is served again on request.
	if err := guest.BindVFIO(gone); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"restore", "--socket", sock, gone}, &out, os.Stderr); err != nil {
		t.Fatalf("umdd restore: %v\n%s", err, stderr.String())
	}
	if info, err := c.Device(gone); err != nil || info.Failed != "" || info.FreeQueues == 0 {
		t.Errorf("the restored %s listed as %+v, %v", gone, info, err)
	}
	back, err := c.OpenSession(gone, broker.SessionOptions{Queues: 1, PoolBytes: 2 << 20})
	if err != nil {
		t.Fatalf("a session on the restored %s: %v", gone, err)
	}
	if err := back.Read(0, back.Layout.Namespaces[0].NSID, 0, 1, 0); err != nil {
		t.Errorf("I/O on the restored %s: %v", gone, err)
	}
	stopUmdd(t, cmd, stderr)
}

// TestGuestDaemonRecoversFromReset resets one of two devices umdd serves
// through sysfs, behind umdd's back, with a trusted client's session on
// it and a mediated one's on the other: umdd notices within its health
// check and hangs up the trusted client, whose own queue pair sees the
// reset too; once that client has let go of the device (it holds the VFIO
// group until then), umdd brings the controller up again and serves it.
// A new session on it does I/O, and the other device's client never
// noticed.
func TestGuestDaemonRecoversFromReset(t *testing.T) {
	guest.Require(t)
	const guard = time.Minute // bounds a hang, measures nothing
	reset, kept := twoGroups(t)
	sock := filepath.Join(t.TempDir(), "umdd.sock")
	cmd, stderr := startUmdd(t, "--socket", sock, "--mode", "0600", "--trusted", reset, kept)
	session := func(bdf, mode string) (*broker.Client, *broker.Session) {
		c := dialUmdd(t, sock, stderr)
		t.Cleanup(func() { c.Close() })
		s, err := c.OpenSession(bdf, broker.SessionOptions{Queues: 1, PoolBytes: 2 << 20, Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		return c, s
	}
	resetClient, resetSession := session(reset, broker.ModeTrusted)
	keptClient, keptSession := session(kept, broker.ModeMediated)

	if err := os.WriteFile("/sys/bus/pci/devices/"+reset+"/reset", []byte("1"), 0); err != nil {
		t.Fatalf("resetting %s: %v", reset, err)
	}
	select {
	case <-resetClient.Done():
	case <-time.After(guard):
		t.Fatalf("the client of %s is still connected %v after the reset", reset, guard)
	}
	if err := resetSession.QueuePairs()[0].Check(); !errors.Is(err, nvmelike.ErrNotReady) {
		t.Errorf("the trusted client's queue pair after the reset: %v, want ErrNotReady", err)
	}
	resetClient.Close()
	if !stderr.waitFor(reset+" brought up again and served", guard) {
		t.Fatalf("umdd did not bring %s back:\n%s", reset, stderr.String())
	}
	if !strings.Contains(stderr.String(), nvmelike.ErrNotReady.Error()) {
		t.Errorf("umdd's log does not say why:\n%s", stderr.String())
	}
	c, s := session(reset, broker.ModeMediated)
	if info, err := c.Device(reset); err != nil || info.Failed != "" {
		t.Errorf("%s listed as %+v, %v", reset, info, err)
	}
	if err := s.Read(0, s.Layout.Namespaces[0].NSID, 0, 1, 0); err != nil {
		t.Errorf("I/O on %s after it was brought back: %v", reset, err)
	}
	select {
	case <-keptClient.Done():
		t.Fatalf("the client of %s was hung up too", kept)
	default:
	}
	if err := keptSession.Read(0, keptSession.Layout.Namespaces[0].NSID, 0, 1, 0); err != nil {
		t.Errorf("I/O on %s: %v", kept, err)
	}
	stopUmdd(t, cmd, stderr)
}

// TestGuestTrustedRunOutlivesUmdd kills umdd (SIGKILL: no clean-up of
// its own) under a trusted umdbench run. The controller still serves the
// run's queue pairs, but nobody manages it any more and a new umdd cannot
// open the device while umdbench holds it: umdbench stops, says the
// broker went away and exits 1, after which a new umdd serves the device.
func TestGuestTrustedRunOutlivesUmdd(t *testing.T) {
	guest.Require(t)
	const guard = time.Minute // bounds a hang, measures nothing
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	sock := filepath.Join(t.TempDir(), "umdd.sock")
	cmd, stderr := startUmdd(t, "--socket", sock, "--mode", "0600", "--trusted", bdf)
	c := dialUmdd(t, sock, stderr)
	defer c.Close()
	info, err := c.Device(bdf)
	if err != nil {
		t.Fatal(err)
	}
	var out logBuffer
	bench := exec.Command("umdbench", "--broker", sock, "--rw", "randread", "--iodepth", "8", "--runtime", "10m", bdf)
	bench.Stdout, bench.Stderr = &out, &out
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bench.Process.Kill()
		bench.Wait()
	})
	for deadline := time.Now().Add(guard); ; time.Sleep(20 * time.Millisecond) {
		now, err := c.Device(bdf)
		if err != nil {
			t.Fatal(err)
		}
		if now.FreeQueues < info.FreeQueues {
			break // umdbench holds its queue pair
		}
		if time.Now().After(deadline) {
			t.Fatalf("umdbench took no queue pair within %v:\n%s", guard, out.String())
		}
	}
	time.Sleep(500 * time.Millisecond) // into the run proper
	cmd.Process.Kill()
	cmd.Wait()
	exited := make(chan error, 1)
	go func() { exited <- bench.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out.String(), "the broker at "+sock+" went away") {
			t.Errorf("umdbench after umdd died: %v; want exit 1 saying the broker went away:\n%s", err, out.String())
		}
	case <-time.After(guard):
		t.Fatalf("umdbench still running %v after umdd died", guard)
	}
	// The device is free: a new umdd opens it and serves a session.
	cmd, stderr = startUmdd(t, "--socket", sock, "--mode", "0600", bdf)
	c2 := dialUmdd(t, sock, stderr)
	defer c2.Close()
	sess, err := c2.OpenSession(bdf, broker.SessionOptions{Queues: 1, PoolBytes: 2 << 20})
	if err != nil {
		t.Fatalf("a session through the new umdd: %v\n%s", err, stderr.String())
	}
	if err := sess.Read(0, sess.Layout.Namespaces[0].NSID, 0, 1, 0); err != nil {
		t.Errorf("I/O through the new umdd: %v", err)
	}
	stopUmdd(t, cmd, stderr)
}

// stopUmdd stops umdd as its service manager would, and checks it exits
// cleanly.
func stopUmdd(t *testing.T, cmd *exec.Cmd, stderr *logBuffer) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("umdd after SIGTERM: %v\n%s", err, stderr.String())
	}
}

// twoGroups returns two functions bound to vfio-pci in different IOMMU
// groups (umdd opens each in a container of its own).
func twoGroups(t *testing.T) (string, string) {
	t.Helper()
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	for _, b := range bdfs[1:] {
		if guest.IOMMUGroup(t, b) != guest.IOMMUGroup(t, bdfs[0]) {
			return bdfs[0], b
		}
	}
	t.Skipf("no two of %v are in different IOMMU groups: the topology has no second device to keep serving (cards and numa have one)", bdfs)
	return "", ""
}
