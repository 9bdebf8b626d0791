package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/umdkit/umd"
)

// Exclusive reservations lend a whole device to a claim: the broker stops
// serving it and closes everything it held of it (queues, interrupts, BAR
// mappings, the VFIO device, group and container descriptors:
// umd.Device.Close), so that another process (the claim's container) can
// open it with umd.Open. Releasing the claim opens it again with the
// options the broker first opened it with, and serves it again.
//
// A device is lent only when nothing of it is in use: no session (nor one
// being opened), no reservation of any other claim, no VFs leased through
// it. While lent, opens and reservations of it fail with ErrState, and the
// device list shows the claim (DeviceInfo.Lent). If opening it again fails
// (another process still holds it, say), the device is shown as failed
// (DeviceInfo.Failed) and serves nothing; an exclusive reservation of a
// failed device is allowed (nothing is open to close), and its release
// tries to open it again.
//
// A simulated device has nothing to hand over: lending it is the same
// bookkeeping, and its software controller stays as it is (data included)
// until the claim is released.

// reopenTimeout bounds opening a device again after a lend.
const reopenTimeout = time.Minute

// reopener opens a device again after a lend: umd.Open with the options it
// was first opened with, for a device added by AddReopenable.
type reopener func(ctx context.Context) (backend, error)

// AddReopenable is AddDevice for a device the caller opened with
// umd.Open(ctx, d.BDF(), o): knowing how to open it again, the server may
// lend it to an exclusive reservation. Lending closes d; releasing the
// reservation opens the device anew (a new *umd.Device the server keeps),
// so the caller must not use d after it adds it, except to set up what the
// server serves before Serve (sriov.Enable; a device whose VFs the server
// leases is never lent).
func (s *Server) AddReopenable(ctx context.Context, d *umd.Device, o *umd.Options, a Access) error {
	b, err := newUMDBackend(ctx, d)
	if err != nil {
		return err
	}
	bdf := d.BDF()
	var opts *umd.Options
	if o != nil {
		copied := *o
		opts = &copied
	}
	reopen := func(ctx context.Context) (backend, error) {
		dev, err := umd.Open(ctx, bdf, opts)
		if err != nil {
			return nil, err
		}
		b, err := newUMDBackend(ctx, dev)
		if err != nil {
			return nil, errors.Join(err, dev.Close())
		}
		return b, nil
	}
	return s.addReopenable(b, a, reopen)
}

// addReopenable registers a backend the server may close for an exclusive
// reservation and open again with reopen.
func (s *Server) addReopenable(b backend, a Access, reopen reopener) error {
	if err := s.add(b, a); err != nil {
		return err
	}
	s.mu.Lock()
	s.devices[b.info().BDF].reopen = reopen
	s.mu.Unlock()
	return nil
}

// unavailable returns the ErrState a request meets on a device that is not
// being served (lent, being closed or reopened, failed); nil when served.
// Call with s.mu held.
func (d *served) unavailable(op string) *Error {
	switch {
	case d.retired != "":
		return errorf(CodeState, "%s: %s is served no more: %s", op, d.info.BDF, d.retired)
	case d.moving:
		return errorf(CodeState, "%s: %s is being handed over (closed for, or reopened after, an exclusive claim)", op, d.info.BDF)
	case d.lentTo != "":
		return errorf(CodeState, "%s: %s is lent to claim %s (exclusive); it is served again when the claim is released", op, d.info.BDF, d.lentTo)
	case d.failed != "":
		return errorf(CodeState, "%s: %s failed: %s", op, d.info.BDF, d.failed)
	}
	return nil
}

// reserveExclusive lends the device to the claim (see the top of this
// file), or returns the grant the claim already holds there.
func (c *conn) reserveExclusive(want Reservation) (*Grant, *Error) {
	s := c.s
	s.mu.Lock()
	d, ok := s.devices[want.Device]
	if !ok {
		s.mu.Unlock()
		return nil, errorf(CodeNoDevice, "reserve: the broker serves no device %q", want.Device)
	}
	// By device alone, not (device, name): an exclusive reservation is
	// the whole device, so the claim holds nothing else of it.
	if i := slices.IndexFunc(s.claims[want.Claim], func(r *reservation) bool { return r.Device == want.Device }); i >= 0 {
		have := s.claims[want.Claim][i]
		s.mu.Unlock()
		return heldAgain(have, want)
	}
	if e := s.lendable(d); e != nil {
		s.mu.Unlock()
		return nil, e
	}
	id, err := newGrantID()
	if err != nil {
		s.mu.Unlock()
		return nil, errorf(CodeDevice, "reserve: %v", err)
	}
	r := &reservation{Reservation: want, id: id, dev: d}
	s.grants[id] = r
	s.claims[want.Claim] = append(s.claims[want.Claim], r)
	d.lentTo, d.failed = want.Claim, ""
	b := d.b
	closeIt := b != nil && !isSimulated(b)
	if closeIt {
		d.moving = true
	}
	s.mu.Unlock()
	if !closeIt {
		return &Grant{ID: id, Claim: want.Claim, Device: want.Device}, nil
	}
	err = b.close()
	s.mu.Lock()
	defer s.mu.Unlock()
	d.moving, d.b = false, nil
	if err != nil {
		// Half closed: neither served nor surely free. Undo the
		// reservation and say so; a release of a later exclusive
		// reservation tries to open it again.
		d.lentTo, d.failed = "", "closing it for claim "+want.Claim+": "+err.Error()
		delete(s.grants, id)
		s.claims[want.Claim] = slices.DeleteFunc(s.claims[want.Claim], func(x *reservation) bool { return x == r })
		if len(s.claims[want.Claim]) == 0 {
			delete(s.claims, want.Claim)
		}
		return nil, errorf(CodeDevice, "reserve: closing %s for claim %s: %v", want.Device, want.Claim, err)
	}
	return &Grant{ID: id, Claim: want.Claim, Device: want.Device}, nil
}

