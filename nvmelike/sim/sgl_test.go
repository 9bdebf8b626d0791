package sim

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/umdkit/umd/nvmelike"
)

// TestTransferSGL drives the controller's SGL walker directly, with
// well-formed and malformed SGLs.
func TestTransferSGL(t *testing.T) {
	m := NewMemory()
	c := New(m, Config{SGLS: nvmelike.NVME_CTRL_SGLS_BYTE_ALIGNED | nvmelike.NVME_CTRL_SGLS_BIT_BUCKET})
	c.ps = 4096
	host, _ := m.Alloc(3*4096, 4096)
	seg1, _ := m.Alloc(4096, 4096)
	seg2, _ := m.Alloc(4096, 4096)
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(i*13 + 1)
	}
	desc := func(typ uint8, addr uint64, n uint32) sglDescriptor {
		return sglDescriptor{typ: typ, addr: addr, length: n}
	}
	put := func(seg nvmelike.Buffer, i int, typ uint8, addr uint64, n uint32) {
		nvmelike.PutSGLDescriptor(seg.Bytes[i*16:], typ, addr, n)
	}
	const (
		db  = nvmelike.SGLTypeDataBlock
		bb  = nvmelike.SGLTypeBitBucket
		sg  = nvmelike.SGLTypeSegment
		lst = nvmelike.SGLTypeLastSegment
	)

	// One Data Block.
	if st := c.transferSGL(desc(db, host.IOVA+1, 3000), data, true); st != 0 || !bytes.Equal(host.Bytes[1:3001], data) {
		t.Fatalf("data block: status 0x%x", st)
	}
	// A Segment of two Data Blocks and a Last Segment with a third.
	clear(host.Bytes)
	put(seg1, 0, db, host.IOVA+7, 1000)
	put(seg1, 1, db, host.IOVA+4096+3, 1500)
	put(seg1, 2, lst, seg2.IOVA, 16)
	put(seg2, 0, db, host.IOVA+8192, 500)
	if st := c.transferSGL(desc(sg, seg1.IOVA, 48), data, true); st != 0 {
		t.Fatalf("chained: status 0x%x", st)
	}
	got := append(append(append([]byte{}, host.Bytes[7:1007]...), host.Bytes[4099:5599]...), host.Bytes[8192:8692]...)
	if !bytes.Equal(got, data) {
		t.Fatal("chained: data differs")
	}
	// And back, host to device.
	back := make([]byte, 3000)
	if st := c.transferSGL(desc(sg, seg1.IOVA, 48), back, false); st != 0 || !bytes.Equal(back, data) {
		t.Fatalf("chained, to the device: status 0x%x", st)
	}
	// A bit bucket discards read data, and is skipped for written data.
	put(seg2, 0, bb, 0, 500)
	clear(host.Bytes[8192:8692])
	if st := c.transferSGL(desc(sg, seg1.IOVA, 48), data, true); st != 0 || !bytes.Equal(host.Bytes[8192:8692], make([]byte, 500)) {
		t.Fatalf("bit bucket: status 0x%x", st)
	}
	if st := c.transferSGL(desc(sg, seg1.IOVA, 48), back[:2500], false); st != 0 {
		t.Fatalf("bit bucket, to the device: status 0x%x", st)
	}

	for _, tc := range []struct {
		name  string
		setup func()
		first sglDescriptor
		n     int
		want  uint16
	}{
		{"data block short", nil, desc(db, host.IOVA, 2999), 3000, statusDataSGLLength},
		{"data block long", nil, desc(db, host.IOVA, 3001), 3000, statusDataSGLLength},
		{"data block unmapped", nil, desc(db, 0x1000, 3000), 3000, statusDataTransfer},
		{"data block with an offset subtype", nil, sglDescriptor{typ: db, subtype: 1, addr: host.IOVA, length: 3000}, 3000, statusSGLDescriptorType},
		{"bit bucket first", nil, desc(bb, 0, 3000), 3000, statusSGLDescriptorType},
		{"reserved type", nil, desc(0x7, host.IOVA, 3000), 3000, statusSGLDescriptorType},
		{"segment of 0 bytes", nil, desc(lst, seg1.IOVA, 0), 3000, statusInvalidSGLSegment},
		{"segment not a multiple of 16", nil, desc(lst, seg1.IOVA, 24), 3000, statusInvalidSGLSegment},
		{"segment unmapped", nil, desc(lst, 0x1000, 16), 3000, statusDataTransfer},
		{"last segment that chains", func() {
			put(seg1, 0, db, host.IOVA, 1000)
			put(seg1, 1, lst, seg2.IOVA, 16)
		}, desc(lst, seg1.IOVA, 32), 3000, statusInvalidSGLSegment},
		{"segment descriptor mid-list", func() {
			put(seg1, 0, lst, seg2.IOVA, 16)
			put(seg1, 1, db, host.IOVA, 3000)
		}, desc(sg, seg1.IOVA, 32), 3000, statusInvalidSGLCount},
		{"segment pointing to itself", func() {
			put(seg1, 0, sg, seg1.IOVA, 16)
		}, desc(sg, seg1.IOVA, 16), 3000, statusInvalidSGLCount},
		{"SGL short of the data", func() {
			put(seg1, 0, db, host.IOVA, 1000)
		}, desc(lst, seg1.IOVA, 16), 3000, statusDataSGLLength},
		{"reserved type in a segment", func() {
			put(seg1, 0, 0x6, host.IOVA, 3000)
		}, desc(lst, seg1.IOVA, 16), 3000, statusSGLDescriptorType},
	} {
		if tc.setup != nil {
			tc.setup()
		}
		if st := c.transferSGL(tc.first, make([]byte, tc.n), true); st != tc.want {
			t.Errorf("%s: status 0x%x, want 0x%x", tc.name, st, tc.want)
		}
	}

	// Without bit bucket support, a bit bucket is an invalid type; with
	// dword alignment required, an odd data block is refused.
	c.cfg.SGLS = nvmelike.NVME_CTRL_SGLS_DWORD_ALIGNED
	put(seg1, 0, db, host.IOVA, 1000)
	put(seg1, 1, bb, 0, 2000)
	if st := c.transferSGL(desc(lst, seg1.IOVA, 32), data, true); st != statusSGLDescriptorType {
		t.Errorf("bit bucket unsupported: status 0x%x", st)
	}
	if st := c.transferSGL(desc(db, host.IOVA+1, 3000), data, true); st != statusDataSGLLength {
		t.Errorf("odd data block with dword alignment required: status 0x%x", st)
	}
}

