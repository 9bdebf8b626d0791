package umd

import (
	"context"
	"errors"
	"fmt"
	"math/bits"

	"github.com/umdkit/umd/nvmelike"
)

// ErrMixedBlockSizes is wrapped when the namespaces a Striped would span
// have different logical block sizes.
var ErrMixedBlockSizes = errors.New("the namespaces have different block sizes")

// ErrStripeRange is wrapped when an I/O of a Striped falls outside it or
// is not a whole number of blocks.
var ErrStripeRange = errors.New("outside the striped namespace")

// StripeOptions configure Set.Striped.
type StripeOptions struct {
	// StripeSize is how many bytes go to one device before the next
	// device's turn: a multiple of the block size, at most 65536 blocks;
	// 0 means 128 KiB.
	StripeSize int
	// NSID is the namespace used on every device. 0 means each device's
	// first namespace whose blocks are BlockSize bytes.
	NSID uint32
	// BlockSize picks the namespaces when NSID is 0; 0 means 512.
	BlockSize int
	// Depth is each device's queue pair depth; 0 means 256.
	Depth int
}

// Striped is one logical block device over a namespace of each device of
// a set, RAID-0 style: logical blocks go StripeSize bytes at a time to
// device 0, 1, ..., N-1, 0, ... Read and Write split a transfer at stripe
// boundaries, submit every piece to its device's queue pair, ring each
// device's doorbell once and return when all pieces have completed: one
// call spreads the I/O over the set.
//
// A Striped has one polled queue pair per device and, like a queue pair,
// is used from one goroutine at a time. Read and Write allocate nothing.
type Striped struct {
	members []stripeMember
	shift   uint   // log2 of the block size
	unit    uint64 // stripe size in blocks
	blocks  uint64 // logical blocks in all

	pending int   // pieces submitted and not completed
	err     error // the first piece's error of the current call
	done    nvmelike.Callback
	cmd     nvmelike.Command // the piece being submitted (kept off the stack)
	closers []*QueuePair     // queue pairs Close deletes (Set.Striped's)
}

// stripeMember is one device's share: its queue pair and namespace.
type stripeMember struct {
	name  string
	dev   *Device // nil for the tests' software controllers
	q     *nvmelike.QueuePair
	nsid  uint32
	rings bool // has pieces not rung yet in the current call
}

// stripeSource is what newStriped needs of a device; q may be nil (and
// set afterwards).
type stripeSource struct {
	name string
	dev  *Device
	ctrl *nvmelike.Controller
	q    *nvmelike.QueuePair
}

// Striped creates a queue pair on every open device of the set and
// returns the striped view over them. Close it before the set.
func (s *Set) Striped(ctx context.Context, o StripeOptions) (_ *Striped, err error) {
	var srcs []stripeSource
	for _, d := range s.devices {
		d.mu.Lock()
		closed := d.closed
		d.mu.Unlock()
		if !closed {
			srcs = append(srcs, stripeSource{name: d.bdf, dev: d, ctrl: d.ctrl})
		}
	}
	// Lay the stripes out first: a set whose namespaces do not fit
	// together fails before any queue is made.
	st, err := newStriped(ctx, srcs, o)
	if err != nil {
		return nil, fmt.Errorf("striping %s: %w", s.name, err)
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	for i := range st.members {
		m := &st.members[i]
		q, err := m.dev.CreateQueuePair(ctx, QueueOptions{Depth: o.Depth})
		if err != nil {
			return nil, fmt.Errorf("striping %s: %w", s.name, err)
		}
		st.closers = append(st.closers, q)
		m.q = q.QueuePair
	}
	return st, nil
}

// newStriped lays the stripes out over the sources' namespaces.
func newStriped(ctx context.Context, srcs []stripeSource, o StripeOptions) (*Striped, error) {
	if len(srcs) == 0 {
		return nil, fmt.Errorf("no open devices: %w", ErrClosed)
	}
	want := o.BlockSize
	if o.NSID != 0 {
		want = 0 // whatever the first device's namespace has
	} else if want == 0 {
		want = 512
	}
	st := &Striped{}
	st.done = st.complete // one method value, made once: no allocation per I/O
	var perDevice uint64
	for i, src := range srcs {
		nsid, size, blocks, err := pickNamespace(ctx, src.ctrl, o.NSID, want)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src.name, err)
		}
		if i == 0 {
			want = size
			st.shift = uint(bits.TrailingZeros(uint(size)))
			stripe := o.StripeSize
			if stripe == 0 {
				stripe = 128 << 10
			}
			if stripe <= 0 || stripe%size != 0 || stripe/size > 65536 {
				return nil, fmt.Errorf("stripe size %d is not a multiple of the %d-byte block size of at most 65536 blocks", stripe, size)
			}
			st.unit = uint64(stripe / size)
		} else if size != want {
			return nil, fmt.Errorf("%w: namespace %d of %s has %d-byte blocks, namespace %d of %s %d-byte ones",
				ErrMixedBlockSizes, nsid, src.name, size, st.members[0].nsid, st.members[0].name, want)
		}
		if i == 0 || blocks < perDevice {
			perDevice = blocks
		}
		st.members = append(st.members, stripeMember{name: src.name, dev: src.dev, q: src.q, nsid: nsid})
	}
	perDevice -= perDevice % st.unit // whole stripes only, the same on every device
	if perDevice == 0 {
		return nil, fmt.Errorf("the smallest namespace holds less than one stripe of %d blocks", st.unit)
	}
	st.blocks = perDevice * uint64(len(st.members))
	return st, nil
}

