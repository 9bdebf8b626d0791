package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/hugepage"
)

func TestFrameRoundTrip(t *testing.T) {
	req := &Request{Op: OpOpen, Device: "0000:00:03.0", Queues: 2, Depth: 64, PoolBytes: 1 << 20}
	frame, err := encodeFrame(req, MaxFrame)
	if err != nil {
		t.Fatal(err)
	}
	if n := binary.BigEndian.Uint32(frame); int(n) != len(frame)-4 {
		t.Fatalf("length prefix %d for a %d-byte body", n, len(frame)-4)
	}
	var got Request
	if err := decodeFrame(frame, &got); err != nil {
		t.Fatal(err)
	}
	if got != *req {
		t.Fatalf("decoded %+v, sent %+v", got, *req)
	}
	body, err := readFrame(bytes.NewReader(frame))
	if err != nil || !bytes.Equal(body, frame[4:]) {
		t.Fatalf("readFrame: %q, %v", body, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := encodeFrame(&Request{Op: OpList}, MaxFrame)
	big := make([]byte, 4)
	binary.BigEndian.PutUint32(big, MaxFrame+1)
	for name, tc := range map[string]struct {
		frame []byte
		want  error
	}{
		"empty":     {nil, io.ErrUnexpectedEOF},
		"truncated": {good[:len(good)-1], io.ErrUnexpectedEOF},
		"too large": {big, ErrFrameTooLarge},
	} {
		var r Request
		if err := decodeFrame(tc.frame, &r); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	for _, body := range []string{`{"op":"list","extra":1}`, `{"op":"list"} {}`, `[1]`, `{"op":`, `{"queues":"x"}`} {
		var r Request
		if err := decodeBody([]byte(body), &r); err == nil {
			t.Errorf("decoding %s: no error", body)
		}
	}
	if _, err := readFrame(bytes.NewReader(big)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("readFrame of an oversized frame: %v", err)
	}
	if _, err := readFrame(bytes.NewReader(good[:6])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("readFrame of a truncated frame: %v", err)
	}
}

func TestValidate(t *testing.T) {
	ok := []Request{
		{Op: OpHello, Version: 1},
		{Op: OpList},
		{Op: OpStatus},
		{Op: OpOpen, Device: "x", Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpIO, IO: &IORequest{Opcode: "read", Blocks: 1}},
		{Op: OpIO, IO: &IORequest{Opcode: "flush"}},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 1, Depth: 2, PoolBytes: 1, Mode: ModeTrusted},
		{Op: OpReserve, Claim: "c", Device: "x", Mode: ModeExclusive},
		{Op: OpRestore, Device: "x"},
	}
	for _, r := range ok {
		if e := r.validate(); e != nil {
			t.Errorf("%+v: %v", r, e)
		}
	}
	bad := []Request{
		{},
		{Op: "reboot"},
		{Op: OpHello},
		{Op: OpOpen, Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpOpen, Device: strings.Repeat("x", 65), Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpOpen, Device: "x", Queues: 0, Depth: 2, PoolBytes: 1},
		{Op: OpOpen, Device: "x", Queues: 65, Depth: 2, PoolBytes: 1},
		{Op: OpOpen, Device: "x", Queues: 1, Depth: 1, PoolBytes: 1},
		{Op: OpOpen, Device: "x", Queues: 1, Depth: 4097, PoolBytes: 1},
		{Op: OpOpen, Device: "x", Queues: 1, Depth: 2, PoolBytes: 0},
		{Op: OpOpen, Device: "x", Queues: 1, Depth: 2, PoolBytes: -5},
		{Op: OpOpen, Device: "x", Queues: 1, Depth: 2, PoolBytes: 1, Mode: ModeExclusive},
		{Op: OpOpen, Device: "x", Queues: 1, Depth: 2, PoolBytes: 1, Claim: "c"},
		{Op: OpReserve, Claim: "c", Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 0, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 1, Depth: 1, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 1, Depth: 2, PoolBytes: 0},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 1, Depth: 2, PoolBytes: 1, Mode: "shared"},
		{Op: OpReserve, Claim: "c", Mode: ModeExclusive},
		{Op: OpReserve, Claim: "c", Device: "x", Mode: ModeExclusive, Queues: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 1, Depth: 2, PoolBytes: 1, Grant: "g"},
		{Op: OpIO},
		{Op: OpIO, IO: &IORequest{Opcode: "format"}},
		{Op: OpIO, IO: &IORequest{Opcode: "read", Blocks: 0}},
		{Op: OpIO, IO: &IORequest{Opcode: "write", Blocks: 70000}},
		{Op: OpIO, IO: &IORequest{Opcode: "read", Blocks: 1, Offset: -1}},
		{Op: OpIO, IO: &IORequest{Opcode: "read", Blocks: 1, Queue: -1}},
		{Op: OpRestore},
		{Op: OpRestore, Device: "x", Queues: 1},
	}
	for _, r := range bad {
		e := r.validate()
		if e == nil || !errors.Is(e, ErrBadRequest) {
			t.Errorf("%+v: %v, want a bad-request error", r, e)
		}
	}
}

func FuzzRequest(f *testing.F) {
	for _, r := range []Request{
		{Op: OpHello, Version: 1}, {Op: OpOpen, Device: "d", Queues: 1, Depth: 8, PoolBytes: 4096}, {Op: OpIO, IO: &IORequest{Opcode: "read", Blocks: 1}},
		{Op: OpReserve, Claim: "c", Device: "d", Queues: 1, Depth: 8, PoolBytes: 4096, Polled: true},
		{Op: OpRelease, Claim: "c"},
		{Op: OpOpen, Device: "d", Grant: strings.Repeat("5a", 16)},
	} {
		b, _ := encodeFrame(&r, MaxFrame)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var r Request
		if decodeFrame(frame, &r) == nil {
			_ = r.validate()
		}
	})
}

