package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
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
// released. A retired device is not served again by this server.

// RemovalRequests yields the address of a served device the kernel has
// asked for back (umd.Device.RemovalRequested), which it then waits for
// until the device is closed. The server does not act on it by itself;
// whoever runs it decides: Retire the device (umdd does), or Close the
// whole server. A request waits until it is read or the device is closed.
func (s *Server) RemovalRequests() <-chan string { return s.removals }

// watchRemoval passes b's removal request on to RemovalRequests until b
// is closed.
func (s *Server) watchRemoval(b backend) {
	u, ok := b.(*umdBackend)
	if !ok {
		return
	}
	go func() {
		select {
		case <-u.d.RemovalRequested():
			select {
			case s.removals <- u.d.BDF():
			case <-u.closed:
			}
		case <-u.closed:
		}
	}()
}

// retireVFTimeout bounds disabling a retired device's VFs.
const retireVFTimeout = 30 * time.Second

// Retire stops serving the device at bdf for good, saying why in its
// listing (see the top of this file). It returns once the device is
// closed, or with what failed on the way; retiring it again does
// nothing.
func (s *Server) Retire(bdf, why string) error {
	s.mu.Lock()
	d, ok := s.devices[bdf]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("retiring %s: the broker serves no such device", bdf)
	}
	if d.retired != "" {
		s.mu.Unlock()
		return nil
	}
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
	s.mu.Lock()
	b := d.b
	if d.moving {
		// Being closed for, or opened again after, an exclusive claim:
		// whichever it is leaves it closed (giveBack sees retired).
		b = nil
	}
	if b != nil {
		d.b = nil
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
