//go:build guest

package broker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu/guest"
)

// The test binary re-executes itself as a broker client: with childEnv set
// it runs childMain instead of the tests.
const (
	childEnv   = "UMD_BROKER_CHILD"
	socketEnv  = "UMD_BROKER_SOCKET"
	deviceEnv  = "UMD_BROKER_DEVICE"
	seedEnv    = "UMD_BROKER_SEED"
	lbaEnv     = "UMD_BROKER_LBA"
	queuesEnv  = "UMD_BROKER_QUEUES"
	patternLen = 64 << 10 // the pattern the child writes at pool offset 0
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(childMain(mode))
	}
	os.Exit(m.Run())
}

// childInfo is what a child reports once its session is open.
type childInfo struct {
	PID      int      `json:"pid"`
	IOVA     uint64   `json:"iova"`
	Pool     int      `json:"pool"`
	Queues   []uint16 `json:"queues"`
	Eventfds int      `json:"eventfds"`
	LBASize  int      `json:"lba_size"`
}

func pattern(seed byte, i int) byte { return seed ^ byte(i*7) ^ byte(i>>9) }

// childMain is a broker client: it opens a session, writes a pattern into
// its pool, reports, then serves "io" (write the pattern to the device and
// read it back through each queue pair) and "exit" lines from stdin.
func childMain(mode string) int {
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	c, err := Dial(os.Getenv(socketEnv))
	if err != nil {
		say("err %v", err)
		return 1
	}
	defer c.Close()
	dev := os.Getenv(deviceEnv)
	if mode == "refused" {
		devs, err := c.Devices()
		if err != nil || len(devs) == 0 || devs[0].Allowed {
			say("err list %+v %v", devs, err)
			return 1
		}
		_, err = c.OpenSession(dev, SessionOptions{Queues: 1, PoolBytes: 2 << 20})
		if errors.Is(err, ErrPermission) {
			say("refused %v", err)
			return 0
		}
		say("err open: %v", err)
		return 1
	}
	queues, _ := strconv.Atoi(os.Getenv(queuesEnv))
	seed, _ := strconv.Atoi(os.Getenv(seedEnv))
	lba, _ := strconv.ParseUint(os.Getenv(lbaEnv), 10, 64)
	s, err := c.OpenSession(dev, SessionOptions{Queues: queues, Depth: 32, PoolBytes: 4 << 20})
	if err != nil {
		say("err %v", err)
		return 1
	}
	mem := s.Pool.Bytes()
	for i := range patternLen {
		mem[i] = pattern(byte(seed), i)
	}
	info := childInfo{PID: os.Getpid(), IOVA: s.Layout.PoolIOVA, Pool: s.Pool.Size(), Eventfds: len(s.Interrupts), LBASize: s.Layout.Namespaces[0].LBASize}
	for _, q := range s.Layout.Queues {
		info.Queues = append(info.Queues, q.ID)
	}
	b, _ := json.Marshal(info)
	say("info %s", b)
	nsid := s.Layout.Namespaces[0].NSID
	blocks := 8
	n := blocks * info.LBASize
	roundTrip := func() error {
		for q := range s.Layout.Queues {
			clear(mem[1<<20 : 1<<20+n])
			if err := s.Write(q, nsid, lba, blocks, 0); err != nil {
				return err
			}
			if err := s.Read(q, nsid, lba, blocks, 1<<20); err != nil {
				return err
			}
			if !bytes.Equal(mem[1<<20:1<<20+n], mem[:n]) {
				return fmt.Errorf("queue %d: read back differs", q)
			}
			// MSI-X delivery is asynchronous to the completion entry
			// the broker polled: the interrupt may land after the reply.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			k, err := s.Interrupts[q].Wait(ctx)
			cancel()
			if k == 0 || err != nil {
				return fmt.Errorf("queue %d: its eventfd was not signalled within 2 s: %v", q, err)
			}
		}
		return nil
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "loop":
			// I/O without end, until killed.
			for i := 0; ; i++ {
				if err := roundTrip(); err != nil {
					say("err %v", err)
					return 1
				}
				if i == 0 {
					say("looping")
				}
			}
		case "io":
			if err := roundTrip(); err != nil {
				say("err %v", err)
			} else {
				say("ok")
			}
		case "exit":
			return 0
		}
	}
	return 0
}