func TestAccess(t *testing.T) {
	a := Access{UIDs: []uint32{1000}, GIDs: []uint32{50}}
	for _, tc := range []struct {
		a        Access
		uid, gid uint32
		want     bool
	}{
		{a, 0, 0, true},
		{a, 1000, 1000, true},
		{a, 1001, 50, true},
		{a, 1001, 51, false},
		{Access{DenyRoot: true}, 0, 0, false},
		{Access{DenyRoot: true, UIDs: []uint32{0}}, 0, 0, true},
	} {
		if got := tc.a.allows(tc.uid, tc.gid); got != tc.want {
			t.Errorf("%+v allows(%d, %d) = %v", tc.a, tc.uid, tc.gid, got)
		}
	}
	// Supplementary groups count as the primary one does.
	if !a.allows(1001, 51, 7, 50) || a.allows(1001, 51, 7, 8) {
		t.Error("supplementary groups not taken into account")
	}
}

// TestPeerCred checks SO_PEERCRED over a socketpair: the peer is this
// process.
func TestPeerCred(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns []*net.UnixConn
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c.(*net.UnixConn))
	}
	cred, err := peerCred(conns[0])
	if err != nil {
		t.Fatal(err)
	}
	if int(cred.Pid) != os.Getpid() || int(cred.Uid) != os.Getuid() || int(cred.Gid) != os.Getgid() {
		t.Fatalf("peer pid %d uid %d gid %d; this process is %d, %d, %d", cred.Pid, cred.Uid, cred.Gid, os.Getpid(), os.Getuid(), os.Getgid())
	}
	groups, err := peerGroups(conns[0])
	if err != nil {
		t.Fatal(err)
	}
	mine, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != len(mine) {
		t.Fatalf("SO_PEERGROUPS %v, this process's groups %v", groups, mine)
	}
	for _, g := range mine {
		if !slices.Contains(groups, uint32(g)) {
			t.Fatalf("SO_PEERGROUPS %v lacks group %d of %v", groups, g, mine)
		}
	}
}

// startFake runs a server with fake devices on a socket in a temporary
// directory.
func startFake(t *testing.T, cfg Config, access Access, devs ...*fakeDevice) *Server {
	t.Helper()
	cfg.Socket = filepath.Join(t.TempDir(), "umdd.sock")
	if cfg.PoolPageSize == 0 {
		cfg.PoolPageSize = hugepage.Page4K
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if err := s.add(d, access); err != nil {
			t.Fatal(err)
		}
	}
	serveInTest(t, s)
	return s
}

// serveInTest is brokertest.Serve for this package's own tests (which
// brokertest, importing broker, cannot serve).
func serveInTest(t testing.TB, s *Server) {
	t.Helper()
	stop, err := s.Start()
	if err != nil {
		t.Fatalf("broker: %v", err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("broker: %v", err)
		}
	})
}

// dial connects to the broker at path, failing t if it cannot; the
// client is closed when t ends (Close is safe twice, so tests may also
// close it themselves).
func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func self() Access { return Access{UIDs: []uint32{uint32(os.Getuid())}} }

