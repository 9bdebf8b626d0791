package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/dmabuf"
	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
)

// Config configures a Server.
type Config struct {
	// Socket is the path of the unix socket to listen on. An existing
	// socket file there is replaced.
	Socket string
	// Mode is the socket file's permission bits; 0 means 0660.
	Mode os.FileMode
	// MaxQueuePairs is the most queue pairs one client may hold; 0 means 4.
	MaxQueuePairs int
	// MaxPoolBytes is the largest pool one client may have; 0 means 64 MiB.
	MaxPoolBytes int64
	// PoolPageSize is the page size of client pools; 0 means 2 MiB
	// hugepages.
	PoolPageSize int
	// IOTimeout bounds each mediated command; 0 means 30 s.
	IOTimeout time.Duration
	// MaxClients bounds the connections served at once; 0 means 64.
	// Further connections are closed at once.
	MaxClients int
	// Reservers are the uids that may reserve resources under a claim
	// and release them (reserve.go); nil means root only. Opening a
	// reservation takes its grant, not a uid.
	Reservers []uint32
	// MaxReservedBytes bounds the pool bytes all reservations together
	// hold; 0 means 1 GiB.
	MaxReservedBytes int64
}

// Access is a device's allow-list. A peer may use the device if its uid is
// in UIDs or its gid in GIDs, or it is root and DenyRoot is not set.
type Access struct {
	UIDs     []uint32
	GIDs     []uint32
	DenyRoot bool
	// Trusted lets the peers allowed here open trusted sessions: they get
	// the device's VFIO descriptor and drive their queue pairs
	// themselves, with nothing between them and the device.
	Trusted bool
}

// allows reports whether a peer with these credentials may use the
// device: its uid, its primary gid (SO_PEERCRED) or one of its
// supplementary groups (SO_PEERGROUPS), all as the kernel recorded them
// when it connected.
func (a Access) allows(uid, gid uint32, groups ...uint32) bool {
	if uid == 0 && !a.DenyRoot {
		return true
	}
	if slices.Contains(a.UIDs, uid) || slices.Contains(a.GIDs, gid) {
		return true
	}
	return slices.ContainsFunc(groups, func(g uint32) bool { return slices.Contains(a.GIDs, g) })
}

// writeTimeout bounds how long a response may wait for the client to
// read it; a client that stalls longer is dropped.
const writeTimeout = 10 * time.Second

// Server owns devices and serves clients on a unix socket. Each client
// connection may open one session on one device: its own hugepage pool,
// mapped into the device's IOMMU domain at an IOVA window recorded in the
// device's ledger under the connection's id, and its own I/O queue pairs,
// each with an MSI-X vector and eventfd. Everything a session holds is
// released when its connection closes, however the client ended.
type Server struct {
	cfg Config
	ln  *net.UnixListener

	mu      sync.Mutex
	devices map[string]*served
	order   []string
	conns   map[uint64]*conn
	vfPools map[string]*vfPool // by PF address (vf.go)
	// Reservations (reserve.go): by grant ID and by claim; the pool
	// bytes they hold.
	grants        map[string]*reservation
	claims        map[string][]*reservation
	reservedBytes int64
	nextID        uint64
	closed        bool
	wg            sync.WaitGroup
	retiring      sync.WaitGroup // Retires in progress
	removals      chan string    // RemovalRequests
	failures      chan Failure   // Failures
}

type served struct {
	b      backend // nil while closed (lent, or failed)
	access Access
	info   DeviceInfo
	held   int // queue pairs held by clients
	// Exclusive reservations (exclusive.go): how to open the device
	// again (nil: it cannot be lent), the claim it is lent to, whether
	// it is being closed or reopened, and why reopening it failed.
	reopen reopener
	lentTo string
	moving bool
	failed string
	// retired says why the device is served no more (Retire); it stays
	// listed, as failed.
	retired string
}

