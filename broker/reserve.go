package broker

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Reservation is what a reserver (the DRA plugin, on behalf of a
// Kubernetes ResourceClaim) asks the broker to hold on one device for a
// claim, before the claim's client exists: the session that client will
// open with the grant.
//
// A claim holds one reservation per device and Name: reservations of one
// claim on one device under different names are independent, each with
// its grant, queue pairs and pool (the DRA driver names them after the
// shares of a controller, so that a claim may hold two shares of one).
// The unnamed reservation ("") is the claim's one reservation of the
// device when it needs no more.
type Reservation struct {
	Claim     string
	Device    string // the device's PCI address
	Name      string // optional: tells the claim's reservations of the device apart
	Mode      string // ModeMediated ("" too), ModeTrusted or ModeExclusive (the whole device: exclusive.go)
	Queues    int
	Depth     int
	PoolBytes int64
	Polled    bool
}

// Grant is the broker's answer to a reservation: ID is the capability a
// client presents (OpenGrant) to open a session with exactly the
// reserved resources.
type Grant struct {
	ID     string `json:"id"`
	Claim  string `json:"claim"`
	Device string `json:"device"`
}

// ReservationStatus is one reservation as a status shows it. The grant ID
// is not shown: it is the capability.
type ReservationStatus struct {
	Claim     string `json:"claim"`
	Device    string `json:"device"`
	Name      string `json:"name,omitempty"`
	Mode      string `json:"mode"`
	Queues    int    `json:"queues"`
	Depth     int    `json:"depth"`
	PoolBytes int64  `json:"pool_bytes"`
	Polled    bool   `json:"polled,omitempty"`
	// InUse: a session is open with the grant; Client is its connection.
	InUse  bool   `json:"in_use"`
	Client uint64 `json:"client,omitempty"`
}

// reservation is what the server holds for one (claim, device, name).
type reservation struct {
	Reservation
	id       string
	dev      *served
	poolSize int64 // PoolBytes rounded up to whole pool pages: what it holds
	user     *conn // the connection with a session open on it, if any
}

func (r *reservation) status() ReservationStatus {
	st := ReservationStatus{Claim: r.Claim, Device: r.Device, Name: r.Name, Mode: r.Mode, Queues: r.Queues, Depth: r.Depth, PoolBytes: r.PoolBytes, Polled: r.Polled}
	if r.user != nil {
		st.InUse, st.Client = true, r.user.id
	}
	return st
}

// request is the reserve request that asks for r.
func (r Reservation) request() *Request {
	return &Request{Op: OpReserve, Claim: r.Claim, Device: r.Device, Name: r.Name, Mode: r.Mode, Queues: r.Queues, Depth: r.Depth, PoolBytes: r.PoolBytes, Polled: r.Polled}
}

// what names the reservation in messages: "claim c on d", with the name
// when it has one ("claim c on d (name n)").
func (r Reservation) what() string {
	return "claim " + r.Claim + " on " + heldName(r)
}

// sameKey reports whether r and o are reservations of the same (claim,
// device, name): the claim holds at most one of them.
func (r Reservation) sameKey(o Reservation) bool {
	return r.Claim == o.Claim && r.Device == o.Device && r.Name == o.Name
}

// held returns the claim's reservation with want's key, if any. Call with
// s.mu held.
func (s *Server) held(want Reservation) *reservation {
	i := slices.IndexFunc(s.claims[want.Claim], func(r *reservation) bool { return r.sameKey(want) })
	if i < 0 {
		return nil
	}
	return s.claims[want.Claim][i]
}

// heldAgain answers a reservation the claim already holds under want's
// key: its grant when want asks the same, ErrState when it asks
// otherwise.
func heldAgain(have *reservation, want Reservation) (*Grant, *Error) {
	if have.Reservation != want {
		return nil, errorf(CodeState, "reserve: claim %s already holds %s with %s; release the claim before reserving it otherwise", want.Claim, heldName(want), describe(have.Reservation))
	}
	return &Grant{ID: have.id, Claim: have.Claim, Device: have.Device}, nil
}

// heldName is the device a reservation holds, with its name if any:
// "0000:03:00.0" or "0000:03:00.0 (name n)".
func heldName(r Reservation) string {
	if r.Name == "" {
		return r.Device
	}
	return r.Device + " (name " + r.Name + ")"
}

// validName accepts a reservation name: empty, or up to
// maxReservationName letters, digits, '-', '_' and '.'.
func validName(name string) *Error {
	if len(name) > maxReservationName {
		return errorf(CodeBadRequest, "reserve: name of %d bytes, at most %d", len(name), maxReservationName)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return errorf(CodeBadRequest, "reserve: name %q: only letters, digits, '-', '_' and '.' are allowed", name)
		}
	}
	return nil
}

