package broker

import (
	"context"
	"errors"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/vfio"
)

// fakeDevice is a backend without hardware: a real iommu.Space over the
// identity mapper (so the ledger is the real one), queue pairs that hold
// an eventfd each, and a namespace kept in memory.
type fakeDevice struct {
	space *iommu.Space
	desc  DeviceInfo

	mu     sync.Mutex
	qids   map[uint16]bool
	blocks map[uint64][]byte // by LBA
	rings  [][2]uint64       // SQ and CQ IOVAs of remote queues made
	closed bool
}

func newFakeDevice(bdf string, maxQueues int) (*fakeDevice, error) {
	m, err := iommu.NewIdentity(iommu.IdentityOptions{})
	if err != nil {
		return nil, err
	}
	s, err := iommu.New(m, iommu.Options{})
	if err != nil {
		return nil, err
	}
	return &fakeDevice{
		space:  s,
		desc:   DeviceInfo{BDF: bdf, Serial: "fake" + bdf, Model: "fake", MaxQueues: maxQueues, Namespaces: []NamespaceInfo{{NSID: 1, LBASize: 512, Blocks: 1024}}},
		qids:   map[uint16]bool{},
		blocks: map[uint64][]byte{},
	}, nil
}

func (f *fakeDevice) info() DeviceInfo { return f.desc }

func (f *fakeDevice) mapPool(mem []byte, owner iommu.Owner, align uint64) (mapping, error) {
	m, err := f.space.MapPool(mem, owner, iommu.MapOptions{Align: align})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (f *fakeDevice) createQueue(_ context.Context, depth int, _ bool) (queue, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := uint16(1); int(id) <= f.desc.MaxQueues; id++ {
		if !f.qids[id] {
			irq, err := vfio.NewInterrupt()
			if err != nil {
				return nil, err
			}
			f.qids[id] = true
			return &fakeQueue{f: f, id: id, depth: depth, irq: irq}, nil
		}
	}
	return nil, errors.New("fake: no free queue")
}

func (f *fakeDevice) createRemoteQueue(ctx context.Context, depth int, sq, cq uint64, irq bool) (queue, error) {
	q, err := f.createQueue(ctx, depth, irq)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.rings = append(f.rings, [2]uint64{sq, cq})
	f.mu.Unlock()
	return q, nil
}

// deviceFd returns a descriptor that is no VFIO device: host tests see
// the client refuse it.
func (f *fakeDevice) deviceFd() (int, error) { return unix.MemfdCreate("fake-vfio", unix.MFD_CLOEXEC) }
func (f *fakeDevice) pageSize() int          { return 4096 }
func (f *fakeDevice) sgls() uint32           { return 0 }
func (f *fakeDevice) check() error           { return nil }

func (f *fakeDevice) doorbellStride() int { return 4 }
func (f *fakeDevice) maxTransfer() int    { return 128 << 10 }
func (f *fakeDevice) close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return f.space.Close()
}

func (f *fakeDevice) queuesInUse() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.qids)
}

type fakeQueue struct {
	f     *fakeDevice
	id    uint16
	depth int
	irq   *vfio.Interrupt
}

func (q *fakeQueue) ID() uint16   { return q.id }
func (q *fakeQueue) Depth() int   { return q.depth }
func (q *fakeQueue) Vector() int  { return int(q.id) }
func (q *fakeQueue) EventFd() int { return q.irq.Fd() }

func (q *fakeQueue) Exec(_ context.Context, cmd *nvmelike.Command) (nvmelike.Completion, error) {
	q.f.mu.Lock()
	defer q.f.mu.Unlock()
	lba := uint64(cmd.CDW10) | uint64(cmd.CDW11)<<32
	n := int(cmd.CDW12&0xffff) + 1
	switch cmd.Opcode {
	case nvmelike.CmdFlush:
		return nvmelike.Completion{}, nil
	case nvmelike.CmdWriteZeroes:
		for i := range n {
			q.f.blocks[lba+uint64(i)] = make([]byte, 512)
		}
		return nvmelike.Completion{}, nil
	}
	if len(cmd.Data.Bytes) != n*512 {
		return nvmelike.Completion{}, errors.New("fake: data length")
	}
	for i := 0; i < n; i++ {
		b := cmd.Data.Bytes[i*512 : (i+1)*512]
		switch cmd.Opcode {
		case nvmelike.CmdWrite:
			q.f.blocks[lba+uint64(i)] = append([]byte(nil), b...)
		case nvmelike.CmdRead:
			copy(b, q.f.blocks[lba+uint64(i)])
		}
	}
	_ = q.irq.Signal()
	return nvmelike.Completion{}, nil
}

func (q *fakeQueue) Close() error {
	q.f.mu.Lock()
	delete(q.f.qids, q.id)
	q.f.mu.Unlock()
	return q.irq.Close()
}
