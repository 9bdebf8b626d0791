package sim

import (
	"encoding/binary"

	"github.com/umdkit/umd/nvmelike"
)

func (c *Controller) identifyController() []byte {
	b := make([]byte, nvmelike.IdentifyDataSize)
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0x1b36)              // VID: Red Hat (QEMU's)
	le.PutUint16(b[2:], 0x1af4)              // SSVID
	pad(b[4:24], "UMDSIM0001")               // SN
	pad(b[24:64], "umd software controller") // MN
	pad(b[64:72], "1.0")                     // FR
	b[77] = c.cfg.MDTS
	le.PutUint16(b[78:], 1)          // CNTLID
	le.PutUint32(b[80:], 0x00010400) // VER
	if c.cfg.DoorbellBufferConfig {
		le.PutUint16(b[256:], nvmelike.NVME_CTRL_OACS_DBBUF_SUPP)
	}
	b[259] = c.cfg.AERL
	b[262] = errorLogEntries - 1 // ELPE
	b[512] = 0x66                // SQES: 64 bytes
	b[513] = 0x44                // CQES: 16 bytes
	if c.cfg.WideEntries {
		b[512], b[513] = 0x76, 0x54 // up to 128 and 32 bytes
	}
	le.PutUint16(b[514:], uint16(min(c.cfg.MQES, 0xffff)))
	le.PutUint32(b[516:], uint32(len(c.ns)))
	le.PutUint16(b[520:], nvmelike.NVME_CTRL_ONCS_COMPARE|nvmelike.NVME_CTRL_ONCS_DSM|nvmelike.NVME_CTRL_ONCS_WRITE_ZEROES)
	if c.cfg.VolatileWriteCache {
		b[525] = nvmelike.NVME_CTRL_VWC_PRESENT
	}
	le.PutUint32(b[536:], c.cfg.SGLS)
	copy(b[768:], "nqn.2026-11.io.umdkit:sim")
	return b
}

func pad(dst []byte, s string) {
	n := copy(dst, s)
	for i := n; i < len(dst); i++ {
		dst[i] = ' '
	}
}

func (c *Controller) identifyNamespace(ns *namespace) []byte {
	b := make([]byte, nvmelike.IdentifyDataSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], ns.blocks)
	le.PutUint64(b[8:], ns.blocks)
	le.PutUint64(b[16:], ns.blocks)
	b[25] = 1                                                    // NLBAF: two formats, 0-based
	b[26] = 1                                                    // FLBAS: format 1
	le.PutUint32(b[128:], 9<<16)                                 // format 0: 512 bytes
	le.PutUint32(b[132:], uint32(ns.lbaShift)<<16|uint32(ns.ms)) // format 1: the namespace's
	if ns.extended {
		b[26] |= 0x10
	}
	return b
}

