package sim

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/umdkit/umd/nvmelike"
)

// Config describes the simulated controller. The zero value is usable.
type Config struct {
	// MQES is the largest queue size in entries; 0 means 4096.
	MQES int
	// DSTRD is the doorbell stride exponent (CAP.DSTRD).
	DSTRD uint8
	// TO is CAP.TO in 500 ms units; 0 means 1.
	TO uint8
	// MDTS is the maximum data transfer size as 2^MDTS pages; 0 means
	// no limit.
	MDTS uint8
	// MaxQueues is the number of I/O queue pairs granted at most; 0 means
	// 64.
	MaxQueues int
	// Vectors is the number of MSI-X vectors I/O CQs may name; 0 means
	// 16. The controller signals none: the host polls.
	Vectors int
	// Namespaces; nil means one namespace of 32768 512-byte blocks.
	Namespaces []NamespaceConfig
	// ReadyDelay is how many CSTS reads after CC.EN changes CSTS.RDY
	// keeps its old value, to exercise the host's waiting.
	ReadyDelay int
	// NeverReady makes CSTS.RDY never follow CC.EN=1.
	NeverReady bool
	// VolatileWriteCache sets VWC in Identify Controller.
	VolatileWriteCache bool
	// WideEntries advertises 128-byte SQ and 32-byte CQ entries as the
	// maximum in Identify (SQES, CQES) and accepts them in CC: the first
	// 64 (16) bytes are the NVMe entry, the rest is the format's, as for a
	// computational device's own ring layout.
	WideEntries bool
	// DoorbellBufferConfig offers shadow doorbells (OACS bit 8). Once
	// configured, an MMIO doorbell write of an I/O queue makes the
	// controller read the queue's shadow doorbell (as QEMU does) and
	// publish the value it saw as the queue's event index.
	DoorbellBufferConfig bool
	// ShadowPolling makes the controller publish event indexes that never
	// ask for an MMIO doorbell, as if a thread of it polled the shadow
	// doorbells; PollShadow is that thread's loop body.
	ShadowPolling bool
	// AERL is the Asynchronous Event Request Limit in Identify
	// Controller, 0-based: AERL+1 requests may be outstanding.
	AERL uint8
	// SGLS is Identify Controller SGLS: 0 for no SGLs (commands with
	// PSDT set then fail with Invalid Field), else
	// nvmelike.NVME_CTRL_SGLS_BYTE_ALIGNED or _DWORD_ALIGNED, optionally
	// with NVME_CTRL_SGLS_BIT_BUCKET (QEMU 7.2's nvme reports byte
	// aligned, no bit buckets). SGLs apply to I/O commands only.
	SGLS uint32
}

// NamespaceConfig describes one namespace.
type NamespaceConfig struct {
	Blocks  uint64
	LBASize int // a power of two from 512; 0 means 512
	// CSI is the command set its identification descriptors report
	// (nvmelike.CSINVM, the zero value, or another). The simulator still
	// executes NVM commands on it, without zones' rules.
	CSI uint8
	// Metadata is the metadata bytes per block of its format (0: none),
	// moved after each block's data when Extended, else to and from the
	// buffer a command's MPTR names (contiguous; an unmapped MPTR fails
	// the command with a data transfer error, as an IOMMU fault would).
	Metadata int
	Extended bool
}

type namespace struct {
	csi      uint8
	ms       int  // metadata bytes per block
	extended bool // metadata in data, after each block; else in meta
	meta     []byte
	lbaShift uint
	blocks   uint64
	data     []byte
}

type sq struct {
	id, cqid   uint16
	esize      int // entry size: 64, or 1<<CC.IOSQES for I/O queues
	size       uint16
	head, tail uint16
	mem        []byte
}

type cq struct {
	id         uint16
	esize      int // entry size: 16, or 1<<CC.IOCQES for I/O queues
	size       uint16
	head, tail uint16
	phase      bool
	mem        []byte
	pending    []nvmelike.Completion // waiting for room in the ring
	users      int                   // SQs completing here
}

