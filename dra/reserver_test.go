package dra

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/broker/brokertest"
	"github.com/umdkit/umd/pcie"
)

// simBrokerFor runs a broker serving a software controller under each
// address, in this process, and returns it with its socket.
func simBrokerFor(t *testing.T, bdfs ...string) (*broker.Server, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "umdd.sock")
	s, err := broker.NewServer(broker.Config{Socket: sock, Reservers: []uint32{uint32(os.Getuid())}})
	if err != nil {
		t.Fatal(err)
	}
	for _, bdf := range bdfs {
		if err := s.AddSimulated(context.Background(), bdf, broker.SimOptions{Blocks: 1024}, broker.Access{DenyRoot: true}); err != nil {
			t.Fatal(err)
		}
	}
	brokertest.Serve(t, s)
	return s, sock
}

// TestBrokerReserver: parameters map onto umdd's reservation (completion
// poll as polled queue pairs), reserving is idempotent, vf reserves
// nothing at umdd, exclusive lends the device (refused while another
// claim holds it; nothing to do for a device umdd does not serve), and
// releasing frees everything, also when umdd is not running.
func TestBrokerReserver(t *testing.T) {
	srv, sock := simBrokerFor(t, "0000:03:00.0")
	r := NewBrokerReserver(sock)
	ctx := context.Background()
	params := Parameters{QueuePairs: 2, QueueDepth: 32, PoolBytes: 64 << 10, Completion: CompletionPoll, Mode: ModeMediated}
	res := Reservation{ClaimUID: uid, Device: "nvme-0000-03-00-0", BDF: pcie.BDF{Bus: 3}, Params: params}
	g, err := r.Reserve(ctx, res)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.ID) != 32 {
		t.Fatalf("grant %+v", g)
	}
	if again, err := r.Reserve(ctx, res); err != nil || again != g {
		t.Fatalf("reserving again: %+v, %v; want %+v", again, err, g)
	}
	held := srv.Reservations()
	want := broker.ReservationStatus{Claim: uid, Device: "0000:03:00.0", Mode: "mediated", Queues: 2, Depth: 32, PoolBytes: 64 << 10, Polled: true}
	if len(held) != 1 || held[0] != want {
		t.Fatalf("umdd holds %+v, want %+v", held, want)
	}
	// Other parameters for the same claim and device: umdd refuses.
	res2 := res
	res2.Params.QueuePairs = 3
	if _, err := r.Reserve(ctx, res2); !errors.Is(err, broker.ErrState) {
		t.Fatalf("reserving otherwise: %v, want broker.ErrState", err)
	}
	// Trusted is a broker session too, which a simulated device refuses.
	res2.Params.Mode = ModeTrusted
	res2.ClaimUID = "trusted-claim"
	if _, err := r.Reserve(ctx, res2); !errors.Is(err, broker.ErrState) || !strings.Contains(err.Error(), "simulated") {
		t.Fatalf("trusted on a simulated device: %v", err)
	}
	vf := res
	vf.ClaimUID, vf.Params.Mode = "other-vf", ModeVF
	if g, err := r.Reserve(ctx, vf); err != nil || g.ID != "" {
		t.Errorf("mode vf: %+v, %v; want no grant", g, err)
	}
	if n := len(srv.Reservations()); n != 1 {
		t.Fatalf("umdd holds %d reservations after a vf claim, want 1", n)
	}
	// Exclusive: refused while the mediated claim holds the device.
	ex := res
	ex.ClaimUID, ex.Params.Mode = "other-exclusive", ModeExclusive
	if _, err := r.Reserve(ctx, ex); !errors.Is(err, broker.ErrState) || !strings.Contains(err.Error(), "claim "+uid) {
		t.Errorf("exclusive over a mediated claim: %v, want broker.ErrState naming it", err)
	}
	for range 2 {
		if err := r.Release(ctx, uid); err != nil {
			t.Fatal(err)
		}
	}
	if held := srv.Reservations(); len(held) != 0 {
		t.Fatalf("after release: %+v", held)
	}
	// Now free, the device is lent: umdd shows it lent and holds the
	// claim; no grant reaches the container; again is the same.
	for range 2 {
		if g, err := r.Reserve(ctx, ex); err != nil || g.ID != "" {
			t.Fatalf("mode exclusive: %+v, %v; want no grant", g, err)
		}
	}
	held = srv.Reservations()
	if len(held) != 1 || held[0] != (broker.ReservationStatus{Claim: ex.ClaimUID, Device: "0000:03:00.0", Mode: broker.ModeExclusive}) {
		t.Fatalf("umdd holds %+v, want the exclusive claim", held)
	}
	if d := srv.Devices(0, 0); d[0].Lent != ex.ClaimUID {
		t.Fatalf("device %+v, want it lent to %s", d[0], ex.ClaimUID)
	}
	if err := r.Release(ctx, ex.ClaimUID); err != nil {
		t.Fatal(err)
	}
	if d := srv.Devices(0, 0); d[0].Lent != "" || len(srv.Reservations()) != 0 {
		t.Fatalf("after releasing the exclusive claim: %+v, %+v", d[0], srv.Reservations())
	}
	// A device umdd does not serve is the container's already.
	other := ex
	other.BDF = pcie.BDF{Bus: 9}
	if g, err := r.Reserve(ctx, other); err != nil || g.ID != "" {
		t.Errorf("exclusive on a device umdd does not serve: %+v, %v; want no grant, no error", g, err)
	}
	down := NewBrokerReserver(filepath.Join(t.TempDir(), "none.sock"))
	if err := down.Release(ctx, uid); err != nil {
		t.Errorf("release with no umdd: %v, want nil (nothing is held)", err)
	}
	if _, err := down.Reserve(ctx, res); err == nil {
		t.Error("reserve with no umdd succeeded")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.Reserve(cancelled, res); !errors.Is(err, context.Canceled) {
		t.Errorf("reserve with a cancelled context: %v", err)
	}
}