// NewServer makes a server for no devices yet; Add them, then Serve.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Socket == "" {
		return nil, errors.New("making a broker: no socket path")
	}
	if cfg.Mode == 0 {
		cfg.Mode = 0o660
	}
	if cfg.Mode&^os.ModePerm != 0 {
		return nil, fmt.Errorf("making a broker: socket mode %v has bits beyond permissions", cfg.Mode)
	}
	if cfg.MaxQueuePairs <= 0 {
		cfg.MaxQueuePairs = 4
	}
	cfg.MaxQueuePairs = min(cfg.MaxQueuePairs, MaxQueuesPerSession)
	if cfg.MaxPoolBytes <= 0 {
		cfg.MaxPoolBytes = 64 << 20
	}
	if cfg.PoolPageSize == 0 {
		cfg.PoolPageSize = 2 << 20
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 64
	}
	if cfg.IOTimeout <= 0 {
		cfg.IOTimeout = 30 * time.Second
	}
	if cfg.Reservers == nil {
		cfg.Reservers = []uint32{0}
	}
	if cfg.MaxReservedBytes <= 0 {
		cfg.MaxReservedBytes = 1 << 30
	}
	return &Server{
		cfg: cfg, devices: map[string]*served{}, conns: map[uint64]*conn{}, vfPools: map[string]*vfPool{},
		grants: map[string]*reservation{}, claims: map[string][]*reservation{}, removals: make(chan string),
		failures: make(chan Failure),
	}, nil
}

// add registers a device backend under its BDF.
func (s *Server) add(b backend, a Access) error {
	info := b.info()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.devices[info.BDF]; dup {
		return fmt.Errorf("adding %s to the broker: already served", info.BDF)
	}
	s.devices[info.BDF] = &served{b: b, access: a, info: info}
	s.order = append(s.order, info.BDF)
	s.watch(b)
	return nil
}

// Listen creates the socket (replacing a stale one) with the configured
// mode. Serve accepts on it.
func (s *Server) Listen() error {
	if fi, err := os.Lstat(s.cfg.Socket); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("listening on %s: exists and is not a socket", s.cfg.Socket)
		}
		if c, err := net.Dial("unix", s.cfg.Socket); err == nil {
			c.Close()
			return fmt.Errorf("listening on %s: another broker answers there", s.cfg.Socket)
		}
		if err := os.Remove(s.cfg.Socket); err != nil {
			return fmt.Errorf("listening on %s: removing the stale socket: %w", s.cfg.Socket, err)
		}
	}
	// The socket is created with the process's umask applied and then
	// chmod'ed to the configured mode. A peer that connects in between
	// still meets the allow-list when it opens a session, and sees only
	// its own entry in a status.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.cfg.Socket, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.cfg.Socket, err)
	}
	if err := os.Chmod(s.cfg.Socket, s.cfg.Mode); err != nil {
		ln.Close()
		return fmt.Errorf("listening on %s: %w", s.cfg.Socket, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	return nil
}

// Serve accepts clients until Close. It returns nil after Close.
func (s *Server) Serve() error {
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln == nil {
		return errors.New("serving: Listen first")
	}
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) {
				// Out of descriptors or memory for now: the
				// connection waits in the backlog; try again soon.
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accepting on %s: %w", s.cfg.Socket, err)
		}
		s.handle(uc)
	}
}

// handle starts serving one connection.
func (s *Server) handle(uc *net.UnixConn) {
	cred, err := peerCred(uc)
	if err != nil {
		uc.Close()
		return
	}
	// Without SO_PEERGROUPS (before Linux 4.13) only the primary gid
	// counts.
	groups, _ := peerGroups(uc)
	s.mu.Lock()
	if s.closed || len(s.conns) >= s.cfg.MaxClients {
		s.mu.Unlock()
		uc.Close()
		return
	}
	s.nextID++
	c := &conn{s: s, uc: uc, id: s.nextID, cred: *cred, groups: groups}
	s.conns[c.id] = c
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		c.serve()
	}()
}

// peerCred returns the credentials of the process at the other end of uc
// as the kernel recorded them at connect (SO_PEERCRED).
func peerCred(uc *net.UnixConn) (*unix.Ucred, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("reading peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("reading peer credentials: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("reading peer credentials: %w", os.NewSyscallError("getsockopt SO_PEERCRED", serr))
	}
	return cred, nil
}

