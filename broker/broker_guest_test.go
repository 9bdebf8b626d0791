//go:build guest

package broker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
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
	"github.com/umdkit/umd/sriov"
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
	// Allowed is what the device list said of the first device.
	Allowed bool `json:"allowed"`
	// A leased VF.
	VF    string `json:"vf,omitempty"`
	Group int    `json:"group,omitempty"`
	NSID  uint32 `json:"nsid,omitempty"`
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
	if mode == "exclusive" {
		seed, _ := strconv.Atoi(os.Getenv(seedEnv))
		return exclusiveChild(os.Getenv(deviceEnv), byte(seed), say)
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
	if mode == "vf" {
		return vfChild(c, dev, say)
	}
	queues, _ := strconv.Atoi(os.Getenv(queuesEnv))
	seed, _ := strconv.Atoi(os.Getenv(seedEnv))
	lba, _ := strconv.ParseUint(os.Getenv(lbaEnv), 10, 64)
	sessMode := ModeMediated
	if mode == "trusted" {
		sessMode = ModeTrusted
	}
	s, err := c.OpenSession(dev, SessionOptions{Queues: queues, Depth: 32, PoolBytes: 4 << 20, Mode: sessMode})
	if err != nil {
		say("err %v", err)
		return 1
	}
	mem := s.Pool.Bytes()
	var pat, back nvmelike.Buffer // trusted: buffers from the session's allocator
	if sessMode == ModeTrusted {
		if pat, err = s.Alloc(patternLen); err == nil {
			back, err = s.Alloc(patternLen)
		}
		if err != nil {
			say("err %v", err)
			return 1
		}
		mem = pat.Bytes
	}
	for i := range patternLen {
		mem[i] = pattern(byte(seed), i)
	}
	devs, err := c.Devices()
	if err != nil || len(devs) == 0 {
		say("err list %+v %v", devs, err)
		return 1
	}
	info := childInfo{Allowed: devs[0].Allowed, PID: os.Getpid(), IOVA: s.Layout.PoolIOVA, Pool: s.Pool.Size(), Eventfds: len(s.Interrupts), LBASize: s.Layout.Namespaces[0].LBASize}
	for _, q := range s.Layout.Queues {
		info.Queues = append(info.Queues, q.ID)
	}
	b, _ := json.Marshal(info)
	say("info %s", b)
	nsid := s.Layout.Namespaces[0].NSID
	blocks := 8
	n := blocks * info.LBASize
	trustedRoundTrip := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i, q := range s.QueuePairs() {
			clear(back.Bytes[:n])
			w := nvmelike.WriteCommand(nsid, lba, uint32(blocks), pat.Slice(0, n))
			if _, err := q.Exec(ctx, &w); err != nil {
				return fmt.Errorf("queue %d: %w", i, err)
			}
			r := nvmelike.ReadCommand(nsid, lba, uint32(blocks), back.Slice(0, n))
			if _, err := q.Exec(ctx, &r); err != nil {
				return fmt.Errorf("queue %d: %w", i, err)
			}
			if !bytes.Equal(back.Bytes[:n], pat.Bytes[:n]) {
				return fmt.Errorf("queue %d: read back differs", i)
			}
			if k, err := q.Interrupt().Wait(ctx); k == 0 || err != nil {
				return fmt.Errorf("queue %d: its eventfd was not signalled: %v", i, err)
			}
		}
		return nil
	}
	roundTrip := func() error {
		if sessMode == ModeTrusted {
			return trustedRoundTrip()
		}
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
		case "many":
			var err error
			for range 100 {
				if err = roundTrip(); err != nil {
					break
				}
			}
			if err != nil {
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
	s, devs, bdfs := guestServerN(t, 1, mode, access)
	return s, devs[0], bdfs[0]
}

// guestServerN serves the first n vfio-bound devices.
func guestServerN(t *testing.T, n int, mode os.FileMode, access Access) (*Server, []*umd.Device, []string) {
	t.Helper()
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	if len(bdfs) < n {
		t.Skipf("the topology has %d vfio-pci functions, the test needs %d", len(bdfs), n)
	}
	bdfs = bdfs[:n]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var devs []*umd.Device
	for _, bdf := range bdfs {
		dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 8 << 20})
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			t.Fatal(err)
		}
		devs = append(devs, dev)
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
	for i, dev := range devs {
		if err := s.AddDevice(ctx, dev, access); err != nil {
			for _, d := range devs[i:] {
				d.Close()
			}
			s.Close()
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // after the server has closed
	serveInTest(t, s)
	return s, devs, bdfs
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

// TestGuestKillDuringIO kills a client in the middle of its I/O, 50
// times (trusted and mediated clients in turn), while two others (one of
// each) keep working: after each kill the broker's clients, open
// descriptors, the device's live IOVA mappings, MSI-X vectors, free queue
// pairs and the free hugepages return to what they were, and the others
// see no error and no corruption.
func TestGuestKillDuringIO(t *testing.T) {
	guest.Require(t)
	s, dev, bdf := guestServer(t, 0o660, Access{Trusted: true})
	steady := startChild(t, "session", s.cfg.Socket, bdf, 0x77, 512, 2, nil)
	steady.info(t)
	steadyT := startChild(t, "trusted", s.cfg.Socket, bdf, 0x78, 640, 2, nil)
	steadyT.info(t)
	waitFor(t, "the steady clients registered", func() bool { return len(s.Status()) == 2 })
	live, vectors, free, fds := len(dev.Space().Ledger().Live()), dev.VectorsInUse(), freeHugepages(t), steadyFds(t)
	freeQueues := s.Devices(0, 0)[0].FreeQueues
	ctrlQueues := dev.Controller().QueuesInUse() // the controller's own count
	for round := range 50 {
		mode := "session"
		if round%2 == 1 {
			mode = "trusted"
		}
		c := startChild(t, mode, s.cfg.Socket, bdf, round, 768, 2, nil)
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
		for len(s.Status()) != 2 || len(dev.Space().Ledger().Live()) != live || dev.VectorsInUse() != vectors || freeHugepages(t) != free || brokerFds(t) != fds || s.Devices(0, 0)[0].FreeQueues != freeQueues || dev.Controller().QueuesInUse() != ctrlQueues {
			if time.Since(start) > time.Second {
				t.Fatalf("round %d (%s), 1 s after kill -9: %d clients, %d live mappings (want %d), %d vectors (want %d), %d free hugepages (want %d), %d open fds (want %d), %d free queue pairs (want %d), %d controller queues (want %d)",
					round, mode, len(s.Status()), len(dev.Space().Ledger().Live()), live, dev.VectorsInUse(), vectors, freeHugepages(t), free, brokerFds(t), fds, s.Devices(0, 0)[0].FreeQueues, freeQueues, dev.Controller().QueuesInUse(), ctrlQueues)
			}
			time.Sleep(5 * time.Millisecond)
		}
		steady.io(t)
		steadyT.io(t)
	}
}

// steadyFds is brokerFds once the descriptors the broker duplicated to
// send with its open responses are closed: a client registers (and may
// print its info) a moment before the broker closes them, so this takes
// the least of readings over 200 ms.
func steadyFds(t *testing.T) int {
	t.Helper()
	n := brokerFds(t)
	for range 10 {
		time.Sleep(20 * time.Millisecond)
		n = min(n, brokerFds(t))
	}
	return n
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
		if strings.HasPrefix(link, "socket:") || link == "anon_inode:[eventfd]" || strings.HasPrefix(link, "/memfd:") || strings.HasPrefix(link, "anon_inode:[vfio") {
			n++
		}
	}
	return n
}

// TestGuestMediatedCost measures what a command costs through the broker
// (a socket round trip and the broker's Exec) next to the same read on a
// local queue pair of the same device. It asserts only that every command
// succeeds (the data paths are checked by the other tests); the figures
// are logged, not asserted.
func TestGuestMediatedCost(t *testing.T) {
	guest.Require(t)
	s, dev, bdf := guestServer(t, 0o660, Access{})
	c := dial(t, s.cfg.Socket)
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

// TestGuestFourClients runs 4 client processes with 2 queue pairs each at
// once — trusted and mediated on one device, two trusted on another — each
// doing 100 verified write/read round trips on every queue pair; then the
// device holds what each wrote.
func TestGuestFourClients(t *testing.T) {
	guest.Require(t)
	s, devs, bdfs := guestServerN(t, 2, 0o660, Access{Trusted: true})
	type spec struct {
		mode string
		dev  int
		seed int
		lba  int
	}
	specs := []spec{{"trusted", 0, 0x31, 1024}, {"session", 0, 0x32, 1536}, {"trusted", 1, 0x33, 1024}, {"trusted", 1, 0x34, 2048}}
	var kids []*child
	var infos []childInfo
	for _, sp := range specs {
		c := startChild(t, sp.mode, s.cfg.Socket, bdfs[sp.dev], sp.seed, sp.lba, 2, nil)
		kids = append(kids, c)
		infos = append(infos, c.info(t))
	}
	st := s.Status()
	modes := map[string]int{}
	for _, c := range st {
		modes[c.Mode]++
		if len(c.Queues) != 2 {
			t.Fatalf("client %d holds %d queue pairs", c.ID, len(c.Queues))
		}
	}
	if modes[ModeTrusted] != 3 || modes[ModeMediated] != 1 {
		t.Fatalf("status modes %v", modes)
	}
	start := time.Now()
	for _, c := range kids {
		if _, err := io.WriteString(c.stdin, "many\n"); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range kids {
		if l := c.line(t); l != "ok" {
			t.Fatalf("client %d (%s): %s", i, specs[i].mode, l)
		}
	}
	t.Logf("4 clients x 2 queue pairs x 100 verified round trips of 8 blocks, at once: %v", time.Since(start))
	for i, sp := range specs {
		n := 8 * infos[i].LBASize
		data := readDevice(t, devs[sp.dev], uint64(sp.lba), n, infos[i].LBASize)
		for j := range data {
			if data[j] != pattern(byte(sp.seed), j) {
				t.Fatalf("client %d's blocks on %s hold something else at byte %d", i, bdfs[sp.dev], j)
			}
		}
	}
}

// TestGuestMediatedCommandChecks sends commands a client encoded itself to
// a real device: valid ones (PRP1 only, PRP1+PRP2, a PRP list) move the
// right data; ones that point outside the client's window or break the PRP
// rules are refused, and the device never sees them (the broker's command
// count does not move).
func TestGuestMediatedCommandChecks(t *testing.T) {
	guest.Require(t)
	s, dev, bdf := guestServer(t, 0o660, Access{})
	c := dial(t, s.cfg.Socket)
	sess, err := c.OpenSession(bdf, SessionOptions{Queues: 1, Depth: 16, PoolBytes: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	l := sess.Layout
	ns := l.Namespaces[0]
	ps := uint64(l.PageSize)
	base, end := l.PoolIOVA, l.PoolIOVA+uint64(l.PoolBytes)
	mem := sess.Pool.Bytes()
	const n = 5 * 4096 // five pages' worth from an offset: a PRP list
	for i := range n {
		mem[0x200+i] = pattern(0x6c, i)
	}
	list := mem[0x10000:]
	first := ps - 0x200%ps
	entries := (n - first + ps - 1) / ps
	for i := range entries {
		binary.LittleEndian.PutUint64(list[i*8:], base+ps*(i+1))
	}
	blocks := n / ns.LBASize
	enc := func(op uint8, lba uint64, nb int, prp1, prp2 uint64) CommandRequest {
		return CommandRequest{Opcode: op, NSID: ns.NSID, CDW: [6]uint32{uint32(lba), uint32(lba >> 32), uint32(nb - 1)}, PRP1: prp1, PRP2: prp2}
	}
	if _, _, err := sess.Exec(enc(nvmelike.CmdWrite, 4096, blocks, base+0x200, base+0x10000)); err != nil {
		t.Fatalf("a write through a PRP list: %v", err)
	}
	data := readDevice(t, dev, 4096, n, ns.LBASize)
	for i := range data {
		if data[i] != pattern(0x6c, i) {
			t.Fatalf("the device holds something else at byte %d of a PRP-list write", i)
		}
	}
	one := 4096 / ns.LBASize
	if _, _, err := sess.Exec(enc(nvmelike.CmdRead, 4096, one, base+0x40000, 0)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sess.Exec(enc(nvmelike.CmdRead, 4096, 2*one, base+0x50000, base+0x51000)); err != nil {
		t.Fatal(err)
	}
	for i := range 4096 {
		if mem[0x40000+i] != pattern(0x6c, i) || mem[0x50000+i] != pattern(0x6c, i) {
			t.Fatalf("reads with PRP1 and PRP1+PRP2 differ at byte %d", i)
		}
	}
	before := s.Status()[0].Commands
	binary.LittleEndian.PutUint64(mem[0x20000:], base+ps)
	binary.LittleEndian.PutUint64(mem[0x20008:], dev.Space().Ranges()[0].Start) // someone else's memory, perhaps
	for name, r := range map[string]CommandRequest{
		"PRP1 outside":      enc(nvmelike.CmdRead, 0, one, end, 0),
		"PRP2 outside":      enc(nvmelike.CmdRead, 0, 2*one, base, end+ps),
		"list entry out":    enc(nvmelike.CmdRead, 0, 3*one, base, base+0x20000),
		"list pointer out":  enc(nvmelike.CmdRead, 0, 3*one, base, base-ps),
		"vendor opcode":     {Opcode: 0x99, NSID: ns.NSID, PRP1: base},
		"no such namespace": {Opcode: nvmelike.CmdRead, NSID: 77, PRP1: base},
	} {
		if _, _, err := sess.Exec(r); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v, want ErrBadRequest", name, err)
		}
	}
	if after := s.Status()[0].Commands; after != before {
		t.Fatalf("%d refused commands reached the device", after-before)
	}
}

// TestGuestTrustedCostAndRestart compares a trusted client's queue pair
// with a local one on the same device (same type, same path: the figures
// are logged), then restarts the broker under the client: the client's
// Done channel closes, its requests fail with ErrDisconnected, and once it
// has closed, a new broker opens the device and serves a new session.
func TestGuestTrustedCostAndRestart(t *testing.T) {
	guest.Require(t)
	s, dev, bdf := guestServer(t, 0o660, Access{Trusted: true})
	c := dial(t, s.cfg.Socket)
	sess, err := c.OpenSession(bdf, SessionOptions{Queues: 1, Depth: 32, PoolBytes: 2 << 20, Mode: ModeTrusted})
	if err != nil {
		t.Fatal(err)
	}
	ns := sess.Layout.Namespaces[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	local, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 32, Interrupt: true})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	localPolled, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer localPolled.Close()
	cp := dial(t, s.cfg.Socket)
	sessPolled, err := cp.OpenSession(bdf, SessionOptions{Queues: 1, Depth: 32, PoolBytes: 2 << 20, Mode: ModeTrusted, Polled: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(sessPolled.Interrupts) != 0 || sessPolled.Layout.Queues[0].Vector != 0 || sessPolled.QueuePairs()[0].Interrupt() != nil {
		t.Fatalf("a polled session has interrupts: %d eventfds, vector %d", len(sessPolled.Interrupts), sessPolled.Layout.Queues[0].Vector)
	}
	pbuf, err := sessPolled.Alloc(ns.LBASize)
	if err != nil {
		t.Fatal(err)
	}
	lbuf, err := dev.Alloc(ns.LBASize)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(lbuf)
	tbuf, err := sess.Alloc(ns.LBASize)
	if err != nil {
		t.Fatal(err)
	}
	remote := sess.QueuePairs()[0]
	measure := func(q *umd.QueuePair, buf nvmelike.Buffer) time.Duration {
		const n = 2000
		start := time.Now()
		for i := range n {
			cmd := nvmelike.ReadCommand(ns.NSID, uint64(i%256), 1, buf)
			if _, err := q.Exec(ctx, &cmd); err != nil {
				t.Fatal(err)
			}
		}
		return time.Since(start) / n
	}
	var li, ri, lp, rp []time.Duration
	for range 3 {
		li, ri = append(li, measure(local, lbuf)), append(ri, measure(remote, tbuf))
		lp, rp = append(lp, measure(localPolled, lbuf)), append(rp, measure(sessPolled.QueuePairs()[0], pbuf))
	}
	t.Logf("one %d-byte read at queue depth 1, 2000 times, 3 rounds (TCG guest): with an MSI-X interrupt per completion: local %v, trusted client %v; polled: local %v, trusted client %v",
		ns.LBASize, li, ri, lp, rp)
	cp.Close()
	if st := remote.Stats(); st.Submitted < 6000 {
		t.Fatalf("the trusted queue pair counted %d submissions", st.Submitted)
	}
	// The layout carries SGLS: the client's queue pair can use SGLs
	// (QEMU's nvme has them) for a buffer at an odd offset.
	if sess.Layout.SGLS == 0 {
		t.Fatal("the layout says the controller has no SGLs")
	}
	if err := remote.SetDataPointer(nvmelike.DataPointerSGL); err != nil {
		t.Fatal(err)
	}
	odd, err := sess.Alloc(2 * ns.LBASize)
	if err != nil {
		t.Fatal(err)
	}
	cmd := nvmelike.ReadCommand(ns.NSID, 7, 1, odd.Slice(3, ns.LBASize))
	if _, err := remote.Exec(ctx, &cmd); err != nil {
		t.Fatalf("an SGL read at an odd offset on the trusted queue pair: %v", err)
	}
	cmd = nvmelike.ReadCommand(ns.NSID, 7, 1, lbuf)
	if _, err := local.Exec(ctx, &cmd); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(odd.Bytes[3:3+ns.LBASize], lbuf.Bytes) {
		t.Fatal("the SGL read differs from the local PRP read")
	}
	local.Close()

	// Restart.
	s.Close()
	select {
	case <-c.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("the client's Done did not close within 3 s of the broker closing")
	}
	if _, err := c.Status(); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("Status after the broker closed: %v, want ErrDisconnected", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("closing the client: %v", err)
	}
	s2, _, _ := guestServer(t, 0o660, Access{Trusted: true})
	c2 := dial(t, s2.cfg.Socket)
	sess2, err := c2.OpenSession(bdf, SessionOptions{Queues: 1, Depth: 32, PoolBytes: 2 << 20, Mode: ModeTrusted})
	if err != nil {
		t.Fatalf("a trusted session on the restarted broker: %v", err)
	}
	buf, err := sess2.Alloc(ns.LBASize)
	if err != nil {
		t.Fatal(err)
	}
	cmd = nvmelike.ReadCommand(ns.NSID, 0, 1, buf)
	if _, err := sess2.QueuePairs()[0].Exec(ctx, &cmd); err != nil {
		t.Fatalf("I/O on the restarted broker: %v", err)
	}
}

// TestGuestSupplementaryGroup: a process whose uid and primary gid are
// not listed but one of whose supplementary groups is may open a session
// and do I/O.
func TestGuestSupplementaryGroup(t *testing.T) {
	guest.Require(t)
	s, _, bdf := guestServer(t, 0o666, Access{GIDs: []uint32{777}})
	c := startChild(t, "session", s.cfg.Socket, bdf, 0x4d, 128, 1, &syscall.Credential{Uid: 4242, Gid: 4242, Groups: []uint32{99, 777}})
	ci := c.info(t)
	if len(ci.Queues) != 1 || !ci.Allowed {
		t.Fatalf("child in group 777 (the device list must say it is allowed too): %+v", ci)
	}
	c.io(t)
	st := s.Status()
	if len(st) != 1 || st[0].UID != 4242 || st[0].GID != 4242 {
		t.Fatalf("status %+v", st)
	}
}

// vfChild leases a VF of the PF dev, opens it in its own container and
// serves "io" lines with verified I/O on the VF's namespace.
func vfChild(c *Client, dev string, say func(string, ...any)) int {
	seed, _ := strconv.Atoi(os.Getenv(seedEnv))
	lease, err := c.LeaseVF(dev)
	if err != nil {
		say("err %v", err)
		return 1
	}
	ctx := context.Background()
	d, err := lease.Open(ctx, &umd.Options{PoolSize: 8 << 20})
	if err != nil {
		say("err %v", err)
		return 1
	}
	defer d.Close()
	nss := d.Controller().Namespaces()
	if len(nss) != 1 {
		say("err VF %s sees namespaces %v", lease.BDF, nss)
		return 1
	}
	q, err := d.CreateQueuePair(ctx, umd.QueueOptions{Depth: 16})
	if err != nil {
		say("err %v", err)
		return 1
	}
	defer q.Close()
	ns, err := d.Controller().IdentifyNamespace(ctx, nss[0])
	if err != nil {
		say("err %v", err)
		return 1
	}
	n := 8 * ns.LBASize
	w, err := d.Alloc(n)
	if err != nil {
		say("err %v", err)
		return 1
	}
	r, err := d.Alloc(n)
	if err != nil {
		say("err %v", err)
		return 1
	}
	b, _ := json.Marshal(childInfo{PID: os.Getpid(), VF: lease.BDF, Group: lease.IOMMUGroup, NSID: nss[0], LBASize: ns.LBASize})
	say("info %s", b)
	in := bufio.NewScanner(os.Stdin)
	for round := 0; in.Scan(); round++ {
		switch in.Text() {
		case "io":
			for i := range w.Bytes {
				w.Bytes[i] = pattern(byte(seed+round), i)
			}
			clear(r.Bytes)
			wc := nvmelike.WriteCommand(nss[0], 0, 8, w)
			rc := nvmelike.ReadCommand(nss[0], 0, 8, r)
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := q.Exec(tctx, &wc)
			if err == nil {
				_, err = q.Exec(tctx, &rc)
			}
			cancel()
			switch {
			case err != nil:
				say("err %v", err)
			case !bytes.Equal(r.Bytes, w.Bytes):
				say("err read back differs")
			default:
				say("ok")
			}
		case "exit":
			return 0
		}
	}
	return 0
}

// TestGuestVFLease (topology sriov): the broker enables two VFs of the
// PF it serves and leases them whole: two client processes each open
// theirs in a container of their own (a different IOMMU group from the
// PF's and from each other's) and do verified I/O on namespaces only they
// see; a third client finds none free; kill -9 of a holder gives its VF
// back within a second, recycled, and the next holder's I/O works.
func TestGuestVFLease(t *testing.T) {
	guest.Require(t)
	pfc := guest.SRIOVController(t)
	s, dev, bdf := guestServer(t, 0o660, Access{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leaseVFs(ctx, t, s, dev, func(pf *sriov.PF) error {
		for i, vf := range pf.VFs() {
			if err := pf.AttachNamespace(ctx, uint32(len(pfc.Namespaces)+1+i), vf); err != nil {
				return err
			}
		}
		return nil
	})
	if d := s.Devices(0, 0)[0]; d.VFs != 2 || d.FreeVFs != 2 {
		t.Fatalf("device %s lists %d VFs, %d free", d.BDF, d.VFs, d.FreeVFs)
	}
	pfGroup, err := vfioGroupOf(bdf)
	if err != nil {
		t.Fatal(err)
	}
	a := startChild(t, "vf", s.cfg.Socket, bdf, 0x10, 0, 0, nil)
	b := startChild(t, "vf", s.cfg.Socket, bdf, 0x20, 0, 0, nil)
	ai, bi := a.info(t), b.info(t)
	if ai.VF == bi.VF || ai.Group == bi.Group || ai.Group == pfGroup || bi.Group == pfGroup || ai.NSID == bi.NSID {
		t.Fatalf("leases %+v and %+v (PF group %d): not two VFs of their own", ai, bi, pfGroup)
	}
	a.io(t)
	b.io(t)
	c := dial(t, s.cfg.Socket)
	if _, err := c.LeaseVF(bdf); !errors.Is(err, ErrQuota) {
		t.Fatalf("a third lease of 2 VFs: %v, want ErrQuota", err)
	}
	c.Close()
	if st := s.Status(); !slices.ContainsFunc(st, func(c ClientStatus) bool { return c.VF == ai.VF }) {
		t.Fatalf("status %+v does not show VF %s", st, ai.VF)
	}
	start := time.Now()
	a.kill(t)
	a.cmd.Wait()
	waitFor(t, "the killed client's VF free again", func() bool { return s.Devices(0, 0)[0].FreeVFs == 1 })
	t.Logf("VF %s recycled and free %v after kill -9", ai.VF, time.Since(start))
	b.io(t)
	a2 := startChild(t, "vf", s.cfg.Socket, bdf, 0x30, 0, 0, nil)
	if a2i := a2.info(t); a2i.VF != ai.VF {
		t.Fatalf("the next client got %s, the free VF is %s", a2i.VF, ai.VF)
	}
	a2.io(t)
	io.WriteString(a2.stdin, "exit\n")
	io.WriteString(b.stdin, "exit\n")
	a2.cmd.Wait()
	b.cmd.Wait()
	waitFor(t, "both VFs free", func() bool { return s.Devices(0, 0)[0].FreeVFs == 2 })
}

func vfioGroupOf(bdf string) (int, error) {
	link, err := os.Readlink(filepath.Join("/sys/bus/pci/devices", bdf, "iommu_group"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(filepath.Base(link))
}

// leaseVFs enables two VFs of dev (one I/O queue and two vectors each),
// lets prepare set them up (if not nil), and has s lease them out; when
// something fails it disables them again and fails t.
func leaseVFs(ctx context.Context, t *testing.T, s *Server, dev *umd.Device, prepare func(*sriov.PF) error) *sriov.PF {
	t.Helper()
	pf, err := sriov.Enable(ctx, dev, sriov.Options{VFs: 2, IOQueues: 1, Vectors: 2})
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		err = prepare(pf)
	}
	if err == nil {
		err = s.AddVFs(pf, Access{})
	}
	if err != nil {
		pf.Disable(ctx)
		t.Fatal(err)
	}
	return pf
}

// TestGuestRetireVFs (topology sriov): the PF whose VFs the broker leases
// is unbound from vfio-pci while one client holds a VF and another a
// session on the PF. The broker's removal request names the PF; Retire
// hangs both clients up, disables the VFs and closes the PF, and the
// unbind completes; the PF is listed failed, with no VFs to lease.
func TestGuestRetireVFs(t *testing.T) {
	guest.Require(t)
	const guard = time.Minute // bounds a hang, measures nothing
	guest.SRIOVController(t)
	s, dev, bdf := guestServer(t, 0o660, Access{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leaseVFs(ctx, t, s, dev, nil)
	leaser := dial(t, s.cfg.Socket)
	lease, err := leaser.LeaseVF(bdf)
	if err != nil {
		t.Fatal(err)
	}
	user := dial(t, s.cfg.Socket)
	if _, err := user.OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 2 << 20}); err != nil {
		t.Fatal(err)
	}

	unbound := guest.Unbind(t, bdf)
	select {
	case got := <-s.RemovalRequests():
		if got != bdf {
			t.Fatalf("removal request for %s, unbound %s", got, bdf)
		}
	case <-time.After(guard):
		t.Fatalf("no removal request %v after unbinding %s", guard, bdf)
	}
	if err := s.Retire(bdf, "unbound by the test"); err != nil {
		t.Errorf("Retire: %v", err)
	}
	guest.WaitUnbound(t, unbound, guard, "the broker retired "+bdf)
	for _, c := range []*Client{leaser, user} {
		select {
		case <-c.Done():
		case <-time.After(guard):
			t.Fatal("a client of the retired PF is still connected")
		}
	}
	if _, err := os.Stat(filepath.Join("/sys/bus/pci/devices", lease.BDF)); !os.IsNotExist(err) {
		t.Errorf("VF %s still exists after the PF was retired: %v", lease.BDF, err)
	}
	d := s.Devices(0, 0)[0]
	if d.Failed != "unbound by the test" || d.VFs != 0 {
		t.Errorf("the retired PF listed as %+v", d)
	}
	if _, err := dial(t, s.cfg.Socket).LeaseVF(bdf); !errors.Is(err, ErrState) {
		t.Errorf("leasing a VF of the retired PF: %v, want ErrState", err)
	}
}