// Controller is an in-process NVMe controller. Its register methods
// implement nvmelike.Registers; commands run synchronously inside the
// doorbell write that announces them (the "instant" mode: the host's cost
// per I/O is all there is), unless completions are delayed by a fault.
//
// It is safe for concurrent use: one mutex guards its state.
type Controller struct {
	mu  sync.Mutex
	mem *Memory
	cfg Config

	cap    uint64
	cc     uint32
	csts   uint32
	aqa    uint32
	asq    uint64
	acq    uint64
	ready  int // CSTS reads left before RDY follows CC.EN
	target uint32
	ps     int // memory page size from CC.MPS
	iosqes int // I/O SQ entry size from CC.IOSQES: 64 or 128
	iocqes int // I/O CQ entry size from CC.IOCQES: 16 or 32

	numQueues int              // granted by Set Features; 0 before
	features  map[uint8]uint32 // values of settable features other than the number of queues
	sqs       []*sq
	cqs       []*cq
	ns        []*namespace
	idCtrl    []byte

	scratch []byte // for Compare
	// vendor holds the handlers of vendor-specific I/O opcodes
	// (HandleIO), by opcode-0x80; req is the Request handed to them.
	vendor [128]IOHandler
	req    Request
	// Shadow doorbell and EventIdx buffers, after Doorbell Buffer Config.
	dbs, eis []byte
	events   events // asynchronous events and the error log (events.go)
	faults   faults
	removed  bool
	stats    Stats
}

// Stats counts what the controller did.
type Stats struct {
	Commands         uint64
	HostReads        uint64 // Read commands completed successfully
	HostWrites       uint64 // Write commands completed successfully
	BytesRead        uint64
	BytesWritten     uint64
	Completions      uint64 // posted to a CQ
	InvalidDoorbells uint64 // doorbell writes naming no queue or an out-of-range value
	ShadowReads      uint64 // doorbell values taken from shadow doorbells
	Aborts           uint64 // Abort commands received
	// LastAbortSQID and LastAbortCID are the command the latest Abort
	// named.
	LastAbortSQID, LastAbortCID uint16
}

// New returns a controller in reset (CC.EN=0) that reaches host memory
// through mem.
func New(mem *Memory, cfg Config) *Controller {
	if cfg.MQES == 0 {
		cfg.MQES = 4096
	}
	if cfg.TO == 0 {
		cfg.TO = 1
	}
	if cfg.MaxQueues == 0 {
		cfg.MaxQueues = 64
	}
	if cfg.Vectors == 0 {
		cfg.Vectors = 16
	}
	if cfg.Namespaces == nil {
		cfg.Namespaces = []NamespaceConfig{{Blocks: 32768, LBASize: 512}}
	}
	c := &Controller{mem: mem, cfg: cfg, features: map[uint8]uint32{}}
	c.cap = uint64(cfg.MQES-1) |
		1<<16 | // CQR: contiguous queues required
		uint64(cfg.TO)<<24 |
		uint64(cfg.DSTRD&0xf)<<32 |
		1<<37 | // CSS: NVM command set
		0<<48 | // MPSMIN: 4 KiB
		4<<52 // MPSMAX: 64 KiB
	for _, n := range cfg.Namespaces {
		lbs := n.LBASize
		if lbs == 0 {
			lbs = 512
		}
		shift := uint(0)
		for 1<<shift < lbs {
			shift++
		}
		ns := &namespace{csi: n.CSI, ms: n.Metadata, extended: n.Extended, lbaShift: shift, blocks: n.Blocks}
		if ns.extended {
			ns.data = make([]byte, n.Blocks*uint64(lbs+n.Metadata))
		} else {
			ns.data = make([]byte, n.Blocks<<shift)
			ns.meta = make([]byte, n.Blocks*uint64(n.Metadata))
		}
		c.ns = append(c.ns, ns)
	}
	c.idCtrl = c.identifyController()
	c.sqs = make([]*sq, cfg.MaxQueues+1)
	c.cqs = make([]*cq, cfg.MaxQueues+1)
	return c
}

// Memory returns the controller's view of host memory.
func (c *Controller) Memory() *Memory { return c.mem }