// Status returns what every connected client holds, by connection id.
func (s *Server) Status() []ClientStatus {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	out := make([]ClientStatus, 0, len(conns))
	for _, c := range conns {
		out = append(out, c.status())
	}
	slices.SortFunc(out, func(a, b ClientStatus) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// statusFor is Status as peer c may see it: everything for a peer allowed
// on some device (allowed, from allowedSomewhere), only its own connection
// for others.
func (s *Server) statusFor(c *conn, allowed bool) []ClientStatus {
	all := s.Status()
	if allowed {
		return all
	}
	return slices.DeleteFunc(all, func(st ClientStatus) bool { return st.ID != c.id })
}

// allowedSomewhere reports whether peer c may open sessions on some
// served device (root may, unless denied).
func (s *Server) allowedSomewhere(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.order, func(bdf string) bool {
		return s.devices[bdf].access.allows(c.cred.Uid, c.cred.Gid, c.groups...)
	})
}

// Devices describes the served devices as a peer with uid and gid sees
// them.
func (s *Server) Devices(uid, gid uint32) []DeviceInfo { return s.devices4(uid, gid, nil) }

// devices4 is Devices for a peer with supplementary groups too.
func (s *Server) devices4(uid, gid uint32, groups []uint32) []DeviceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeviceInfo, 0, len(s.order))
	for _, bdf := range s.order {
		d := s.devices[bdf]
		info := d.info
		info.Namespaces = slices.Clone(info.Namespaces)
		info.FreeQueues = info.MaxQueues - d.held
		info.Lent, info.Failed = d.lentTo, d.failed
		if d.retired != "" {
			info.Failed = d.retired
		}
		if d.unavailable("") != nil {
			info.FreeQueues = 0
		}
		info.Allowed = d.access.allows(uid, gid, groups...)
		if p := s.vfPools[bdf]; p != nil {
			info.VFs = len(p.vfs)
			for _, h := range p.held {
				if h == 0 {
					info.FreeVFs++
				}
			}
		}
		out = append(out, info)
	}
	return out
}