func fake(t *testing.T, bdf string, queues int) *fakeDevice {
	t.Helper()
	d, err := newFakeDevice(bdf, queues)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// waitFor polls cond for up to a second.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 1 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSessionLifetime opens a session on a fake device, checks what
// arrives, does mediated I/O through the shared pool, and checks that
// closing the connection gives everything back.
func TestSessionLifetime(t *testing.T) {
	dev := fake(t, "0000:00:03.0", 8)
	s := startFake(t, Config{MaxQueuePairs: 4, MaxPoolBytes: 1 << 20}, self(), dev)
	if fi, err := os.Stat(s.cfg.Socket); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode: %v, %v", fi, err)
	}
	c := dial(t, s.cfg.Socket)
	devs, err := c.Devices()
	if err != nil || len(devs) != 1 || !devs[0].Allowed || devs[0].FreeQueues != 8 {
		t.Fatalf("Devices: %+v, %v", devs, err)
	}
	sess, err := c.OpenSession("0000:00:03.0", SessionOptions{Queues: 3, Depth: 16, PoolBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(sess.Interrupts) != 3 || sess.Pool.Size() != 64<<10 || sess.Layout.PoolIOVA == 0 {
		t.Fatalf("session: %d interrupts, %d-byte pool at IOVA 0x%x", len(sess.Interrupts), sess.Pool.Size(), sess.Layout.PoolIOVA)
	}
	rec, ok := dev.space.Lookup(sess.Layout.PoolIOVA)
	if !ok || !rec.Live() || rec.Owner.ID != 1 || rec.Owner.Name != "client "+strconv.Itoa(os.Getpid()) {
		t.Fatalf("ledger at the pool's IOVA: %+v, %v", rec, ok)
	}
	// The pool is shared: what the client writes, the broker's view sees.
	src := sess.Pool.Bytes()[4096 : 4096+1024]
	for i := range src {
		src[i] = byte(i * 7)
	}
	st := s.Status()
	if len(st) != 1 || len(st[0].Queues) != 3 || st[0].PoolBytes != 64<<10 || st[0].Device != "0000:00:03.0" {
		t.Fatalf("Status: %+v", st)
	}
	s.mu.Lock()
	srvPool := s.conns[st[0].ID].sess.pool.Bytes()
	s.mu.Unlock()
	if !bytes.Equal(srvPool[4096:4096+1024], src) {
		t.Fatal("the broker's view of the pool does not show what the client wrote")
	}
	if err := sess.Write(1, 1, 10, 2, 4096); err != nil {
		t.Fatal(err)
	}
	if err := sess.Read(2, 1, 10, 2, 8192); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sess.Pool.Bytes()[8192:8192+1024], src) {
		t.Fatal("read back differs")
	}
	if n, err := sess.Interrupts[1].TryRead(); n != 1 || err != nil {
		t.Fatalf("queue 1's eventfd: %d, %v", n, err)
	}
	if err := sess.Flush(0, 1); err != nil {
		t.Fatal(err)
	}
	// Outside the window, bad namespace, bad queue: refused, nothing reaches the device.
	for _, bad := range []func() error{
		func() error { return sess.Read(0, 1, 0, 1, 64<<10-256) },
		func() error { return sess.Read(0, 2, 0, 1, 0) },
		func() error { return sess.Read(3, 1, 0, 1, 0) },
		func() error { return sess.Read(0, 1, 1023, 2, 0) },
	} {
		if err := bad(); !errors.Is(err, ErrBadRequest) {
			t.Errorf("bad I/O: %v, want ErrBadRequest", err)
		}
	}
	if _, err := c.OpenSession("0000:00:03.0", SessionOptions{}); !errors.Is(err, ErrState) {
		t.Errorf("second session on one connection: %v", err)
	}
	iova := sess.Layout.PoolIOVA
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the client is gone from Status", func() bool { return len(s.Status()) == 0 })
	if rec, ok := dev.space.Lookup(iova); !ok || rec.Live() || rec.Owner.ID != 1 {
		t.Fatalf("ledger after close: %+v, %v; want a recently unmapped record", rec, ok)
	}
	if n := dev.queuesInUse(); n != 0 {
		t.Fatalf("%d fake queues still in use", n)
	}
	if d := s.Devices(0, 0); d[0].FreeQueues != 8 {
		t.Fatalf("free queues after close: %d", d[0].FreeQueues)
	}
}

func TestQuotasAndRefusals(t *testing.T) {
	dev := fake(t, "0000:00:03.0", 3)
	other := fake(t, "0000:00:04.0", 3)
	s := startFake(t, Config{MaxQueuePairs: 2, MaxPoolBytes: 64 << 10}, self(), dev)
	if err := s.add(other, Access{DenyRoot: true}); err != nil {
		t.Fatal(err)
	}
	dial := func() *Client {
		c := dial(t, s.cfg.Socket)
		t.Cleanup(func() { c.Close() })
		return c
	}
	for name, tc := range map[string]struct {
		dev  string
		o    SessionOptions
		want error
	}{
		"queues over quota": {"0000:00:03.0", SessionOptions{Queues: 3, PoolBytes: 4096}, ErrQuota},
		"pool over quota":   {"0000:00:03.0", SessionOptions{Queues: 1, PoolBytes: 128 << 10}, ErrQuota},
		"no such device":    {"0000:00:09.0", SessionOptions{PoolBytes: 4096}, ErrNoDevice},
		"not allowed":       {"0000:00:04.0", SessionOptions{PoolBytes: 4096}, ErrPermission},
		"bad depth":         {"0000:00:03.0", SessionOptions{Depth: 1, PoolBytes: 4096}, ErrBadRequest},
	} {
		if _, err := dial().OpenSession(tc.dev, tc.o); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	// The device has 3 queues: 2 + 2 do not fit.
	if _, err := dial().OpenSession("0000:00:03.0", SessionOptions{Queues: 2, PoolBytes: 4096}); err != nil {
		t.Fatal(err)
	}
	if _, err := dial().OpenSession("0000:00:03.0", SessionOptions{Queues: 2, PoolBytes: 4096}); !errors.Is(err, ErrQuota) {
		t.Errorf("more queues than the device has free: %v", err)
	}
	// Refused opens left nothing held.
	if n := dev.queuesInUse(); n != 2 {
		t.Errorf("%d fake queues in use, want 2", n)
	}
	if live := dev.space.Ledger().Live(); len(live) != 1 {
		t.Errorf("%d live mappings, want 1", len(live))
	}
}

// rawConn speaks frames by hand, for what the client library never sends.
func rawConn(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(t *testing.T, c net.Conn, raw []byte) (*Response, error) {
	t.Helper()
	if _, err := c.Write(raw); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	body, err := readFrame(c)
	if err != nil {
		return nil, err
	}
	var r Response
	if err := decodeBody(body, &r); err != nil {
		t.Fatal(err)
	}
	return &r, nil
}

func TestProtocolErrors(t *testing.T) {
	dev := fake(t, "0000:00:03.0", 3)
	s := startFake(t, Config{}, self(), dev)
	frame := func(v any) []byte {
		b, err := encodeFrame(v, MaxFrame)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	c := rawConn(t, s.cfg.Socket)
	if r, err := roundTrip(t, c, frame(&Request{Op: OpHello, Version: 99})); err != nil || !errors.Is(r.Err, ErrVersion) || r.Version != ProtocolVersion {
		t.Errorf("hello 99: %+v, %v", r, err)
	}
	// Clients of older protocols (1: no modes, no cmd; 2: no
	// reservations; 3: no exclusive reservations; 4: no reservation
	// names) are told which version this broker speaks.
	for _, old := range []int{1, 2, 3, 4} {
		if r, err := roundTrip(t, c, frame(&Request{Op: OpHello, Version: old})); err != nil || !errors.Is(r.Err, ErrVersion) ||
			!strings.Contains(r.Err.Message, "version "+strconv.Itoa(old)) || !strings.Contains(r.Err.Message, "speaks "+strconv.Itoa(ProtocolVersion)) {
			t.Errorf("hello %d (an old client): %+v, %v", old, r, err)
		}
	}
	if r, err := roundTrip(t, c, frame(&Request{Op: OpList})); err != nil || !errors.Is(r.Err, ErrState) {
		t.Errorf("list before hello: %+v, %v", r, err)
	}
	// Garbage: one error, then the connection is dropped.
	garbage := append([]byte{0, 0, 0, 5}, "hello"...)
	if r, err := roundTrip(t, c, garbage); err != nil || !errors.Is(r.Err, ErrBadRequest) {
		t.Errorf("garbage: %+v, %v", r, err)
	}
	if _, err := readFrame(c); err == nil {
		t.Error("the connection stayed open after garbage")
	}
	// An oversized length: refused without reading it.
	c = rawConn(t, s.cfg.Socket)
	if r, err := roundTrip(t, c, []byte{0xff, 0xff, 0xff, 0xff}); err != nil || !errors.Is(r.Err, ErrBadRequest) {
		t.Errorf("oversized frame: %+v, %v", r, err)
	}
	// A truncated frame then EOF: the server drops the connection and
	// holds nothing for it.
	c = rawConn(t, s.cfg.Socket)
	c.Write([]byte{0, 0, 1, 0, '{'})
	c.(*net.UnixConn).CloseWrite()
	waitFor(t, "every connection gone", func() bool { return len(s.Status()) <= 0 })
	// A broker that is gone: Dial fails clearly.
	if _, err := Dial(filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("Dial of a missing socket succeeded")
	}
}

func TestListenRefusesLiveBroker(t *testing.T) {
	s := startFake(t, Config{}, self(), fake(t, "0000:00:03.0", 2))
	s2, err := NewServer(Config{Socket: s.cfg.Socket})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Listen(); err == nil {
		t.Fatal("a second broker listened on a live broker's socket")
	}
}

func TestStatusVisibilityAndMaxClients(t *testing.T) {
	s := startFake(t, Config{MaxClients: 2}, Access{DenyRoot: true}, fake(t, "0000:00:03.0", 2))
	a := dial(t, s.cfg.Socket)
	dial(t, s.cfg.Socket) // the second of MaxClients 2
	if c, err := Dial(s.cfg.Socket); err == nil {
		c.Close()
		t.Fatal("a third client was served with MaxClients 2")
	}
	// Not allowed on any device (root is denied here too): a peer sees only itself.
	st, err := a.Status()
	if err != nil || len(st) != 1 {
		t.Fatalf("status as a peer with no device: %+v, %v", st, err)
	}
	// Allowed on one device of two: it sees every client.
	if err := s.add(fake(t, "0000:00:04.0", 2), self()); err != nil {
		t.Fatal(err)
	}
	if st, err := a.Status(); err != nil || len(st) != 2 {
		t.Fatalf("status as a peer allowed on a device: %+v, %v", st, err)
	}
	if len(s.Status()) != 2 {
		t.Fatalf("Status: %+v", s.Status())
	}
}

func TestPoolQuotaAfterRounding(t *testing.T) {
	s := startFake(t, Config{MaxPoolBytes: 6000}, self(), fake(t, "0000:00:03.0", 2))
	c := dial(t, s.cfg.Socket)
	// 5000 bytes is under the quota but takes two 4 KiB pages.
	if _, err := c.OpenSession("0000:00:03.0", SessionOptions{PoolBytes: 5000}); !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), "open: a pool of 8192 bytes (5000 rounded up to whole 4096-byte pages) asked, the quota is 6000 per client") {
		t.Fatalf("%v, want ErrQuota", err)
	}
	// A whole number of pages over the quota is not said to be rounded.
	if _, err := c.OpenSession("0000:00:03.0", SessionOptions{PoolBytes: 8192}); !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), "open: a pool of 8192 bytes asked, the quota is 6000 per client") {
		t.Fatalf("%v, want ErrQuota", err)
	}
	if d := s.Devices(0, 0); d[0].FreeQueues != 2 {
		t.Fatalf("a refused open kept %d queues", 2-d[0].FreeQueues)
	}
}