// Stats returns the controller's counters.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// NamespaceData returns the backing store of namespace nsid (1-based), for
// tests to check what was written. It is not synchronised with command
// processing: read it while no command is in flight.
func (c *Controller) NamespaceData(nsid uint32) []byte {
	if nsid == 0 || int(nsid) > len(c.ns) {
		return nil
	}
	return c.ns[nsid-1].data
}

// Read32 reads a 32-bit register.
func (c *Controller) Read32(off uint64) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return 0xffffffff
	}
	switch off {
	case nvmelike.NVME_REG_CAP:
		return uint32(c.cap)
	case nvmelike.NVME_REG_CAP + 4:
		return uint32(c.cap >> 32)
	case nvmelike.NVME_REG_VS:
		return 0x00010400 // 1.4.0
	case nvmelike.NVME_REG_CC:
		return c.cc
	case nvmelike.NVME_REG_CSTS:
		if c.ready > 0 {
			c.ready--
			if c.ready == 0 {
				c.csts = c.csts&^nvmelike.NVME_CSTS_RDY | c.target
			}
		}
		return c.csts
	case nvmelike.NVME_REG_AQA:
		return c.aqa
	case nvmelike.NVME_REG_ASQ:
		return uint32(c.asq)
	case nvmelike.NVME_REG_ASQ + 4:
		return uint32(c.asq >> 32)
	case nvmelike.NVME_REG_ACQ:
		return uint32(c.acq)
	case nvmelike.NVME_REG_ACQ + 4:
		return uint32(c.acq >> 32)
	}
	return 0
}

// Read64 reads a 64-bit register (CAP, ASQ, ACQ).
func (c *Controller) Read64(off uint64) uint64 {
	lo := uint64(c.Read32(off))
	hi := uint64(c.Read32(off + 4))
	return hi<<32 | lo
}

// Write64 writes a 64-bit register (ASQ, ACQ).
func (c *Controller) Write64(off uint64, v uint64) {
	c.Write32(off, uint32(v))
	c.Write32(off+4, uint32(v>>32))
}

// Write32 writes a 32-bit register or a doorbell. An SQ tail doorbell runs
// the new commands before it returns.
func (c *Controller) Write32(off uint64, v uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return
	}
	switch off {
	case nvmelike.NVME_REG_CC:
		c.writeCC(v)
	case nvmelike.NVME_REG_AQA:
		c.aqa = v
	case nvmelike.NVME_REG_ASQ:
		c.asq = c.asq&^0xffffffff | uint64(v)
	case nvmelike.NVME_REG_ASQ + 4:
		c.asq = c.asq&0xffffffff | uint64(v)<<32
	case nvmelike.NVME_REG_ACQ:
		c.acq = c.acq&^0xffffffff | uint64(v)
	case nvmelike.NVME_REG_ACQ + 4:
		c.acq = c.acq&0xffffffff | uint64(v)<<32
	default:
		if off >= nvmelike.NVME_REG_DBS {
			c.doorbell(off, v)
		}
	}
}

func (c *Controller) setReady(rdy bool) {
	c.target = 0
	if rdy {
		c.target = nvmelike.NVME_CSTS_RDY
	}
	if c.cfg.NeverReady && rdy {
		c.ready = -1 // never
		return
	}
	if c.cfg.ReadyDelay > 0 {
		c.ready = c.cfg.ReadyDelay
		return
	}
	c.csts = c.csts&^nvmelike.NVME_CSTS_RDY | c.target
}

func (c *Controller) writeCC(v uint32) {
	old := c.cc
	c.cc = v
	wasOn, on := old&nvmelike.NVME_CC_ENABLE != 0, v&nvmelike.NVME_CC_ENABLE != 0
	switch {
	case !wasOn && on:
		c.enable()
	case wasOn && !on:
		c.reset()
		c.setReady(false)
	}
	if on && v&nvmelike.NVME_CC_SHN_MASK != 0 && old&nvmelike.NVME_CC_SHN_MASK == 0 {
		c.csts = c.csts&^nvmelike.NVME_CSTS_SHST_MASK | nvmelike.NVME_CSTS_SHST_CMPLT
	}
}

