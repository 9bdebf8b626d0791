package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/hugepage"
)

var grantPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func reserveReq(claim, dev string, queues int) Reservation {
	return Reservation{Claim: claim, Device: dev, Queues: queues, Depth: 16, PoolBytes: 64 << 10}
}

// TestReserveIdempotency: the same (claim, device, parameters) gives the
// same grant; other parameters are refused with ErrState; other claims and
// devices get grants of their own.
func TestReserveIdempotency(t *testing.T) {
	s := startFake(t, Config{MaxQueuePairs: 4, MaxPoolBytes: 1 << 20}, self(), fake(t, "0000:00:03.0", 8), fake(t, "0000:00:04.0", 8))
	c := dial(t, s.cfg.Socket)
	g, err := c.Reserve(reserveReq("claim-a", "0000:00:03.0", 2))
	if err != nil {
		t.Fatal(err)
	}
	if !grantPattern.MatchString(g.ID) || g.Claim != "claim-a" || g.Device != "0000:00:03.0" {
		t.Fatalf("grant %+v", g)
	}
	// Again, from another connection, with the mode spelled out: the same grant.
	r := reserveReq("claim-a", "0000:00:03.0", 2)
	r.Mode = ModeMediated
	if again, err := dial(t, s.cfg.Socket).Reserve(r); err != nil || again != g {
		t.Fatalf("reserving again: %+v, %v; want %+v", again, err, g)
	}
	for name, r := range map[string]Reservation{
		"more queues": reserveReq("claim-a", "0000:00:03.0", 3),
		"polled":      {Claim: "claim-a", Device: "0000:00:03.0", Queues: 2, Depth: 16, PoolBytes: 64 << 10, Polled: true},
		"bigger pool": {Claim: "claim-a", Device: "0000:00:03.0", Queues: 2, Depth: 16, PoolBytes: 128 << 10},
	} {
		_, err := c.Reserve(r)
		if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "already holds 0000:00:03.0") {
			t.Errorf("%s: %v, want ErrState saying what the claim holds", name, err)
		}
	}
	other, err := c.Reserve(reserveReq("claim-a", "0000:00:04.0", 1))
	if err != nil || other.ID == g.ID {
		t.Fatalf("the claim's second device: %+v, %v", other, err)
	}
	b, err := c.Reserve(reserveReq("claim-b", "0000:00:03.0", 1))
	if err != nil || b.ID == g.ID || b.ID == other.ID {
		t.Fatalf("a second claim: %+v, %v", b, err)
	}
	// Held queue pairs show as not free; status shows the reservations.
	if d := s.Devices(0, 0); d[0].FreeQueues != 8-3 || d[1].FreeQueues != 8-1 {
		t.Fatalf("free queues %d and %d, want 5 and 7", d[0].FreeQueues, d[1].FreeQueues)
	}
	rs, err := c.Reservations()
	if err != nil || len(rs) != 3 || rs[0].Claim != "claim-a" || rs[0].Device != "0000:00:03.0" || rs[0].Queues != 2 || rs[0].InUse || rs[2].Claim != "claim-b" {
		t.Fatalf("reservations %+v, %v", rs, err)
	}
	// Releasing is idempotent; a released claim's device may be reserved anew.
	for range 2 {
		if err := c.Release("claim-a"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Release("never-reserved"); err != nil {
		t.Fatalf("releasing an unknown claim: %v", err)
	}
	if d := s.Devices(0, 0); d[0].FreeQueues != 7 || d[1].FreeQueues != 8 {
		t.Fatalf("after release: free queues %d and %d, want 7 and 8", d[0].FreeQueues, d[1].FreeQueues)
	}
	anew, err := c.Reserve(reserveReq("claim-a", "0000:00:03.0", 3))
	if err != nil || anew.ID == g.ID {
		t.Fatalf("reserving a released claim otherwise: %+v, %v", anew, err)
	}
}

// TestReserveHoldsCapacity: what a reservation holds is not available to
// sessions or other reservations, and comes back on release.
func TestReserveHoldsCapacity(t *testing.T) {
	dev := fake(t, "0000:00:03.0", 4)
	s := startFake(t, Config{MaxQueuePairs: 4, MaxPoolBytes: 1 << 20, MaxReservedBytes: 1 << 20}, self(), dev)
	c := dial(t, s.cfg.Socket)
	if _, err := c.Reserve(reserveReq("big", "0000:00:03.0", 3)); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, s.cfg.Socket).OpenSession("0000:00:03.0", SessionOptions{Queues: 2, PoolBytes: 4096}); !errors.Is(err, ErrQuota) {
		t.Fatalf("a session over a reservation's queues: %v, want ErrQuota", err)
	}
	for name, tc := range map[string]struct {
		r    Reservation
		want string
	}{
		"queues":          {reserveReq("other", "0000:00:03.0", 2), "has 1 free"},
		"quota":           {reserveReq("other", "0000:00:03.0", 5), "quota is 4"},
		"pool quota":      {Reservation{Claim: "other", Device: "0000:00:03.0", Queues: 1, Depth: 2, PoolBytes: 2 << 20}, "quota is 1048576"},
		"reserved memory": {Reservation{Claim: "other", Device: "0000:00:03.0", Queues: 1, Depth: 2, PoolBytes: 1 << 20}, "reservations hold 65536"},
	} {
		_, err := c.Reserve(tc.r)
		if !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrQuota saying %q", name, err, tc.want)
		}
	}
	if _, err := c.Reserve(Reservation{Claim: "x", Device: "0000:00:09.0", Queues: 1, Depth: 2, PoolBytes: 4096}); !errors.Is(err, ErrNoDevice) {
		t.Errorf("reserving an unknown device: %v", err)
	}
	if _, err := c.Reserve(Reservation{Claim: "x", Device: "0000:00:03.0", Mode: ModeTrusted, Queues: 1, Depth: 2, PoolBytes: 4096}); !errors.Is(err, ErrPermission) {
		t.Errorf("a trusted reservation on a device without trusted sessions: %v", err)
	}
	// Refusals held nothing; the queue pair left is still free.
	if _, err := c.Reserve(reserveReq("small", "0000:00:03.0", 1)); err != nil {
		t.Fatalf("the last queue pair: %v", err)
	}
	if err := c.Release("big"); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, s.cfg.Socket).OpenSession("0000:00:03.0", SessionOptions{Queues: 3, PoolBytes: 4096}); err != nil {
		t.Fatalf("a session after the release: %v", err)
	}
	if dev.queuesInUse() != 3 {
		t.Fatalf("%d fake queues in use: reservations create none before a session", dev.queuesInUse())
	}
}

