package broker

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/vfio"
)

// Client is a connection to a broker. Its methods are safe for concurrent
// use; requests are serialised.
type Client struct {
	mu   sync.Mutex
	uc   *net.UnixConn
	sess *Session

	done     chan struct{} // closed when the broker hangs up
	stopFd   int           // an eventfd Close writes to end the watcher; closed by Close
	watched  sync.WaitGroup
	stopOnce sync.Once
}

// Dial connects to the broker at the unix socket path and says hello. A
// broker that speaks another protocol version gives an error matching
// ErrVersion.
func Dial(path string) (*Client, error) {
	uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connecting to the broker at %s: %w", path, err)
	}
	c := &Client{uc: uc, done: make(chan struct{}), stopFd: -1}
	if _, _, err := c.call(&Request{Op: OpHello, Version: ProtocolVersion}, 0); err != nil {
		uc.Close()
		return nil, fmt.Errorf("connecting to the broker at %s: %w", path, err)
	}
	if err := c.watch(); err != nil {
		uc.Close()
		return nil, fmt.Errorf("connecting to the broker at %s: %w", path, err)
	}
	return c, nil
}

// Done returns a channel closed when the broker hangs up (it stopped,
// restarted or dropped this client): the session is gone. A trusted
// client must then stop its I/O and Close, which also lets a restarted
// broker open the device again (the device stays busy while any process
// holds its descriptor or a BAR mapping).
func (c *Client) Done() <-chan struct{} { return c.done }

// watch starts a goroutine that waits for the broker to hang up, without
// reading (responses are read by call): poll(2) for POLLRDHUP on a
// duplicate of the socket, and for Close on an eventfd, so it sleeps
// until one of them happens.
func (c *Client) watch() error {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return err
	}
	if derr != nil {
		return fmt.Errorf("duplicating the socket: %w", derr)
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("eventfd: %w", err)
	}
	c.stopFd = stop
	c.watched.Add(1)
	go func() {
		defer c.watched.Done()
		defer unix.Close(fd)
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}, {Fd: int32(stop), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(pfd, -1)
			if err == unix.EINTR || (err == nil && n == 0) {
				continue
			}
			if pfd[1].Revents != 0 {
				return // Close
			}
			if err != nil || pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
				close(c.done)
				return
			}
		}
	}()
	return nil
}

// call sends req and reads the response, with up to maxFds descriptors.
// The caller owns the descriptors returned, also with an error.
func (c *Client) call(req *Request, maxFds int) (*Response, []int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	frame, err := encodeFrame(req, MaxFrame)
	if err != nil {
		return nil, nil, err
	}
	if _, err := c.uc.Write(frame); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", req.Op, disconnected(err))
	}
	body, fds, err := c.readResponse(maxFds)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", req.Op, disconnected(err))
	}
	var resp Response
	if err := decodeBody(body, &resp); err != nil {
		closeFds(fds)
		return nil, nil, fmt.Errorf("%s: %w", req.Op, err)
	}
	if resp.Err != nil {
		closeFds(fds)
		return nil, nil, resp.Err
	}
	return &resp, fds, nil
}