// child is a client process started by the test.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startChild(t *testing.T, mode, socket, bdf string, seed, lba, queues int, cred *syscall.Credential) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+mode, socketEnv+"="+socket, deviceEnv+"="+bdf,
		seedEnv+"="+strconv.Itoa(seed), lbaEnv+"="+strconv.Itoa(lba), queuesEnv+"="+strconv.Itoa(queues))
	cmd.Stderr = os.Stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	})
	return c
}

func (c *child) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("child %d ended without a word", c.cmd.Process.Pid)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("child %d said nothing for 30 s", c.cmd.Process.Pid)
	}
	return ""
}

func (c *child) info(t *testing.T) childInfo {
	t.Helper()
	l := c.line(t)
	js, ok := strings.CutPrefix(l, "info ")
	if !ok {
		t.Fatalf("child: %s", l)
	}
	var ci childInfo
	if err := json.Unmarshal([]byte(js), &ci); err != nil {
		t.Fatal(err)
	}
	return ci
}

func (c *child) io(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "io\n"); err != nil {
		t.Fatal(err)
	}
	if l := c.line(t); l != "ok" {
		t.Fatalf("child %d: %s", c.cmd.Process.Pid, l)
	}
}

func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

func freeHugepages(t *testing.T) int {
	t.Helper()
	raw, err := os.ReadFile("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// guestServer opens the first vfio-bound device and serves it on a socket.
func guestServer(t *testing.T, mode os.FileMode, access Access) (*Server, *umd.Device, string) {
	t.Helper()
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "umdd")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	s, err := NewServer(Config{Socket: filepath.Join(dir, "umdd.sock"), Mode: mode, MaxQueuePairs: 4, MaxPoolBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddDevice(ctx, dev, access); err != nil {
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
		if err := s.Close(); err != nil {
			t.Errorf("closing the broker: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		os.RemoveAll(dir)
	})
	return s, dev, bdf
}

// readDevice reads blocks at lba of namespace 1 through a queue pair of the
// broker's own.
func readDevice(t *testing.T, dev *umd.Device, lba uint64, n, lbaSize int) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	buf, err := dev.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(buf)
	cmd := nvmelike.ReadCommand(1, lba, uint32(n/lbaSize), buf)
	if _, err := q.Exec(ctx, &cmd); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes)
}

// TestGuestSessionAndKill: a child process opens a session, its pool is
// the broker's (the pattern it wrote shows in the broker's view), its I/O
// reaches the device; kill -9 of the child gives everything back within a
// second.
func TestGuestSessionAndKill(t *testing.T) {
	guest.Require(t)
	free := freeHugepages(t)
	s, dev, bdf := guestServer(t, 0o660, Access{})
	vectors := dev.VectorsInUse()
	afterOpen := freeHugepages(t)

	c := startChild(t, "session", s.cfg.Socket, bdf, 0x5a, 64, 2, nil)
	ci := c.info(t)
	if ci.Eventfds != 2 || len(ci.Queues) != 2 || ci.Pool != 4<<20 || ci.IOVA == 0 {
		t.Fatalf("child's session: %+v", ci)
	}
	st := s.Status()
	if len(st) != 1 || int(st[0].PID) != c.cmd.Process.Pid || st[0].PoolIOVA != ci.IOVA || len(st[0].Queues) != 2 {
		t.Fatalf("Status %+v for child %d (%+v)", st, c.cmd.Process.Pid, ci)
	}
	s.mu.Lock()
	view := s.conns[st[0].ID].sess.pool.Bytes()
	s.mu.Unlock()
	for i := range patternLen {
		if view[i] != pattern(0x5a, i) {
			t.Fatalf("the broker's view of the client's pool differs at byte %d", i)
		}
	}
	rec, ok := dev.Space().Lookup(ci.IOVA + 4096)
	if !ok || !rec.Live() || rec.Owner.Name != "client "+strconv.Itoa(c.cmd.Process.Pid) || rec.Owner.ID != st[0].ID {
		t.Fatalf("ledger at the client's IOVA: %+v, %v", rec, ok)
	}
	if got := dev.VectorsInUse(); got != vectors+2 {
		t.Fatalf("vectors in use: %d, want %d", got, vectors+2)
	}
	if got := freeHugepages(t); got != afterOpen-2 {
		t.Errorf("free hugepages %d with a 4 MiB client pool, %d before", got, afterOpen)
	}
	c.io(t)
	n := 8 * ci.LBASize
	data := readDevice(t, dev, 64, n, ci.LBASize)
	for i := range data {
		if data[i] != pattern(0x5a, i) {
			t.Fatalf("the device holds something else than the client wrote, at byte %d", i)
		}
	}

	start := time.Now()
	c.kill(t)
	for {
		rec, known := dev.Space().Lookup(ci.IOVA)
		if len(s.Status()) == 0 && known && !rec.Live() && dev.VectorsInUse() == vectors && freeHugepages(t) == afterOpen {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("1 s after kill -9: status %+v, ledger %+v, vectors %d (want %d), free hugepages %d (want %d)",
				s.Status(), rec, dev.VectorsInUse(), vectors, freeHugepages(t), afterOpen)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("released %v after kill -9", time.Since(start))
	if d := s.Devices(0, 0); d[0].FreeQueues != d[0].MaxQueues {
		t.Errorf("after the kill %d of %d queues free", d[0].FreeQueues, d[0].MaxQueues)
	}
	// The controller has the queues free again: a new client gets them.
	c2 := startChild(t, "session", s.cfg.Socket, bdf, 0x33, 64, 2, nil)
	ci2 := c2.info(t)
	if !slices.Equal(ci2.Queues, ci.Queues) {
		t.Errorf("a new client got queues %v, the killed one had %v", ci2.Queues, ci.Queues)
	}
	c2.io(t)
	io.WriteString(c2.stdin, "exit\n")
	c2.cmd.Wait()
	waitFor(t, "the second client released", func() bool { return len(s.Status()) == 0 })
	s.Close()
	if got := freeHugepages(t); got != free {
		t.Errorf("free hugepages %d after closing the broker, %d before", got, free)
	}
}

// TestGuestTwoClients: two clients on one device get distinct pools, IOVA
// windows and queues; killing one leaves the other working.
func TestGuestTwoClients(t *testing.T) {
	guest.Require(t)
	s, dev, bdf := guestServer(t, 0o660, Access{})
	a := startChild(t, "session", s.cfg.Socket, bdf, 0x11, 0, 2, nil)
	b := startChild(t, "session", s.cfg.Socket, bdf, 0x22, 256, 2, nil)
	ai, bi := a.info(t), b.info(t)
	if ai.IOVA+uint64(ai.Pool) > bi.IOVA && bi.IOVA+uint64(bi.Pool) > ai.IOVA {
		t.Fatalf("IOVA windows overlap: 0x%x+%d and 0x%x+%d", ai.IOVA, ai.Pool, bi.IOVA, bi.Pool)
	}
	for _, q := range ai.Queues {
		if slices.Contains(bi.Queues, q) {
			t.Fatalf("both clients hold queue %d", q)
		}
	}
	s.mu.Lock()
	var pools [][]byte
	for _, c := range s.conns {
		pools = append(pools, c.sess.pool.Bytes())
	}
	s.mu.Unlock()
	if len(pools) != 2 || &pools[0][0] == &pools[1][0] {
		t.Fatal("the two clients share a pool")
	}
	a.io(t)
	b.io(t)
	a.kill(t)
	waitFor(t, "one client left", func() bool { return len(s.Status()) == 1 })
	for range 3 {
		b.io(t)
	}
	if rec, ok := dev.Space().Lookup(bi.IOVA); !ok || !rec.Live() {
		t.Fatalf("the surviving client's window: %+v, %v", rec, ok)
	}
	if rec, ok := dev.Space().Lookup(ai.IOVA); !ok || rec.Live() {
		t.Fatalf("the killed client's window: %+v, %v", rec, ok)
	}
}

// TestGuestRefusedUID: a process whose uid is not on the allow-list can
// connect (the socket is 0666 here) but not open a session.
func TestGuestRefusedUID(t *testing.T) {
	guest.Require(t)
	s, _, bdf := guestServer(t, 0o666, Access{UIDs: []uint32{1000}})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(exe); err != nil || fi.Mode().Perm()&0o005 != 0o005 {
		t.Fatalf("the test binary %s is not world-executable (%v): the child cannot run as another user", exe, err)
	}
	c := startChild(t, "refused", s.cfg.Socket, bdf, 0, 0, 1, &syscall.Credential{Uid: 4242, Gid: 4242})
	if l := c.line(t); !strings.HasPrefix(l, "refused ") {
		t.Fatalf("child as uid 4242: %s", l)
	}
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	waitFor(t, "the refused client is gone from Status", func() bool { return len(s.Status()) == 0 })
}

// TestGuestKillDuringIO kills a client in the middle of its I/O, 20
// times, while another client keeps working: after each kill the broker's
// clients, open descriptors, the device's live IOVA mappings, MSI-X
// vectors and the free hugepages return to what they were, and the other client sees no error.
func TestGuestKillDuringIO(t *testing.T) {
	guest.Require(t)
	s, dev, bdf := guestServer(t, 0o660, Access{})
	steady := startChild(t, "session", s.cfg.Socket, bdf, 0x77, 512, 2, nil)
	steady.info(t)
	waitFor(t, "the steady client registered", func() bool { return len(s.Status()) == 1 })
	live, vectors, free, fds := len(dev.Space().Ledger().Live()), dev.VectorsInUse(), freeHugepages(t), brokerFds(t)
	for round := range 20 {
		c := startChild(t, "session", s.cfg.Socket, bdf, round, 768, 2, nil)
		c.info(t)
		if _, err := io.WriteString(c.stdin, "loop\n"); err != nil {
			t.Fatal(err)
		}
		if l := c.line(t); l != "looping" {
			t.Fatalf("round %d: child: %s", round, l)
		}
		time.Sleep(time.Duration(round) * 7 * time.Millisecond)
		start := time.Now()
		c.kill(t)
		c.cmd.Wait()
		for len(s.Status()) != 1 || len(dev.Space().Ledger().Live()) != live || dev.VectorsInUse() != vectors || freeHugepages(t) != free || brokerFds(t) != fds {
			if time.Since(start) > time.Second {
				t.Fatalf("round %d, 1 s after kill -9: %d clients, %d live mappings (want %d), %d vectors (want %d), %d free hugepages (want %d), %d open fds (want %d)",
					round, len(s.Status()), len(dev.Space().Ledger().Live()), live, dev.VectorsInUse(), vectors, freeHugepages(t), free, brokerFds(t), fds)
			}
			time.Sleep(5 * time.Millisecond)
		}
		steady.io(t)
	}
}

// brokerFds counts this process's descriptors of the kinds a session
// holds: sockets, eventfds and memfds (pipes and pidfds of the test's own
// child processes come and go on their own).
func brokerFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		if strings.HasPrefix(link, "socket:") || link == "anon_inode:[eventfd]" || strings.HasPrefix(link, "/memfd:") {
			n++
		}
	}
	return n
}

// TestGuestMediatedCost measures what a command costs through the broker
// (a socket round trip and the broker's Exec) next to the same read on a
// local queue pair of the same device. It asserts correctness only; the
// figures are logged.
func TestGuestMediatedCost(t *testing.T) {
	guest.Require(t)
	s, dev, bdf := guestServer(t, 0o660, Access{})
	c, err := Dial(s.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.OpenSession(bdf, SessionOptions{Queues: 1, Depth: 32, PoolBytes: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ns := sess.Layout.Namespaces[0]
	const n = 500
	start := time.Now()
	for i := range n {
		if err := sess.Read(0, ns.NSID, uint64(i%64), 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	mediated := time.Since(start) / n
	start = time.Now()
	for range n {
		if _, err := c.Devices(); err != nil {
			t.Fatal(err)
		}
	}
	list := time.Since(start) / n
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	buf, err := dev.Alloc(ns.LBASize)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(buf)
	start = time.Now()
	for i := range n {
		cmd := nvmelike.ReadCommand(ns.NSID, uint64(i%64), 1, buf)
		if _, err := q.Exec(ctx, &cmd); err != nil {
			t.Fatal(err)
		}
	}
	local := time.Since(start) / n
	t.Logf("one %d-byte read, queue depth 1, %d times: through the broker %v, on a local queue pair %v; a list request (no device) %v (TCG guest)", ns.LBASize, n, mediated, local, list)
}
