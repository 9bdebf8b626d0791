package sim

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"

	"github.com/umdkit/umd/nvmelike"
)

// OpcodeCRC32C is a vendor-specific ("computational") I/O command of the
// software controller: it computes the CRC-32C (Castagnoli) of a range of
// logical blocks on the device and returns it in completion DW0, moving no
// data. CDW10-11 hold the starting LBA, CDW12 bits 15:0 the number of
// blocks, 0-based, like Read.
const OpcodeCRC32C uint8 = 0xc0

// OpcodeInlineCRC32C is a vendor-specific I/O command for 128-byte SQ
// entries (Config.WideEntries): it returns in DW0 the CRC-32C of the
// CDW10 bytes (at most 64) carried inline in the entry's bytes 64-127. It
// shows a device-specific entry layout going through the engine's generic
// rings.
const OpcodeInlineCRC32C uint8 = 0xc4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32CCommand builds an OpcodeCRC32C command: the CRC-32C of nlb blocks
// (1-based) from slba on namespace nsid.
func CRC32CCommand(nsid uint32, slba uint64, nlb uint32) nvmelike.Command {
	return nvmelike.Command{Opcode: OpcodeCRC32C, NSID: nsid, CDW10: uint32(slba), CDW11: uint32(slba >> 32), CDW12: (nlb - 1) & 0xffff}
}

// RegisterOpcodes describes the software controller's vendor opcodes in r.
func RegisterOpcodes(r *nvmelike.Registry) error {
	if err := r.RegisterIO(OpcodeCRC32C, nvmelike.OpcodeInfo{Name: "crc32c of LBA range", Dir: nvmelike.DirNone}); err != nil {
		return err
	}
	return r.RegisterIO(OpcodeInlineCRC32C, nvmelike.OpcodeInfo{Name: "crc32c of inline data", Dir: nvmelike.DirNone})
}

// io executes an I/O (NVM command set or vendor) command.
func (c *Controller) io(e nvmelike.SQE) (dw0 uint32, status uint16) {
	if e.Opcode() >= 0x80 {
		if dw0, status, ok := c.vendorIO(e); ok {
			return dw0, status
		}
	}
	if e.Opcode() == OpcodeInlineCRC32C {
		n := int(e.CDW(10))
		if len(e) < 128 || n > 64 {
			return 0, statusInvalidField
		}
		return crc32.Checksum(e[64:64+n], castagnoli), 0
	}
	nsid := e.NSID()
	if nsid == 0 || int(nsid) > len(c.ns) {
		return 0, statusInvalidNamespace
	}
	ns := c.ns[nsid-1]
	switch e.Opcode() {
	case nvmelike.CmdFlush:
		return 0, 0
	case nvmelike.CmdDatasetMgmt:
		return 0, c.datasetManagement(e, ns)
	case nvmelike.CmdRead, nvmelike.CmdWrite, nvmelike.CmdCompare, nvmelike.CmdWriteZeroes, OpcodeCRC32C:
		slba := uint64(e.CDW(10)) | uint64(e.CDW(11))<<32
		nlb := uint64(e.CDW(12)&0xffff) + 1
		if slba >= ns.blocks || nlb > ns.blocks-slba {
			return 0, statusLBAOutOfRange
		}
		data := ns.data[slba<<ns.lbaShift : (slba+nlb)<<ns.lbaShift]
		if ns.extended {
			stride := uint64(1)<<ns.lbaShift + uint64(ns.ms)
			data = ns.data[slba*stride : (slba+nlb)*stride]
		} else if ns.ms != 0 && (e.Opcode() == nvmelike.CmdRead || e.Opcode() == nvmelike.CmdWrite) {
			meta := ns.meta[slba*uint64(ns.ms) : (slba+nlb)*uint64(ns.ms)]
			host, ok := c.mem.Translate(e.MPTR(), len(meta))
			if !ok {
				return 0, statusDataTransfer
			}
			if e.Opcode() == nvmelike.CmdRead {
				copy(host, meta)
			} else {
				copy(meta, host)
			}
		}
		switch e.Opcode() {
		case OpcodeCRC32C:
			return crc32.Checksum(data, castagnoli), 0
		case nvmelike.CmdWriteZeroes:
			clear(data)
			return 0, 0
		}
		if c.cfg.MDTS != 0 && len(data) > c.ps<<c.cfg.MDTS {
			return 0, statusInvalidField
		}
		read := e.Opcode() == nvmelike.CmdRead
		switch {
		case e.Opcode() == nvmelike.CmdCompare:
			return 0, c.compare(e, data)
		case e.Flags()&nvmelike.FlagsPSDTMask != nvmelike.FlagsPSDTPRP:
			status = c.transferSGLData(e, data, read)
		default:
			// PRPs, walked without the call transferData would add.
			prp1, prp2 := e.PRP()
			status = c.transfer(prp1, prp2, data, read)
		}
		switch {
		case status != 0:
		case read:
			c.stats.HostReads++
			c.stats.BytesRead += uint64(len(data))
		default:
			c.stats.HostWrites++
			c.stats.BytesWritten += uint64(len(data))
		}
		return 0, status
	}
	return 0, statusInvalidOpcode
}

// compare reads the host's data into a scratch copy and compares it with
// the namespace's.
func (c *Controller) compare(e nvmelike.SQE, data []byte) uint16 {
	if cap(c.scratch) < len(data) {
		c.scratch = make([]byte, len(data))
	}
	host := c.scratch[:len(data)]
	if status := c.transferData(e, host, false); status != 0 {
		return status
	}
	if !bytes.Equal(host, data) {
		return statusCompareFailure
	}
	return 0
}

// datasetManagement implements deallocation: the ranges read back as zero.
func (c *Controller) datasetManagement(e nvmelike.SQE, ns *namespace) uint16 {
	nr := int(e.CDW(10)&0xff) + 1
	ranges := make([]byte, nr*nvmelike.DSMRangeSize)
	if status := c.transferData(e, ranges, false); status != 0 {
		return status
	}
	if e.CDW(11)&nvmelike.NVME_DSMGMT_AD == 0 {
		return 0 // hints only
	}
	for i := range nr {
		r := ranges[i*nvmelike.DSMRangeSize:]
		nlb := uint64(binary.LittleEndian.Uint32(r[4:]))
		slba := binary.LittleEndian.Uint64(r[8:])
		if slba >= ns.blocks || nlb > ns.blocks-slba {
			return statusLBAOutOfRange
		}
		clear(ns.data[slba<<ns.lbaShift : (slba+nlb)<<ns.lbaShift])
	}
	return 0
}