// TestPrepareWithBroker prepares a claim through umdd: the CDI spec's
// environment, read as the container reads it (broker.ClaimFromEnv),
// opens the reservations by grant for I/O, and unpreparing ends those
// sessions and frees everything at umdd.
func TestPrepareWithBroker(t *testing.T) {
	inv, err := cardsInventory()
	if err != nil {
		t.Fatal(err)
	}
	srv, sock := simBrokerFor(t, "0000:03:00.0", "0000:04:00.0")
	dir := t.TempDir()
	p, err := NewPreparer(PreparerConfig{
		StateDir: filepath.Join(dir, "state"), CDIDir: filepath.Join(dir, "cdi"),
		Socket: sock, Inventory: inv, Reserver: NewBrokerReserver(sock),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	params := DefaultParameters()
	params.QueuePairs, params.PoolBytes = 2, 1<<20
	prep, err := p.Prepare(ctx, uid, pair, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(srv.Reservations()) != 2 {
		t.Fatalf("umdd holds %+v", srv.Reservations())
	}
	spec := readSpec(t, prep.CDISpec)
	env := slices.Clone(spec.ContainerEdits.Env)
	for _, d := range spec.Devices {
		env = append(env, d.ContainerEdits.Env...)
	}
	// In the container the socket is bind-mounted; here it is where it is.
	for i, kv := range env {
		if strings.HasPrefix(kv, EnvSocket+"=") {
			env[i] = EnvSocket + "=" + sock
		}
	}
	ce, err := broker.ClaimFromEnv(env)
	if err != nil {
		t.Fatal(err)
	}
	if ce.Claim != uid || ce.Mode != ModeMediated || len(ce.Devices) != 2 || ce.Devices[0].BDF != "0000:03:00.0" {
		t.Fatalf("claim env %+v", ce)
	}
	var clients []*broker.Client
	for _, d := range ce.Devices {
		c, err := broker.Dial(ce.Socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
		sess, err := c.OpenGrant(d.BDF, d.Grant)
		if err != nil {
			t.Fatalf("opening %s by grant: %v", d.BDF, err)
		}
		if len(sess.Layout.Queues) != 2 || sess.Layout.PoolBytes != 1<<20 || len(sess.Interrupts) != 2 {
			t.Fatalf("layout %+v", sess.Layout)
		}
		copy(sess.Pool.Bytes(), d.BDF)
		if err := sess.Write(1, 1, 5, 1, 0); err != nil {
			t.Fatal(err)
		}
		if err := sess.Read(0, 1, 5, 1, 4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(sess.Pool.Bytes()[4096:], []byte(d.BDF)) {
			t.Fatal("read back differs")
		}
	}
	unprepareReleases(t, p, srv, clients)
}

// TestBrokerReservationName: a share is reserved at umdd on its
// controller's address under the share's name; a whole device (and an
// exclusive one) under no name, as before names.
func TestBrokerReservationName(t *testing.T) {
	bdf := pcie.BDF{Bus: 3}
	params := DefaultParameters()
	for _, tc := range []struct {
		device, mode, want string
	}{
		{"nvme-0000-03-00-0", ModeMediated, ""},
		{"nvme-0000-03-00-0", ModeExclusive, ""},
		{ShareName("nvme-0000-03-00-0", 2), ModeMediated, "nvme-0000-03-00-0-share-2"},
		{ShareName("nvme-0000-03-00-0", 0), ModeTrusted, "nvme-0000-03-00-0-share-0"},
	} {
		p := params
		p.Mode = tc.mode
		br, ok := BrokerReservation(Reservation{ClaimUID: uid, Device: tc.device, BDF: bdf, Params: p})
		if !ok || br.Name != tc.want || br.Device != "0000:03:00.0" || br.Claim != uid {
			t.Errorf("%s (%s): %+v, %v; want name %q on 0000:03:00.0", tc.device, tc.mode, br, ok, tc.want)
		}
	}
}

// TestPrepareSharesWithBroker prepares a claim holding two shares of one
// controller through umdd: two reservations of the controller, one per
// share, with a grant each; the container opens both at once, each
// session with its own queue pairs, on one device; unpreparing ends both
// and frees everything.
func TestPrepareSharesWithBroker(t *testing.T) {
	srv, sock := simBrokerFor(t, "0000:03:00.0")
	dir := t.TempDir()
	p, err := NewPreparer(PreparerConfig{
		StateDir: filepath.Join(dir, "state"), CDIDir: filepath.Join(dir, "cdi"),
		Socket: sock, Inventory: cardsShares(t), Reserver: NewBrokerReserver(sock),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	params := DefaultParameters()
	params.QueuePairs, params.PoolBytes = 2, 1<<20
	shares := []string{ShareName("nvme-0000-03-00-0", 1), ShareName("nvme-0000-03-00-0", 2)}
	prep, err := p.Prepare(ctx, uid, shares, params)
	if err != nil {
		t.Fatal(err)
	}
	held := srv.Reservations()
	if len(held) != 2 || held[0].Name != shares[0] || held[1].Name != shares[1] || held[0].Device != "0000:03:00.0" || held[1].Device != "0000:03:00.0" {
		t.Fatalf("umdd holds %+v, want a reservation of 0000:03:00.0 per share", held)
	}
	if len(prep.Devices) != 2 || prep.Devices[0].Grant == prep.Devices[1].Grant {
		t.Fatalf("prepared %+v, want two grants", prep.Devices)
	}
	// Again (a kubelet retry): the same grants, nothing more at umdd.
	if again, err := p.Prepare(ctx, uid, shares, params); err != nil || !slices.Equal(again.Devices, prep.Devices) || len(srv.Reservations()) != 2 {
		t.Fatalf("preparing again: %+v, %v; umdd holds %+v", again, err, srv.Reservations())
	}
	spec := readSpec(t, prep.CDISpec)
	env := []string{EnvSocket + "=" + sock}
	for _, kv := range spec.ContainerEdits.Env {
		if !strings.HasPrefix(kv, EnvSocket+"=") {
			env = append(env, kv)
		}
	}
	for _, d := range spec.Devices {
		env = append(env, d.ContainerEdits.Env...)
	}
	ce, err := broker.ClaimFromEnv(env)
	if err != nil {
		t.Fatal(err)
	}
	if len(ce.Devices) != 2 || ce.Devices[0].BDF != "0000:03:00.0" || ce.Devices[1].BDF != "0000:03:00.0" {
		t.Fatalf("claim env %+v", ce)
	}
	var clients []*broker.Client
	var sessions []*broker.Session
	for _, d := range ce.Devices {
		c, err := broker.Dial(ce.Socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sess, err := c.OpenGrant(d.BDF, d.Grant)
		if err != nil {
			t.Fatalf("opening %s by grant: %v", d.Var, err)
		}
		if len(sess.Layout.Queues) != 2 {
			t.Fatalf("layout %+v", sess.Layout)
		}
		clients, sessions = append(clients, c), append(sessions, sess)
	}
	if q0, q1 := sessions[0].Layout.Queues, sessions[1].Layout.Queues; q0[0].ID == q1[0].ID || q0[0].ID == q1[1].ID || q0[1].ID == q1[0].ID || q0[1].ID == q1[1].ID {
		t.Fatalf("the shares' sessions share queue pairs: %+v and %+v", q0, q1)
	}
	if d := srv.Devices(0, 0); d[0].FreeQueues != d[0].MaxQueues-4 {
		t.Fatalf("%d of %d queue pairs free with both shares open, want 4 held", d[0].FreeQueues, d[0].MaxQueues)
	}
	copy(sessions[0].Pool.Bytes(), "first share")
	if err := sessions[0].Write(1, 1, 5, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := sessions[1].Read(0, 1, 5, 1, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(sessions[1].Pool.Bytes(), []byte("first share")) {
		t.Fatal("the second share does not read what the first wrote on their controller")
	}
	unprepareReleases(t, p, srv, clients)
}

// unprepareReleases unprepares the claim uid and checks that umdd let go
// of everything it gave: no reservation left, the clients' sessions ended,
// every queue pair of every device free again.
func unprepareReleases(t *testing.T, p *Preparer, srv *broker.Server, clients []*broker.Client) {
	t.Helper()
	if err := p.Unprepare(context.Background(), uid); err != nil {
		t.Fatal(err)
	}
	if held := srv.Reservations(); len(held) != 0 {
		t.Fatalf("after unprepare umdd holds %+v", held)
	}
	for _, c := range clients {
		<-c.Done() // the sessions were ended
	}
	for _, d := range srv.Devices(0, 0) {
		if d.FreeQueues != d.MaxQueues {
			t.Errorf("%s: %d of %d queue pairs free after unprepare", d.BDF, d.FreeQueues, d.MaxQueues)
		}
	}
}