// FuzzDispatch feeds decoded requests to a connection that holds a session
// on a fake device: whatever they say, the server answers without
// panicking, and every refused open leaves nothing held.
func FuzzDispatch(f *testing.F) {
	for _, r := range []Request{
		{Op: OpIO, IO: &IORequest{Opcode: "read", NSID: 1, Blocks: 1, Offset: 4096}},
		{Op: OpIO, IO: &IORequest{Opcode: "write", NSID: 1, LBA: 1023, Blocks: 1, Offset: 65024}},
		{Op: OpIO, IO: &IORequest{Opcode: "flush", NSID: 0xffffffff}},
		{Op: OpOpen, Device: "0000:00:03.0", Queues: 1, Depth: 8, PoolBytes: 4096},
		{Op: OpOpen, Device: "0000:00:03.0", Queues: 1, Depth: 8, PoolBytes: 4096, Mode: ModeTrusted},
		{Op: OpStatus},
		{Op: OpCmd, Cmd: &CommandRequest{Opcode: 2, NSID: 1, CDW: [6]uint32{0, 0, 15}, PRP1: 0x1200, PRP2: 0x3000}},
		{Op: OpCmd, Cmd: &CommandRequest{Opcode: 1, NSID: 1, CDW: [6]uint32{1000, 0, 7}, PRP1: 0x1000}},
		{Op: OpReserve, Claim: "fuzz", Device: "0000:00:03.0", Queues: 1, Depth: 8, PoolBytes: 4096},
		{Op: OpReserve, Claim: "fuzz", Device: "0000:00:03.0", Queues: 2, Depth: 8, PoolBytes: 4096, Mode: ModeTrusted},
		{Op: OpRelease, Claim: "fuzz"},
		{Op: OpOpen, Device: "0000:00:03.0", Grant: strings.Repeat("0a", 16)},
	} {
		b, _ := encodeFrame(&r, MaxFrame)
		f.Add(b[4:])
	}
	dev, err := newFakeDevice("0000:00:03.0", 4)
	if err != nil {
		f.Fatal(err)
	}
	s, err := NewServer(Config{Socket: "unused", PoolPageSize: hugepage.Page4K, MaxPoolBytes: 64 << 10})
	if err != nil {
		f.Fatal(err)
	}
	if err := s.add(dev, Access{}); err != nil {
		f.Fatal(err)
	}
	c := &conn{s: s, id: 1, hello: true}
	if _, fds, e := c.open(&Request{Op: OpOpen, Device: "0000:00:03.0", Queues: 2, Depth: 8, PoolBytes: 64 << 10}); e != nil {
		f.Fatal(e)
	} else {
		closeFds(fds)
	}
	f.Cleanup(func() { c.release(); dev.close() })
	f.Fuzz(func(t *testing.T, body []byte) {
		var r Request
		if decodeBody(body, &r) != nil {
			return
		}
		resp, fds := c.dispatch(&r)
		closeFds(fds)
		if resp == nil {
			t.Fatal("no response")
		}
		if dev.queuesInUse() != 2 {
			t.Fatalf("%d queues in use after %s", dev.queuesInUse(), body)
		}
		// Reservations hold no more queue pairs than the device has.
		if d := s.Devices(0, 0)[0]; d.FreeQueues < 0 || d.FreeQueues > d.MaxQueues-2 {
			t.Fatalf("%d of %d queue pairs free after %s", d.FreeQueues, d.MaxQueues, body)
		}
	})
}