// TestOpenGrant: a session opened by grant has exactly the reservation's
// resources, one at a time; after its connection ends the grant opens
// again (a restarted pod), with the device's data as it was left.
func TestOpenGrant(t *testing.T) {
	dev := fake(t, "0000:00:03.0", 8)
	s := startFake(t, Config{}, Access{DenyRoot: true}, dev) // nobody may open sessions without a grant
	admin := dial(t, s.cfg.Socket)
	g, err := admin.Reserve(Reservation{Claim: "pod", Device: "0000:00:03.0", Queues: 3, Depth: 32, PoolBytes: 20000, Polled: true})
	if err != nil {
		t.Fatal(err)
	}
	c1 := dial(t, s.cfg.Socket)
	sess, err := c1.OpenGrant("0000:00:03.0", g.ID)
	if err != nil {
		t.Fatal(err)
	}
	l := sess.Layout
	if len(l.Queues) != 3 || l.Queues[0].Depth != 32 || l.PoolBytes != 20480 || l.Mode != ModeMediated || !l.Polled || l.Claim != "pod" || len(sess.Interrupts) != 0 {
		t.Fatalf("layout %+v, %d interrupts", l, len(sess.Interrupts))
	}
	copy(sess.Pool.Bytes()[:512], bytes.Repeat([]byte("grant"), 103))
	if err := sess.Write(2, 1, 7, 1, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, s.cfg.Socket).OpenGrant("0000:00:03.0", g.ID); !errors.Is(err, ErrState) {
		t.Fatalf("a second session on the grant: %v, want ErrState", err)
	}
	st := s.Status()
	if rs := s.Reservations(); len(rs) != 1 || !rs[0].InUse || rs[0].Client != st[1].ID || st[1].Claim != "pod" {
		t.Fatalf("reservations %+v, status %+v", rs, st)
	}
	// The queue pairs are the reservation's: the device counts them once.
	if d := s.Devices(0, 0); d[0].FreeQueues != 5 {
		t.Fatalf("free queues %d with the grant open, want 5", d[0].FreeQueues)
	}
	c1.Close()
	waitFor(t, "the grant is free again", func() bool { rs := s.Reservations(); return len(rs) == 1 && !rs[0].InUse })
	if d := s.Devices(0, 0); d[0].FreeQueues != 5 || dev.queuesInUse() != 0 {
		t.Fatalf("after the session: %d free queues (want 5, still reserved), %d fake queues", d[0].FreeQueues, dev.queuesInUse())
	}
	c2 := dial(t, s.cfg.Socket)
	sess2, err := c2.OpenGrant("0000:00:03.0", g.ID)
	if err != nil {
		t.Fatalf("opening the grant again: %v", err)
	}
	if err := sess2.Read(0, 1, 7, 1, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sess2.Pool.Bytes()[4096:4096+512], bytes.Repeat([]byte("grant"), 103)[:512]) {
		t.Fatal("the second session does not read what the first wrote")
	}
	for name, tc := range map[string]struct {
		dev, grant string
		want       error
	}{
		"unknown grant":    {"0000:00:03.0", strings.Repeat("ab", 16), ErrPermission},
		"other device":     {"0000:00:04.0", g.ID, ErrPermission},
		"malformed grant":  {"0000:00:03.0", "xyz", ErrBadRequest},
		"upper-case grant": {"0000:00:03.0", strings.ToUpper(g.ID), ErrBadRequest},
	} {
		if _, err := dial(t, s.cfg.Socket).OpenGrant(tc.dev, tc.grant); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

// TestReleaseEndsSessions: releasing a claim ends the session opened with
// its grant as a disconnect would (queues deleted, window unmapped, pool
// closed, descriptors gone) and the grant opens no more.
func TestReleaseEndsSessions(t *testing.T) {
	dev := fake(t, "0000:00:03.0", 8)
	s := startFake(t, Config{}, self(), dev)
	admin := dial(t, s.cfg.Socket)
	before := openFds(t)
	g, err := admin.Reserve(reserveReq("pod", "0000:00:03.0", 2))
	if err != nil {
		t.Fatal(err)
	}
	pod, err := Dial(s.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := pod.OpenGrant("0000:00:03.0", g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Write(0, 1, 0, 1, 0); err != nil {
		t.Fatal(err)
	}
	iova := sess.Layout.PoolIOVA
	if dev.queuesInUse() != 2 || len(dev.space.Ledger().Live()) != 1 {
		t.Fatalf("with the session: %d queues, %d live mappings", dev.queuesInUse(), len(dev.space.Ledger().Live()))
	}
	if err := admin.Release("pod"); err != nil {
		t.Fatal(err)
	}
	// Release returns after the session is gone: nothing to wait for.
	if n := dev.queuesInUse(); n != 0 {
		t.Errorf("%d queues after the release", n)
	}
	if live := dev.space.Ledger().Live(); len(live) != 0 {
		t.Errorf("live mappings after the release: %+v", live)
	}
	if rec, ok := dev.space.Lookup(iova); !ok || rec.Live() {
		t.Errorf("the pool's window after the release: %+v, %v; want recently unmapped", rec, ok)
	}
	if rs := s.Reservations(); len(rs) != 0 {
		t.Errorf("reservations after the release: %+v", rs)
	}
	if d := s.Devices(0, 0); d[0].FreeQueues != 8 {
		t.Errorf("free queues after the release: %d", d[0].FreeQueues)
	}
	select {
	case <-pod.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("the pod's client was not disconnected")
	}
	if err := sess.Read(0, 1, 0, 1, 0); !errors.Is(err, ErrDisconnected) {
		t.Errorf("I/O after the release: %v, want ErrDisconnected", err)
	}
	late := dial(t, s.cfg.Socket)
	if _, err := late.OpenGrant("0000:00:03.0", g.ID); !errors.Is(err, ErrPermission) {
		t.Errorf("opening a released grant: %v, want ErrPermission", err)
	}
	late.Close()
	if err := pod.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "only the admin connection is left", func() bool { return len(s.Status()) == 1 })
	if got := openFds(t); got != before {
		t.Errorf("%d descriptors open, %d before", got, before)
	}
}

// TestReleaseOwnSession: a reserver that opened its own grant on the same
// connection may release it (nothing deadlocks) and keeps its connection.
func TestReleaseOwnSession(t *testing.T) {
	dev := fake(t, "0000:00:03.0", 4)
	s := startFake(t, Config{}, self(), dev)
	c := dial(t, s.cfg.Socket)
	g, err := c.Reserve(reserveReq("me", "0000:00:03.0", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenGrant("0000:00:03.0", g.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Release("me"); err != nil {
		t.Fatal(err)
	}
	if dev.queuesInUse() != 0 || len(s.Reservations()) != 0 {
		t.Fatalf("%d queues, reservations %+v", dev.queuesInUse(), s.Reservations())
	}
	if _, err := c.Devices(); err != nil {
		t.Fatalf("the connection after releasing its own session: %v", err)
	}
}

// TestReservePermission: only Config.Reservers may reserve and release;
// anyone who reaches the socket may open a grant.
func TestReservePermission(t *testing.T) {
	s := startFake(t, Config{Reservers: []uint32{12345}}, self(), fake(t, "0000:00:03.0", 4))
	c := dial(t, s.cfg.Socket)
	if _, err := c.Reserve(reserveReq("x", "0000:00:03.0", 1)); !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "may not reserve") {
		t.Errorf("root not among the reservers: %v, want ErrPermission", err)
	}
	if err := c.Release("x"); !errors.Is(err, ErrPermission) {
		t.Errorf("release by a non-reserver: %v, want ErrPermission", err)
	}

	// The default reservers are root only. A peer with another uid,
	// allowed on no device, is refused reserving and releasing but
	// opens a grant.
	dev := fake(t, "0000:00:03.0", 4)
	srv, err := NewServer(Config{Socket: "unused", PoolPageSize: hugepage.Page4K})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.add(dev, Access{DenyRoot: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	root := &conn{s: srv, id: 1, hello: true}
	user := &conn{s: srv, id: 2, hello: true}
	user.cred.Uid, user.cred.Gid = 1000, 1000
	req := &Request{Op: OpReserve, Claim: "c", Device: "0000:00:03.0", Queues: 1, Depth: 8, PoolBytes: 8192}
	if resp, _ := user.dispatch(req); !errors.Is(resp.Err, ErrPermission) {
		t.Fatalf("reserve by uid 1000: %+v", resp.Err)
	}
	if resp, _ := user.dispatch(&Request{Op: OpRelease, Claim: "c"}); !errors.Is(resp.Err, ErrPermission) {
		t.Fatalf("release by uid 1000: %+v", resp.Err)
	}
	resp, _ := root.dispatch(req)
	if resp.Err != nil || resp.Grant == nil {
		t.Fatalf("reserve by root: %+v", resp)
	}
	if resp, _ := user.dispatch(&Request{Op: OpStatus}); len(resp.Reservations) != 0 {
		t.Fatalf("a peer allowed nowhere sees reservations: %+v", resp.Reservations)
	}
	if resp, _ := root.dispatch(&Request{Op: OpStatus}); len(resp.Reservations) != 1 {
		t.Fatalf("a reserver's status: %+v", resp.Reservations)
	}
	open, fds := user.dispatch(&Request{Op: OpOpen, Device: "0000:00:03.0", Grant: resp.Grant.ID})
	closeFds(fds)
	if open.Err != nil || open.Layout == nil || open.Layout.Claim != "c" {
		t.Fatalf("open by grant as uid 1000: %+v", open)
	}
	if resp, _ := root.dispatch(&Request{Op: OpRelease, Claim: "c"}); resp.Err != nil {
		t.Fatal(resp.Err)
	}
	if dev.queuesInUse() != 0 {
		t.Fatalf("%d queues after releasing a session of a conn with no goroutine", dev.queuesInUse())
	}
}

func TestValidateReservations(t *testing.T) {
	g := strings.Repeat("0f", 16)
	ok := []Request{
		{Op: OpReserve, Claim: "3f2a-uid", Device: "x", Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 64, Depth: 4096, PoolBytes: MaxPoolBytes, Mode: ModeTrusted, Polled: true},
		{Op: OpRelease, Claim: "c.d_e"},
		{Op: OpReserve, Claim: "c", Device: "x", Name: "nvme-0000-03-00-0-share-2", Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Name: strings.Repeat("n", 128), Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Name: "n", Mode: ModeExclusive},
		{Op: OpOpen, Device: "x", Grant: g},
	}
	for _, r := range ok {
		if e := r.validate(); e != nil {
			t.Errorf("%+v: %v", r, e)
		}
	}
	bad := []Request{
		{Op: OpReserve, Device: "x", Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: "a b", Device: "x", Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: strings.Repeat("c", 129), Device: "x", Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 0, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 1, Depth: 1, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 1, Depth: 2, PoolBytes: 0},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 1, Depth: 2, PoolBytes: 1, Mode: "vf"},
		{Op: OpReserve, Claim: "c", Device: "x", Queues: 1, Depth: 2, PoolBytes: 1, Grant: g},
		{Op: OpRelease},
		{Op: OpRelease, Claim: "c", Device: "x"},
		{Op: OpRelease, Claim: "c", Name: "n"},
		{Op: OpReserve, Claim: "c", Device: "x", Name: "a b", Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Name: "a/b", Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpReserve, Claim: "c", Device: "x", Name: strings.Repeat("n", 129), Queues: 1, Depth: 2, PoolBytes: 1},
		{Op: OpOpen, Device: "x", Grant: g, Name: "n"},
		{Op: OpOpen, Device: "x", Queues: 1, Depth: 2, PoolBytes: 1, Name: "n"},
		{Op: OpOpen, Device: "x", Grant: g, Queues: 1},
		{Op: OpOpen, Device: "x", Grant: g, Mode: ModeTrusted},
		{Op: OpOpen, Device: "x", Grant: g, Polled: true},
		{Op: OpOpen, Device: "x", Grant: g[:31]},
		{Op: OpOpen, Device: "x", Grant: strings.Repeat("g", 32)},
		{Op: OpOpen, Grant: g},
		{Op: OpOpen, Device: "x", Queues: 1, Depth: 2, PoolBytes: 1, Claim: "c"},
	}
	for _, r := range bad {
		if e := r.validate(); e == nil || !errors.Is(e, ErrBadRequest) {
			t.Errorf("%+v: %v, want a bad-request error", r, e)
		}
	}
}

// TestReserveNamed: one claim holds two reservations of one device under
// two names (two shares of a controller in a DRA claim): each has its own
// grant, queue pairs and pool, both count against the device's free queue
// pairs, both open at once, the status lists both, the same name again is
// idempotent, one beyond the free queue pairs is refused naming it, and
// releasing the claim frees both.
func TestReserveNamed(t *testing.T) {
	dev := fake(t, "0000:00:03.0", 8)
	s := startFake(t, Config{MaxQueuePairs: 4, MaxPoolBytes: 1 << 20}, Access{DenyRoot: true}, dev) // grants only
	admin := dial(t, s.cfg.Socket)
	named := func(name string, queues int) Reservation {
		r := reserveReq("pod", "0000:00:03.0", queues)
		r.Name = name
		return r
	}
	g2, err := admin.Reserve(named("share-2", 3))
	if err != nil {
		t.Fatal(err)
	}
	g3, err := admin.Reserve(named("share-3", 3))
	if err != nil {
		t.Fatal(err)
	}
	if g2.ID == g3.ID || !grantPattern.MatchString(g3.ID) || g3.Claim != "pod" || g3.Device != "0000:00:03.0" {
		t.Fatalf("grants %+v and %+v, want two of their own", g2, g3)
	}
	// The same name again is the same reservation; other parameters
	// under it are refused, naming it.
	if again, err := dial(t, s.cfg.Socket).Reserve(named("share-2", 3)); err != nil || again != g2 {
		t.Fatalf("reserving share-2 again: %+v, %v; want %+v", again, err, g2)
	}
	if _, err := admin.Reserve(named("share-3", 2)); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "already holds 0000:00:03.0 (name share-3) with mediated, 3 queue pairs") {
		t.Errorf("share-3 otherwise: %v, want ErrState naming share-3", err)
	}
	if d := s.Devices(0, 0); d[0].FreeQueues != 2 {
		t.Fatalf("free queues %d with two reservations of 3, want 2", d[0].FreeQueues)
	}
	// A third is refused beyond the free queue pairs, and holds nothing.
	if _, err := admin.Reserve(named("share-4", 3)); !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), "has 2 free") || !strings.Contains(err.Error(), "(reserving name share-4)") {
		t.Errorf("a third of 3 queue pairs with 2 free: %v, want ErrQuota naming share-4", err)
	}
	rs := s.Reservations()
	if len(rs) != 2 || rs[0].Name != "share-2" || rs[1].Name != "share-3" || rs[0].Claim != "pod" || rs[1].Claim != "pod" || rs[0].Queues != 3 || rs[1].Queues != 3 {
		t.Fatalf("reservations %+v, want share-2 and share-3 of claim pod", rs)
	}
	if viaStatus, err := admin.Reservations(); err != nil || !slices.Equal(viaStatus, rs) {
		t.Fatalf("reservations in the status: %+v, %v; want %+v", viaStatus, err, rs)
	}

	// Both open at once, each with its own queue pairs and pool.
	c2, c3 := dial(t, s.cfg.Socket), dial(t, s.cfg.Socket)
	s2, err := c2.OpenGrant("0000:00:03.0", g2.ID)
	if err != nil {
		t.Fatal(err)
	}
	s3, err := c3.OpenGrant("0000:00:03.0", g3.ID)
	if err != nil {
		t.Fatalf("opening the second grant while the first is open: %v", err)
	}
	ids := map[uint16]bool{}
	for _, l := range []Layout{s2.Layout, s3.Layout} {
		if len(l.Queues) != 3 || l.Claim != "pod" {
			t.Fatalf("layout %+v, want 3 queue pairs of claim pod", l)
		}
		for _, q := range l.Queues {
			ids[q.ID] = true
		}
	}
	if len(ids) != 6 || dev.queuesInUse() != 6 {
		t.Fatalf("queue IDs %v, %d fake queues in use; want 6 of each", ids, dev.queuesInUse())
	}
	if s2.Layout.PoolIOVA == s3.Layout.PoolIOVA || len(dev.space.Ledger().Live()) != 2 {
		t.Fatalf("pools at %#x and %#x, %d live mappings; want two windows", s2.Layout.PoolIOVA, s3.Layout.PoolIOVA, len(dev.space.Ledger().Live()))
	}
	// One device: what one session writes, the other reads.
	copy(s2.Pool.Bytes()[:512], bytes.Repeat([]byte("share"), 103))
	if err := s2.Write(2, 1, 9, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := s3.Read(2, 1, 9, 1, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s3.Pool.Bytes()[:512], s2.Pool.Bytes()[:512]) {
		t.Fatal("the second share's session does not read what the first wrote")
	}
	if _, err := dial(t, s.cfg.Socket).OpenGrant("0000:00:03.0", g3.ID); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "(name share-3) is in use") {
		t.Errorf("a second session on share-3's grant: %v, want ErrState naming share-3", err)
	}
	rs = s.Reservations()
	if len(rs) != 2 || !rs[0].InUse || !rs[1].InUse || rs[0].Client == rs[1].Client {
		t.Fatalf("reservations with both open: %+v", rs)
	}
	if d := s.Devices(0, 0); d[0].FreeQueues != 2 {
		t.Fatalf("free queues %d with both grants open, want 2 (counted once)", d[0].FreeQueues)
	}

	// Releasing the claim ends both sessions and frees everything.
	if err := admin.Release("pod"); err != nil {
		t.Fatal(err)
	}
	if n, live := dev.queuesInUse(), dev.space.Ledger().Live(); n != 0 || len(live) != 0 {
		t.Errorf("after the release: %d queues, live mappings %+v", n, live)
	}
	if rs := s.Reservations(); len(rs) != 0 {
		t.Errorf("reservations after the release: %+v", rs)
	}
	if d := s.Devices(0, 0); d[0].FreeQueues != 8 {
		t.Errorf("free queues after the release: %d, want 8", d[0].FreeQueues)
	}
	for _, c := range []*Client{c2, c3} {
		select {
		case <-c.Done():
		case <-time.After(2 * time.Second):
			t.Fatal("a share's client was not disconnected")
		}
	}
	for _, g := range []Grant{g2, g3} {
		if _, err := dial(t, s.cfg.Socket).OpenGrant("0000:00:03.0", g.ID); !errors.Is(err, ErrPermission) {
			t.Errorf("opening a released grant: %v, want ErrPermission", err)
		}
	}
	// Reserved anew: new grants; the unnamed reservation and a named one
	// of the same device and claim are two as well.
	if g, err := admin.Reserve(named("share-2", 4)); err != nil || g.ID == g2.ID {
		t.Fatalf("share-2 after the release: %+v, %v", g, err)
	}
	unnamed, err := admin.Reserve(reserveReq("pod", "0000:00:03.0", 4))
	if err != nil {
		t.Fatalf("the unnamed reservation beside a named one: %v", err)
	}
	if rs := s.Reservations(); len(rs) != 2 || rs[0].Name != "" || rs[1].Name != "share-2" || unnamed.ID == g2.ID {
		t.Fatalf("reservations %+v", rs)
	}
	if d := s.Devices(0, 0); d[0].FreeQueues != 0 {
		t.Errorf("free queues %d, want 0", d[0].FreeQueues)
	}
}

// TestReserveNameOnTheWire: an unnamed reservation's request and status
// carry no name field, as before names; a named one's do.
func TestReserveNameOnTheWire(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want bool
	}{
		{reserveReq("c", "x", 1).request(), false},
		{ReservationStatus{Claim: "c", Device: "x"}, false},
		{Reservation{Claim: "c", Device: "x", Name: "n"}.request(), true},
		{ReservationStatus{Claim: "c", Device: "x", Name: "n"}, true},
	} {
		b, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(b, []byte(`"name"`)); got != tc.want {
			t.Errorf("%s: name field %v, want %v", b, got, tc.want)
		}
	}
	r := Reservation{Claim: "c", Device: "x", Name: "n", Mode: ModeTrusted, Queues: 2, Depth: 8, PoolBytes: 9, Polled: true}
	req := r.request()
	if req.Op != OpReserve || req.Name != "n" || req.Claim != "c" || req.Device != "x" || req.Mode != ModeTrusted || req.Queues != 2 || req.Depth != 8 || req.PoolBytes != 9 || !req.Polled {
		t.Errorf("request %+v of %+v", req, r)
	}
}