// lendable returns why d cannot be lent now, naming what holds it; nil if
// it can. Call with s.mu held.
func (s *Server) lendable(d *served) *Error {
	bdf := d.info.BDF
	if d.retired != "" || d.moving || d.lentTo != "" {
		return d.unavailable("reserve")
	}
	if s.vfPools[bdf] != nil {
		return errorf(CodeState, "reserve: the broker leases the VFs of %s; a physical function whose VFs it serves is not lent exclusive", bdf)
	}
	if d.b != nil && !isSimulated(d.b) && d.reopen == nil {
		return errorf(CodeState, "reserve: %s was added without the options to open it again (AddDevice, not AddReopenable); it cannot be lent exclusive", bdf)
	}
	var holders []string
	for claim, rs := range s.claims {
		if slices.ContainsFunc(rs, func(r *reservation) bool { return r.dev == d }) {
			holders = append(holders, "claim "+claim)
		}
	}
	slices.Sort(holders)
	if d.held > 0 || len(holders) > 0 {
		for _, c := range s.conns {
			if c.sessionOn(d) {
				holders = append(holders, fmt.Sprintf("client %d (pid %d)", c.id, c.cred.Pid))
			}
		}
		if len(holders) == 0 {
			holders = append(holders, "a session being opened or closed")
		}
		return errorf(CodeState, "reserve: %s is in use (%s); exclusive use needs it free of sessions and other reservations", bdf, strings.Join(holders, ", "))
	}
	return nil
}

// sessionOn reports whether the connection has a session on d. It takes
// c.mu under the caller's s.mu; nothing takes s.mu under c.mu.
func (c *conn) sessionOn(d *served) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess != nil && c.sess.dev == d
}

// giveBack serves d again after the exclusive reservation r is released:
// a simulated device at once, a closed one once opened again. If opening
// fails the device is marked failed with the reason, which is returned.
func (s *Server) giveBack(r *reservation) error {
	d := r.dev
	s.mu.Lock()
	if d.lentTo != r.Claim {
		s.mu.Unlock()
		return nil
	}
	if d.b != nil || d.retired != "" {
		d.lentTo = ""
		s.mu.Unlock()
		return nil
	}
	if d.reopen == nil {
		d.lentTo, d.failed = "", "closed for claim "+r.Claim+", and the broker cannot open it again"
		s.mu.Unlock()
		return fmt.Errorf("opening %s again after claim %s: the broker has no way to", d.info.BDF, r.Claim)
	}
	d.moving = true
	s.mu.Unlock()
	b, err := s.reopenBackend(d)
	s.mu.Lock()
	d.moving, d.lentTo = false, ""
	switch {
	case err != nil:
		d.failed = "opening it again after claim " + r.Claim + ": " + err.Error()
		s.mu.Unlock()
		return fmt.Errorf("opening %s again after claim %s: %w", d.info.BDF, r.Claim, err)
	case d.retired != "" || s.closed:
		// Retired, or the server closed, while it was being opened
		// again: not served.
		s.mu.Unlock()
		return b.close()
	}
	s.serveAgain(d, b)
	s.mu.Unlock()
	return nil
}

// reopenBackend opens d again with its reopener, bounded by
// reopenTimeout. The caller has set d.moving under s.mu.
func (s *Server) reopenBackend(d *served) (backend, error) {
	ctx, cancel := context.WithTimeout(context.Background(), reopenTimeout)
	defer cancel()
	return d.reopen(ctx)
}

// serveAgain serves d with b, opened again. Call with s.mu held.
func (s *Server) serveAgain(d *served, b backend) {
	d.b, d.failed = b, ""
	s.watch(b)
	info := b.info()
	info.BDF = d.info.BDF
	d.info = info
}