// reset is a controller reset: every queue is gone, and a fatal status
// with it.
func (c *Controller) reset() {
	clear(c.sqs)
	clear(c.cqs)
	c.numQueues = 0
	c.csts = 0
	c.dbs, c.eis = nil, nil
	c.faults.fatal = false
	c.events.reset()
}

func (c *Controller) enable() {
	c.ps = 4096 << (c.cc >> nvmelike.NVME_CC_MPS_SHIFT & 0xf)
	c.iosqes = 1 << (c.cc >> nvmelike.NVME_CC_IOSQES_SHIFT & 0xf)
	c.iocqes = 1 << (c.cc >> nvmelike.NVME_CC_IOCQES_SHIFT & 0xf)
	asqs := int(c.aqa&0xfff) + 1
	acqs := int(c.aqa>>16&0xfff) + 1
	pageMask := uint64(c.ps - 1)
	sqMem, ok1 := c.mem.Translate(c.asq, asqs*64)
	cqMem, ok2 := c.mem.Translate(c.acq, acqs*16)
	if asqs < 2 || acqs < 2 || c.asq&pageMask != 0 || c.acq&pageMask != 0 || !ok1 || !ok2 {
		c.csts |= nvmelike.NVME_CSTS_CFS // a bad admin queue set-up is fatal
		return
	}
	c.cqs[0] = &cq{size: uint16(acqs), esize: 16, phase: true, mem: cqMem, users: 1}
	c.sqs[0] = &sq{size: uint16(asqs), esize: 64, mem: sqMem}
	c.setReady(true)
}

func (c *Controller) doorbell(off uint64, v uint32) {
	stride := uint64(4) << c.cfg.DSTRD
	if (off-nvmelike.NVME_REG_DBS)%stride != 0 {
		c.stats.InvalidDoorbells++
		return
	}
	i := (off - nvmelike.NVME_REG_DBS) / stride
	qid := int(i / 2)
	if i%2 == 0 {
		if qid >= len(c.sqs) || c.sqs[qid] == nil || v >= uint32(c.sqs[qid].size) {
			c.stats.InvalidDoorbells++
			return
		}
		s := c.sqs[qid]
		s.tail = uint16(v)
		if off, ok := c.shadowOffset(qid, false); ok {
			if t := c.readShadow(off); t < uint32(s.size) {
				s.tail = uint16(t)
			}
		}
		c.run(s)
		if off, ok := c.shadowOffset(qid, false); ok {
			c.publishEventIdx(off, s.tail)
		}
		return
	}
	if qid >= len(c.cqs) || c.cqs[qid] == nil || v >= uint32(c.cqs[qid].size) {
		c.stats.InvalidDoorbells++
		return
	}
	q := c.cqs[qid]
	q.head = uint16(v)
	if off, ok := c.shadowOffset(qid, true); ok {
		if h := c.readShadow(off); h < uint32(q.size) {
			q.head = uint16(h)
		}
		c.publishEventIdx(off, q.head)
	}
	c.flushPending(q)
}

// publishEventIdx tells the host when to write the MMIO doorbell next: on
// any change past seen, or (ShadowPolling) never, as a controller that
// polls the shadow doorbells would.
func (c *Controller) publishEventIdx(off uint64, seen uint16) {
	if c.cfg.ShadowPolling {
		seen-- // behind the host's value: no update passes it
	}
	nvmelike.ReleaseStore32(c.eis[off:off+4], uint32(seen))
}

