package bench

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// The verify block format. With --verify every logical block a job writes
// starts with a 24-byte header and carries a pattern in the rest:
//
//	offset  size  field
//	0       8     magic "umdbench" (VerifyMagic, little-endian)
//	8       8     LBA of the block
//	16      4     pass number (--verify_pass)
//	20      4     CRC-32C (Castagnoli) of bytes 0..19 and 24..end
//	24      …     pattern: xorshift64 seeded with the LBA and the pass
//
// So a block read back proves where it was written (the LBA), when (the
// pass) and that it arrived whole (the checksum over header and data).
const (
	VerifyMagic      = 0x68636e6562646d75 // "umdbench" in little-endian bytes
	verifyHeaderSize = 24
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// StampBlock writes the verify format for lba and pass into block (one
// logical block, at least 24 bytes). It does not allocate.
func StampBlock(block []byte, lba uint64, pass uint32) {
	le := binary.LittleEndian
	le.PutUint64(block[0:], VerifyMagic)
	le.PutUint64(block[8:], lba)
	le.PutUint32(block[16:], pass)
	fillPattern(block[verifyHeaderSize:], lba, pass)
	le.PutUint32(block[20:], blockCRC(block))
}

// fillPattern fills b with xorshift64 output seeded from lba and pass, so
// that two blocks never carry the same bytes.
func fillPattern(b []byte, lba uint64, pass uint32) {
	x := lba*0x9e3779b97f4a7c15 ^ uint64(pass)<<32 ^ 0x2545f4914f6cdd1d
	if x == 0 {
		x = 1
	}
	le := binary.LittleEndian
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		le.PutUint64(b[i:], x)
	}
	for ; i < len(b); i++ {
		b[i] = byte(x >> (8 * (i & 7)))
	}
}

func blockCRC(block []byte) uint32 {
	c := crc32.Update(0, castagnoli, block[:20])
	return crc32.Update(c, castagnoli, block[verifyHeaderSize:])
}

// A VerifyError reports a block read back that is not what was written:
// the device, namespace and LBA, which field differs, and the value
// expected and the value found.
type VerifyError struct {
	Device   string
	NSID     uint32
	LBA      uint64
	Field    string // "magic", "LBA", "pass" or "checksum"
	Expected uint64
	Found    uint64
}

func (e *VerifyError) Error() string {
	where := fmt.Sprintf("verify failed on %s namespace %d at LBA %d", e.Device, e.NSID, e.LBA)
	switch e.Field {
	case "magic":
		return fmt.Sprintf("%s: no umdbench verify header (magic expected 0x%016x, found 0x%016x): the block was never written by umdbench --verify, or was overwritten since", where, e.Expected, e.Found)
	case "checksum":
		return fmt.Sprintf("%s: checksum expected 0x%08x (computed over the data read), found 0x%08x (stored in the block): the data is corrupt", where, e.Expected, e.Found)
	}
	return fmt.Sprintf("%s: %s expected %d, found %d", where, e.Field, e.Expected, e.Found)
}

// CheckBlock checks that block carries the verify format for lba and
// pass. It returns the first field that differs, with the value expected
// and the value found; ok is true when the block is right. It does not
// allocate.
func CheckBlock(block []byte, lba uint64, pass uint32) (field string, expected, found uint64, ok bool) {
	le := binary.LittleEndian
	if m := le.Uint64(block[0:]); m != VerifyMagic {
		return "magic", VerifyMagic, m, false
	}
	if l := le.Uint64(block[8:]); l != lba {
		return "LBA", lba, l, false
	}
	if p := le.Uint32(block[16:]); p != pass {
		return "pass", uint64(pass), uint64(p), false
	}
	if stored, sum := le.Uint32(block[20:]), blockCRC(block); stored != sum {
		return "checksum", uint64(sum), uint64(stored), false
	}
	return "", 0, 0, true
}