// TestTransferDataPSDT: PSDT selects PRPs or an SGL; SGLs on a controller
// without them, and PSDT 11b, are Invalid Field.
func TestTransferDataPSDT(t *testing.T) {
	m := NewMemory()
	c := New(m, Config{})
	c.ps = 4096
	host, _ := m.Alloc(4096, 4096)
	e := nvmelike.SQE(make([]byte, 64))
	e.SetCDW0(nvmelike.CmdRead, nvmelike.FlagsPSDTSGL, 1)
	e.SetPRP(nvmelike.SGLDescriptor(nvmelike.SGLTypeDataBlock, host.IOVA, 512))
	if st := c.transferData(e, make([]byte, 512), true); st != statusInvalidField {
		t.Errorf("SGL without SGL support: status 0x%x", st)
	}
	c.cfg.SGLS = nvmelike.NVME_CTRL_SGLS_BYTE_ALIGNED
	if st := c.transferData(e, make([]byte, 512), true); st != 0 {
		t.Errorf("SGL: status 0x%x", st)
	}
	e.SetCDW0(nvmelike.CmdRead, nvmelike.FlagsPSDTMask, 1)
	if st := c.transferData(e, make([]byte, 512), true); st != statusInvalidField {
		t.Errorf("PSDT 11b: status 0x%x", st)
	}
	e.SetCDW0(nvmelike.CmdRead, 0, 1)
	e.SetPRP(host.IOVA, 0)
	if st := c.transferData(e, make([]byte, 512), true); st != 0 {
		t.Errorf("PRP: status 0x%x", st)
	}
}

// FuzzTransferSGL walks arbitrary SGLs: a first descriptor and a segment
// page of arbitrary descriptors (whose addresses are pulled into the
// mapped memory now and then). It must end with a status, never panic or
// hang.
func FuzzTransferSGL(f *testing.F) {
	f.Add(make([]byte, 16+64), uint16(512), true)
	seed := make([]byte, 16+64)
	nvmelike.PutSGLDescriptor(seed, nvmelike.SGLTypeSegment, 0, 32)
	nvmelike.PutSGLDescriptor(seed[16:], nvmelike.SGLTypeDataBlock, 0, 256)
	nvmelike.PutSGLDescriptor(seed[32:], nvmelike.SGLTypeLastSegment, 0, 16)
	f.Add(seed, uint16(512), false)
	f.Fuzz(func(t *testing.T, raw []byte, n uint16, toHost bool) {
		m := NewMemory()
		c := New(m, Config{SGLS: nvmelike.NVME_CTRL_SGLS_BYTE_ALIGNED | nvmelike.NVME_CTRL_SGLS_BIT_BUCKET})
		c.ps = 4096
		host, _ := m.Alloc(4*4096, 4096)
		seg, _ := m.Alloc(4096, 4096)
		if len(raw) < 16 {
			return
		}
		first := decodeSGL(raw[:16])
		rest := raw[16:]
		copy(seg.Bytes, rest)
		// Point addresses whose low bit is set into the segment page or
		// the data memory, so that chains and data blocks get walked.
		fix := func(addr uint64) uint64 {
			switch addr & 3 {
			case 1:
				return seg.IOVA + addr>>2%4096&^15
			case 2:
				return host.IOVA + addr>>2%uint64(len(host.Bytes))
			}
			return addr
		}
		first.addr = fix(first.addr)
		for i := 0; i+16 <= len(seg.Bytes); i += 16 {
			a := binary.LittleEndian.Uint64(seg.Bytes[i:])
			binary.LittleEndian.PutUint64(seg.Bytes[i:], fix(a))
		}
		_ = c.transferSGL(first, make([]byte, n), toHost)
	})
}