// PollShadow is one pass of a controller thread polling the shadow
// doorbells: it runs what the I/O SQs' shadow tails announce and takes the
// CQs' shadow heads. It does nothing before Doorbell Buffer Config.
func (c *Controller) PollShadow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return
	}
	for qid := 1; qid < len(c.cqs); qid++ {
		if q := c.cqs[qid]; q != nil {
			if off, ok := c.shadowOffset(qid, true); ok {
				if h := c.readShadow(off); h < uint32(q.size) {
					q.head = uint16(h)
					c.publishEventIdx(off, q.head)
					c.flushPending(q)
				}
			}
		}
	}
	for qid := 1; qid < len(c.sqs); qid++ {
		if s := c.sqs[qid]; s != nil {
			if off, ok := c.shadowOffset(qid, false); ok {
				if t := c.readShadow(off); t < uint32(s.size) {
					s.tail = uint16(t)
					c.run(s)
					c.publishEventIdx(off, s.tail)
				}
			}
		}
	}
}

// shadowOffset returns the offset of an I/O queue's shadow doorbell in the
// shadow buffers, if they are configured and it fits.
func (c *Controller) shadowOffset(qid int, cq bool) (uint64, bool) {
	if c.dbs == nil || qid == 0 {
		return 0, false
	}
	off := nvmelike.SQTailDoorbell(uint16(qid), c.cfg.DSTRD) - nvmelike.NVME_REG_DBS
	if cq {
		off = nvmelike.CQHeadDoorbell(uint16(qid), c.cfg.DSTRD) - nvmelike.NVME_REG_DBS
	}
	return off, off+4 <= uint64(len(c.dbs))
}

func (c *Controller) readShadow(off uint64) uint32 {
	c.stats.ShadowReads++
	return nvmelike.AcquireLoad32(c.dbs[off : off+4])
}

// run executes the commands between an SQ's head and tail.
func (c *Controller) run(s *sq) {
	if c.faults.fatal || c.csts&nvmelike.NVME_CSTS_RDY == 0 {
		return
	}
	for s.head != s.tail {
		e := nvmelike.SQE(s.mem[int(s.head)*s.esize : int(s.head)*s.esize+s.esize])
		s.head++
		if s.head == s.size {
			s.head = 0
		}
		c.stats.Commands++
		var dw0 uint32
		var status uint16
		switch {
		case s.id == 0 && e.Flags()&nvmelike.FlagsPSDTMask != 0:
			status = statusInvalidField // no SGLs for admin commands over PCIe
		case s.id == 0 && e.Opcode() == nvmelike.AdminAsyncEvent:
			var held bool
			if dw0, status, held = c.asyncEventRequest(e.CID()); held {
				continue // completed by PostAsyncEvent
			}
		case s.id == 0:
			dw0, status = c.admin(e)
		default:
			dw0, status = c.io(e)
		}
		if status != 0 {
			c.logError(s.id, e, status)
		}
		c.complete(s, nvmelike.Completion{DW0: dw0, SQHead: s.head, SQID: s.id, CID: e.CID(), Status: status})
		if c.sqs[s.id] != s {
			return // the command deleted its own queue
		}
	}
}

// complete posts a completion, through the fault hooks.
func (c *Controller) complete(s *sq, cpl nvmelike.Completion) {
	q := c.cqs[s.cqid]
	if q == nil {
		return
	}
	if s.id == 0 && c.faults.dropAdmin > 0 {
		c.faults.dropAdmin--
		return
	}
	if s.id != 0 {
		f := &c.faults
		switch {
		case f.drop > 0:
			f.drop--
			return
		case f.garble > 0:
			f.garble--
			cpl.CID ^= f.garbleXOR
		case f.dup > 0:
			f.dup--
			c.post(q, cpl)
		}
		if f.delay > 0 {
			time.AfterFunc(f.delay, func() {
				c.mu.Lock()
				defer c.mu.Unlock()
				if !c.removed && c.cqs[q.id] == q {
					c.post(q, cpl)
				}
			})
			return
		}
	}
	c.post(q, cpl)
}

// post writes a completion into a CQ, or queues it until the host makes
// room.
func (c *Controller) post(q *cq, cpl nvmelike.Completion) {
	if len(q.pending) > 0 || q.full() {
		q.pending = append(q.pending, cpl)
		return
	}
	c.write(q, cpl)
}

func (q *cq) full() bool {
	next := q.tail + 1
	if next == q.size {
		next = 0
	}
	return next == q.head
}

