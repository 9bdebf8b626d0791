package broker

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

// lender makes the fake devices a reopenable device is opened as: each
// reopen a new fake under the same address, or fail while failing is set.
type lender struct {
	t   *testing.T
	bdf string

	mu      sync.Mutex
	failing error
	opened  []*fakeDevice // the first is the device added
}

func newLender(t *testing.T, bdf string) *lender {
	l := &lender{t: t, bdf: bdf}
	l.opened = append(l.opened, fake(t, bdf, 4))
	return l
}

func (l *lender) reopen(context.Context) (backend, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failing != nil {
		return nil, l.failing
	}
	d, err := newFakeDevice(l.bdf, 4)
	if err != nil {
		return nil, err
	}
	l.opened = append(l.opened, d)
	return d, nil
}

func (l *lender) fail(err error) {
	l.mu.Lock()
	l.failing = err
	l.mu.Unlock()
}

// current is the fake the server serves now, and how many were opened.
func (l *lender) current() (*fakeDevice, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opened[len(l.opened)-1], len(l.opened)
}

func (f *fakeDevice) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// startLending runs a server with one reopenable fake device and one
// added plainly (which cannot be lent).
func startLending(t *testing.T, l *lender, plain *fakeDevice) *Server {
	t.Helper()
	s := startFake(t, Config{}, self(), plain)
	if err := s.addReopenable(l.opened[0], self(), l.reopen); err != nil {
		t.Fatal(err)
	}
	return s
}

func deviceInfo(t *testing.T, c *Client, bdf string) DeviceInfo {
	t.Helper()
	d, err := c.Device(bdf)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func exclusive(claim, bdf string) Reservation {
	return Reservation{Claim: claim, Device: bdf, Mode: ModeExclusive}
}

// TestExclusiveLend walks an exclusive reservation through its states:
// refused while a session or another claim's reservation holds the
// device (naming them); then the device is closed, shown lent, refused to
// every other use, reserved again idempotently; released, it is opened
// anew and serves sessions again; released twice, nothing more happens.
func TestExclusiveLend(t *testing.T) {
	const bdf, plainBDF = "0000:00:04.0", "0000:00:03.0"
	l := newLender(t, bdf)
	s := startLending(t, l, fake(t, plainBDF, 4))
	admin := dial(t, s.cfg.Socket)

	user := dial(t, s.cfg.Socket)
	sess, err := user.OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Reserve(exclusive("ex", bdf)); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "client ") {
		t.Fatalf("exclusive over a session: %v, want ErrState naming the client", err)
	}
	if sess.Layout.Device != bdf {
		t.Fatalf("session on %s", sess.Layout.Device)
	}
	user.Close() // ends the session
	waitFor(t, "the session to go", func() bool { return deviceInfo(t, admin, bdf).FreeQueues == 4 })
	if _, err := admin.Reserve(reserveReq("other", bdf, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Reserve(exclusive("ex", bdf)); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "claim other") {
		t.Fatalf("exclusive over another claim's reservation: %v, want ErrState naming claim other", err)
	}
	if err := admin.Release("other"); err != nil {
		t.Fatal(err)
	}
	if first, _ := l.current(); first.isClosed() {
		t.Fatal("refused exclusive reservations closed the device")
	}

	g, err := admin.Reserve(exclusive("ex", bdf))
	if err != nil {
		t.Fatal(err)
	}
	first, n := l.current()
	if !first.isClosed() || n != 1 {
		t.Fatalf("lent: the device closed %v, %d opened; want closed, 1", first.isClosed(), n)
	}
	if info := deviceInfo(t, admin, bdf); info.Lent != "ex" || info.FreeQueues != 0 || info.Failed != "" {
		t.Fatalf("a lent device listed as %+v", info)
	}
	res, err := admin.Reservations()
	if err != nil || len(res) != 1 || res[0] != (ReservationStatus{Claim: "ex", Device: bdf, Mode: ModeExclusive}) {
		t.Fatalf("reservations %+v, %v", res, err)
	}
	if again, err := admin.Reserve(exclusive("ex", bdf)); err != nil || again != g {
		t.Fatalf("reserving again: %+v, %v; want %+v", again, err, g)
	}
	// The whole device is the claim's already: under a name it is not
	// another reservation of it.
	named := exclusive("ex", bdf)
	named.Name = "share-0"
	if _, err := admin.Reserve(named); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "already holds "+bdf+" (name share-0) with exclusive") {
		t.Fatalf("reserving the lent device again under a name: %v, want ErrState", err)
	}
	for name, try := range map[string]func() error{
		"another exclusive claim": func() error { _, err := admin.Reserve(exclusive("ex2", bdf)); return err },
		"a mediated reservation":  func() error { _, err := admin.Reserve(reserveReq("m", bdf, 1)); return err },
		"a session": func() error {
			_, err := dial(t, s.cfg.Socket).OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 4096})
			return err
		},
	} {
		if err := try(); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "lent to claim ex") {
			t.Errorf("%s on a lent device: %v, want ErrState saying it is lent to claim ex", name, err)
		}
	}
	if _, err := dial(t, s.cfg.Socket).OpenGrant(bdf, g.ID); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "exclusive") {
		t.Errorf("opening an exclusive grant: %v, want ErrState", err)
	}
	if _, err := admin.Reserve(Reservation{Claim: "q", Device: bdf, Mode: ModeExclusive, Queues: 1}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("exclusive with queue pairs: %v, want ErrBadRequest", err)
	}
	if _, err := admin.Reserve(exclusive("plain", plainBDF)); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "AddReopenable") {
		t.Errorf("exclusive on a device added without a way to reopen it: %v, want ErrState", err)
	}

	if err := admin.Release("ex"); err != nil {
		t.Fatal(err)
	}
	second, n := l.current()
	if n != 2 || second.isClosed() {
		t.Fatalf("released: %d opened, the new one closed %v", n, second.isClosed())
	}
	if info := deviceInfo(t, admin, bdf); info.Lent != "" || info.Failed != "" || info.FreeQueues != 4 {
		t.Fatalf("a device given back listed as %+v", info)
	}
	if res, _ := admin.Reservations(); len(res) != 0 {
		t.Fatalf("reservations after release: %+v", res)
	}
	sess2, err := dial(t, s.cfg.Socket).OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 4096})
	if err != nil {
		t.Fatalf("a session after the release: %v", err)
	}
	copy(sess2.Pool.Bytes(), bytes.Repeat([]byte{0x5a}, 512))
	if err := sess2.Write(0, 1, 7, 1, 0); err != nil {
		t.Fatal(err)
	}
	second.mu.Lock()
	written := len(second.blocks)
	second.mu.Unlock()
	if second.queuesInUse() != 1 || written != 1 {
		t.Fatalf("the session does not use the reopened device: %d queues, %d blocks written", second.queuesInUse(), written)
	}
	if err := admin.Release("ex"); err != nil {
		t.Fatalf("releasing again: %v", err)
	}
	if _, n := l.current(); n != 2 {
		t.Fatalf("a second release opened the device again (%d opened)", n)
	}
}

