package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
)

// backend is what the server needs of a device: *umd.Device through
// umdBackend, a fake in host tests.
type backend interface {
	info() DeviceInfo
	mapPool(mem []byte, owner iommu.Owner, align uint64) (mapping, error)
	// createQueue creates a queue pair, with an MSI-X vector and eventfd
	// when irq.
	createQueue(ctx context.Context, depth int, irq bool) (queue, error)
	// createRemoteQueue creates a queue pair over rings at the given
	// IOVAs, for a trusted client to drive.
	createRemoteQueue(ctx context.Context, depth int, sq, cq uint64, irq bool) (queue, error)
	// deviceFd returns a new descriptor of the VFIO device, the caller's.
	deviceFd() (int, error)
	doorbellStride() int
	maxTransfer() int
	pageSize() int
	// sgls is the controller's Identify Controller SGLS field.
	sgls() uint32
	// check reads the controller's status: nvmelike.ErrDeviceGone,
	// ErrControllerFatal or ErrNotReady when it no longer works, nil
	// when it does or the backend is closed.
	check() error
	close() error
}

// mapping is a client pool's IOVA window; *iommu.Mapping is one.
type mapping interface {
	IOVA() uint64
	Unmap() error
}

// queue is one of a client's I/O queue pairs; umdQueue wraps
// *umd.QueuePair, remoteQueue *umd.RemoteQueue (whose Exec refuses: the
// client drives it).
type queue interface {
	ID() uint16
	Depth() int
	Vector() int
	EventFd() int // -1 without an interrupt
	Exec(ctx context.Context, cmd *nvmelike.Command) (nvmelike.Completion, error)
	Close() error
}

// AddDevice puts a device opened with umd.Open under the server, with its
// allow-list. The server closes it in Close.
func (s *Server) AddDevice(ctx context.Context, d *umd.Device, a Access) error {
	b, err := newUMDBackend(ctx, d)
	if err != nil {
		return err
	}
	return s.add(b, a)
}

type umdBackend struct {
	d         *umd.Device
	desc      DeviceInfo
	closed    chan struct{} // closed by close, for the server's watch
	closeOnce sync.Once
	// mu orders check against close (which closes closed under it): the
	// registers check reads are unmapped when the device closes.
	mu sync.Mutex
}

func newUMDBackend(ctx context.Context, d *umd.Device) (*umdBackend, error) {
	c := d.Controller()
	id := c.IdentifyController()
	info := DeviceInfo{BDF: d.BDF(), Serial: id.SN, Model: id.MN, MaxQueues: c.MaxIOQueues()}
	for _, nsid := range c.Namespaces() {
		ns, err := c.IdentifyNamespace(ctx, nsid)
		if err != nil {
			return nil, fmt.Errorf("describing %s: %w", d.BDF(), err)
		}
		ids, err := c.NamespaceIDs(ctx, nsid)
		if err != nil {
			return nil, fmt.Errorf("describing %s: %w", d.BDF(), err)
		}
		info.Namespaces = append(info.Namespaces, NamespaceInfo{NSID: nsid, LBASize: ns.LBASize, Blocks: ns.NSZE, MetadataSize: ns.MetadataSize(), ExtendedLBA: ns.ExtendedLBA(), CSI: ids.CSI})
	}
	return &umdBackend{d: d, desc: info, closed: make(chan struct{})}, nil
}

func (b *umdBackend) info() DeviceInfo { return b.desc }

func (b *umdBackend) mapPool(mem []byte, owner iommu.Owner, align uint64) (mapping, error) {
	m, err := b.d.Space().MapPool(mem, owner, iommu.MapOptions{Align: align})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (b *umdBackend) createQueue(ctx context.Context, depth int, irq bool) (queue, error) {
	q, err := b.d.CreateQueuePair(ctx, umd.QueueOptions{Depth: depth, Interrupt: irq})
	if err != nil {
		return nil, err
	}
	if irq && q.Interrupt() == nil {
		q.Close()
		return nil, errors.New("queue pair created without an interrupt")
	}
	return umdQueue{q}, nil
}

func (b *umdBackend) createRemoteQueue(ctx context.Context, depth int, sq, cq uint64, irq bool) (queue, error) {
	r, err := b.d.CreateRemoteQueue(ctx, umd.RemoteQueueOptions{Depth: depth, SQ: sq, CQ: cq, Interrupt: irq})
	if err != nil {
		return nil, err
	}
	return remoteQueue{r}, nil
}

func (b *umdBackend) deviceFd() (int, error) { return b.d.DupDeviceFd() }
func (b *umdBackend) pageSize() int          { return b.d.Controller().PageSize() }
func (b *umdBackend) sgls() uint32           { return b.d.Controller().IdentifyController().SGLS }

func (b *umdBackend) doorbellStride() int { return 4 << b.d.Controller().CAP().DSTRD() }
func (b *umdBackend) maxTransfer() int    { return b.d.Controller().MaxTransfer() }
func (b *umdBackend) check() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.closed:
		return nil
	default:
		return b.d.Controller().Check()
	}
}

func (b *umdBackend) close() error {
	b.mu.Lock()
	b.closeOnce.Do(func() { close(b.closed) })
	b.mu.Unlock()
	return b.d.Close()
}

type umdQueue struct{ q *umd.QueuePair }

func (u umdQueue) ID() uint16  { return u.q.ID() }
func (u umdQueue) Depth() int  { return u.q.Depth() }
func (u umdQueue) Vector() int { return u.q.Vector() }
func (u umdQueue) EventFd() int {
	if u.q.Interrupt() == nil {
		return -1
	}
	return u.q.Interrupt().Fd()
}
func (u umdQueue) Close() error { return u.q.Close() }
func (u umdQueue) Exec(ctx context.Context, cmd *nvmelike.Command) (nvmelike.Completion, error) {
	return u.q.Exec(ctx, cmd)
}

type remoteQueue struct{ r *umd.RemoteQueue }

func (u remoteQueue) ID() uint16  { return u.r.ID() }
func (u remoteQueue) Depth() int  { return u.r.Depth() }
func (u remoteQueue) Vector() int { return u.r.Vector() }
func (u remoteQueue) EventFd() int {
	if u.r.Interrupt() == nil {
		return -1
	}
	return u.r.Interrupt().Fd()
}
func (u remoteQueue) Close() error { return u.r.Close() }
func (u remoteQueue) Exec(context.Context, *nvmelike.Command) (nvmelike.Completion, error) {
	return nvmelike.Completion{}, errors.New("the client drives this queue pair")
}
