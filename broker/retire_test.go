package broker

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRetire retires one of two devices with a session, a reservation and
// an idle connection on it: the session's client is hung up and what it
// held is released, the device is closed and listed as failed with the
// reason, opens, grants and exclusive reservations of it are refused,
// while the other device's session and the idle connection go on. The
// claim is still released normally, and retiring twice is harmless.
func TestRetire(t *testing.T) {
	const goneBDF, keptBDF = "0000:00:03.0", "0000:00:04.0"
	gone, kept := fake(t, goneBDF, 8), fake(t, keptBDF, 8)
	s := startFake(t, Config{MaxQueuePairs: 4, MaxPoolBytes: 1 << 20}, self(), gone, kept)
	admin := dial(t, s.cfg.Socket)
	g, err := admin.Reserve(reserveReq("claim", goneBDF, 1))
	if err != nil {
		t.Fatal(err)
	}
	goneClient := dial(t, s.cfg.Socket)
	goneSession, err := goneClient.OpenSession(goneBDF, SessionOptions{Queues: 2, PoolBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	keptClient := dial(t, s.cfg.Socket)
	keptSession, err := keptClient.OpenSession(keptBDF, SessionOptions{Queues: 1, PoolBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	// A connection whose session on the device ended before: nothing
	// of the device is left on it, so it is not hung up.
	idle := dial(t, s.cfg.Socket)
	if _, err := idle.OpenSession(goneBDF, SessionOptions{Queues: 9, PoolBytes: 4096}); err == nil {
		t.Fatal("a session over the queue quota was granted")
	}
	if gone.queuesInUse() != 2 || len(gone.space.Ledger().Live()) != 1 {
		t.Fatalf("before: %d queues, %d windows on %s", gone.queuesInUse(), len(gone.space.Ledger().Live()), goneBDF)
	}

	const why = "the kernel asked for it back"
	if err := s.Retire(goneBDF, why); err != nil {
		t.Fatal(err)
	}
	if !gone.isClosed() || kept.isClosed() {
		t.Fatalf("after Retire: %s closed %v, %s closed %v", goneBDF, gone.isClosed(), keptBDF, kept.isClosed())
	}
	if gone.queuesInUse() != 0 || len(gone.space.Ledger().Live()) != 0 {
		t.Errorf("after Retire: %d queues, %d IOVA windows left on %s", gone.queuesInUse(), len(gone.space.Ledger().Live()), goneBDF)
	}
	select {
	case <-goneClient.Done():
	case <-time.After(10 * time.Second): // bounds a hang
		t.Fatal("the retired device's client was not hung up")
	}
	if err := goneSession.Read(0, 1, 0, 1, 0); !errors.Is(err, ErrDisconnected) {
		t.Errorf("I/O on the retired device: %v, want ErrDisconnected", err)
	}
	for _, c := range []*Client{keptClient, idle, admin} {
		select {
		case <-c.Done():
			t.Fatal("a client of nothing on the retired device was hung up")
		default:
		}
	}
	if err := keptSession.Write(0, 1, 3, 1, 0); err != nil {
		t.Fatalf("I/O on the other device: %v", err)
	}

	info := deviceInfo(t, admin, goneBDF)
	if info.Failed != why || info.FreeQueues != 0 {
		t.Errorf("the retired device listed as %+v", info)
	}
	if info := deviceInfo(t, admin, keptBDF); info.Failed != "" || info.FreeQueues != 7 {
		t.Errorf("the other device listed as %+v", info)
	}
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), why) {
			t.Errorf("%s of the retired device: %v, want ErrState saying why", what, err)
		}
	}
	_, err = idle.OpenSession(goneBDF, SessionOptions{Queues: 1, PoolBytes: 4096})
	refused("an open", err)
	_, err = dial(t, s.cfg.Socket).OpenGrant(goneBDF, g.ID)
	refused("opening a grant", err)
	_, err = admin.Reserve(reserveReq("other", goneBDF, 1))
	refused("a reservation", err)
	_, err = admin.Reserve(exclusive("ex", goneBDF))
	refused("an exclusive reservation", err)
	if err := admin.Release("claim"); err != nil {
		t.Errorf("releasing a claim on the retired device: %v", err)
	}

	if err := s.Retire(goneBDF, "again"); err != nil {
		t.Errorf("retiring again: %v", err)
	}
	if info := deviceInfo(t, admin, goneBDF); info.Failed != why {
		t.Errorf("retiring again changed the reason to %q", info.Failed)
	}
	if err := s.Retire("0000:00:09.0", why); err == nil {
		t.Error("retiring a device the server does not serve succeeded")
	}
	if d, err := admin.Device("0000:00:09.0"); !errors.Is(err, ErrNoDevice) {
		t.Errorf("listing a device the server does not serve: %+v, %v; want ErrNoDevice", d, err)
	}
}

// TestRestore serves a retired device again: refused while it is served,
// for a device added without a way to open it again, and (keeping it
// retired) while opening fails; then it is opened anew, listed as served
// and takes sessions. Over the protocol only root may ask.
func TestRestore(t *testing.T) {
	const bdf, plainBDF = "0000:00:04.0", "0000:00:03.0"
	l := newLender(t, bdf)
	s := startLending(t, l, fake(t, plainBDF, 4))
	if err := s.Restore(bdf); err == nil || !strings.Contains(err.Error(), "not retired") {
		t.Fatalf("restoring a served device: %v", err)
	}
	if err := s.Retire(plainBDF, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(plainBDF); err == nil || !strings.Contains(err.Error(), "AddReopenable") {
		t.Errorf("restoring a device added without its options: %v", err)
	}
	if err := s.Retire(bdf, "gone"); err != nil {
		t.Fatal(err)
	}
	l.fail(errors.New("still bound to nvme"))
	if err := s.Restore(bdf); err == nil || !strings.Contains(err.Error(), "still bound to nvme") {
		t.Fatalf("restoring while opening fails: %v", err)
	}
	c := dial(t, s.cfg.Socket)
	if info := deviceInfo(t, c, bdf); info.Failed != "gone" {
		t.Fatalf("after a failed restore the device is listed as %+v, want still retired", info)
	}
	l.fail(nil)

	err := c.Restore(bdf)
	if os.Getuid() != 0 {
		if !errors.Is(err, ErrPermission) {
			t.Fatalf("a restore by uid %d: %v, want ErrPermission", os.Getuid(), err)
		}
		err = s.Restore(bdf)
	}
	if err != nil {
		t.Fatal(err)
	}
	if dev, n := l.current(); n != 2 || dev.isClosed() {
		t.Fatalf("restored: %d opened, the last closed %v; want 2, open", n, dev.isClosed())
	}
	if info := deviceInfo(t, c, bdf); info.Failed != "" || info.FreeQueues != 4 {
		t.Errorf("the restored device listed as %+v", info)
	}
	sess, err := c.OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Write(0, 1, 0, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Restore("0000:00:09.0"); !errors.Is(err, ErrNoDevice) && !errors.Is(err, ErrPermission) {
		t.Errorf("restoring a device the broker does not serve: %v", err)
	}
}
