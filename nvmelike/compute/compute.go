// Package compute is an example of a computational command set defined
// outside the protocol engine: two vendor-specific NVMe I/O commands of a
// device that computes over the data it stores, as typed nvmelike.Ops,
// and their software model for nvmelike/sim.
//
//   - Checksum (opcode 0x90, no data): the CRC-32C (Castagnoli) of a range
//     of logical blocks, returned in completion DW0.
//   - Search (opcode 0x91, data to the device): the host sends a byte
//     pattern; the device returns the first block of a range that
//     contains it (completion DW0 bit 31: found; bits 30:0: the block's
//     offset from the range's start).
//
// Register puts them into the registry a controller is opened with;
// Install teaches a software controller to execute them. A device that
// does not know the opcodes (QEMU's nvme) completes them with Invalid
// Opcode, which Exec returns as an *nvmelike.OpError naming the command
// and wrapping the *nvmelike.StatusError.
package compute

import (
	"hash/crc32"

	"github.com/umdkit/umd/nvmelike"
)

// The commands' opcodes: vendor-specific I/O opcodes, whose two low bits
// give the data direction by NVMe's convention (00: none, 01: to device).
const (
	OpcodeChecksum uint8 = 0x90
	OpcodeSearch   uint8 = 0x91
)

// MaxPattern is the longest pattern Search takes.
const MaxPattern = 4096

// ChecksumRequest names the blocks to checksum.
type ChecksumRequest struct {
	NSID   uint32
	LBA    uint64
	Blocks uint32 // 1 to 65536
}

// Checksum computes the CRC-32C of a range of blocks on the device; no
// data moves over the bus.
var Checksum = &nvmelike.Op[ChecksumRequest, uint32]{
	Name:   "compute checksum",
	Opcode: OpcodeChecksum,
	Dir:    nvmelike.DirNone,
	Encode: func(r ChecksumRequest) nvmelike.Command {
		return nvmelike.Command{NSID: r.NSID, CDW10: uint32(r.LBA), CDW11: uint32(r.LBA >> 32), CDW12: (r.Blocks - 1) & 0xffff}
	},
	Decode: func(_ nvmelike.Command, c nvmelike.Completion) (uint32, error) { return c.DW0, nil },
}

// SearchRequest names the blocks to search and the pattern, in DMA
// memory (1 to MaxPattern bytes). A pattern is found only within a block.
type SearchRequest struct {
	NSID    uint32
	LBA     uint64
	Blocks  uint32 // 1 to 65536
	Pattern nvmelike.Buffer
}

// SearchResult is the first block holding the pattern.
type SearchResult struct {
	Found bool
	LBA   uint64 // when Found
}

// Search finds the first block of a range that contains a pattern.
var Search = &nvmelike.Op[SearchRequest, SearchResult]{
	Name:   "compute search",
	Opcode: OpcodeSearch,
	Dir:    nvmelike.DirToDevice,
	Encode: func(r SearchRequest) nvmelike.Command {
		return nvmelike.Command{NSID: r.NSID, CDW10: uint32(r.LBA), CDW11: uint32(r.LBA >> 32), CDW12: (r.Blocks - 1) & 0xffff,
			CDW13: uint32(r.Pattern.Len()), Data: r.Pattern}
	},
	Decode: func(cmd nvmelike.Command, c nvmelike.Completion) (SearchResult, error) {
		if c.DW0&searchFound == 0 {
			return SearchResult{}, nil
		}
		lba := uint64(cmd.CDW10) | uint64(cmd.CDW11)<<32
		return SearchResult{Found: true, LBA: lba + uint64(c.DW0&^searchFound)}, nil
	},
}

// searchFound is Search's completion DW0 bit saying the pattern was found.
const searchFound = 1 << 31

// Register describes the commands in r.
func Register(r *nvmelike.Registry) error {
	if err := Checksum.Register(r); err != nil {
		return err
	}
	return Search.Register(r)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)
