//go:build guest

package umd_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu"
	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/qemu/guest/guestdev"
)

// controllers returns the topology's controllers by serial number.
func controllers(t *testing.T) map[string]qemu.Controller {
	t.Helper()
	top, err := qemu.LookupTopology(guest.Topology())
	if err != nil {
		t.Fatal(err)
	}
	bySerial := map[string]qemu.Controller{}
	for _, c := range top.Controllers() {
		bySerial[c.Serial] = c
	}
	return bySerial
}

func freeHugepages(t *testing.T) int {
	t.Helper()
	raw, err := os.ReadFile("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	return n
}

// TestOpenEveryController brings up every vfio-bound NVMe of the guest,
// checks Identify against the topology, and writes and reads back data on
// every namespace through an I/O queue pair.
func TestOpenEveryController(t *testing.T) {
	guest.Require(t)
	want := controllers(t)
	free := freeHugepages(t)
	seen := map[string]bool{}
	for _, bdf := range guest.DriverFunctions(t, "vfio-pci") {
		t.Run(bdf, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 16 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := dev.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			id := dev.Controller().IdentifyController()
			c, ok := want[id.SN]
			if !ok || id.VID != 0x1b36 {
				t.Fatalf("Identify: VID 0x%x serial %q; topology serials %v", id.VID, id.SN, want)
			}
			seen[id.SN] = true
			nsids := dev.Controller().Namespaces()
			if len(nsids) != len(c.Namespaces) {
				t.Fatalf("%s has namespaces %v, topology says %d", id.SN, nsids, len(c.Namespaces))
			}
			q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 32})
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			for i, nsid := range nsids {
				ns, err := dev.Controller().IdentifyNamespace(ctx, nsid)
				if err != nil {
					t.Fatal(err)
				}
				f := ns.BlockFormat()
				// QEMU keeps metadata in the namespace's backing file:
				// with metadata, fewer blocks fit.
				if got, want := ns.NSZE*uint64(ns.LBASize), uint64(c.Namespaces[i])<<20; got != want && (f.Metadata == 0 || got > want || got < want*9/10) {
					t.Errorf("namespace %d: %d bytes, topology says %d MiB", nsid, got, c.Namespaces[i])
				}
				if ns.LBASize != c.BlockSize(i) {
					t.Errorf("namespace %d: %d-byte blocks, topology says %d", nsid, ns.LBASize, c.BlockSize(i))
				}
				ids, err := dev.Controller().NamespaceIDs(ctx, nsid)
				if err != nil {
					t.Fatal(err)
				}
				if ids.CSI == nvmelike.CSIZoned {
					zonedWrite(ctx, t, dev, q, nsid, ns.LBASize)
					continue
				}
				writeRead(ctx, t, dev, q, nsid, f, byte(i+1))
				if i < len(c.Faults) && c.Faults[i] != nil {
					mediaErrors(ctx, t, dev, q, nsid, ns.LBASize, c.Faults[i])
				}
			}
		})
	}
	if len(seen) != len(want) {
		t.Errorf("found controllers %v, topology has %d", seen, len(want))
	}
	if got := freeHugepages(t); got != free {
		t.Errorf("free hugepages %d before, %d after closing every device", free, got)
	}
}

// writeRead writes a pattern over 16 blocks (a 2-page transfer through a
// PRP list when blocks are 512 bytes: 8 KiB; with an unaligned start in
// the buffer) and reads it back into another buffer.
func writeRead(ctx context.Context, t *testing.T, dev *umd.Device, q *umd.QueuePair, nsid uint32, f nvmelike.BlockFormat, seed byte) {
	t.Helper()
	const blocks = 16
	n := blocks * f.LBASize
	if f.Extended {
		n += blocks * f.Metadata // after each block's data
	}
	var meta, metaBack nvmelike.Buffer
	if f.Metadata != 0 && !f.Extended {
		meta, metaBack = guestdev.Alloc(t, dev, blocks*f.Metadata), guestdev.Alloc(t, dev, blocks*f.Metadata)
		for i := range meta.Bytes {
			meta.Bytes[i] = seed + byte(i)
		}
	}
	src, err := dev.Alloc(n + 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(src)
	dst, err := dev.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(dst)
	data := src.Slice(512, n) // starts mid-page: PRP1 has an offset
	for i := range data.Bytes {
		data.Bytes[i] = seed ^ byte(i*7) ^ byte(i>>9)
	}
	w := nvmelike.WriteCommand(nsid, 8, blocks, data)
	w.MPTR = meta.IOVA
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatalf("write to namespace %d: %v", nsid, err)
	}
	r := nvmelike.ReadCommand(nsid, 8, blocks, dst)
	r.MPTR = metaBack.IOVA
	if _, err := q.Exec(ctx, &r); err != nil {
		t.Fatalf("read from namespace %d: %v", nsid, err)
	}
	if !bytes.Equal(dst.Bytes, data.Bytes) || !bytes.Equal(metaBack.Bytes, meta.Bytes) {
		t.Errorf("namespace %d (%+v): read back differs from what was written (data equal %v, metadata equal %v)", nsid, f, bytes.Equal(dst.Bytes, data.Bytes), bytes.Equal(metaBack.Bytes, meta.Bytes))
	}
}