// TestBrokerRestart: a client of a broker that stops gets ErrDisconnected
// and can connect to the next broker on the same socket.
func TestBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	start := func() (*Server, chan error) {
		s, err := NewServer(Config{Socket: filepath.Join(dir, "u.sock"), PoolPageSize: hugepage.Page4K})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.add(fake(t, "0000:00:03.0", 2), self()); err != nil {
			t.Fatal(err)
		}
		if err := s.Listen(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve() }()
		return s, done
	}
	s, done := start()
	c := dial(t, s.cfg.Socket)
	sess, err := c.OpenSession("0000:00:03.0", SessionOptions{PoolBytes: 8192})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := sess.Read(0, 1, 0, 1, 0); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("I/O after the broker stopped: %v, want ErrDisconnected", err)
	}
	if _, err := Dial(s.cfg.Socket); err == nil {
		t.Fatal("Dial succeeded with no broker")
	}
	s2, done2 := start()
	defer func() { s2.Close(); <-done2 }()
	c2 := dial(t, s2.cfg.Socket)
	if _, err := c2.OpenSession("0000:00:03.0", SessionOptions{PoolBytes: 8192}); err != nil {
		t.Fatal(err)
	}
}

func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestNoFdLeak opens and closes sessions and checks that neither side
// keeps a descriptor.
func TestNoFdLeak(t *testing.T) {
	s := startFake(t, Config{}, self(), fake(t, "0000:00:03.0", 4))
	before := openFds(t)
	for range 5 {
		c := dial(t, s.cfg.Socket)
		if _, err := c.OpenSession("0000:00:03.0", SessionOptions{Queues: 3, PoolBytes: 8192}); err != nil {
			t.Fatal(err)
		}
		c.Close()
		// The broker releases a closed connection's session
		// asynchronously.
		waitFor(t, "the client released", func() bool { return len(s.Status()) == 0 })
	}
	if got := openFds(t); got != before {
		t.Fatalf("%d open descriptors, %d before", got, before)
	}
}
