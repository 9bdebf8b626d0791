package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
	"github.com/umdkit/umd/vfio"
)

// SimOptions describe a simulated device (AddSimulated).
type SimOptions struct {
	// Blocks is the size of its one namespace in blocks; 0 means 131072
	// (64 MiB of 512-byte blocks). The namespace is kept in memory, which
	// the kernel provides as it is first written.
	Blocks uint64
	// LBASize is the block size, a power of two from 512; 0 means 512.
	LBASize int
	// MaxQueues is the number of I/O queue pairs the controller grants;
	// 0 means 16.
	MaxQueues int
}

// ErrSimulatedTrusted is what the backend of a simulated device answers
// when asked for what only trusted sessions use (a VFIO descriptor,
// remote queues). Clients never see it: the broker refuses a trusted open
// or reservation on a simulated device before (refuseTrusted).
var ErrSimulatedTrusted = errors.New("device is simulated: trusted sessions need a VFIO device")

// refuseTrusted is why a trusted session or reservation (op) on device d
// is refused, nil when it is allowed: a simulated device has no VFIO
// descriptor to send (ErrState), and the device's Access must allow
// trusted sessions (ErrPermission).
func (d *served) refuseTrusted(op, device string) *Error {
	if isSimulated(d.b) {
		return errorf(CodeState, "%s: %s is simulated: trusted sessions need a VFIO device", op, device)
	}
	if !d.access.Trusted {
		return errorf(CodePermission, "%s: %s does not allow trusted sessions", op, device)
	}
	return nil
}

// AddSimulated serves a software controller (nvmelike/sim) under the PCI
// address bdf, with the allow-list a, for machines without VFIO: the
// broker, its clients and its reservations work as with a device, in
// mediated mode. The server closes it in Close.
//
// What differs from a device: a client's pool is ordinary shared memory
// (a 4 KiB-page memfd; hugepages are not needed), mapped into an IOVA
// space of the broker's own; each mediated command's data is copied
// between the pool and the controller's memory around the command (the
// controller reaches only its own memory); trusted sessions and
// reservations are refused with an error matching ErrState (no VFIO
// descriptor to send); queue pairs'
// eventfds are signalled by the broker after each command, since the
// controller raises no interrupts.
func (s *Server) AddSimulated(ctx context.Context, bdf string, o SimOptions, a Access) error {
	b, err := newSimBackend(ctx, bdf, o)
	if err != nil {
		return err
	}
	if err := s.add(b, a); err != nil {
		return errors.Join(err, b.close())
	}
	return nil
}

// simBackend is a backend over nvmelike/sim: the engine's controller on
// the software controller's registers and memory, and an identity IOVA
// space for client pools (so the ledger records their windows as a
// device's would).
type simBackend struct {
	sc    *sim.Controller // the software controller, for tests to inject faults
	ctrl  *nvmelike.Controller
	mem   *sim.Memory
	space *iommu.Space
	desc  DeviceInfo
	// closed is closed by close, for the server's watch.
	closed    chan struct{}
	closeOnce sync.Once
}

func newSimBackend(ctx context.Context, bdf string, o SimOptions) (*simBackend, error) {
	if o.Blocks == 0 {
		o.Blocks = 64 << 20 / 512
	}
	if o.LBASize == 0 {
		o.LBASize = 512
	}
	if o.MaxQueues == 0 {
		o.MaxQueues = 16
	}
	switch {
	case o.LBASize < 512 || o.LBASize > 64<<10 || o.LBASize&(o.LBASize-1) != 0:
		return nil, fmt.Errorf("simulating %s: LBA size %d, must be a power of two from 512 to 65536", bdf, o.LBASize)
	case o.Blocks > (16<<30)/uint64(o.LBASize):
		return nil, fmt.Errorf("simulating %s: %d blocks of %d bytes, at most 16 GiB (kept in memory)", bdf, o.Blocks, o.LBASize)
	case o.MaxQueues < 1 || o.MaxQueues > 64:
		return nil, fmt.Errorf("simulating %s: %d queue pairs, must be 1 to 64", bdf, o.MaxQueues)
	}
	mem := sim.NewMemory()
	sc := sim.New(mem, sim.Config{MaxQueues: o.MaxQueues, Namespaces: []sim.NamespaceConfig{{Blocks: o.Blocks, LBASize: o.LBASize}}})
	ctrl, err := nvmelike.Open(ctx, sc, mem, &nvmelike.Options{})
	if err != nil {
		return nil, fmt.Errorf("simulating %s: bringing up the software controller: %w", bdf, err)
	}
	m, err := iommu.NewIdentity(iommu.IdentityOptions{})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("simulating %s: %w", bdf, err), ctrl.Close())
	}
	space, err := iommu.New(m, iommu.Options{})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("simulating %s: %w", bdf, err), ctrl.Close())
	}
	id := ctrl.IdentifyController()
	// Every software controller reports the same serial: the address
	// tells simulated devices apart.
	info := DeviceInfo{BDF: bdf, Serial: "sim-" + bdf, Model: id.MN, MaxQueues: ctrl.MaxIOQueues(), Simulated: true}
	for _, nsid := range ctrl.Namespaces() {
		ns, err := ctrl.IdentifyNamespace(ctx, nsid)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("simulating %s: %w", bdf, err), ctrl.Close(), space.Close())
		}
		info.Namespaces = append(info.Namespaces, NamespaceInfo{NSID: nsid, LBASize: ns.LBASize, Blocks: ns.NSZE})
	}
	return &simBackend{sc: sc, ctrl: ctrl, mem: mem, space: space, desc: info, closed: make(chan struct{})}, nil
}