// readResponse reads one frame, collecting the descriptors sent with its
// first bytes.
func (c *Client) readResponse(maxFds int) ([]byte, []int, error) {
	var hdr [4]byte
	var fds []int
	oob := make([]byte, unix.CmsgSpace(4*max(maxFds, 1)))
	for got := 0; got < len(hdr); {
		n, oobn, flags, _, err := c.uc.ReadMsgUnix(hdr[got:], oob)
		if oobn > 0 {
			more, perr := parseRights(oob[:oobn])
			fds = append(fds, more...)
			if perr != nil {
				closeFds(fds)
				return nil, nil, perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			closeFds(fds)
			return nil, nil, fmt.Errorf("receiving descriptors: more than %d sent", maxFds)
		}
		if err != nil {
			closeFds(fds)
			return nil, nil, err
		}
		if n == 0 {
			closeFds(fds)
			return nil, nil, io.ErrUnexpectedEOF
		}
		got += n
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > MaxResponse {
		closeFds(fds)
		return nil, nil, fmt.Errorf("a response of %d bytes: %w", size, ErrFrameTooLarge)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(c.uc, body); err != nil {
		closeFds(fds)
		return nil, nil, err
	}
	return body, fds, nil
}

// ErrDisconnected is returned when the broker closed the connection (it
// was stopped or restarted, or dropped this client): the session is gone
// and its resources released; Dial again for a new one.
var ErrDisconnected = errors.New("broker connection lost")

// disconnected adds ErrDisconnected to the errors that mean the broker
// went away.
func disconnected(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
		return fmt.Errorf("%w: %w", ErrDisconnected, err)
	}
	return err
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parsing control messages: %w", err)
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err == nil {
			fds = append(fds, got...)
		}
	}
	return fds, nil
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Devices lists the devices the broker serves, saying which this client
// may use.
func (c *Client) Devices() ([]DeviceInfo, error) {
	r, _, err := c.call(&Request{Op: OpList}, 0)
	if err != nil {
		return nil, err
	}
	return r.Devices, nil
}

// Device returns the broker's listing of the device at bdf, as Devices
// shows it to this peer; ErrNoDevice when the broker does not serve it.
func (c *Client) Device(bdf string) (DeviceInfo, error) {
	devs, err := c.Devices()
	if err != nil {
		return DeviceInfo{}, err
	}
	for _, d := range devs {
		if d.BDF == bdf {
			return d, nil
		}
	}
	return DeviceInfo{}, fmt.Errorf("%s: %w (the broker serves %d devices)", bdf, ErrNoDevice, len(devs))
}

// Status lists the broker's clients and what each holds.
func (c *Client) Status() ([]ClientStatus, error) {
	r, _, err := c.call(&Request{Op: OpStatus}, 0)
	if err != nil {
		return nil, err
	}
	return r.Clients, nil
}

// SessionOptions say what a session asks for.
type SessionOptions struct {
	Queues    int    // queue pairs; 0 means 1
	Depth     int    // entries per ring; 0 means 64
	PoolBytes int64  // the DMA pool's size; 0 means 4 MiB
	Mode      string // ModeMediated ("" too) or ModeTrusted
	// Polled asks for queue pairs without interrupts: no MSI-X vectors,
	// no eventfds. Trusted clients that poll their completions save the
	// interrupt's cost per I/O.
	Polled bool
}

// Session is what the broker gave this connection on a device: a DMA pool
// shared with the broker and mapped into the device's IOMMU domain, and
// queue pairs each with its completion eventfd.
type Session struct {
	c      *Client
	Layout Layout
	// Pool is the session's DMA memory, the same pages the device
	// reaches at Layout.PoolIOVA + offset.
	Pool *hugepage.Pool
	// Interrupts are the queue pairs' completion eventfds, in
	// Layout.Queues order; none for a polled session. The broker
	// completes mediated commands by polling, so in mediated mode these
	// only count completions.
	Interrupts []*vfio.Interrupt
	// Trusted mode (trusted.go): the client's own queue pairs and what
	// they stand on.
	trusted *trustedState
}

// OpenSession asks for queue pairs and a pool on the device with PCI
// address bdf. A connection holds at most one session.
func (c *Client) OpenSession(bdf string, o SessionOptions) (_ *Session, err error) {
	if o.Queues == 0 {
		o.Queues = 1
	}
	if o.Depth == 0 {
		o.Depth = 64
	}
	if o.PoolBytes == 0 {
		o.PoolBytes = 4 << 20
	}
	if o.Queues < 0 || o.Queues > MaxQueuesPerSession {
		return nil, fmt.Errorf("opening a session: %d queue pairs, at most %d", o.Queues, MaxQueuesPerSession)
	}
	r, fds, err := c.call(&Request{Op: OpOpen, Device: bdf, Queues: o.Queues, Depth: o.Depth, PoolBytes: o.PoolBytes, Mode: o.Mode, Polled: o.Polled}, maxFdsPerMessage)
	if err != nil {
		return nil, fmt.Errorf("opening a session on %s: %w", bdf, err)
	}
	defer closeFds(fds) // OpenPool dups; InterruptFromFD and DeviceFromFD take ownership (and -1 marks it)
	if r.Layout == nil || len(r.Layout.Queues) != o.Queues {
		return nil, fmt.Errorf("opening a session on %s: the broker sent no layout of %d queue pairs", bdf, o.Queues)
	}
	if want := cmp.Or(o.Mode, ModeMediated); r.Layout.Mode != want {
		return nil, fmt.Errorf("opening a session on %s: asked for a %s session, the broker made a %s one", bdf, want, r.Layout.Mode)
	}
	return c.attachSession(bdf, r.Layout, fds, o.Polled)
}

// OpenGrant opens the session reserved under a grant (Reserve; in a
// Kubernetes pod, ClaimFromEnv gives the device and grant): its queue
// pairs, depth, pool, mode and polling are the reservation's. One session
// per grant at a time; once this connection ends, the grant may be opened
// again until the claim is released.
func (c *Client) OpenGrant(device, grantID string) (*Session, error) {
	r, fds, err := c.call(&Request{Op: OpOpen, Device: device, Grant: grantID}, maxFdsPerMessage)
	if err != nil {
		return nil, fmt.Errorf("opening the grant on %s: %w", device, err)
	}
	defer closeFds(fds)
	if r.Layout == nil || len(r.Layout.Queues) < 1 || len(r.Layout.Queues) > MaxQueuesPerSession {
		return nil, fmt.Errorf("opening the grant on %s: the broker sent no usable layout", device)
	}
	if r.Layout.Mode != ModeMediated && r.Layout.Mode != ModeTrusted {
		return nil, fmt.Errorf("opening the grant on %s: the broker made a session of unknown mode %q", device, r.Layout.Mode)
	}
	return c.attachSession(device, r.Layout, fds, r.Layout.Polled)
}

// attachSession makes a Session of what an open sent: the layout and its
// descriptors (pool, rings when trusted, eventfds unless polled, device
// when trusted). fds stay the caller's to close; those taken are set to
// -1.
func (c *Client) attachSession(bdf string, layout *Layout, fds []int, polled bool) (_ *Session, err error) {
	trusted := layout.Mode == ModeTrusted
	irqs := len(layout.Queues)
	if polled {
		irqs = 0
	}
	want := 1 + irqs
	if trusted {
		want += 2 // rings, device
	}
	if len(fds) != want {
		return nil, fmt.Errorf("opening a session on %s: the broker sent %d descriptors for %d queue pairs", bdf, len(fds), len(layout.Queues))
	}
	irqFds := fds[1 : 1+irqs]
	if trusted {
		irqFds = fds[2 : 2+irqs]
	}
	s := &Session{c: c, Layout: *layout}
	defer func() {
		if err != nil {
			s.closeLocal()
		}
	}()
	if s.Pool, err = hugepage.OpenPool(fds[0]); err != nil {
		return nil, fmt.Errorf("opening a session on %s: %w", bdf, err)
	}
	if int64(s.Pool.Size()) != s.Layout.PoolBytes {
		return nil, fmt.Errorf("opening a session on %s: the pool has %d bytes, the layout says %d", bdf, s.Pool.Size(), s.Layout.PoolBytes)
	}
	for i := range irqFds {
		irq, err := vfio.InterruptFromFD(irqFds[i])
		if err != nil {
			return nil, fmt.Errorf("opening a session on %s: %w", bdf, err)
		}
		irqFds[i] = -1
		s.Interrupts = append(s.Interrupts, irq)
	}
	if trusted {
		if err := s.attach(fds[1], &fds[len(fds)-1]); err != nil {
			return nil, fmt.Errorf("opening a session on %s: %w", bdf, err)
		}
	}
	c.mu.Lock()
	c.sess = s
	c.mu.Unlock()
	return s, nil
}

func (s *Session) closeLocal() error {
	var errs []error
	if s.trusted != nil {
		// The queue pairs close their eventfds.
		errs = append(errs, s.trusted.close())
		s.trusted = nil
	} else {
		for _, irq := range s.Interrupts {
			errs = append(errs, irq.Close())
		}
	}
	s.Interrupts = nil
	if s.Pool != nil {
		errs = append(errs, s.Pool.Close())
	}
	return errors.Join(errs...)
}

// Read reads blocks logical blocks at lba of namespace nsid into the pool
// at offset, through queue pair queue (an index into Layout.Queues). The
// broker submits the command: the data moves by DMA straight into the
// pool, but each command costs a round trip over the socket.
func (s *Session) Read(queue int, nsid uint32, lba uint64, blocks int, offset int64) error {
	return s.io(&IORequest{Queue: queue, Opcode: "read", NSID: nsid, LBA: lba, Blocks: blocks, Offset: offset})
}

// Write writes blocks logical blocks at lba of namespace nsid from the pool
// at offset, through queue pair queue.
func (s *Session) Write(queue int, nsid uint32, lba uint64, blocks int, offset int64) error {
	return s.io(&IORequest{Queue: queue, Opcode: "write", NSID: nsid, LBA: lba, Blocks: blocks, Offset: offset})
}

// Flush flushes namespace nsid through queue pair queue.
func (s *Session) Flush(queue int, nsid uint32) error {
	return s.io(&IORequest{Queue: queue, Opcode: "flush", NSID: nsid})
}

func (s *Session) io(r *IORequest) error {
	_, _, err := s.c.call(&Request{Op: OpIO, IO: r}, 0)
	return err
}

// Exec asks the broker to run a command the client encoded itself (PRPs
// included, as IOVAs in Layout.PoolIOVA's window). The broker checks it
// and refuses it with ErrBadRequest before the device sees it when any
// field is out of bounds. It returns the completion's status field and
// DW0; a command the device failed also returns an error matching
// ErrDevice.
func (s *Session) Exec(r CommandRequest) (status uint16, dw0 uint32, err error) {
	resp, _, err := s.c.call(&Request{Op: OpCmd, Cmd: &r}, 0)
	if err != nil {
		return 0, 0, err
	}
	return resp.Status, resp.DW0, nil
}

// Reserve asks the broker to hold r's resources on r.Device under r.Claim
// (and r.Name) and returns the grant that opens them (OpenGrant).
// Reserving the same claim, device and name again returns the same grant;
// with other parameters it fails with ErrState; under another name it is
// another reservation, with a grant of its own. Running out of queue pairs
// or pool bytes fails with ErrQuota; a peer not among the broker's
// reservers gets ErrPermission. Reservations outlive this connection (not
// the broker).
func (c *Client) Reserve(r Reservation) (Grant, error) {
	resp, _, err := c.call(r.request(), 0)
	if err != nil {
		return Grant{}, fmt.Errorf("reserving %s for claim %s: %w", r.Device, r.Claim, err)
	}
	if resp.Grant == nil || resp.Grant.ID == "" {
		return Grant{}, fmt.Errorf("reserving %s for claim %s: the broker sent no grant", r.Device, r.Claim)
	}
	return *resp.Grant, nil
}

// Release ends every session opened with the claim's grants (their
// clients see their connection closed), frees what the claim held and
// forgets it. Releasing an unknown claim succeeds.
func (c *Client) Release(claim string) error {
	if _, _, err := c.call(&Request{Op: OpRelease, Claim: claim}, 0); err != nil {
		return fmt.Errorf("releasing claim %s: %w", claim, err)
	}
	return nil
}

// Restore asks the broker to serve the retired device bdf again
// (Server.Restore); only root may.
func (c *Client) Restore(bdf string) error {
	if _, _, err := c.call(&Request{Op: OpRestore, Device: bdf}, 0); err != nil {
		return fmt.Errorf("restoring %s: %w", bdf, err)
	}
	return nil
}

// Reservations lists the reservations the broker holds, as a status shows
// them to this peer (all of them to reservers and peers allowed on some
// device, none to others).
func (c *Client) Reservations() ([]ReservationStatus, error) {
	r, _, err := c.call(&Request{Op: OpStatus}, 0)
	if err != nil {
		return nil, err
	}
	return r.Reservations, nil
}

// Close ends the connection; the broker then releases the session's queue
// pairs, IOVA window and pool. Close is safe to call twice.
func (c *Client) Close() error {
	c.mu.Lock()
	sess := c.sess
	c.sess = nil
	c.mu.Unlock()
	var errs []error
	if sess != nil {
		errs = append(errs, sess.closeLocal())
	}
	if err := c.uc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		errs = append(errs, err)
	}
	c.stopOnce.Do(func() {
		if c.stopFd < 0 {
			return
		}
		var one [8]byte
		one[0] = 1 // eventfd counters are host-endian; 1 on little-endian, nonzero anywhere
		if _, err := unix.Write(c.stopFd, one[:]); err != nil {
			// Cannot happen for a fresh eventfd; leave the watcher
			// (and its eventfd) rather than wait for it forever.
			errs = append(errs, fmt.Errorf("stopping the hang-up watcher: %w", err))
			return
		}
		c.watched.Wait()
		unix.Close(c.stopFd)
	})
	return errors.Join(errs...)
}
