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

	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/internal/mmio"
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

// Device is an NVMe-like controller owned through VFIO.
type Device struct {
	bdf       string
	container *vfio.Container
	group     *vfio.Group
	dev       *vfio.Device
	bar       *vfio.Mapping
	pool      *hugepage.Pool
	space     *iommu.Space
	dma       *dmaPool
	ctrl      *nvmelike.Controller
	msix      int // MSI-X vectors the device has

	mu      sync.Mutex
	vectors []*vfio.Interrupt // by MSI-X vector; nil when free (0 is never used)
	closed  bool
}

// ErrClosed is returned by methods of a closed Device.
var ErrClosed = errors.New("umd: device closed")

const (
	pciCommand   = 0x04
	pciBusMaster = 1 << 2
)

// Open takes the PCI function bdf (bound to vfio-pci) and brings its
// controller up.
func Open(ctx context.Context, bdf string, o *Options) (_ *Device, err error) {
	if o == nil {
		o = &Options{}
	}
	d := &Device{bdf: bdf}
	defer func() {
		if err != nil {
			d.release()
		}
	}()
	if err := d.openVFIO(); err != nil {
		return nil, err
	}
	if err := d.openDMA(o); err != nil {
		return nil, err
	}
	d.ctrl, err = nvmelike.Open(ctx, mmio.New(d.bar.Bytes()), d.dma, &o.Controller)
	if err != nil {
		return nil, fmt.Errorf("bringing up the controller of %s: %w", bdf, err)
	}
	return d, nil
}

// openVFIO opens container, group and device, turns bus mastering on and
// maps BAR0.
func (d *Device) openVFIO() error {
	n, err := vfio.GroupOf(d.bdf)
	if err != nil {
		return fmt.Errorf("opening %s: %w", d.bdf, err)
	}
	if d.container, err = vfio.OpenContainer(); err != nil {
		return fmt.Errorf("opening %s: %w", d.bdf, err)
	}
	if d.group, err = vfio.OpenGroup(n); err != nil {
		return fmt.Errorf("opening %s: %w", d.bdf, err)
	}
	if err := d.group.SetContainer(d.container); err != nil {
		return fmt.Errorf("opening %s: %w", d.bdf, err)
	}
	if err := d.container.SetIOMMU(vfio.Type1v2IOMMU); err != nil {
		return fmt.Errorf("opening %s: %w", d.bdf, err)
	}
	if d.dev, err = d.group.Device(d.bdf); err != nil {
		return fmt.Errorf("opening %s: %w", d.bdf, err)
	}
	if err := d.setBusMaster(true); err != nil {
		return err
	}
	info, err := d.dev.RegionInfo(vfio.RegionBAR0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", d.bdf, err)
	}
	if info.Size < 0x1000 {
		return fmt.Errorf("opening %s: BAR0 is 0x%x bytes, too small for NVMe registers", d.bdf, info.Size)
	}
	if d.bar, err = d.dev.Mmap(vfio.RegionBAR0, 0, info.Size); err != nil {
		return fmt.Errorf("opening %s: %w", d.bdf, err)
	}
	irq, err := d.dev.IRQInfo(vfio.IRQMSIX)
	if err == nil {
		d.msix = irq.Count
	}
	return nil
}

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

// openDMA makes the pool and maps it whole into the device's IOMMU domain.
func (d *Device) openDMA(o *Options) error {
	size := o.PoolSize
	if size == 0 {
		size = 64 << 20
	}
	page := o.HugepageSize
	if page == 0 {
		page = 2 << 20
	}
	size = (size + page - 1) / page * page
	node := hugepage.AnyNode
	if o.NUMANode != nil {
		node = *o.NUMANode
	} else if n, ok := numaNode(o.Sysfs, d.bdf); ok {
		node = n
	}
	var err error
	d.pool, err = hugepage.New(hugepage.Options{
		Size: size, PageSize: page, NUMANode: node, NUMAPreferred: o.NUMANode == nil,
		AllowFallback: o.AllowSmallPages, Name: "umd " + d.bdf,
	})
	if err != nil {
		return fmt.Errorf("making the DMA pool of %s: %w", d.bdf, err)
	}
	mapper, err := iommu.NewVFIO(d.container)
	if err != nil {
		return fmt.Errorf("mapping the DMA pool of %s: %w", d.bdf, err)
	}
	if d.space, err = iommu.New(mapper, iommu.Options{}); err != nil {
		return fmt.Errorf("mapping the DMA pool of %s: %w", d.bdf, err)
	}
	m, err := d.space.MapPool(d.pool.Bytes(), iommu.Owner{Name: "DMA pool", Tag: d.bdf}, iommu.MapOptions{Align: uint64(d.pool.PageSize())})
	if err != nil {
		return fmt.Errorf("mapping the DMA pool of %s: %w", d.bdf, err)
	}
	d.dma = &dmaPool{pool: d.pool, mapping: m, live: map[uint64]hugepage.Buffer{}}
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

// Controller returns the protocol engine driving the device: Identify
// data, namespaces, admin commands.
func (d *Device) Controller() *nvmelike.Controller { return d.ctrl }

// PoolInfo describes the DMA pool: page size, NUMA placement, fallback.
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
// every IOVA belongs to (for fault attribution).
func (d *Device) Space() *iommu.Space { return d.space }

// Alloc returns size bytes of zeroed DMA memory, aligned to 4 KiB (or to
// the next power of two of size, for smaller sizes), with its IOVA.
func (d *Device) Alloc(size int) (nvmelike.Buffer, error) {
	align := 4096
	if size < align {
		align = 512
		for align < size {
			align <<= 1
		}
	}
	return d.dma.Alloc(size, align)
}

// Free returns a buffer from Alloc to the pool. The device must be done
// with it.
func (d *Device) Free(b nvmelike.Buffer) error { return d.dma.Free(b) }

// QueueOptions configure CreateQueuePair.
type QueueOptions struct {
	// Depth is the number of entries per ring; 0 means 256.
	Depth int
	// Interrupt wires an MSI-X vector of its own to the queue pair's
	// completion queue; QueuePair.Wait then sleeps until it fires.
	Interrupt bool
}

// QueuePair is an I/O queue pair of the device: the engine's queue pair
// and, when asked for, the eventfd its completion interrupt signals.
type QueuePair struct {
	*nvmelike.QueuePair
	dev    *Device
	vector int
	irq    *vfio.Interrupt
}

// CreateQueuePair creates an I/O queue pair.
func (d *Device) CreateQueuePair(ctx context.Context, o QueueOptions) (*QueuePair, error) {
	q := &QueuePair{dev: d}
	if o.Interrupt {
		v, irq, err := d.wireVector()
		if err != nil {
			return nil, err
		}
		q.vector, q.irq = v, irq
	}
	var err error
	q.QueuePair, err = d.ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: o.Depth, Interrupts: o.Interrupt, Vector: uint16(q.vector)})
	if err != nil {
		d.unwireVector(q.vector)
		return nil, fmt.Errorf("creating a queue pair on %s: %w", d.bdf, err)
	}
	return q, nil
}