// isSimulated reports whether b is a software controller.
func isSimulated(b backend) bool {
	_, ok := b.(*simBackend)
	return ok
}

func (b *simBackend) info() DeviceInfo { return b.desc }

// poolPageSize: client pools of a simulated device are ordinary pages.
func (b *simBackend) poolPageSize() int { return hugepage.Page4K }

func (b *simBackend) mapPool(mem []byte, owner iommu.Owner, align uint64) (mapping, error) {
	m, err := b.space.MapPool(mem, owner, iommu.MapOptions{Align: align})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (b *simBackend) createQueue(ctx context.Context, depth int, irq bool) (queue, error) {
	q, err := b.ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: depth})
	if err != nil {
		return nil, err
	}
	sq := &simQueue{b: b, q: q, vector: -1}
	if irq {
		if sq.irq, err = vfio.NewInterrupt(); err != nil {
			return nil, errors.Join(err, b.ctrl.DeleteQueuePair(ctx, q))
		}
		sq.vector = int(q.ID())
	}
	return sq, nil
}

func (b *simBackend) createRemoteQueue(context.Context, int, uint64, uint64, bool) (queue, error) {
	return nil, ErrSimulatedTrusted
}

func (b *simBackend) deviceFd() (int, error) { return -1, ErrSimulatedTrusted }
func (b *simBackend) doorbellStride() int    { return 4 << b.ctrl.CAP().DSTRD() }
func (b *simBackend) maxTransfer() int       { return b.ctrl.MaxTransfer() }
func (b *simBackend) pageSize() int          { return b.ctrl.PageSize() }
func (b *simBackend) sgls() uint32           { return b.ctrl.IdentifyController().SGLS }

func (b *simBackend) check() error { return b.ctrl.Check() }

func (b *simBackend) close() error {
	b.closeOnce.Do(func() { close(b.closed) })
	return errors.Join(b.ctrl.Close(), b.space.Close())
}

// simQueue is a queue pair of a software controller. The controller
// reaches only its own memory, so each command's data goes through a
// bounce buffer there: copied in before a Write or Compare, out after a
// Read.
type simQueue struct {
	b      *simBackend
	mu     sync.Mutex // the engine's queue pairs are not for concurrent use
	q      *nvmelike.QueuePair
	irq    *vfio.Interrupt // nil when polled
	vector int
	// bounce is the queue pair's buffer in the controller's memory, kept
	// from one command to the next (grown when a command needs more).
	bounce nvmelike.Buffer
}

// bounceFor returns n bytes of the queue pair's bounce buffer, replacing
// it with a larger one when it is too small.
func (q *simQueue) bounceFor(n int) (nvmelike.Buffer, error) {
	if len(q.bounce.Bytes) < n {
		b, err := q.b.mem.Alloc(n, 4096)
		if err != nil {
			return nvmelike.Buffer{}, fmt.Errorf("software controller: a %d-byte bounce buffer: %w", n, err)
		}
		q.releaseBounce()
		q.bounce = b
	}
	b := q.bounce
	b.Bytes = b.Bytes[:n]
	return b, nil
}

func (q *simQueue) releaseBounce() {
	if q.bounce.Bytes != nil {
		_ = q.b.mem.Free(q.bounce)
		q.bounce = nvmelike.Buffer{}
	}
}

func (q *simQueue) ID() uint16  { return q.q.ID() }
func (q *simQueue) Depth() int  { return q.q.Depth() }
func (q *simQueue) Vector() int { return q.vector }
func (q *simQueue) EventFd() int {
	if q.irq == nil {
		return -1
	}
	return q.irq.Fd()
}

func (q *simQueue) Exec(ctx context.Context, cmd *nvmelike.Command) (nvmelike.Completion, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := *cmd
	var bounce nvmelike.Buffer
	if n := len(cmd.Data.Bytes); n > 0 {
		var err error
		if bounce, err = q.bounceFor(n); err != nil {
			return nvmelike.Completion{}, err
		}
		if cmd.Opcode != nvmelike.CmdRead {
			copy(bounce.Bytes, cmd.Data.Bytes)
		}
		c.Data = bounce
	}
	cpl, err := q.q.Exec(ctx, &c)
	var status *nvmelike.StatusError
	completed := err == nil || errors.As(err, &status)
	if bounce.Bytes != nil {
		if !completed {
			// Exec gave up: the command is still the controller's, and
			// so is its buffer; the next command gets a new one.
			q.bounce = nvmelike.Buffer{}
		} else if err == nil && cmd.Opcode == nvmelike.CmdRead {
			copy(cmd.Data.Bytes, bounce.Bytes)
		}
	}
	if completed && q.irq != nil {
		_ = q.irq.Signal()
	}
	return cpl, err
}

func (q *simQueue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := q.b.ctrl.DeleteQueuePair(ctx, q.q)
	q.releaseBounce()
	if q.irq != nil {
		err = errors.Join(err, q.irq.Close())
	}
	return err
}