// admin executes an admin command.
func (c *Controller) admin(e nvmelike.SQE) (dw0 uint32, status uint16) {
	prp1, prp2 := e.PRP()
	switch e.Opcode() {
	case nvmelike.AdminIdentify:
		var data []byte
		switch uint8(e.CDW(10)) {
		case nvmelike.IdentifyCNSController:
			data = c.idCtrl
		case nvmelike.IdentifyCNSNamespace:
			nsid := e.NSID()
			if nsid == 0 || int(nsid) > len(c.ns) {
				return 0, statusInvalidNamespace
			}
			data = c.identifyNamespace(c.ns[nsid-1])
		case nvmelike.IdentifyCNSNSDescriptors:
			nsid := e.NSID()
			if nsid == 0 || int(nsid) > len(c.ns) {
				return 0, statusInvalidNamespace
			}
			// An NGUID made of the NSID, then the command set.
			data = make([]byte, nvmelike.IdentifyDataSize)
			data[0], data[1] = 2, 16
			binary.BigEndian.PutUint32(data[4+12:], nsid)
			data[20], data[21], data[24] = 4, 1, c.ns[nsid-1].csi
		case nvmelike.IdentifyCNSActiveNSList:
			data = make([]byte, nvmelike.IdentifyDataSize)
			j := 0
			for i := range c.ns {
				if id := uint32(i + 1); id > e.NSID() && j < 1024 {
					binary.LittleEndian.PutUint32(data[4*j:], id)
					j++
				}
			}
		default:
			return 0, statusInvalidField
		}
		return 0, c.transfer(prp1, prp2, data, true)

	case nvmelike.AdminSetFeatures, nvmelike.AdminGetFeatures:
		fid := uint8(e.CDW(10))
		if fid == nvmelike.NVME_FEAT_VOLATILE_WC {
			if !c.cfg.VolatileWriteCache {
				return 0, statusInvalidField
			}
			if e.Opcode() == nvmelike.AdminSetFeatures {
				c.features[fid] = e.CDW(11) & 1
			}
			return c.features[fid], 0
		}
		if fid != nvmelike.NVME_FEAT_NUM_QUEUES {
			return 0, statusInvalidField
		}
		if e.Opcode() == nvmelike.AdminSetFeatures {
			if c.numQueues != 0 {
				return 0, nvmelike.StatusField(nvmelike.SCTCommandSpecific, 0x0d, true) // feature not changeable
			}
			nsq, ncq := int(e.CDW(11)&0xffff)+1, int(e.CDW(11)>>16)+1
			if nsq == 0x10000 || ncq == 0x10000 {
				return 0, statusInvalidField
			}
			c.numQueues = min(max(nsq, ncq), c.cfg.MaxQueues)
		}
		n := max(c.numQueues, 1)
		return uint32(n-1)<<16 | uint32(n-1), 0

	case nvmelike.AdminGetLogPage:
		lid := uint8(e.CDW(10))
		n := (int(e.CDW(10)>>16) | int(e.CDW(11)&0xffff)<<16 + 1) * 4
		if n > 1<<20 {
			return 0, statusInvalidField
		}
		page := make([]byte, n)
		switch lid {
		case nvmelike.NVME_LOG_ERROR:
			c.errorLogPage(page)
		case nvmelike.NVME_LOG_SMART:
			smart := make([]byte, nvmelike.SMARTLogSize)
			le := binary.LittleEndian
			le.PutUint16(smart[1:], 300) // 27 °C
			smart[3] = 100               // spare
			smart[4] = 10                // spare threshold
			le.PutUint64(smart[32:], (c.stats.BytesRead/512+999)/1000)
			le.PutUint64(smart[48:], (c.stats.BytesWritten/512+999)/1000)
			le.PutUint64(smart[64:], c.stats.HostReads)
			le.PutUint64(smart[80:], c.stats.HostWrites)
			le.PutUint64(smart[112:], 1)
			le.PutUint64(smart[176:], c.events.errorCount)
			copy(page, smart)
		default:
			return 0, nvmelike.StatusField(nvmelike.SCTCommandSpecific, 0x09, true) // invalid log page
		}
		return 0, c.transfer(prp1, prp2, page, true)

	case nvmelike.AdminDBBufConfig:
		if !c.cfg.DoorbellBufferConfig {
			return 0, statusInvalidOpcode
		}
		if prp1%uint64(c.ps) != 0 || prp2%uint64(c.ps) != 0 {
			return 0, statusInvalidField
		}
		dbs, ok1 := c.mem.Translate(prp1, c.ps)
		eis, ok2 := c.mem.Translate(prp2, c.ps)
		if !ok1 || !ok2 {
			return 0, statusInvalidField
		}
		c.dbs, c.eis = dbs, eis
		return 0, 0

	case nvmelike.AdminAbort:
		// Commands complete before their doorbell write returns (a
		// dropped or delayed completion is of a command that already
		// ran): there is never anything left to abort.
		c.stats.Aborts++
		c.stats.LastAbortSQID = uint16(e.CDW(10))
		c.stats.LastAbortCID = uint16(e.CDW(10) >> 16)
		return 1, 0

	case nvmelike.AdminCreateCQ:
		qid, size := int(e.CDW(10)&0xffff), int(e.CDW(10)>>16)+1
		switch {
		case qid == 0 || qid > c.numQueues || c.cqs[qid] != nil:
			return 0, statusInvalidQueueID
		case size < 2 || size > c.cfg.MQES:
			return 0, statusInvalidQueueSize
		case e.CDW(11)&1 == 0 || prp1%uint64(c.ps) != 0 || !c.entrySizesOK():
			return 0, statusInvalidField
		case e.CDW(11)&2 != 0 && int(e.CDW(11)>>16) >= c.cfg.Vectors:
			return 0, statusInvalidVector
		}
		mem, ok := c.mem.Translate(prp1, size*c.iocqes)
		if !ok {
			return 0, statusInvalidField
		}
		c.cqs[qid] = &cq{id: uint16(qid), esize: c.iocqes, size: uint16(size), phase: true, mem: mem,
			pending: make([]nvmelike.Completion, 0, size)}
		return 0, 0

	case nvmelike.AdminCreateSQ:
		qid, size := int(e.CDW(10)&0xffff), int(e.CDW(10)>>16)+1
		cqid := int(e.CDW(11) >> 16)
		switch {
		case qid == 0 || qid > c.numQueues || c.sqs[qid] != nil:
			return 0, statusInvalidQueueID
		case cqid == 0 || cqid >= len(c.cqs) || c.cqs[cqid] == nil:
			return 0, statusInvalidCQ
		case size < 2 || size > c.cfg.MQES:
			return 0, statusInvalidQueueSize
		case e.CDW(11)&1 == 0 || prp1%uint64(c.ps) != 0 || !c.entrySizesOK():
			return 0, statusInvalidField
		}
		mem, ok := c.mem.Translate(prp1, size*c.iosqes)
		if !ok {
			return 0, statusInvalidField
		}
		c.sqs[qid] = &sq{id: uint16(qid), cqid: uint16(cqid), esize: c.iosqes, size: uint16(size), mem: mem}
		c.cqs[cqid].users++
		return 0, 0

	case nvmelike.AdminDeleteSQ:
		qid := int(e.CDW(10) & 0xffff)
		if qid == 0 || qid >= len(c.sqs) || c.sqs[qid] == nil {
			return 0, statusInvalidQueueID
		}
		c.cqs[c.sqs[qid].cqid].users--
		c.sqs[qid] = nil
		return 0, 0

	case nvmelike.AdminDeleteCQ:
		qid := int(e.CDW(10) & 0xffff)
		if qid == 0 || qid >= len(c.cqs) || c.cqs[qid] == nil {
			return 0, statusInvalidQueueID
		}
		if c.cqs[qid].users > 0 {
			return 0, statusInvalidQueueDel
		}
		c.cqs[qid] = nil
		return 0, 0
	}
	return 0, statusInvalidOpcode
}

// entrySizesOK reports whether CC.IOSQES and CC.IOCQES name entry sizes the
// controller supports.
func (c *Controller) entrySizesOK() bool {
	if c.iosqes == 64 && c.iocqes == 16 {
		return true
	}
	return c.cfg.WideEntries && (c.iosqes == 64 || c.iosqes == 128) && (c.iocqes == 16 || c.iocqes == 32)
}
