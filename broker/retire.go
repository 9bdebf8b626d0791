package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/umdkit/umd/nvmelike"
)

// A device leaves the server while the server goes on serving the others:
// the kernel asks for it back (an unbind from vfio-pci, a hot removal,
// which wait until every descriptor of it is closed) and whoever runs the
// server retires it. Retiring hangs up every client that holds something
// of the device (they see ErrDisconnected and Client.Done, as when the
// broker stops), releases what they held, disables the VFs the server
// leased of it and closes the device. It stays in the device list,
// failed, with the reason; opens and reservations of it are refused, and
// the reservations already made of it stay until their claims are
// released. Restore serves it again, opened anew, once it is bound to
// vfio-pci again (umdd restore); its VFs are not enabled again.

// RemovalRequests yields the address of a served device the kernel has
// asked for back (umd.Device.RemovalRequested), which it then waits for
// until the device is closed. The server does not act on it by itself;
// whoever runs it decides: Retire the device (umdd does), or Close the
// whole server. A request waits until it is read or the device is closed.
func (s *Server) RemovalRequests() <-chan string { return s.removals }

// A Failure is a served device whose controller stopped working under the
// server: removed (Err matches nvmelike.ErrDeviceGone), fatal
// (ErrControllerFatal) or reset by something else, such as a reset through
// sysfs (ErrNotReady). The queues of its sessions are gone with it.
type Failure struct {
	BDF string
	Err error
}

// Failures yields each served device whose controller the server finds
// failed; it reads every served device's controller status (one register
// read) every nvmelike.CheckInterval, and reports a device once. As with
// RemovalRequests, the server does not act on it by itself: umdd retires
// the device and, unless it is gone, serves it again at once (Restore
// brings the controller up anew, a reset that clears a fatal status). A
// failure waits until it is read or the device is closed.
func (s *Server) Failures() <-chan Failure { return s.failures }

// watch passes b's removal request and its failure on to RemovalRequests
// and Failures until b is closed.
func (s *Server) watch(b backend) {
	bdf := b.info().BDF
	var removal <-chan struct{}
	var closed <-chan struct{}
	switch b := b.(type) {
	case *umdBackend:
		removal, closed = b.d.RemovalRequested(), b.closed
	case *simBackend:
		closed = b.closed
	default:
		return
	}
	go func() {
		tick := time.NewTicker(nvmelike.CheckInterval)
		defer tick.Stop()
		health := tick.C
		// A send case is live (non-nil) while its news waits to be read;
		// either waits without holding up the other.
		var removals chan<- string
		var failures chan<- Failure
		var failure Failure
		for {
			select {
			case <-removal:
				removal, removals = nil, s.removals // the request stays pending: pass it on once
			case removals <- bdf:
				removals = nil
			case <-health:
				if err := b.check(); err != nil {
					health, failures, failure = nil, s.failures, Failure{BDF: bdf, Err: err} // once
				}
			case failures <- failure:
				failures = nil
			case <-closed:
				return
			}
		}
	}()
}

// retireVFTimeout bounds disabling a retired device's VFs.
const retireVFTimeout = 30 * time.Second

// Retire stops serving the device at bdf for good, saying why in its
// listing (see the top of this file). It returns once the device is
// closed, or with what failed on the way; retiring it again does
// nothing, and a device the server does not serve is ErrNoDevice.
func (s *Server) Retire(bdf, why string) error {
	s.mu.Lock()
	d, ok := s.devices[bdf]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("retiring %s: %w (the broker does not serve it)", bdf, ErrNoDevice)
	}
	if d.retired != "" || s.closed {
		// Close closes it anyway.
		s.mu.Unlock()
		return nil
	}
	s.retiring.Add(1) // Close waits for the rest
	defer s.retiring.Done()
	if why == "" {
		why = "retired"
	}
	// From here on nothing new is admitted on it (unavailable), and
	// every admission made so far set c.on or holds a VF of it.
	d.retired = why
	var users []*conn
	for _, c := range s.conns {
		if c.on == d {
			users = append(users, c)
		}
	}
	pool := s.vfPools[bdf]
	if pool != nil {
		delete(s.vfPools, bdf)
		for _, id := range pool.held {
			if c := s.conns[id]; id != 0 && c != nil && !slices.Contains(users, c) {
				users = append(users, c)
			}
		}
	}
	s.mu.Unlock()

	// A request in progress on such a connection finishes first (its
	// session or lease is then complete); release frees it.
	for _, c := range users {
		c.uc.Close()
		c.release()
	}
	var errs []error
	if pool != nil {
		ctx, cancel := context.WithTimeout(context.Background(), retireVFTimeout)
		if err := pool.pf.Disable(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	// A device being closed for, or opened again after, an exclusive
	// claim is left to that: either way it ends closed (giveBack sees
	// retired).
	var b backend
	s.mu.Lock()
	if !d.moving {
		b, d.b = d.b, nil
	}
	s.mu.Unlock()
	if b != nil {
		if err := b.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("retiring %s: %w", bdf, err)
	}
	return nil
}

// Restore serves a retired device again: it opens it anew with the
// options it was first opened with (a device added with AddReopenable)
// and clears its failure. Opening fails while the device is not bound to
// vfio-pci or something else holds it; it then stays retired, and
// Restore may be called again. VFs the server leased of it are not
// enabled again. A device the server does not serve is ErrNoDevice.
func (s *Server) Restore(bdf string) error {
	s.mu.Lock()
	d, ok := s.devices[bdf]
	var err error
	switch {
	case !ok:
		err = fmt.Errorf("%w (the broker does not serve it)", ErrNoDevice)
	case d.retired == "":
		err = fmt.Errorf("%s is not retired", bdf)
	case d.moving:
		err = fmt.Errorf("%s is being restored already", bdf)
	case d.lentTo != "":
		err = fmt.Errorf("%s is lent to claim %s; release the claim first", bdf, d.lentTo)
	case d.reopen == nil:
		err = fmt.Errorf("%s was added without the options to open it again (AddDevice, not AddReopenable)", bdf)
	}
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("restoring %s: %w", bdf, err)
	}
	d.moving = true
	s.mu.Unlock()
	b, err := s.reopenBackend(d)
	s.mu.Lock()
	d.moving = false
	switch {
	case err != nil:
		s.mu.Unlock()
		return fmt.Errorf("restoring %s: %w: %w", bdf, errReopen, err)
	case s.closed:
		s.mu.Unlock()
		return errors.Join(fmt.Errorf("restoring %s: the broker closed meanwhile", bdf), b.close())
	}
	d.retired = ""
	s.serveAgain(d, b)
	s.mu.Unlock()
	return nil
}

// errReopen marks a Restore that failed opening the device, not on a
// precondition.
var errReopen = errors.New("opening it again")

// restore is Restore for a client: root only, since it takes the device
// from whoever else might want it on vfio-pci.
func (c *conn) restore(bdf string) *Error {
	if c.cred.Uid != 0 {
		return errorf(CodePermission, "restore: uid %d may not restore devices (root only)", c.cred.Uid)
	}
	err := c.s.Restore(bdf)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNoDevice):
		return errorf(CodeNoDevice, "%v", err)
	case errors.Is(err, errReopen):
		return errorf(CodeDevice, "%v", err)
	}
	return errorf(CodeState, "%v", err)
}
