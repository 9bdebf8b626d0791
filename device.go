package umd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/vfio"
)

// Options configure Open. The zero value (or nil) is usable.
type Options struct {
	// PoolSize is the DMA pool's size in bytes, rounded up to whole
	// hugepages; 0 means 64 MiB. Queues, PRP lists and the buffers from
	// Alloc all come from it.
	PoolSize int
	// HugepageSize is the pool's page size; 0 means 2 MiB.
	HugepageSize int
	// AllowSmallPages lets the pool fall back to smaller pages (down to 4
	// KiB) when hugepages run out; Device.PoolInfo says when it did.
	AllowSmallPages bool
	// NUMANode places the pool; nil means the device's own node (or any,
	// when the platform does not say).
	NUMANode *int
	// Controller configures the protocol engine.
	Controller nvmelike.Options
	// Sysfs is the sysfs root, for reading the device's NUMA node; ""
	// means /sys.
	Sysfs string
}

// Device is an NVMe-like controller owned through VFIO. A Device from Open
// is a set of one (see Set): it owns its container, group and DMA pool. A
// Device of a Set shares those with the set's other devices.
type Device struct {
	bdf   string
	node  int // NUMA node; hugepage.AnyNode when the platform does not say
	set   *Set
	alone bool // opened by Open: closing the device closes its set

	group *vfio.Group // shared with the devices of the same IOMMU group
	dev   *vfio.Device
	bar   *vfio.Mapping
	pool  *hugepage.Pool // the pool of the device's node, shared in a set
	space *iommu.Space   // the set's one DMA address space
	dma   *PoolDMA
	ctrl  *nvmelike.Controller
	msix  int // MSI-X vectors the device has

	// The kernel's request for the device back (VFIO's REQ interrupt):
	// reqIRQ is its eventfd, which a goroutine waits on until reqStop;
	// removal is closed when the request comes, reqDone when the
	// goroutine has returned. All nil when the device has no REQ index.
	reqIRQ  *vfio.Interrupt
	reqStop context.CancelFunc
	reqDone chan struct{}
	removal chan struct{}

	mu      sync.Mutex
	vectors []*vfio.Interrupt         // by MSI-X vector; nil when free (0 only when usable is 1)
	usable  int                       // vectors the controller takes (0 to usable-1): msix until Create I/O CQ refuses one
	sharers []int                     // by MSI-X vector: the queues wired to it
	waiters map[*vfio.Waiter]struct{} // queue pairs' waiters, closed with the device
	queues  int                       // queue pairs created and not yet closed
	closed  bool
}

// ErrClosed is returned by methods of a closed Device.
var ErrClosed = errors.New("umd: device closed")

const (
	pciCommand   = 0x04
	pciBusMaster = 1 << 2
)

// Open takes the PCI function bdf (bound to vfio-pci) and brings its
// controller up. It is OpenSet for a set of one device: the Device owns
// the set, and its Close closes it.
func Open(ctx context.Context, bdf string, o *Options) (*Device, error) {
	if o == nil {
		o = &Options{}
	}
	m, err := memberOf(o.Sysfs, bdf)
	if err != nil {
		return nil, err
	}
	if o.NUMANode != nil {
		m.node, m.strict = *o.NUMANode, true
	}
	s, err := openSet(ctx, []member{m}, setConfig{
		poolSize: o.PoolSize, pageSize: o.HugepageSize, allowSmall: o.AllowSmallPages,
		controller: o.Controller, sysfs: o.Sysfs, poolName: func(int) string { return "umd " + bdf },
	})
	if err != nil {
		return nil, err
	}
	d := s.devices[0]
	d.alone = true
	return d, nil
}

