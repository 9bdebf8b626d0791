package nvmelike

import (
	"encoding/binary"
	"errors"
	"testing"
)

// walkPRP follows PRP1/PRP2 (and the list in list) the way a controller
// does and returns the IOVA of each byte range it names.
func walkPRP(t *testing.T, prp1, prp2 uint64, n, ps int, list Buffer) [][2]uint64 {
	t.Helper()
	var out [][2]uint64
	first := min(uint64(n), uint64(ps)-prp1%uint64(ps))
	out = append(out, [2]uint64{prp1, first})
	done := first
	if done == uint64(n) {
		if prp2 != 0 {
			t.Errorf("PRP2 0x%x for a one-page buffer", prp2)
		}
		return out
	}
	if uint64(n)-done <= uint64(ps) {
		return append(out, [2]uint64{prp2, uint64(n) - done})
	}
	at := prp2
	for done < uint64(n) {
		off := at - list.IOVA
		if off >= uint64(len(list.Bytes)) {
			t.Fatalf("PRP list entry at 0x%x outside the list", at)
		}
		e := binary.LittleEndian.Uint64(list.Bytes[off:])
		if at%uint64(ps) == uint64(ps)-8 && uint64(n)-done > uint64(ps) {
			at = e
			continue
		}
		at += 8
		if e%uint64(ps) != 0 {
			t.Fatalf("PRP list entry 0x%x not page aligned", e)
		}
		c := min(uint64(n)-done, uint64(ps))
		out = append(out, [2]uint64{e, c})
		done += c
	}
	return out
}

func TestBuildPRP(t *testing.T) {
	const ps = 4096
	for _, maxTransfer := range []int{1 << 20, 4 << 20} {
		pages := prpListPages(maxTransfer, ps)
		list := Buffer{Bytes: make([]byte, pages*ps), IOVA: 0x7700_0000}
		for _, n := range []int{4, 512, 4096, 4097, 8192, 12288, 65536, 2 << 20, 2<<20 + 4096, maxTransfer} {
			if n > maxTransfer {
				continue
			}
			for _, off := range []uint64{0, 4, 512, 4092} {
				buf := Buffer{Bytes: make([]byte, n), IOVA: 0x1_0000_0000 + off}
				prp1, prp2, err := buildPRP(buf, ps, list)
				if err != nil {
					t.Fatalf("%d bytes at +%d: %v", n, off, err)
				}
				if prp1 != buf.IOVA {
					t.Errorf("PRP1 0x%x, want 0x%x", prp1, buf.IOVA)
				}
				// The ranges must cover the buffer contiguously.
				want := buf.IOVA
				total := uint64(0)
				for _, r := range walkPRP(t, prp1, prp2, n, ps, list) {
					if r[0] != want {
						t.Fatalf("%d bytes at +%d: range at 0x%x, want 0x%x", n, off, r[0], want)
					}
					want += r[1]
					total += r[1]
				}
				if total != uint64(n) {
					t.Fatalf("%d bytes at +%d: PRPs cover %d", n, off, total)
				}
			}
		}
	}
}

func TestBuildPRPErrors(t *testing.T) {
	list := Buffer{Bytes: make([]byte, 4096), IOVA: 0x10000}
	if _, _, err := buildPRP(Buffer{Bytes: make([]byte, 8), IOVA: 0x1002}, 4096, list); !errors.Is(err, ErrUnalignedBuffer) {
		t.Errorf("odd IOVA: %v", err)
	}
	// More pages than one list page holds, with no room to chain.
	big := Buffer{Bytes: make([]byte, 600*4096), IOVA: 0x100000}
	if _, _, err := buildPRP(big, 4096, list); !errors.Is(err, ErrTransferTooLarge) {
		t.Errorf("list overflow: %v", err)
	}
	if p1, p2, err := buildPRP(Buffer{}, 4096, list); p1 != 0 || p2 != 0 || err != nil {
		t.Errorf("empty buffer: %x %x %v", p1, p2, err)
	}
}

