package nvmelike_test

import (
	"hash/crc32"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// wideFormat is a device-specific entry layout, defined outside the engine:
// 128-byte SQ entries whose second half carries Command.Ext inline, and
// 32-byte CQ entries with the NVMe completion in the first 16 bytes. The
// engine's rings, trackers, doorbells and PRPs are used unchanged.
type wideFormat struct{}

func (wideFormat) SQESize() int { return 128 }
func (wideFormat) CQESize() int { return 32 }

func (wideFormat) EncodeSQE(sqe []byte, cmd *nvmelike.Command, cid uint16, prp1, prp2 uint64) {
	nvmelike.NVMe.EncodeSQE(sqe[:64], cmd, cid, prp1, prp2)
	n := copy(sqe[64:], cmd.Ext)
	clear(sqe[64+n:])
}

func (wideFormat) CQEPhase(cqe []byte) bool { return nvmelike.NVMe.CQEPhase(cqe[:16]) }

func (wideFormat) DecodeCQE(cqe []byte) nvmelike.Completion {
	return nvmelike.NVMe.DecodeCQE(cqe[:16])
}

func TestCustomEntryFormat(t *testing.T) {
	r := newRig(t, sim.Config{WideEntries: true}, &nvmelike.Options{IOFormat: wideFormat{}})
	q := r.queue(t, 16)
	ctx := testContext(t)

	payload := []byte("computational storage, inline in the submission entry")
	c := nvmelike.Command{Opcode: sim.OpcodeInlineCRC32C, CDW10: uint32(len(payload)), Ext: payload}
	cpl, err := q.Exec(ctx, &c)
	if err != nil {
		t.Fatal(err)
	}
	if want := crc32.Checksum(payload, crc32.MakeTable(crc32.Castagnoli)); cpl.DW0 != want {
		t.Errorf("crc 0x%08x, want 0x%08x", cpl.DW0, want)
	}

	// Ordinary NVM commands on the same rings, enough to wrap them twice.
	buf := r.alloc(t, 8192)
	for i := range 40 {
		fill(buf.Bytes, byte(i))
		w := nvmelike.WriteCommand(1, uint64(i), 16, buf)
		if _, err := q.Exec(ctx, &w); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		crc := sim.CRC32CCommand(1, uint64(i), 16)
		cpl, err := q.Exec(ctx, &crc)
		if err != nil {
			t.Fatal(err)
		}
		if want := crc32.Checksum(buf.Bytes, crc32.MakeTable(crc32.Castagnoli)); cpl.DW0 != want {
			t.Fatalf("round %d: crc 0x%08x, want 0x%08x", i, cpl.DW0, want)
		}
	}
}

func TestCustomEntryFormatRejected(t *testing.T) {
	// A controller without wide entries is refused at Open, which leaves
	// it disabled and frees what it allocated.
	mem := sim.NewMemory()
	dev := sim.New(mem, sim.Config{})
	_, err := nvmelike.Open(testContext(t), dev, mem, &nvmelike.Options{IOFormat: wideFormat{}})
	if err == nil {
		t.Fatal("Open with unsupported entry sizes succeeded")
	}
	t.Log(err)
	if n := mem.Regions(); n != 0 {
		t.Errorf("%d DMA regions leaked", n)
	}
	if dev.Read32(nvmelike.NVME_REG_CC)&nvmelike.NVME_CC_ENABLE != 0 {
		t.Error("controller left enabled")
	}
}