// openVFIO opens the device of its group (already set to the set's
// container), turns bus mastering on and maps BAR0.
func (d *Device) openVFIO() error {
	var err error
	if d.dev, err = d.group.Device(d.bdf); err != nil {
		return err
	}
	if err := d.setBusMaster(true); err != nil {
		return err
	}
	info, err := d.dev.RegionInfo(vfio.RegionBAR0)
	if err != nil {
		return err
	}
	if info.Size < 0x1000 {
		return fmt.Errorf("BAR0 is 0x%x bytes, too small for NVMe registers", info.Size)
	}
	if d.bar, err = d.dev.Mmap(vfio.RegionBAR0, 0, info.Size); err != nil {
		return err
	}
	irq, err := d.dev.IRQInfo(vfio.IRQMSIX)
	if err == nil {
		d.msix = irq.Count
	}
	if req, err := d.dev.IRQInfo(vfio.IRQReq); err == nil && req.Count > 0 {
		return d.watchRemoval()
	}
	return nil
}

// watchRemoval connects an eventfd to the device's REQ interrupt, which
// vfio-pci signals when something in the kernel wants the device back
// (an unbind from vfio-pci, a hot-unplug, removal through sysfs) and
// waits until the fd is closed, and starts the goroutine that closes
// d.removal when it is signalled.
func (d *Device) watchRemoval() error {
	irq, err := vfio.NewInterrupt()
	if err != nil {
		return fmt.Errorf("watching for requests to release %s: %w", d.bdf, err)
	}
	if err := d.dev.ConnectIRQ(vfio.IRQReq, 0, irq); err != nil {
		irq.Close()
		return fmt.Errorf("watching for requests to release %s: %w", d.bdf, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	d.reqIRQ, d.reqStop, d.reqDone, d.removal = irq, stop, make(chan struct{}), make(chan struct{})
	go func() {
		defer close(d.reqDone)
		if _, err := irq.Wait(ctx); err == nil {
			close(d.removal)
		}
	}()
	return nil
}

// RemovalRequested returns a channel that is closed when the kernel asks
// for the device back: someone unbinds it from vfio-pci, removes it
// through sysfs, or it is being hot-unplugged. The kernel then waits (and
// the unbind or removal blocks) until the device is closed, asking again
// every 10 seconds, so stop the I/O, let what is in flight complete and
// Close the device. It is nil (never ready) on a kernel or device without
// VFIO's request interrupt.
func (d *Device) RemovalRequested() <-chan struct{} { return d.removal }

// setBusMaster sets or clears Bus Master Enable in the PCI command
// register: without it the device can neither DMA nor signal MSI-X.
func (d *Device) setBusMaster(on bool) error {
	var cmd [2]byte
	if _, err := d.dev.ReadConfig(cmd[:], pciCommand); err != nil {
		return fmt.Errorf("enabling DMA for %s: %w", d.bdf, err)
	}
	v := binary.LittleEndian.Uint16(cmd[:])
	if on {
		v |= pciBusMaster
	} else {
		v &^= pciBusMaster
	}
	binary.LittleEndian.PutUint16(cmd[:], v)
	if _, err := d.dev.WriteConfig(cmd[:], pciCommand); err != nil {
		return fmt.Errorf("enabling DMA for %s: %w", d.bdf, err)
	}
	return nil
}

// numaNode reads the device's NUMA node from sysfs.
func numaNode(sysfs, bdf string) (int, bool) {
	if sysfs == "" {
		sysfs = "/sys"
	}
	raw, err := os.ReadFile(filepath.Join(sysfs, "bus", "pci", "devices", bdf, "numa_node"))
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// BDF returns the PCI address the device was opened at.
func (d *Device) BDF() string { return d.bdf }

// NUMANode returns the NUMA node the device is attached to, or
// hugepage.AnyNode (-1) when the platform does not say.
func (d *Device) NUMANode() int { return d.node }

// Set returns the set the device belongs to; a Device from Open is the
// only device of its own set.
func (d *Device) Set() *Set { return d.set }

// Controller returns the protocol engine driving the device: Identify
// data, namespaces, admin commands.
func (d *Device) Controller() *nvmelike.Controller { return d.ctrl }

// PoolInfo describes the DMA pool: page size, NUMA placement, fallback.
// In a set it is the pool of the device's node, which the set's devices
// on that node share.
func (d *Device) PoolInfo() hugepage.Info { return d.pool.Info() }

// Pool returns the device's DMA pool, for sharing its memory (its fd) with
// another process or exporting a buffer as a dma-buf. Carve it only
// through Alloc.
func (d *Device) Pool() *hugepage.Pool { return d.pool }

// PoolOffset returns where buffer b (from Alloc, or a Slice of one) starts
// in the pool.
func (d *Device) PoolOffset(b nvmelike.Buffer) (int, bool) {
	base := d.dma.mapping.IOVA()
	if b.IOVA < base || b.IOVA-base >= uint64(d.pool.Size()) {
		return 0, false
	}
	return int(b.IOVA - base), true
}

// Space returns the device's DMA address space, whose ledger names what
// every IOVA belongs to (for fault attribution). The devices of a set
// share one.
func (d *Device) Space() *iommu.Space { return d.space }

// Alloc returns size bytes of zeroed DMA memory, aligned to 4 KiB (or to
// the next power of two of size, for smaller sizes), with its IOVA.
func (d *Device) Alloc(size int) (nvmelike.Buffer, error) { return allocAligned(d.dma, size) }

// Free returns a buffer from Alloc (or, in a set, from any pool of the
// set) to its pool. The device must be done with it.
func (d *Device) Free(b nvmelike.Buffer) error { return d.set.Free(b) }

// QueueOptions configure CreateQueuePair.
type QueueOptions struct {
	// Depth is the number of entries per ring; 0 means 256.
	Depth int
	// Interrupt wires an MSI-X vector of its own to the queue pair's
	// completion queue; QueuePair.Wait then sleeps until it fires.
	Interrupt bool
	// ShareVector lets an Interrupt queue pair share a vector when every
	// vector of the device is taken (vector 0 stays the admin queue's):
	// it then gets the vector the fewest queue pairs share, and each of
	// that vector's interrupts wakes all of them (NVMe lets completion
	// queues share a vector; the Linux driver does the same when it has
	// fewer vectors than queues). Each queue pair waits on a vfio.Waiter
	// of its own (Wait, WaitThread), so none misses another's wake-up;
	// nothing may read the shared eventfd's count (see vfio.Waiter).
	// Without ShareVector, CreateQueuePair fails when no vector is free.
	ShareVector bool
}

// QueuePair is an I/O queue pair of the device: the engine's queue pair
// and, when asked for, the eventfd its completion interrupt signals.
type QueuePair struct {
	*nvmelike.QueuePair
	dev    *Device
	vector int
	irq    *vfio.Interrupt
	waiter *vfio.Waiter // its own wait on irq, made by the first Wait or WaitThread
	gone   bool         // closed: no longer counted in the device's queues
	spins  int          // empty polls Wait makes before it sleeps (SetPollSpins)
}

// CreateQueuePair creates an I/O queue pair.
func (d *Device) CreateQueuePair(ctx context.Context, o QueueOptions) (*QueuePair, error) {
	q := &QueuePair{dev: d}
	create := func(v int) (err error) {
		q.QueuePair, err = d.ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: o.Depth, Interrupts: o.Interrupt, Vector: uint16(v)})
		return err
	}
	var err error
	if o.Interrupt {
		q.vector, q.irq, err = d.withVector(o.ShareVector, create)
	} else {
		err = create(0)
	}
	if err != nil {
		return nil, fmt.Errorf("creating a queue pair on %s: %w", d.bdf, err)
	}
	d.mu.Lock()
	d.queues++
	d.mu.Unlock()
	return q, nil
}

// withVector wires a vector (wireVector) and runs create with it. A
// controller may accept fewer vectors than its MSI-X table holds (an
// SR-IOV VF uses only the vectors its primary controller gave it, and its
// table does not say how many): when create fails with Invalid Interrupt
// Vector, the vectors from that one up are marked unusable and create
// runs again on one below, down to vector 0. The error is create's when
// it fails otherwise.
func (d *Device) withVector(share bool, create func(v int) error) (int, *vfio.Interrupt, error) {
	for {
		v, irq, err := d.wireVector(share)
		if err != nil {
			return 0, nil, err
		}
		err = create(v)
		if err == nil {
			return v, irq, nil
		}
		d.mu.Lock()
		uerr := d.unwireVectorLocked(v, irq)
		retry := v > 0 && errors.Is(err, nvmelike.ErrInvalidInterruptVector) && v < d.usable
		if retry {
			d.usable = v
		}
		d.mu.Unlock()
		if !retry || uerr != nil {
			return 0, nil, errors.Join(err, uerr)
		}
	}
}

// wireVector picks a free MSI-X vector and connects a new eventfd to it;
// with share and none free, the vector the fewest queues share. Vector 0
// is the admin queue's: I/O queues get it only when the controller takes
// no other (a single-vector device, or a VF given one vector), and then
// they share it with the admin queue, whose completions wake them too (the
// Linux driver does the same).
func (d *Device) wireVector(share bool) (int, *vfio.Interrupt, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, nil, ErrClosed
	}
	if d.vectors == nil {
		if d.msix < 1 {
			return 0, nil, fmt.Errorf("wiring an interrupt on %s: the device has no MSI-X vectors; poll its queues", d.bdf)
		}
		// Allocate every vector now: changing the set later means
		// disabling MSI-X for a moment on kernels without dynamic
		// MSI-X (6.1), losing interrupts of running queues.
		if err := d.dev.EnableIRQ(vfio.IRQMSIX, d.msix); err != nil {
			return 0, nil, fmt.Errorf("wiring an interrupt on %s: %w", d.bdf, err)
		}
		d.vectors = make([]*vfio.Interrupt, d.msix)
		d.sharers = make([]int, d.msix)
		if d.usable == 0 || d.usable > d.msix {
			d.usable = d.msix
		}
	}
	first := 1
	if d.usable == 1 {
		first = 0
	}
	v := -1
	for i := first; i < d.usable; i++ {
		if d.vectors[i] == nil {
			v = i
			break
		}
	}
	if v < 0 && share {
		least := first
		for i := first + 1; i < d.usable; i++ {
			if d.sharers[i] < d.sharers[least] {
				least = i
			}
		}
		d.sharers[least]++
		return least, d.vectors[least], nil
	}
	if v < 0 {
		if first == 0 {
			return 0, nil, fmt.Errorf("wiring an interrupt on %s: the controller takes one MSI-X vector, which the admin queue and a queue pair have; share it (QueueOptions.ShareVector) or poll", d.bdf)
		}
		return 0, nil, fmt.Errorf("wiring an interrupt on %s: all %d MSI-X vectors for I/O queues are taken (vector 0 is the admin queue's); share them (QueueOptions.ShareVector) or poll", d.bdf, d.usable-1)
	}
	irq, err := vfio.NewInterrupt()
	if err != nil {
		return 0, nil, err
	}
	if err := d.dev.ConnectIRQ(vfio.IRQMSIX, v, irq); err != nil {
		irq.Close()
		return 0, nil, fmt.Errorf("wiring MSI-X vector %d of %s: %w", v, d.bdf, err)
	}
	d.vectors[v] = irq
	d.sharers[v] = 1
	return v, irq, nil
}