// pickNamespace finds the namespace of ctrl to stripe over: nsid if not 0,
// else the first with blocks of blockSize bytes.
func pickNamespace(ctx context.Context, ctrl *nvmelike.Controller, nsid uint32, blockSize int) (uint32, int, uint64, error) {
	for _, n := range ctrl.Namespaces() {
		if nsid != 0 && n != nsid {
			continue
		}
		ns, err := ctrl.IdentifyNamespace(ctx, n)
		if err != nil {
			return 0, 0, 0, err
		}
		if nsid != 0 || ns.LBASize == blockSize {
			return n, ns.LBASize, ns.NSZE, nil
		}
	}
	if nsid != 0 {
		return 0, 0, 0, fmt.Errorf("no active namespace %d", nsid)
	}
	return 0, 0, 0, fmt.Errorf("%w: no namespace with %d-byte blocks", ErrMixedBlockSizes, blockSize)
}

// BlockSize returns the logical block size in bytes.
func (st *Striped) BlockSize() int { return 1 << st.shift }

// Blocks returns the number of logical blocks.
func (st *Striped) Blocks() uint64 { return st.blocks }

// StripeBlocks returns the stripe size in blocks.
func (st *Striped) StripeBlocks() uint64 { return st.unit }

// Devices returns how many devices the stripes spread over.
func (st *Striped) Devices() int { return len(st.members) }

// Member returns the i-th device of the stripes (as Locate numbers them)
// and the namespace used on it.
func (st *Striped) Member(i int) (*Device, uint32) { return st.members[i].dev, st.members[i].nsid }

// Locate returns which device (an index in the set's open devices) and
// which block of its namespace hold logical block lba.
func (st *Striped) Locate(lba uint64) (device int, deviceLBA uint64) {
	stripe, within := lba/st.unit, lba%st.unit
	n := uint64(len(st.members))
	return int(stripe % n), stripe/n*st.unit + within
}

// Read reads len(buf.Bytes) bytes (whole blocks) from logical block lba
// into buf, from every device the range spans at once.
func (st *Striped) Read(ctx context.Context, lba uint64, buf nvmelike.Buffer) error {
	return st.do(ctx, nvmelike.CmdRead, lba, buf)
}

// Write writes buf (whole blocks) at logical block lba, to every device
// the range spans at once.
func (st *Striped) Write(ctx context.Context, lba uint64, buf nvmelike.Buffer) error {
	return st.do(ctx, nvmelike.CmdWrite, lba, buf)
}

// pollEvery is how many rounds of polling pass between looks at ctx.
const pollEvery = 64

func (st *Striped) do(ctx context.Context, op uint8, lba uint64, buf nvmelike.Buffer) error {
	// Pieces of an earlier call that gave up (ctx) may still be in
	// flight: wait for them, so that their completions are not taken
	// for this call's.
	if err := st.wait(ctx); err != nil {
		return err
	}
	n := uint64(len(buf.Bytes)) >> st.shift
	if n == 0 || uint64(len(buf.Bytes))&(1<<st.shift-1) != 0 || lba >= st.blocks || n > st.blocks-lba {
		return fmt.Errorf("%d bytes at block %d of %d %d-byte blocks: %w", len(buf.Bytes), lba, st.blocks, 1<<st.shift, ErrStripeRange)
	}
	st.err = nil
	off := 0
	for n > 0 {
		dev, dlba := st.Locate(lba)
		cnt := min(st.unit-lba%st.unit, n)
		size := int(cnt << st.shift)
		m := &st.members[dev]
		st.cmd = nvmelike.Command{Opcode: op, NSID: m.nsid, CDW10: uint32(dlba), CDW11: uint32(dlba >> 32), CDW12: uint32(cnt-1) & 0xffff, Data: buf.Slice(off, size)}
		for spins := 0; ; spins++ {
			err := m.q.Submit(&st.cmd, st.done)
			if err == nil {
				break
			}
			if err != nvmelike.ErrQueueFull {
				st.ringAll()
				return errors.Join(fmt.Errorf("%s: %w", m.name, err), st.wait(ctx))
			}
			// The device's queue is full: let it see what it has, and
			// take its completions.
			m.q.Ring()
			m.rings = false
			if _, err := m.q.Poll(0); err != nil && st.err == nil {
				st.err = err
			}
			if spins%pollEvery == pollEvery-1 {
				if err := ctx.Err(); err != nil {
					st.ringAll()
					return err
				}
			}
		}
		st.pending++
		m.rings = true
		lba += cnt
		n -= cnt
		off += size
	}
	st.ringAll()
	if err := st.wait(ctx); err != nil {
		return err
	}
	return st.err
}

// ringAll rings the doorbell of every device that has pieces not rung:
// one doorbell write per device per call.
func (st *Striped) ringAll() {
	for i := range st.members {
		if m := &st.members[i]; m.rings {
			m.q.Ring()
			m.rings = false
		}
	}
}

// wait polls every device until no piece is outstanding or ctx is done.
func (st *Striped) wait(ctx context.Context) error {
	for spins := 0; st.pending > 0; spins++ {
		for i := range st.members {
			if q := st.members[i].q; q.Outstanding() > 0 {
				if _, err := q.Poll(0); err != nil && st.err == nil {
					st.err = err
				}
			}
		}
		if st.pending > 0 && spins%pollEvery == pollEvery-1 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// complete is every piece's callback.
func (st *Striped) complete(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
	st.pending--
	if err != nil && st.err == nil {
		st.err = err
	}
}

// Close deletes the queue pairs Set.Striped created; pieces still in
// flight (of a call that gave up on its ctx) fail with them. It is safe to
// call twice.
func (st *Striped) Close() error {
	var err error
	for _, q := range st.closers {
		err = errors.Join(err, q.Close())
	}
	st.closers = nil
	return err
}