func (c *Controller) write(q *cq, cpl nvmelike.Completion) {
	cpl.Phase = q.phase
	// A wide entry keeps the NVMe completion in its first 16 bytes.
	nvmelike.PutCQE(q.mem[int(q.tail)*q.esize:int(q.tail)*q.esize+16], cpl)
	q.tail++
	if q.tail == q.size {
		q.tail = 0
		q.phase = !q.phase
	}
	c.stats.Completions++
}

func (c *Controller) flushPending(q *cq) {
	n := 0
	for n < len(q.pending) && !q.full() {
		c.write(q, q.pending[n])
		n++
	}
	if n > 0 {
		q.pending = append(q.pending[:0], q.pending[n:]...)
	}
}

// transfer moves data between the namespace slice data and host memory
// described by PRP1/PRP2, in the direction toHost says. It returns an NVMe
// status field, 0 for success.
func (c *Controller) transfer(prp1, prp2 uint64, data []byte, toHost bool) uint16 {
	ps := uint64(c.ps)
	n := uint64(len(data))
	if n == 0 {
		return 0
	}
	move := func(iova uint64, d []byte) bool {
		host, ok := c.mem.Translate(iova, len(d))
		if !ok {
			return false
		}
		if toHost {
			copy(host, d)
		} else {
			copy(d, host)
		}
		return true
	}
	if prp1&3 != 0 {
		return statusInvalidPRPOffset
	}
	done := min(n, ps-prp1%ps)
	if !move(prp1, data[:done]) {
		return statusDataTransfer
	}
	if done == n {
		return 0
	}
	if n-done <= ps {
		if prp2%ps != 0 {
			return statusInvalidPRPOffset
		}
		if !move(prp2, data[done:]) {
			return statusDataTransfer
		}
		return 0
	}
	list := prp2
	if list&7 != 0 {
		return statusInvalidPRPOffset
	}
	for done < n {
		raw, ok := c.mem.Translate(list, 8)
		if !ok {
			return statusDataTransfer
		}
		entry := binary.LittleEndian.Uint64(raw)
		if list%ps == ps-8 && n-done > ps {
			// The last entry of a list page, with more than one page
			// to go: a pointer to the next list page.
			if entry&7 != 0 {
				return statusInvalidPRPOffset
			}
			list = entry
			continue
		}
		list += 8
		if entry%ps != 0 {
			return statusInvalidPRPOffset
		}
		chunk := min(n-done, ps)
		if !move(entry, data[done:done+chunk]) {
			return statusDataTransfer
		}
		done += chunk
	}
	return 0
}

// Status fields the controller returns.
var (
	statusInvalidOpcode    = nvmelike.StatusField(nvmelike.SCTGeneric, 0x01, true)
	statusInvalidField     = nvmelike.StatusField(nvmelike.SCTGeneric, 0x02, true)
	statusDataTransfer     = nvmelike.StatusField(nvmelike.SCTGeneric, 0x04, false)
	statusInvalidNamespace = nvmelike.StatusField(nvmelike.SCTGeneric, 0x0b, true)
	statusInvalidPRPOffset = nvmelike.StatusField(nvmelike.SCTGeneric, 0x13, true)
	statusLBAOutOfRange    = nvmelike.StatusField(nvmelike.SCTGeneric, 0x80, true)
	statusCompareFailure   = nvmelike.StatusField(nvmelike.SCTMediaError, 0x85, true)
	statusInvalidCQ        = nvmelike.StatusField(nvmelike.SCTCommandSpecific, 0x00, true)
	statusInvalidQueueID   = nvmelike.StatusField(nvmelike.SCTCommandSpecific, 0x01, true)
	statusInvalidVector    = nvmelike.StatusField(nvmelike.SCTCommandSpecific, 0x08, true)
	statusInvalidQueueSize = nvmelike.StatusField(nvmelike.SCTCommandSpecific, 0x02, true)
	statusInvalidQueueDel  = nvmelike.StatusField(nvmelike.SCTCommandSpecific, 0x0c, true)
	statusAERLimit         = nvmelike.StatusField(nvmelike.SCTCommandSpecific, 0x05, true)
)