// unwireVectorLocked undoes wireVector for a queue that holds irq on
// vector v (nothing when irq is nil: the queue has no interrupt): it
// disconnects and closes the vector's eventfd once no queue shares it.
func (d *Device) unwireVectorLocked(v int, irq *vfio.Interrupt) error {
	if irq == nil || v < 0 || v >= len(d.vectors) || d.vectors[v] != irq {
		return nil
	}
	if d.sharers[v]--; d.sharers[v] > 0 {
		return nil
	}
	d.vectors[v] = nil
	return errors.Join(d.dev.DisconnectIRQ(vfio.IRQMSIX, v), irq.Close())
}

// Vector returns the MSI-X vector of the queue pair's completion
// interrupt, or 0 when it has none. Vector 0 is also the admin queue's,
// which queue pairs share when the controller takes only one vector:
// Interrupt tells the two cases apart.
func (q *QueuePair) Vector() int { return q.vector }

// VectorsInUse returns how many MSI-X vectors queue pairs hold (a shared
// vector counts once).
func (d *Device) VectorsInUse() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, irq := range d.vectors {
		if irq != nil {
			n++
		}
	}
	return n
}

// Interrupt returns the eventfd of the queue pair's completion interrupt,
// or nil when it was created without one. Callers with their own epoll
// loop use its Fd. Queue pairs that share a vector (ShareVector) return
// the same Interrupt: wait on it through Wait, WaitThread or a vfio.Waiter
// of your own, and do not read its count.
func (q *QueuePair) Interrupt() *vfio.Interrupt { return q.irq }

