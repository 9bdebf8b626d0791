package broker

import (
	"errors"
	"fmt"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/internal/mmio"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/vfio"
)

// trustedState is what a trusted session holds in the client: the rings
// the broker made, the device (for BAR0), and the queue pairs attached to
// the rings.
type trustedState struct {
	rings  *hugepage.Pool
	dev    *vfio.Device
	bar    *vfio.Mapping
	dma    *umd.PoolDMA
	queues []*umd.QueuePair
}

// attach sets a trusted session up from the rings' descriptor and the
// device's (which it takes, setting *devFd to -1): maps BAR0 and attaches a
// queue pair to each queue the broker created, with its eventfd.
func (s *Session) attach(ringsFd int, devFd *int) (err error) {
	l := &s.Layout
	t := &trustedState{}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	if t.rings, err = hugepage.OpenPool(ringsFd); err != nil {
		return fmt.Errorf("opening the queue rings: %w", err)
	}
	if int64(t.rings.Size()) != l.RingsBytes {
		return fmt.Errorf("the rings have %d bytes, the layout says %d", t.rings.Size(), l.RingsBytes)
	}
	t.dev, err = vfio.DeviceFromFD(*devFd, l.Device)
	*devFd = -1
	if err != nil {
		return err
	}
	info, err := t.dev.RegionInfo(vfio.RegionBAR0)
	if err != nil {
		return err
	}
	if info.Size < 0x2000 {
		return fmt.Errorf("BAR0 is 0x%x bytes, too small for NVMe registers and doorbells", info.Size)
	}
	if t.bar, err = t.dev.Mmap(vfio.RegionBAR0, 0, info.Size); err != nil {
		return err
	}
	regs := mmio.New(t.bar.Bytes())
	t.dma = umd.NewPoolDMA(s.Pool, l.PoolIOVA)
	// The engine checks each LBA command's data length against these
	// (and, with metadata in a buffer of its own, that it has one).
	formats := map[uint32]nvmelike.BlockFormat{}
	for _, ns := range l.Namespaces {
		formats[ns.NSID] = nvmelike.BlockFormat{LBASize: ns.LBASize, Metadata: ns.MetadataSize, Extended: ns.ExtendedLBA}
	}
	ring := func(off int64, n int) (nvmelike.Buffer, error) {
		if off < 0 || int64(n) > l.RingsBytes || off > l.RingsBytes-int64(n) {
			return nvmelike.Buffer{}, fmt.Errorf("a ring of %d bytes at offset %d is outside the %d-byte rings memory", n, off, l.RingsBytes)
		}
		return nvmelike.Buffer{Bytes: t.rings.Bytes()[off : off+int64(n) : off+int64(n)], IOVA: l.RingsIOVA + uint64(off)}, nil
	}
	for i, qi := range l.Queues {
		sq, err := ring(qi.SQOffset, qi.Depth*64)
		if err != nil {
			return fmt.Errorf("queue %d: %w", qi.ID, err)
		}
		cq, err := ring(qi.CQOffset, qi.Depth*16)
		if err != nil {
			return fmt.Errorf("queue %d: %w", qi.ID, err)
		}
		var irq *vfio.Interrupt
		if i < len(s.Interrupts) {
			irq = s.Interrupts[i]
		}
		q, err := umd.AttachQueuePair(nvmelike.AttachOptions{
			ID: qi.ID, Depth: qi.Depth, SQ: sq, CQ: cq, Registers: regs, DMA: t.dma,
			PageSize: l.PageSize, MaxTransfer: l.MaxTransfer, Formats: formats, SGLS: l.SGLS,
		}, irq, qi.Vector)
		if err != nil {
			return err
		}
		t.queues = append(t.queues, q)
	}
	s.trusted = t
	return nil
}

// close detaches the queue pairs (closing their eventfds) and releases the
// mappings. The broker deletes the queues when the connection closes.
func (t *trustedState) close() error {
	var errs []error
	for _, q := range t.queues {
		errs = append(errs, q.Close())
	}
	t.queues = nil
	if t.bar != nil {
		errs = append(errs, t.bar.Close())
	}
	if t.dev != nil {
		errs = append(errs, t.dev.Close())
	}
	if t.rings != nil {
		errs = append(errs, t.rings.Close())
	}
	return errors.Join(errs...)
}

// QueuePairs returns a trusted session's queue pairs, in Layout.Queues
// order: the same type, with the same submission and completion path, as
// the queue pairs of a device opened with umd.Open; the broker is not on
// their I/O path. Their buffers come from Alloc. A mediated session has
// none.
func (s *Session) QueuePairs() []*umd.QueuePair {
	if s.trusted == nil {
		return nil
	}
	return s.trusted.queues
}

// Alloc carves a DMA buffer out of the session's pool (trusted sessions;
// mediated ones address their pool by offset). Free gives it back.
func (s *Session) Alloc(size int) (nvmelike.Buffer, error) {
	if s.trusted == nil {
		return nvmelike.Buffer{}, errors.New("allocating from a session: only trusted sessions allocate; mediated ones use pool offsets")
	}
	return s.trusted.dma.Alloc(size, 0)
}

// Free returns a buffer from Alloc.
func (s *Session) Free(b nvmelike.Buffer) error {
	if s.trusted == nil {
		return errors.New("freeing in a session: not a trusted session")
	}
	return s.trusted.dma.Free(b)
}