// Start listens and serves in a goroutine of its own. stop closes s and
// waits for Serve to return, and reports an error of either. If s cannot
// listen, Start closes it and returns the error.
func (s *Server) Start() (stop func() error, err error) {
	if err := s.Listen(); err != nil {
		s.Close()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	return func() error {
		cerr := s.Close()
		if serr := <-done; serr != nil {
			return errors.Join(cerr, fmt.Errorf("serve: %w", serr))
		}
		return cerr
	}, nil
}

// Close stops accepting, drops every client (releasing what each held)
// and closes every device. It is safe to call twice.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ln := s.ln
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var errs []error
	if ln != nil {
		// Closing the listener also removes the socket file.
		if err := ln.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, c := range conns {
		c.uc.Close() // its goroutine sees the error and releases the session
	}
	s.wg.Wait()
	// A Retire under way finishes with its device (and its VFs) first.
	s.retiring.Wait()
	// VFs go before their PF's device.
	errs = append(errs, s.closeVFs()...)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, bdf := range s.order {
		if b := s.devices[bdf].b; b != nil {
			if err := b.close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// conn is one client connection and the session it opened, if any.
type conn struct {
	s      *Server
	uc     *net.UnixConn
	id     uint64
	cred   unix.Ucred
	groups []uint32 // supplementary groups at connect
	// on is the device the connection's session is on, from the moment
	// an open is admitted until the session is released (s.mu guards
	// it): what Retire hangs up.
	on *served

	// opMu is held while the connection serves a request that uses or
	// makes its session (all but reserve and release), so that a release
	// of its claim from another connection waits for that request rather
	// than freeing what it uses. Reserve and release never hold it: a
	// release waits for no other release.
	opMu sync.Mutex

	mu       sync.Mutex // guards sess and vf for status readers
	hello    bool
	sess     *session
	vf       *vfLease
	commands uint64
}

// session is what a client holds on a device.
type session struct {
	dev     *served
	mode    string
	pool    *hugepage.Pool
	mapping mapping
	// Trusted mode: the queue rings, shared with the client.
	rings    *hugepage.Pool
	ringsMap mapping
	queues   []queue
	// reserved is how many of the device's queue pairs open counted
	// against it for this session.
	reserved int
	// res is the reservation the session was opened by, if any: its
	// queue pairs are counted there, and it is free again when the
	// session ends.
	res *reservation
}

func (c *conn) status() ClientStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := ClientStatus{ID: c.id, PID: c.cred.Pid, UID: c.cred.Uid, GID: c.cred.Gid, Commands: c.commands}
	if l := c.vf; l != nil {
		st.Device = l.pool.pf.BDF()
		st.VF = l.pool.vfs[l.index].BDF
	}
	if s := c.sess; s != nil {
		st.Device = s.dev.info.BDF
		st.Mode = s.mode
		if s.res != nil {
			st.Claim = s.res.Claim
		}
		st.PoolBytes = int64(s.pool.Size())
		st.PoolIOVA = s.mapping.IOVA()
		for _, q := range s.queues {
			st.Queues = append(st.Queues, QueueInfo{ID: q.ID(), Depth: q.Depth(), Vector: q.Vector()})
		}
	}
	return st
}

// serve reads requests until the connection ends, then releases the
// session.
func (c *conn) serve() {
	defer func() {
		c.uc.Close()
		c.release()
		c.s.mu.Lock()
		delete(c.s.conns, c.id)
		c.s.mu.Unlock()
	}()
	for {
		body, err := readFrame(c.uc)
		if err != nil {
			if errors.Is(err, ErrFrameTooLarge) {
				_ = c.reply(&Response{Err: errorf(CodeBadRequest, "%v", err)}, nil)
			}
			return
		}
		var req Request
		if err := decodeBody(body, &req); err != nil {
			// A peer that sends garbage gets one error and is dropped:
			// the stream may no longer be framed where it thinks.
			_ = c.reply(&Response{Err: errorf(CodeBadRequest, "%v", err)}, nil)
			return
		}
		resp, fds := c.dispatch(&req)
		err = c.reply(resp, fds)
		for _, fd := range fds {
			unix.Close(fd)
		}
		if err != nil {
			return
		}
	}
}

func (c *conn) reply(r *Response, fds []int) error {
	frame, err := encodeFrame(r, MaxResponse)
	if err != nil {
		frame, _ = encodeFrame(&Response{Err: errorf(CodeDevice, "%v", err)}, MaxResponse)
		fds = nil
	}
	// A client that does not read its responses does not keep this
	// goroutine (and its session) forever.
	if err := c.uc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	if len(fds) > 0 {
		return dmabuf.SendFds(c.uc, frame, fds...)
	}
	_, err = c.uc.Write(frame)
	return err
}

// dispatch serves one request; the fds returned are the caller's to close
// after sending.
func (c *conn) dispatch(req *Request) (*Response, []int) {
	if e := req.validate(); e != nil {
		return &Response{Err: e}, nil
	}
	if req.Op != OpHello && !c.hello {
		return &Response{Err: errorf(CodeState, "%s before hello", req.Op)}, nil
	}
	if req.Op != OpReserve && req.Op != OpRelease {
		c.opMu.Lock()
		defer c.opMu.Unlock()
	}
	switch req.Op {
	case OpHello:
		if req.Version != ProtocolVersion {
			return &Response{Version: ProtocolVersion, Err: errorf(CodeVersion, "client speaks protocol version %d, this broker speaks %d", req.Version, ProtocolVersion)}, nil
		}
		c.hello = true
		return &Response{Version: ProtocolVersion}, nil
	case OpList:
		return &Response{Devices: c.s.devices4(c.cred.Uid, c.cred.Gid, c.groups)}, nil
	case OpStatus:
		allowed := c.s.allowedSomewhere(c)
		return &Response{Clients: c.s.statusFor(c, allowed), Reservations: c.s.reservationsFor(c, allowed)}, nil
	case OpReserve:
		g, e := c.reserve(req)
		return &Response{Err: e, Grant: g}, nil
	case OpRelease:
		return &Response{Err: c.releaseClaim(req.Claim)}, nil
	case OpOpen:
		layout, fds, e := c.open(req)
		if e != nil {
			return &Response{Err: e}, nil
		}
		return &Response{Layout: layout}, fds
	case OpIO:
		status, e := c.io(req.IO)
		return &Response{Err: e, Status: status}, nil
	case OpVF:
		vf, e := c.leaseVF(req.Device)
		return &Response{Err: e, VF: vf}, nil
	case OpRestore:
		return &Response{Err: c.restore(req.Device)}, nil
	case OpCmd:
		cpl, e := c.cmd(req.Cmd)
		return &Response{Err: e, Status: cpl.Status, DW0: cpl.DW0}, nil
	}
	return &Response{Err: errorf(CodeBadRequest, "unknown op %q", req.Op)}, nil
}

// sessionSpec is what a session is made with: an open's request, or a
// reservation's.
type sessionSpec struct {
	queues, depth int
	poolSize      int64 // the pool asked for, rounded up to whole pool pages (admit)
	mode          string
	polled        bool
}

// open makes the connection's session: pool, IOVA window, queue pairs.
func (c *conn) open(req *Request) (_ *Layout, _ []int, e *Error) {
	c.mu.Lock()
	has := c.sess != nil || c.vf != nil
	c.mu.Unlock()
	if has {
		return nil, nil, errorf(CodeState, "open: this connection already has a session or a VF")
	}
	if req.Grant != "" {
		return c.openGrant(req)
	}
	c.s.mu.Lock()
	d, ok := c.s.devices[req.Device]
	if !ok {
		c.s.mu.Unlock()
		return nil, nil, errorf(CodeNoDevice, "open: the broker serves no device %q", req.Device)
	}
	if e := d.unavailable("open"); e != nil {
		c.s.mu.Unlock()
		return nil, nil, e
	}
	if !d.access.allows(c.cred.Uid, c.cred.Gid, c.groups...) {
		c.s.mu.Unlock()
		return nil, nil, errorf(CodePermission, "open: uid %d gid %d may not use %s", c.cred.Uid, c.cred.Gid, req.Device)
	}
	mode := req.Mode
	if mode == "" {
		mode = ModeMediated
	}
	size, e := c.s.admit("open", d, mode, req.Queues, req.PoolBytes)
	if e != nil {
		c.s.mu.Unlock()
		return nil, nil, e
	}
	d.held += req.Queues // reserved; given back on failure or release
	c.on = d
	c.s.mu.Unlock()
	return c.build(d, sessionSpec{queues: req.Queues, depth: req.Depth, poolSize: size, mode: mode, polled: req.Polled}, req.Queues, nil)
}

// admit checks a session of mode with queues queue pairs and a pool of
// poolBytes on d, for op ("open" or "reserve"), against what d allows,
// the per-client quotas and d's free queue pairs, and returns the pool
// size it takes: poolBytes rounded up to whole pool pages. The caller
// holds s.mu and has checked that d is available.
func (s *Server) admit(op string, d *served, mode string, queues int, poolBytes int64) (int64, *Error) {
	if queues > s.cfg.MaxQueuePairs {
		return 0, errorf(CodeQuota, "%s: %d queue pairs asked, the quota is %d per client", op, queues, s.cfg.MaxQueuePairs)
	}
	if mode == ModeTrusted {
		if e := d.refuseTrusted(op, d.info.BDF); e != nil {
			return 0, e
		}
	}
	page := int64(s.poolPageSize(d))
	size := (poolBytes + page - 1) / page * page
	switch free := d.info.MaxQueues - d.held; {
	case size > s.cfg.MaxPoolBytes:
		rounded := ""
		if size != poolBytes {
			rounded = fmt.Sprintf(" (%d rounded up to whole %d-byte pages)", poolBytes, page)
		}
		return 0, errorf(CodeQuota, "%s: a pool of %d bytes%s asked, the quota is %d per client", op, size, rounded, s.cfg.MaxPoolBytes)
	case queues > free:
		return 0, errorf(CodeQuota, "%s: %d queue pairs asked, %s has %d free", op, queues, d.info.BDF, free)
	}
	return size, nil
}

// build makes a session of spec on d: pool, IOVA window, rings in trusted
// mode, queue pairs, and the descriptors to send. reserved is how many
// of d's queue pairs the caller counted for it, res the reservation it is
// opened by; both are given back when the session ends, or here on
// failure.
func (c *conn) build(d *served, spec sessionSpec, reserved int, res *reservation) (_ *Layout, _ []int, e *Error) {
	mode := spec.mode
	sess := &session{dev: d, mode: mode, reserved: reserved, res: res}
	defer func() {
		if e != nil {
			c.releaseSession(sess)
		}
	}()
	page := c.s.poolPageSize(d)
	if sess.pool, e = c.newPool("pool", "umdd client", int(spec.poolSize), page); e != nil {
		return nil, nil, e
	}
	var err error
	owner := iommu.Owner{Name: "client " + strconv.Itoa(int(c.cred.Pid)), ID: c.id, Tag: d.info.BDF}
	if sess.mapping, err = d.b.mapPool(sess.pool.Bytes(), owner, uint64(page)); err != nil {
		return nil, nil, errorf(CodeDevice, "open: mapping the pool: %v", err)
	}
	layout := &Layout{
		Device: d.info.BDF, Mode: mode, PoolBytes: int64(sess.pool.Size()), PoolPageSize: sess.pool.PageSize(),
		PoolIOVA: sess.mapping.IOVA(), DoorbellStride: d.b.doorbellStride(), MaxTransfer: d.b.maxTransfer(),
		PageSize: d.b.pageSize(), SGLS: d.b.sgls(), Namespaces: slices.Clone(d.info.Namespaces), Polled: spec.polled,
	}
	if res != nil {
		layout.Claim = res.Claim
	}
	var ringOffsets [][2]int64
	if mode == ModeTrusted {
		if ringOffsets, e = c.makeRings(sess, spec, owner, layout); e != nil {
			return nil, nil, e
		}
	}
	for i := 0; i < spec.queues; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var q queue
		if mode == ModeTrusted {
			base := sess.ringsMap.IOVA()
			q, err = d.b.createRemoteQueue(ctx, spec.depth, base+uint64(ringOffsets[i][0]), base+uint64(ringOffsets[i][1]), !spec.polled)
		} else {
			q, err = d.b.createQueue(ctx, spec.depth, !spec.polled)
		}
		cancel()
		if err != nil {
			return nil, nil, errorf(CodeDevice, "open: creating queue pair %d of %d: %v", i+1, spec.queues, err)
		}
		sess.queues = append(sess.queues, q)
	}
	var fds []int
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	dup := func(fd int) error {
		n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return err
		}
		fds = append(fds, n)
		return nil
	}
	if err := dup(sess.pool.Fd()); err != nil {
		return nil, nil, errorf(CodeDevice, "open: duplicating the pool fd: %v", err)
	}
	if sess.rings != nil {
		if err := dup(sess.rings.Fd()); err != nil {
			closeAll()
			return nil, nil, errorf(CodeDevice, "open: duplicating the rings fd: %v", err)
		}
	}
	for i, q := range sess.queues {
		qi := QueueInfo{ID: q.ID(), Depth: q.Depth(), Vector: q.Vector()}
		if ringOffsets != nil {
			qi.SQOffset, qi.CQOffset = ringOffsets[i][0], ringOffsets[i][1]
		}
		layout.Queues = append(layout.Queues, qi)
		if spec.polled {
			continue
		}
		if err := dup(q.EventFd()); err != nil {
			closeAll()
			return nil, nil, errorf(CodeDevice, "open: duplicating an eventfd: %v", err)
		}
	}
	if mode == ModeTrusted {
		fd, err := d.b.deviceFd()
		if err != nil {
			closeAll()
			return nil, nil, errorf(CodeDevice, "open: %v", err)
		}
		fds = append(fds, fd)
	}
	c.mu.Lock()
	c.sess = sess
	c.mu.Unlock()
	return layout, fds, nil
}

// io runs one mediated command on one of the session's queue pairs, with
// its data in the session's pool. The broker builds the command itself, so
// its PRPs can only point inside the client's window.
func (c *conn) io(r *IORequest) (uint16, *Error) {
	sess, e := c.mediated("io", r.Queue)
	if e != nil {
		return 0, e
	}
	var cmd nvmelike.Command
	if r.Opcode == "flush" {
		if e := sess.flushable("io", r.NSID); e != nil {
			return 0, e
		}
		cmd = nvmelike.FlushCommand(r.NSID)
	} else {
		ns, e := sess.lbaRange("io", r.NSID, r.LBA, uint64(r.Blocks))
		if e != nil {
			return 0, e
		}
		n := int64(r.Blocks) * int64(ns.LBASize)
		if n > int64(sess.dev.b.maxTransfer()) {
			return 0, errorf(CodeBadRequest, "io: %d bytes, the transfer limit is %d", n, sess.dev.b.maxTransfer())
		}
		if r.Offset > int64(sess.pool.Size()) || n > int64(sess.pool.Size())-r.Offset {
			return 0, errorf(CodeBadRequest, "io: %d bytes at offset %d do not fit the %d-byte pool", n, r.Offset, sess.pool.Size())
		}
		buf := nvmelike.Buffer{Bytes: sess.pool.Bytes()[r.Offset : r.Offset+n : r.Offset+n], IOVA: sess.mapping.IOVA() + uint64(r.Offset)}
		if r.Opcode == "read" {
			cmd = nvmelike.ReadCommand(r.NSID, r.LBA, uint32(r.Blocks), buf)
		} else {
			cmd = nvmelike.WriteCommand(r.NSID, r.LBA, uint32(r.Blocks), buf)
		}
	}
	cpl, err := c.exec(sess, r.Queue, &cmd)
	if err != nil {
		return cpl.Status, errorf(CodeDevice, "io: %s: %v", r.Opcode, err)
	}
	return cpl.Status, nil
}

// exec runs a checked command on the session's queue pair, bounded by the
// I/O timeout, and counts it.
func (c *conn) exec(sess *session, queue int, cmd *nvmelike.Command) (nvmelike.Completion, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.s.cfg.IOTimeout)
	defer cancel()
	cpl, err := sess.queues[queue].Exec(ctx, cmd)
	c.mu.Lock()
	c.commands++
	c.mu.Unlock()
	return cpl, err
}