// MaskInterrupt stops the queue pair's completion interrupt: its eventfd
// is no longer signalled (vfio-pci masks the vector at the device) until
// UnmaskInterrupt. vfio-pci has no mask operation for MSI-X, so this
// disconnects the vector from its eventfd and UnmaskInterrupt connects the
// same eventfd again. Completions keep arriving in the completion queue
// meanwhile: poll after unmasking, since an interrupt raised while masked
// is not guaranteed to be delivered. A shared vector (ShareVector) is
// masked for every queue pair on it.
func (q *QueuePair) MaskInterrupt() error {
	if q.irq == nil {
		return fmt.Errorf("masking the interrupt of queue pair %d: it has none", q.ID())
	}
	if q.dev == nil {
		return fmt.Errorf("masking the interrupt of queue pair %d: it is attached; its device's owner wires its vector", q.ID())
	}
	return q.dev.dev.DisconnectIRQ(vfio.IRQMSIX, q.vector)
}

// UnmaskInterrupt undoes MaskInterrupt.
func (q *QueuePair) UnmaskInterrupt() error {
	if q.irq == nil {
		return fmt.Errorf("unmasking the interrupt of queue pair %d: it has none", q.ID())
	}
	if q.dev == nil {
		return fmt.Errorf("unmasking the interrupt of queue pair %d: it is attached; its device's owner wires its vector", q.ID())
	}
	return q.dev.dev.ConnectIRQ(vfio.IRQMSIX, q.vector, q.irq)
}