// validClaim accepts a claim name of 1 to maxClaimName letters, digits,
// '-', '_' and '.': a Kubernetes UID, or a name usable in files and
// environment variables.
func validClaim(op, claim string) *Error {
	if claim == "" || len(claim) > maxClaimName {
		return errorf(CodeBadRequest, "%s: claim of %d bytes, must be 1 to %d", op, len(claim), maxClaimName)
	}
	for _, r := range claim {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return errorf(CodeBadRequest, "%s: claim %q: only letters, digits, '-', '_' and '.' are allowed", op, claim)
		}
	}
	return nil
}

// validGrant accepts what newGrantID makes: 2*grantBytes lower-case hex
// digits.
func validGrant(id string) *Error {
	if len(id) != 2*grantBytes {
		return errorf(CodeBadRequest, "open: grant of %d characters, a grant is %d hex digits", len(id), 2*grantBytes)
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return errorf(CodeBadRequest, "open: grant %q is not lower-case hex", id)
		}
	}
	return nil
}

func (r *Request) validateReserve() *Error {
	if e := validClaim("reserve", r.Claim); e != nil {
		return e
	}
	if e := validName(r.Name); e != nil {
		return e
	}
	switch {
	case r.Grant != "":
		return errorf(CodeBadRequest, "reserve: a grant is the broker's answer, not part of the request")
	case r.Mode == ModeExclusive:
		if r.Device == "" || len(r.Device) > maxDeviceName {
			return errorf(CodeBadRequest, "reserve: device name of %d bytes", len(r.Device))
		}
		if r.Queues != 0 || r.Depth != 0 || r.PoolBytes != 0 || r.Polled {
			return errorf(CodeBadRequest, "reserve: an exclusive reservation lends the whole device; queues, depth, pool_bytes and polled must be unset")
		}
		return nil
	}
	return r.validateSession("reserve", fmt.Sprintf("%q, %q or %q", ModeMediated, ModeTrusted, ModeExclusive))
}

// validateSession checks the fields that shape a session, for op (open,
// or reserve of one): the device's name, queue pairs, depth, pool size,
// and a mode of mediated ("" too) or trusted; modes is what the error
// offers.
func (r *Request) validateSession(op, modes string) *Error {
	switch {
	case r.Device == "" || len(r.Device) > maxDeviceName:
		return errorf(CodeBadRequest, "%s: device name of %d bytes", op, len(r.Device))
	case r.Queues < 1 || r.Queues > MaxQueuesPerSession:
		return errorf(CodeBadRequest, "%s: %d queue pairs, must be 1 to %d", op, r.Queues, MaxQueuesPerSession)
	case r.Depth < MinQueueDepth || r.Depth > MaxQueueDepth:
		return errorf(CodeBadRequest, "%s: depth %d, must be %d to %d", op, r.Depth, MinQueueDepth, MaxQueueDepth)
	case r.PoolBytes <= 0 || r.PoolBytes > MaxPoolBytes:
		return errorf(CodeBadRequest, "%s: pool of %d bytes, must be 1 to %d", op, r.PoolBytes, int64(MaxPoolBytes))
	case r.Mode != "" && r.Mode != ModeMediated && r.Mode != ModeTrusted:
		return errorf(CodeBadRequest, "%s: mode %q, must be %s", op, r.Mode, modes)
	}
	return nil
}