// wireVector picks a free MSI-X vector (vector 0 is left to the admin
// queue) and connects a new eventfd to it.
func (d *Device) wireVector() (int, *vfio.Interrupt, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, nil, ErrClosed
	}
	if d.vectors == nil {
		if d.msix < 2 {
			return 0, nil, fmt.Errorf("wiring an interrupt on %s: the device has %d MSI-X vectors", d.bdf, d.msix)
		}
		// Allocate every vector now: changing the set later means
		// disabling MSI-X for a moment on kernels without dynamic
		// MSI-X (6.1), losing interrupts of running queues.
		if err := d.dev.EnableIRQ(vfio.IRQMSIX, d.msix); err != nil {
			return 0, nil, fmt.Errorf("wiring an interrupt on %s: %w", d.bdf, err)
		}
		d.vectors = make([]*vfio.Interrupt, d.msix)
	}
	v := 0
	for i := 1; i < len(d.vectors); i++ {
		if d.vectors[i] == nil {
			v = i
			break
		}
	}
	if v == 0 {
		return 0, nil, fmt.Errorf("wiring an interrupt on %s: all %d MSI-X vectors in use", d.bdf, len(d.vectors)-1)
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
	return v, irq, nil
}

func (d *Device) unwireVector(v int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v <= 0 || v >= len(d.vectors) || d.vectors[v] == nil {
		return nil
	}
	irq := d.vectors[v]
	d.vectors[v] = nil
	err := d.dev.DisconnectIRQ(vfio.IRQMSIX, v)
	return errors.Join(err, irq.Close())
}

// Vector returns the MSI-X vector of the queue pair's completion
// interrupt, or 0 when it has none.
func (q *QueuePair) Vector() int { return q.vector }

// VectorsInUse returns how many MSI-X vectors queue pairs hold.
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
// loop use its Fd.
func (q *QueuePair) Interrupt() *vfio.Interrupt { return q.irq }

// MaskInterrupt stops the queue pair's completion interrupt: its eventfd
// is no longer signalled (vfio-pci masks the vector at the device) until
// UnmaskInterrupt. vfio-pci has no mask operation for MSI-X, so this
// disconnects the vector from its eventfd and UnmaskInterrupt connects the
// same eventfd again. Completions keep arriving in the completion queue
// meanwhile: poll after unmasking, since an interrupt raised while masked
// is not guaranteed to be delivered.
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

// Wait polls the queue pair for completions and, when there are none,
// sleeps until its interrupt fires or ctx is done, then polls again. It
// returns the number of completions handled. Without an interrupt it
// polls until at least one completion arrives or ctx is done.
func (q *QueuePair) Wait(ctx context.Context) (int, error) {
	for {
		n, err := q.Poll(0)
		if n > 0 || err != nil {
			return n, err
		}
		if q.Outstanding() == 0 {
			return 0, nil
		}
		if q.irq == nil {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			continue
		}
		// A completion posted between Poll and here has already
		// incremented the eventfd's counter, so this does not sleep
		// through it.
		if _, err := q.irq.Wait(ctx); err != nil {
			return 0, err
		}
	}
}

// Close deletes the queue pair and frees its interrupt vector. For an
// attached queue pair (AttachQueuePair) it detaches instead and closes
// its eventfd; the queues' creator deletes them.
func (q *QueuePair) Close() error {
	if q.dev == nil {
		return q.closeAttached()
	}
	err := q.dev.ctrl.DeleteQueuePair(context.Background(), q.QueuePair)
	return errors.Join(err, q.dev.unwireVector(q.vector))
}

// Close shuts the controller down and releases everything Open took. It
// is safe to call twice.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	return d.release()
}

// release undoes Open, in order: no more DMA, then interrupts, mappings,
// memory and the VFIO objects.
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
	if d.space != nil {
		keep(d.space.Close())
	}
	if d.pool != nil {
		keep(d.pool.Close())
	}
	if d.bar != nil {
		keep(d.bar.Close())
	}
	if d.dev != nil {
		keep(d.dev.Close())
	}
	if d.group != nil {
		keep(d.group.Close())
	}
	if d.container != nil {
		keep(d.container.Close())
	}
	if len(errs) > 0 {
		return fmt.Errorf("closing %s: %w", d.bdf, errors.Join(errs...))
	}
	return nil
}