// SetPollSpins makes Wait adaptive: it polls up to n times in a row
// without a completion before it sleeps on the interrupt. 0 (the default)
// sleeps after the first empty poll; spinning trades a core for the
// interrupt's latency. Without an interrupt, Wait always spins.
func (q *QueuePair) SetPollSpins(n int) { q.spins = max(n, 0) }

// Wait polls the queue pair for completions and, when there are none,
// sleeps until its interrupt fires or ctx is done, then polls again. It
// returns the number of completions handled. Without an interrupt it
// polls until at least one completion arrives or ctx is done. With
// SetPollSpins it polls that many times before each sleep. It sleeps on
// the queue pair's own vfio.Waiter, which never reads the eventfd's count.
// A sleep lasts at most nvmelike.CheckInterval: then it reads the
// controller's status (QueuePair.Check), so that a device gone, fatal or
// reset from outside ends the wait with that error instead of sleeping
// until ctx is done.
func (q *QueuePair) Wait(ctx context.Context) (int, error) {
	for empty := 0; ; empty++ {
		n, err := q.Poll(0)
		if n > 0 || err != nil {
			return n, err
		}
		if q.Outstanding() == 0 {
			return 0, nil
		}
		if empty < q.spins {
			continue
		}
		empty = 0
		if q.irq == nil {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			continue
		}
		// A completion posted between Poll and here has already
		// queued its interrupt in the waiter (made just now, it finds
		// the count not zero), so this does not sleep through it.
		w, err := q.waiterOf()
		if err != nil {
			return 0, err
		}
		woken, err := w.WaitTimeout(ctx, nvmelike.CheckInterval)
		if err != nil {
			return 0, err
		}
		if !woken {
			if err := q.Check(); err != nil {
				return 0, fmt.Errorf("queue pair %d: %d commands outstanding: %w", q.ID(), q.Outstanding(), err)
			}
		}
	}
}

// WaitThread blocks the calling OS thread until the queue pair's interrupt
// fires or timeout passes, without polling (vfio.Waiter.WaitThread, which
// says when to use it): for a completion loop locked to its thread that
// polls between waits. It reports whether the interrupt fired since the
// previous wait; it fails for a queue pair without an interrupt.
func (q *QueuePair) WaitThread(timeout time.Duration) (bool, error) {
	w, err := q.waiterOf()
	if err != nil {
		return false, err
	}
	return w.WaitThread(timeout)
}