// mediaErrors checks that the media errors the topology's blkdebug faults
// make come back as the NVMe statuses QEMU maps them to: the read of the
// failing sector as Unrecovered Read Error, the write as Write Fault; and
// that the blocks next to them, and the queue pair, still work.
func mediaErrors(ctx context.Context, t *testing.T, dev *umd.Device, q *umd.QueuePair, nsid uint32, lbaSize int, f *qemu.DiskFaults) {
	t.Helper()
	buf := guestdev.Alloc(t, dev, lbaSize)
	lba := func(sector int64) uint64 { return uint64(sector * 512 / int64(lbaSize)) }
	for _, c := range []struct {
		cmd  nvmelike.Command
		want error // nil: must succeed
	}{
		{nvmelike.ReadCommand(nsid, lba(f.ReadSector), 1, buf), nvmelike.ErrUnrecoveredRead},
		{nvmelike.WriteCommand(nsid, lba(f.WriteSector), 1, buf), nvmelike.ErrWriteFault},
		{nvmelike.ReadCommand(nsid, lba(f.ReadSector)-1, 1, buf), nil},
		{nvmelike.WriteCommand(nsid, lba(f.WriteSector)+1, 1, buf), nil},
		{nvmelike.ReadCommand(nsid, lba(f.WriteSector), 1, buf), nil}, // only its writes fail
	} {
		_, err := q.Exec(ctx, &c.cmd)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("namespace %d: opcode 0x%02x at LBA %d: %v, want %v", nsid, c.cmd.Opcode, c.cmd.CDW10, err, c.want)
		}
	}
}

// zonedWrite checks a zoned namespace through umd: it reads anywhere, and
// a write away from a zone's write pointer (five blocks before the end,
// in a last zone no test fills) fails with Zone Invalid Write.
func zonedWrite(ctx context.Context, t *testing.T, dev *umd.Device, q *umd.QueuePair, nsid uint32, lbaSize int) {
	t.Helper()
	ns, err := dev.Controller().IdentifyNamespace(ctx, nsid)
	if err != nil {
		t.Fatal(err)
	}
	buf := guestdev.Alloc(t, dev, 8*lbaSize)
	r := nvmelike.ReadCommand(nsid, ns.NSZE-8, 8, buf)
	if _, err := q.Exec(ctx, &r); err != nil {
		t.Errorf("read from zoned namespace %d: %v", nsid, err)
	}
	w := nvmelike.WriteCommand(nsid, ns.NSZE-5, 1, buf.Slice(0, lbaSize))
	if _, err := q.Exec(ctx, &w); !errors.Is(err, nvmelike.ErrZoneInvalidWrite) {
		t.Errorf("a write five blocks before the end of zoned namespace %d: %v, want Zone Invalid Write", nsid, err)
	}
}

// TestCompletionInterrupt proves that a queue pair created with an
// interrupt gets its completions signalled on its own eventfd.
func TestCompletionInterrupt(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev := guestdev.Open(t, nil)
	q := guestdev.QueuePair(t, dev, umd.QueueOptions{Depth: 16, Interrupt: true})
	other := guestdev.QueuePair(t, dev, umd.QueueOptions{Depth: 16, Interrupt: true})
	buf := guestdev.Alloc(t, dev, 4096)
	for round := range 3 {
		done := false
		cmd := nvmelike.ReadCommand(1, uint64(round), 1, buf.Slice(0, 512))
		if err := q.Submit(&cmd, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
			if err != nil {
				t.Errorf("read: %v", err)
			}
			done = true
		}); err != nil {
			t.Fatal(err)
		}
		q.Ring()
		n, err := q.Interrupt().Wait(ctx)
		if err != nil || n == 0 {
			t.Fatalf("round %d: waiting for the completion interrupt: %d, %v", round, n, err)
		}
		if got, err := q.Poll(0); got != 1 || err != nil || !done {
			t.Fatalf("round %d: after the interrupt Poll found %d completions (%v), callback ran: %v", round, got, err, done)
		}
		if n, _ := other.Interrupt().TryRead(); n != 0 {
			t.Errorf("round %d: the other queue pair's vector fired %d times", round, n)
		}
	}
	// Wait does the same for a caller: poll, sleep on the eventfd, poll.
	cmd := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
	if err := q.Submit(&cmd, nil); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	if n, err := q.Wait(ctx); n != 1 || err != nil {
		t.Fatalf("Wait: %d completions, %v", n, err)
	}
}

