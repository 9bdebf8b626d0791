package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
)

// rw encodes a read or write of blocks 512-byte blocks at lba with the
// given data pointer.
func rw(op uint8, lba uint64, blocks int, prp1, prp2 uint64) CommandRequest {
	return CommandRequest{Opcode: op, NSID: 1, CDW: [6]uint32{uint32(lba), uint32(lba >> 32), uint32(blocks - 1)}, PRP1: prp1, PRP2: prp2}
}

func TestMediatedCommands(t *testing.T) {
	dev := fake(t, "0000:00:03.0", 4)
	dev.desc.Namespaces = append(dev.desc.Namespaces, NamespaceInfo{NSID: 2, LBASize: 512, Blocks: 1024, MetadataSize: 8})
	s := startFake(t, Config{}, self(), dev)
	c := dial(t, s.cfg.Socket)
	sess, err := c.OpenSession("0000:00:03.0", SessionOptions{PoolBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if sess.Layout.PageSize != 4096 {
		t.Fatalf("layout page size %d, want the controller's 4096", sess.Layout.PageSize)
	}
	base := sess.Layout.PoolIOVA
	pool := sess.Pool.Bytes()
	commands := func() uint64 {
		st := s.Status()
		if len(st) != 1 {
			t.Fatalf("%d clients in the status", len(st))
		}
		return st[0].Commands
	}

	// One page, two pages, and a PRP list (5 pages from an offset).
	for i := range pool[:0x6000] {
		pool[i] = byte(i*13 + i>>9)
	}
	want := bytes.Clone(pool[:0x6000])
	list := pool[0x8000:]
	for i := range 5 {
		binary.LittleEndian.PutUint64(list[i*8:], base+uint64(0x1000*(i+1)))
	}
	for _, r := range []CommandRequest{
		rw(nvmelike.CmdWrite, 0, 8, base, 0),                    // 4 KiB in PRP1's page
		rw(nvmelike.CmdWrite, 8, 8, base+0x1000, 0),             // the second page
		rw(nvmelike.CmdWrite, 16, 16, base+0x2000, base+0x3000), // two pages: PRP2 is a page
		rw(nvmelike.CmdWrite, 100, 40, base+0x200, base+0x8000), // 20 KiB from 0x200: a PRP list
	} {
		if _, _, err := sess.Exec(r); err != nil {
			t.Fatalf("valid write %+v: %v", r, err)
		}
	}
	for i := range 8 {
		if !bytes.Equal(dev.blocks[uint64(i)], want[i*512:(i+1)*512]) {
			t.Fatalf("block %d written through PRP1 differs", i)
		}
	}
	for i := range 40 {
		if !bytes.Equal(dev.blocks[100+uint64(i)], want[0x200+i*512:0x200+(i+1)*512]) {
			t.Fatalf("block %d written through a PRP list differs", 100+i)
		}
	}
	clear(pool[:0x6000])
	if _, _, err := sess.Exec(rw(nvmelike.CmdRead, 100, 40, base+0x200, base+0x8000)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pool[0x200:0x200+40*512], want[0x200:0x200+40*512]) {
		t.Fatal("read through a PRP list differs")
	}
	if _, _, err := sess.Exec(CommandRequest{Opcode: nvmelike.CmdFlush, NSID: 1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sess.Exec(CommandRequest{Opcode: nvmelike.CmdWriteZeroes, NSID: 1, CDW: [6]uint32{5, 0, 3 | 1<<25}}); err != nil {
		t.Fatal(err)
	}
	done := commands()
	if done != 7 {
		t.Fatalf("%d commands run, want 7", done)
	}

	end := base + uint64(sess.Pool.Size())
	// A list whose third entry leaves the window, one that skips a page,
	// and one that crosses its page.
	binary.LittleEndian.PutUint64(pool[0x9000:], base+0x1000)
	binary.LittleEndian.PutUint64(pool[0x9008:], base+0x2000)
	binary.LittleEndian.PutUint64(pool[0x9010:], 0x1000)
	binary.LittleEndian.PutUint64(pool[0xa000:], base+0x1000)
	binary.LittleEndian.PutUint64(pool[0xa008:], base+0x3000)
	for _, tc := range []struct {
		name string
		r    CommandRequest
	}{
		{"PRP1 below the window", rw(nvmelike.CmdRead, 0, 1, base-0x1000, 0)},
		{"PRP1 past the window", rw(nvmelike.CmdRead, 0, 1, end, 0)},
		{"data running off the window's end", rw(nvmelike.CmdRead, 0, 16, end-0x1000, end)},
		{"PRP1 unaligned", rw(nvmelike.CmdRead, 0, 1, base+2, 0)},
		{"PRP2 outside", rw(nvmelike.CmdRead, 0, 16, base, 0x10000000)},
		{"PRP2 not the next page", rw(nvmelike.CmdRead, 0, 16, base, base+0x5000)},
		{"PRP2 set for one page", rw(nvmelike.CmdRead, 0, 1, base, base+0x1000)},
		{"list pointer outside", rw(nvmelike.CmdRead, 0, 24, base, end+0x1000)},
		{"list pointer unaligned", rw(nvmelike.CmdRead, 0, 24, base, base+0x9004)},
		{"list entry outside", rw(nvmelike.CmdRead, 0, 32, base, base+0x9000)},
		{"list entry scattered", rw(nvmelike.CmdRead, 0, 24, base, base+0xa000)},
		{"list crossing its page", rw(nvmelike.CmdRead, 0, 24, base, base+0x9ff8)},
		{"opcode not allowed", CommandRequest{Opcode: 0x81, NSID: 1, PRP1: base}},
		{"dataset management", CommandRequest{Opcode: nvmelike.CmdDatasetMgmt, NSID: 1, PRP1: base}},
		{"no such namespace", CommandRequest{Opcode: nvmelike.CmdRead, NSID: 9, PRP1: base}},
		{"flush of no such namespace", CommandRequest{Opcode: nvmelike.CmdFlush, NSID: 3}},
		{"read of a namespace with metadata", CommandRequest{Opcode: nvmelike.CmdRead, NSID: 2, PRP1: base}},
		{"write of a namespace with metadata", CommandRequest{Opcode: nvmelike.CmdWrite, NSID: 2, PRP1: base}},
		{"flush with a data pointer", CommandRequest{Opcode: nvmelike.CmdFlush, NSID: 1, PRP1: base}},
		{"LBA range past the end", rw(nvmelike.CmdRead, 1020, 8, base, 0)},
		{"LBA overflow", rw(nvmelike.CmdRead, 1<<63, 1, base, 0)},
		{"protection information", CommandRequest{Opcode: nvmelike.CmdRead, NSID: 1, CDW: [6]uint32{0, 0, 1 << 26}, PRP1: base}},
		{"reference tag", CommandRequest{Opcode: nvmelike.CmdRead, NSID: 1, CDW: [6]uint32{0, 0, 0, 0, 7}, PRP1: base}},
		{"write zeroes with data", CommandRequest{Opcode: nvmelike.CmdWriteZeroes, NSID: 1, PRP1: base}},
		{"above the transfer limit", rw(nvmelike.CmdRead, 0, 512, base, base+0x9000)},
		{"no such queue", CommandRequest{Queue: 3, Opcode: nvmelike.CmdFlush, NSID: 1}},
	} {
		_, _, err := sess.Exec(tc.r)
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v, want ErrBadRequest", tc.name, err)
		}
	}
	if n := commands(); n != done {
		t.Fatalf("the device saw %d commands the broker should have refused", n-done)
	}
	// The connection survives refusals.
	if _, _, err := sess.Exec(rw(nvmelike.CmdRead, 0, 1, base, 0)); err != nil {
		t.Fatalf("a valid command after refusals: %v", err)
	}
}

func TestTrustedSessionRefusals(t *testing.T) {
	dev := fake(t, "0000:00:03.0", 4)
	s := startFake(t, Config{}, self(), dev)
	c := dial(t, s.cfg.Socket)
	_, err := c.OpenSession("0000:00:03.0", SessionOptions{Mode: ModeTrusted})
	if !errors.Is(err, ErrPermission) {
		t.Fatalf("trusted session on a device that does not allow them: %v, want ErrPermission", err)
	}
	if _, err := c.OpenSession("0000:00:03.0", SessionOptions{Mode: "bogus"}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("mode bogus: %v, want ErrBadRequest", err)
	}

	// Allowed: the broker makes rings and queues and sends a device
	// descriptor; the fake's is no VFIO device, which the client refuses,
	// and everything is given back.
	a := self()
	a.Trusted = true
	dev2 := fake(t, "0000:00:04.0", 4)
	s2 := startFake(t, Config{}, a, dev2)
	c2 := dial(t, s2.cfg.Socket)
	_, err = c2.OpenSession("0000:00:04.0", SessionOptions{Mode: ModeTrusted, Queues: 2, Depth: 32})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("not a VFIO device")) {
		t.Fatalf("trusted session with a fake device descriptor: %v", err)
	}
	dev2.mu.Lock()
	rings := dev2.rings
	dev2.mu.Unlock()
	if len(rings) != 2 || rings[0][0]%4096 != 0 || rings[0][1]-rings[0][0] != 32*64 && rings[0][1]-rings[0][0] != 4096 || rings[1][0] <= rings[0][1] {
		t.Fatalf("rings placed at %x", rings)
	}
	c2.Close()
	waitFor(t, "queues released", func() bool { return dev2.queuesInUse() == 0 })
	waitFor(t, "IOVA windows unmapped", func() bool { return len(dev2.space.Ledger().Live()) == 0 })
}

func TestClientDoneOnHangup(t *testing.T) {
	dev := fake(t, "0000:00:03.0", 4)
	s := startFake(t, Config{}, self(), dev)
	c := dial(t, s.cfg.Socket)
	select {
	case <-c.Done():
		t.Fatal("Done closed with the broker still there")
	case <-time.After(150 * time.Millisecond):
	}
	s.Close()
	select {
	case <-c.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("Done not closed 2 s after the broker closed")
	}
	if _, err := c.Status(); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("Status after the broker closed: %v, want ErrDisconnected", err)
	}
}