// TestExclusiveReopenFails: a device that does not open again after its
// claim is shown failed with the reason, and refuses sessions and
// mediated reservations; an exclusive reservation of it is allowed, and
// its release opens it once it can.
func TestExclusiveReopenFails(t *testing.T) {
	const bdf = "0000:00:04.0"
	l := newLender(t, bdf)
	s := startLending(t, l, fake(t, "0000:00:03.0", 4))
	admin := dial(t, s.cfg.Socket)
	if _, err := admin.Reserve(exclusive("ex", bdf)); err != nil {
		t.Fatal(err)
	}
	l.fail(errors.New("group busy"))
	err := admin.Release("ex")
	if !errors.Is(err, ErrDevice) || !strings.Contains(err.Error(), "group busy") || !strings.Contains(err.Error(), "claim ex released") {
		t.Fatalf("release with a failing reopen: %v, want ErrDevice saying the claim was released and why the device did not open", err)
	}
	info := deviceInfo(t, admin, bdf)
	if info.Lent != "" || !strings.Contains(info.Failed, "group busy") || info.FreeQueues != 0 {
		t.Fatalf("a device that did not reopen listed as %+v", info)
	}
	if res, _ := admin.Reservations(); len(res) != 0 {
		t.Fatalf("the claim is still held: %+v", res)
	}
	if _, err := dial(t, s.cfg.Socket).OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 4096}); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("a session on a failed device: %v, want ErrState", err)
	}
	if _, err := admin.Reserve(reserveReq("m", bdf, 1)); !errors.Is(err, ErrState) {
		t.Fatalf("a mediated reservation on a failed device: %v, want ErrState", err)
	}
	if _, err := admin.Reserve(exclusive("retry", bdf)); err != nil {
		t.Fatalf("an exclusive reservation of a failed device: %v", err)
	}
	if info := deviceInfo(t, admin, bdf); info.Lent != "retry" || info.Failed != "" {
		t.Fatalf("a failed device lent again listed as %+v", info)
	}
	l.fail(nil)
	if err := admin.Release("retry"); err != nil {
		t.Fatal(err)
	}
	if info := deviceInfo(t, admin, bdf); info.Lent != "" || info.Failed != "" || info.FreeQueues != 4 {
		t.Fatalf("after a release that reopened it: %+v", info)
	}
	if _, err := dial(t, s.cfg.Socket).OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 4096}); err != nil {
		t.Fatalf("a session on the reopened device: %v", err)
	}
}

// TestExclusiveSimulated: on a simulated device an exclusive reservation
// is the same bookkeeping (lent, refused to others, served again on
// release) and its software controller, data included, stays.
func TestExclusiveSimulated(t *testing.T) {
	const bdf = "0000:03:00.0"
	s := startSim(t, Config{}, bdf)
	admin := dial(t, s.cfg.Socket)
	c := dial(t, s.cfg.Socket)
	sess, err := c.OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("exclusive"), 512)[:4096]
	copy(sess.Pool.Bytes(), want)
	if err := sess.Write(0, 1, 10, 8, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Reserve(exclusive("ex", bdf)); !errors.Is(err, ErrState) {
		t.Fatalf("exclusive over a session: %v", err)
	}
	c.Close()
	waitFor(t, "the session to go", func() bool { d := deviceInfo(t, admin, bdf); return d.FreeQueues == d.MaxQueues })
	if _, err := admin.Reserve(exclusive("ex", bdf)); err != nil {
		t.Fatal(err)
	}
	if info := deviceInfo(t, admin, bdf); info.Lent != "ex" || !info.Simulated {
		t.Fatalf("a lent simulated device listed as %+v", info)
	}
	if _, err := dial(t, s.cfg.Socket).OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 4096}); !errors.Is(err, ErrState) {
		t.Fatalf("a session on a lent simulated device: %v", err)
	}
	if err := admin.Release("ex"); err != nil {
		t.Fatal(err)
	}
	sess2, err := dial(t, s.cfg.Socket).OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 64 << 10})
	if err != nil {
		t.Fatalf("a session after the release: %v", err)
	}
	if err := sess2.Read(0, 1, 10, 8, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sess2.Pool.Bytes()[:4096], want) {
		t.Fatal("the simulated namespace lost its data over the lend")
	}
}