func (r *Request) validateGrantOpen() *Error {
	if e := validGrant(r.Grant); e != nil {
		return e
	}
	switch {
	case r.Device == "" || len(r.Device) > maxDeviceName:
		return errorf(CodeBadRequest, "open: device name of %d bytes", len(r.Device))
	case r.Queues != 0 || r.Depth != 0 || r.PoolBytes != 0 || r.Mode != "" || r.Polled || r.Claim != "" || r.Name != "":
		return errorf(CodeBadRequest, "open: a session opened by grant has the reservation's queues, depth, pool, mode and polling; none may be asked for, nor its claim or name")
	}
	return nil
}

// newGrantID returns grantBytes random bytes in hex.
func newGrantID() (string, error) {
	b := make([]byte, grantBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making a grant ID: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// mayReserve reports whether the peer may reserve and release.
func (s *Server) mayReserve(c *conn) bool { return slices.Contains(s.cfg.Reservers, c.cred.Uid) }

// reserve holds what req asks for on its device under its claim and
// name, or returns the grant the claim already holds there under that
// name for the same request.
func (c *conn) reserve(req *Request) (*Grant, *Error) {
	s := c.s
	if !s.mayReserve(c) {
		return nil, errorf(CodePermission, "reserve: uid %d may not reserve (reservers: %v)", c.cred.Uid, s.cfg.Reservers)
	}
	want := Reservation{Claim: req.Claim, Device: req.Device, Name: req.Name, Mode: req.Mode, Queues: req.Queues, Depth: req.Depth, PoolBytes: req.PoolBytes, Polled: req.Polled}
	if want.Mode == "" {
		want.Mode = ModeMediated
	}
	if want.Mode == ModeExclusive {
		return c.reserveExclusive(want)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[want.Device]
	if !ok {
		return nil, errorf(CodeNoDevice, "reserve: the broker serves no device %q", want.Device)
	}
	if have := s.held(want); have != nil {
		return heldAgain(have, want)
	}
	if e := d.unavailable("reserve"); e != nil {
		return nil, e
	}
	size, e := s.admit("reserve", d, want.Mode, want.Queues, want.PoolBytes)
	if e != nil {
		if want.Name != "" {
			e.Message += " (reserving name " + want.Name + ")"
		}
		return nil, e
	}
	if size > s.cfg.MaxReservedBytes-s.reservedBytes {
		return nil, errorf(CodeQuota, "reserve: a pool of %d bytes asked for %s, reservations hold %d of the broker's %d bytes", size, heldName(want), s.reservedBytes, s.cfg.MaxReservedBytes)
	}
	id, err := newGrantID()
	if err != nil {
		return nil, errorf(CodeDevice, "reserve: %v", err)
	}
	r := &reservation{Reservation: want, id: id, dev: d, poolSize: size}
	d.held += want.Queues
	s.reservedBytes += size
	s.grants[id] = r
	s.claims[want.Claim] = append(s.claims[want.Claim], r)
	return &Grant{ID: id, Claim: want.Claim, Device: want.Device}, nil
}

func describe(r Reservation) string {
	s := fmt.Sprintf("%s, %d queue pairs of depth %d, a %d-byte pool", r.Mode, r.Queues, r.Depth, r.PoolBytes)
	if r.Polled {
		s += ", polled"
	}
	return s
}

// releaseClaim ends every session opened with the claim's grants (as if
// their connections ended), then gives back what the claim held and
// forgets it; a device lent to the claim (exclusive) is opened and served
// again. An unknown claim is released already. The error, if any, is a
// lent device that did not open again (it is then shown as failed); the
// claim is released all the same.
func (c *conn) releaseClaim(claim string) *Error {
	s := c.s
	if !s.mayReserve(c) {
		return errorf(CodePermission, "release: uid %d may not release (reservers: %v)", c.cred.Uid, s.cfg.Reservers)
	}
	s.mu.Lock()
	rs := s.claims[claim]
	delete(s.claims, claim)
	var users []*conn
	for _, r := range rs {
		delete(s.grants, r.id)
		if r.user != nil && !slices.Contains(users, r.user) {
			users = append(users, r.user)
		}
	}
	s.mu.Unlock()
	for _, u := range users {
		// A reserver that opened the grant itself keeps its
		// connection; it is the one asking.
		u.endClaimSession(rs, u != c)
	}
	s.mu.Lock()
	for _, r := range rs {
		r.dev.held -= r.Queues
		s.reservedBytes -= r.poolSize
	}
	s.mu.Unlock()
	var errs []string
	for _, r := range rs {
		if r.Mode == ModeExclusive {
			if err := s.giveBack(r); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) > 0 {
		return errorf(CodeDevice, "release: claim %s released, but %s", claim, strings.Join(errs, "; "))
	}
	return nil
}

// endClaimSession ends the connection's session if it was opened by one
// of rs, as a disconnect would: with hangUp the connection is closed (the
// client sees ErrDisconnected), and the session is released here once the
// request the connection may be serving is done (opMu), so that nothing
// of it is in use.
func (c *conn) endClaimSession(rs []*reservation, hangUp bool) {
	if hangUp && c.uc != nil {
		c.uc.Close()
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	sess := c.sess
	if sess == nil || !slices.Contains(rs, sess.res) {
		c.mu.Unlock()
		return
	}
	c.sess = nil
	c.mu.Unlock()
	c.releaseSession(sess)
}

// Reservations returns every reservation the server holds, by claim,
// device and name.
func (s *Server) Reservations() []ReservationStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ReservationStatus
	for _, rs := range s.claims {
		for _, r := range rs {
			out = append(out, r.status())
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Claim != out[j].Claim {
			return out[i].Claim < out[j].Claim
		}
		if out[i].Device != out[j].Device {
			return out[i].Device < out[j].Device
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// reservationsFor is Reservations as peer c may see them: reservers and
// peers allowed on some device (allowed, from allowedSomewhere) see all,
// others none.
func (s *Server) reservationsFor(c *conn, allowed bool) []ReservationStatus {
	if allowed || s.mayReserve(c) {
		return s.Reservations()
	}
	return nil
}

// openGrant opens the session a reservation holds: the grant is the
// capability, so the device's allow-list is not asked. One session per
// grant at a time; after its connection ends the grant opens again.
func (c *conn) openGrant(req *Request) (*Layout, []int, *Error) {
	s := c.s
	s.mu.Lock()
	r, ok := s.grants[req.Grant]
	if !ok || r.Device != req.Device {
		s.mu.Unlock()
		return nil, nil, errorf(CodePermission, "open: no such grant on %s (released, or never made by this broker: an umdd restart forgets reservations)", req.Device)
	}
	if r.Mode == ModeExclusive {
		s.mu.Unlock()
		return nil, nil, errorf(CodeState, "open: the grant of %s is exclusive: the broker does not serve the device while it is lent; open it directly (umd.Open)", r.what())
	}
	if r.user != nil {
		s.mu.Unlock()
		return nil, nil, errorf(CodeState, "open: the grant of %s is in use by connection %d; one session per grant at a time", r.what(), r.user.id)
	}
	if e := r.dev.unavailable("open"); e != nil {
		s.mu.Unlock()
		return nil, nil, e
	}
	r.user, c.on = c, r.dev
	s.mu.Unlock()
	spec := sessionSpec{queues: r.Queues, depth: r.Depth, poolSize: r.poolSize, mode: r.Mode, polled: r.Polled}
	return c.build(r.dev, spec, 0, r)
}