// TestReopen closes a device and opens it again: nothing is left behind
// that would make the second Open fail (EBUSY on the group, a stuck
// controller, a leaked mapping).
func TestReopen(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 3 {
		dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 4 << 20})
		if err != nil {
			t.Fatalf("open #%d: %v", i+1, err)
		}
		if _, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Interrupt: i%2 == 1}); err != nil {
			t.Fatalf("open #%d: %v", i+1, err)
		}
		if err := dev.Close(); err != nil {
			t.Fatalf("close #%d: %v", i+1, err)
		}
		if err := dev.Close(); err != nil {
			t.Fatalf("second close #%d: %v", i+1, err)
		}
	}
}

// TestMaskedInterrupt masks a queue pair's interrupt, lets a command
// complete, checks that the eventfd stayed quiet, unmasks, and checks that
// the next completion is signalled again.
func TestMaskedInterrupt(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev := guestdev.Open(t, &umd.Options{PoolSize: 4 << 20})
	q := guestdev.QueuePair(t, dev, umd.QueueOptions{Depth: 16, Interrupt: true})
	buf := guestdev.Alloc(t, dev, 4096)
	if err := q.MaskInterrupt(); err != nil {
		t.Fatal(err)
	}
	cmd := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
	if err := q.Submit(&cmd, nil); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	// Poll until the completion is posted: the device has raised (or
	// would have raised) the interrupt by then.
	deadline := time.Now().Add(10 * time.Second)
	for q.Outstanding() > 0 {
		if _, err := q.Poll(0); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the read did not complete")
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n, err := q.Interrupt().TryRead(); n != 0 || err != nil {
		t.Fatalf("the masked vector signalled its eventfd %d times (%v)", n, err)
	}
	if err := q.UnmaskInterrupt(); err != nil {
		t.Fatal(err)
	}
	// An interrupt latched while masked may be delivered at unmask, at
	// any moment from now on: count signals until this command's
	// completion is found, then check a last command on a quiet eventfd.
	for round := range 2 {
		cmd = nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
		if err := q.Submit(&cmd, nil); err != nil {
			t.Fatal(err)
		}
		q.Ring()
		signals := uint64(0)
		for {
			n, err := q.Interrupt().Wait(ctx)
			if err != nil {
				t.Fatalf("round %d after unmasking: %v (signals so far %d)", round, err, signals)
			}
			signals += n
			if got, err := q.Poll(0); err != nil {
				t.Fatal(err)
			} else if got == 1 {
				break
			}
			if round == 1 {
				t.Fatalf("the eventfd fired before the completion it signals was posted")
			}
		}
		if signals == 0 {
			t.Fatalf("round %d: no signal after unmasking", round)
		}
	}
}

// TestRemovalRequested unbinds an open device from vfio-pci: the kernel
// asks for it back through VFIO's request interrupt, RemovalRequested is
// closed, and the unbind, which waits for the device, completes once it
// is closed. The function is bound to vfio-pci again after.
func TestRemovalRequested(t *testing.T) {
	guest.Require(t)
	const guard = 30 * time.Second // bounds a hang, measures nothing
	dev := guestdev.Open(t, nil)
	bdf := dev.BDF()
	removal := dev.RemovalRequested()
	if removal == nil {
		t.Fatalf("%s: no request interrupt (VFIO's REQ index) to watch", bdf)
	}
	select {
	case <-removal:
		t.Fatal("removal requested before anything asked")
	default:
	}
	unbound := guest.Unbind(t, bdf)
	select {
	case <-removal:
	case err := <-unbound:
		t.Fatalf("the unbind returned (%v) with the device open", err)
	case <-time.After(guard):
		t.Fatalf("no removal request within %v of the unbind", guard)
	}
	// The device still works while the kernel waits for it.
	q := guestdev.QueuePair(t, dev, umd.QueueOptions{Depth: 4})
	buf := guestdev.Alloc(t, dev, 4096)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	rd := nvmelike.ReadCommand(1, 0, 1, buf.Slice(0, 512))
	if _, err := q.Exec(ctx, &rd); err != nil {
		t.Errorf("a read after the request: %v", err)
	}
	select {
	case err := <-unbound:
		t.Fatalf("the unbind returned (%v) with the device open", err)
	default:
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dev.Free(buf); err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	guest.WaitUnbound(t, unbound, guard, "Close")
}