// waiterOf returns the queue pair's Waiter on its interrupt, making it on
// the first call (two file descriptors, until Close: a queue pair whose
// eventfd is waited on elsewhere, such as a broker's, never makes one).
func (q *QueuePair) waiterOf() (*vfio.Waiter, error) {
	if q.waiter != nil {
		return q.waiter, nil
	}
	if q.irq == nil {
		return nil, fmt.Errorf("waiting for the interrupt of queue pair %d: it has none", q.ID())
	}
	w, err := q.irq.NewWaiter()
	if err != nil {
		return nil, fmt.Errorf("waiting for the interrupt of queue pair %d: %w", q.ID(), err)
	}
	if d := q.dev; d != nil {
		// Known to the device, which closes it if the queue pair is
		// not closed first.
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.closed || q.gone {
			w.Close()
			return nil, fmt.Errorf("waiting for the interrupt of queue pair %d: %w", q.ID(), ErrClosed)
		}
		if d.waiters == nil {
			d.waiters = make(map[*vfio.Waiter]struct{})
		}
		d.waiters[w] = struct{}{}
	}
	q.waiter = w
	return w, nil
}

// Close deletes the queue pair and frees its interrupt vector. For an
// attached queue pair (AttachQueuePair) it detaches instead and closes
// its eventfd; the queues' creator deletes them.
func (q *QueuePair) Close() error {
	if q.dev == nil {
		return q.closeAttached()
	}
	err := q.dev.ctrl.DeleteQueuePair(context.Background(), q.QueuePair)
	d := q.dev
	d.mu.Lock()
	defer d.mu.Unlock()
	if q.gone {
		return err // closed before: its vector is unwired already
	}
	q.gone = true
	d.queues--
	if _, ok := d.waiters[q.waiter]; ok {
		// Not yet closed by the device's Close.
		delete(d.waiters, q.waiter)
		err = errors.Join(err, q.waiter.Close())
	}
	return errors.Join(err, d.unwireVectorLocked(q.vector, q.irq))
}

// Device returns the device the queue pair belongs to; nil for an
// attached queue pair.
func (q *QueuePair) Device() *Device { return q.dev }

// Close shuts the controller down and releases what the device holds. A
// Device from Open closes its set too: container, group and pool. A
// device of a Set releases only its own (controller, interrupts, BAR,
// device fd); Set.Close releases the rest. It is safe to call twice.
func (d *Device) Close() error {
	if d.alone {
		return d.set.Close()
	}
	return d.close()
}

// close marks the device closed and undoes what openVFIO and the engine
// took, once.
func (d *Device) close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	return d.release()
}

// release undoes the device's part of opening, in order: no more DMA
// (controller shutdown, bus mastering off), then interrupts, the BAR and
// the device fd. The set's DMA mappings, pools, groups and container
// outlive it.
func (d *Device) release() error {
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if d.ctrl != nil {
		keep(d.ctrl.Close())
	}
	if d.reqIRQ != nil {
		d.reqStop()
		<-d.reqDone
		keep(d.dev.DisableIRQ(vfio.IRQReq))
		keep(d.reqIRQ.Close())
		d.reqIRQ = nil
	}
	// Under mu: a QueuePair.Close meanwhile unwires its vector.
	d.mu.Lock()
	if d.dev != nil {
		keep(d.setBusMaster(false))
		if d.vectors != nil {
			keep(d.dev.DisableIRQ(vfio.IRQMSIX))
		}
	}
	for i, irq := range d.vectors {
		if irq != nil {
			keep(irq.Close())
			d.vectors[i] = nil
		}
	}
	for w := range d.waiters {
		keep(w.Close())
	}
	d.waiters = nil
	d.mu.Unlock()
	if d.bar != nil {
		keep(d.bar.Close())
	}
	if d.dev != nil {
		keep(d.dev.Close())
	}
	if len(errs) > 0 {
		return fmt.Errorf("closing %s: %w", d.bdf, errors.Join(errs...))
	}
	return nil
}