func TestPRPListPages(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{0, 0}, {4096, 0}, {8192, 1}, {2 << 20, 1}, {2<<20 + 4096, 2}, {4 << 20, 3},
	} {
		if got := prpListPages(tc.n, 4096); got != tc.want {
			t.Errorf("prpListPages(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

func TestBufferIOVAOf(t *testing.T) {
	b := Buffer{Bytes: make([]byte, 100), IOVA: 0x5000}
	if v, ok := b.IOVAOf(b.Bytes[10:20]); !ok || v != 0x500a {
		t.Errorf("IOVAOf: 0x%x %v", v, ok)
	}
	if v, ok := b.IOVAOf(b.Bytes[99:]); !ok || v != 0x5063 {
		t.Errorf("IOVAOf of the last byte: 0x%x %v", v, ok)
	}
	if _, ok := b.IOVAOf(b.Bytes[100:]); ok {
		t.Error("IOVAOf of an empty slice succeeded")
	}
	if _, ok := b.IOVAOf(make([]byte, 4)); ok {
		t.Error("IOVAOf of foreign memory succeeded")
	}
	if s := b.Slice(90, 20); s.Bytes != nil {
		t.Error("Slice past the end succeeded")
	}
	if s := b.Slice(8, 4); s.IOVA != 0x5008 || s.Len() != 4 {
		t.Errorf("Slice: %+v", s)
	}
}

func TestStatusError(t *testing.T) {
	c := Completion{Status: StatusField(SCTGeneric, 0x08, true) | 1<<13, CID: 5, SQID: 2}
	err := c.Err()
	if !errors.Is(err, ErrAbortedSQDeletion) || errors.Is(err, ErrAbortRequested) {
		t.Errorf("Is: %v", err)
	}
	var se *StatusError
	if !errors.As(err, &se) || !se.DNR || !se.More || se.CID != 5 || se.QID != 2 {
		t.Errorf("%+v", se)
	}
	if got := err.Error(); got != "nvme status sct 0x0 sc 0x08 (aborted: SQ deletion) dnr more" {
		t.Errorf("Error() = %q", got)
	}
	ok := Completion{}
	if ok.Err() != nil {
		t.Error("status 0 is an error")
	}
}

func TestCQERoundTrip(t *testing.T) {
	b := make([]byte, 16)
	want := Completion{DW0: 0xdeadbeef, DW1: 7, SQHead: 12, SQID: 3, CID: 0xabcd, Status: StatusField(SCTMediaError, 0x81, false), Phase: true}
	PutCQE(b, want)
	if !NVMe.CQEPhase(b) {
		t.Fatal("phase lost")
	}
	if got := NVMe.DecodeCQE(b); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestSQEEncoding(t *testing.T) {
	b := make([]byte, 64)
	for i := range b {
		b[i] = 0xee // every byte must be written
	}
	cmd := Command{Opcode: 0x81, Flags: 0x01, NSID: 9, CDW2: 2, CDW3: 3, MPTR: 0x4000, CDW10: 10, CDW11: 11, CDW12: 12, CDW13: 13, CDW14: 14, CDW15: 15}
	NVMe.EncodeSQE(b, &cmd, 0x1234, 0x10000, 0x20000)
	e := SQE(b)
	p1, p2 := e.PRP()
	if e.Opcode() != 0x81 || e.Flags() != 1 || e.CID() != 0x1234 || e.NSID() != 9 || p1 != 0x10000 || p2 != 0x20000 {
		t.Errorf("SQE % x", b)
	}
	for i, want := range map[int]uint32{2: 2, 3: 3, 4: 0x4000, 5: 0, 10: 10, 11: 11, 12: 12, 13: 13, 14: 14, 15: 15} {
		if e.CDW(i) != want {
			t.Errorf("CDW%d = %d, want %d", i, e.CDW(i), want)
		}
	}
}

func TestCAP(t *testing.T) {
	c := CAP(0x3ff | 1<<16 | 20<<24 | 3<<32 | 1<<37 | 1<<48 | 4<<52)
	if c.MQES() != 1024 || !c.CQR() || c.TO() != 20 || c.DSTRD() != 3 || c.CSS() != 1 || c.MPSMIN() != 8192 || c.MPSMAX() != 65536 {
		t.Errorf("%+v", c)
	}
	if SQTailDoorbell(1, 0) != 0x1008 || CQHeadDoorbell(1, 0) != 0x100c || SQTailDoorbell(2, 2) != 0x1000+4*16 {
		t.Error("doorbell offsets")
	}
}

// BenchmarkBuildPRP128K: a PRP list of 31 entries, the per-page cost of
// the PRP path.
func BenchmarkBuildPRP128K(b *testing.B) {
	list := Buffer{Bytes: make([]byte, 2*4096), IOVA: 0x100000}
	buf := Buffer{Bytes: make([]byte, 128<<10), IOVA: 0x200000}
	for b.Loop() {
		if _, _, err := buildPRP(buf, 4096, list); err != nil {
			b.Fatal(err)
		}
	}
}