// newPool makes a shared hugepage pool of size bytes (whole pages) for
// the connection, named after it. Running out of hugepages or of locked
// memory is the client's quota error; anything else, the device's.
func (c *conn) newPool(what, name string, size, pageSize int) (*hugepage.Pool, *Error) {
	p, err := hugepage.New(hugepage.Options{Size: size, PageSize: pageSize, NUMANode: hugepage.AnyNode, Name: name + " " + strconv.FormatUint(c.id, 10)})
	if err != nil {
		code := CodeDevice
		if errors.Is(err, hugepage.ErrNoHugepages) || errors.Is(err, hugepage.ErrMemlock) {
			code = CodeQuota
		}
		return nil, errorf(code, "open: making the %s: %v", what, err)
	}
	return p, nil
}

// release frees what the connection's session holds. It holds opMu, so a
// release of the session's claim running at the same time returns only
// once the session is gone, whichever of the two frees it.
func (c *conn) release() {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	sess, vf := c.sess, c.vf
	c.sess, c.vf = nil, nil
	c.mu.Unlock()
	if sess != nil {
		c.releaseSession(sess)
	}
	if vf != nil {
		c.releaseVF(vf)
	}
}

// releaseSession undoes open, in the order the memory rules ask: queues
// first (the controller aborts what they had outstanding and stops using
// the client's memory), then the IOVA window, then the pool.
func (c *conn) releaseSession(sess *session) error {
	var errs []error
	for _, q := range sess.queues {
		if err := q.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if sess.mapping != nil {
		if err := sess.mapping.Unmap(); err != nil {
			errs = append(errs, err)
		}
	}
	if sess.ringsMap != nil {
		if err := sess.ringsMap.Unmap(); err != nil {
			errs = append(errs, err)
		}
	}
	if sess.rings != nil && len(errs) == 0 {
		if err := sess.rings.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if sess.pool != nil && len(errs) == 0 {
		// With an unmapping that failed, the device may still reach the
		// pool: keep it (leaked) rather than free memory under DMA.
		if err := sess.pool.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	c.s.mu.Lock()
	sess.dev.held -= sess.reserved
	if c.on == sess.dev {
		c.on = nil
	}
	if sess.res != nil && sess.res.user == c {
		sess.res.user = nil // the grant may be opened again
	}
	c.s.mu.Unlock()
	return errors.Join(errs...)
}

// poolPageSize is the page size of client pools on d: the server's, or
// the backend's own (a simulated device's pools are ordinary memory).
// Call with s.mu held or with d's backend fixed (it never changes).
func (s *Server) poolPageSize(d *served) int {
	if p, ok := d.b.(interface{ poolPageSize() int }); ok {
		return p.poolPageSize()
	}
	return s.cfg.PoolPageSize
}
