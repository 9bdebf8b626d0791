package nvmelike_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// sglRig is a rig whose controller offers SGLs (byte aligned, as QEMU's
// nvme, and bit buckets), one namespace of 512-byte blocks.
func sglRig(t testing.TB, o *nvmelike.Options) *rig {
	return newRig(t, sim.Config{
		SGLS:       nvmelike.NVME_CTRL_SGLS_BYTE_ALIGNED | nvmelike.NVME_CTRL_SGLS_BIT_BUCKET,
		Namespaces: []sim.NamespaceConfig{{Blocks: 16384, LBASize: 512}},
	}, o)
}

// concat returns the bytes of bufs in order.
func concat(bufs []nvmelike.Buffer) []byte {
	var out []byte
	for _, b := range bufs {
		out = append(out, b.Bytes...)
	}
	return out
}

// TestSGLUnaligned writes and reads back contiguous buffers at odd
// offsets, which only an SGL can describe (one Data Block in the entry),
// and checks the device's copy.
func TestSGLUnaligned(t *testing.T) {
	r := sglRig(t, &nvmelike.Options{DataPointer: nvmelike.DataPointerSGL, MaxTransfer: 4 << 20})
	q := r.queue(t, 16)
	if q.DataPointer() != nvmelike.DataPointerSGL {
		t.Fatalf("data pointer %v", q.DataPointer())
	}
	ctx := testContext(t)
	wbuf := r.alloc(t, 4<<20+8192)
	rbuf := r.alloc(t, 4<<20+8192)
	lba := uint64(0)
	for _, size := range []int{512, 4096, 3*4096 + 512, 1 << 20, 4 << 20} {
		for _, off := range []int{1, 3, 4095} {
			w, rd := wbuf.Slice(off, size), rbuf.Slice(off+2, size)
			fill(w.Bytes, byte(size+off))
			clear(rd.Bytes)
			nlb := uint32(size / 512)
			if lba+uint64(nlb) > 16384 {
				lba = 0
			}
			wc := nvmelike.WriteCommand(1, lba, nlb, w)
			if _, err := q.Exec(ctx, &wc); err != nil {
				t.Fatalf("write %d bytes at offset %d: %v", size, off, err)
			}
			rc := nvmelike.ReadCommand(1, lba, nlb, rd)
			if _, err := q.Exec(ctx, &rc); err != nil {
				t.Fatalf("read %d bytes at offset %d: %v", size, off, err)
			}
			if !bytes.Equal(w.Bytes, rd.Bytes) {
				t.Fatalf("%d bytes at offset %d: read back differs", size, off)
			}
			if dev := r.dev.NamespaceData(1)[lba*512 : lba*512+uint64(size)]; !bytes.Equal(dev, w.Bytes) {
				t.Fatalf("%d bytes at offset %d: device data differs", size, off)
			}
			lba += uint64(nlb)
		}
	}
	// The same buffer through PRPs is refused before the device sees it.
	if err := q.SetDataPointer(nvmelike.DataPointerPRP); err != nil {
		t.Fatal(err)
	}
	rc := nvmelike.ReadCommand(1, 0, 1, rbuf.Slice(1, 512))
	if _, err := q.Exec(ctx, &rc); !errors.Is(err, nvmelike.ErrUnalignedBuffer) {
		t.Errorf("an odd-offset read with PRPs: %v, want ErrUnalignedBuffer", err)
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d commands outstanding", q.Outstanding())
	}
}

// TestSGLSplitUnaligned: an odd-offset SGL command above the transfer
// limit is split, each part one Data Block.
func TestSGLSplitUnaligned(t *testing.T) {
	r := newRig(t, sim.Config{MDTS: 1, SGLS: nvmelike.NVME_CTRL_SGLS_BYTE_ALIGNED, Namespaces: []sim.NamespaceConfig{{Blocks: 1024}}},
		&nvmelike.Options{DataPointer: nvmelike.DataPointerAuto})
	q := r.queue(t, 32)
	ctx := testContext(t)
	buf := r.alloc(t, 128<<10)
	w := buf.Slice(5, 64<<10)
	fill(w.Bytes, 9)
	wc := nvmelike.WriteCommand(1, 7, 128, w)
	if _, err := q.Exec(ctx, &wc); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Split != 1 || st.Submitted != 8 {
		t.Errorf("64 KiB at an 8 KiB limit: %d split, %d submitted", st.Split, st.Submitted)
	}
	if !bytes.Equal(r.dev.NamespaceData(1)[7*512:7*512+64<<10], w.Bytes) {
		t.Error("device data differs")
	}
}

// scatter returns buffers of the given sizes at odd offsets, apart from
// each other, in memory from r.
func scatter(t testing.TB, r *rig, sizes ...int) []nvmelike.Buffer {
	total := 0
	for _, s := range sizes {
		total += s + 4096
	}
	mem := r.alloc(t, total)
	bufs := make([]nvmelike.Buffer, len(sizes))
	at := 0
	for i, s := range sizes {
		bufs[i] = mem.Slice(at+2*i+1, s)
		at += s + 4096
	}
	return bufs
}

// TestSGLScatterGather writes from three odd-sized, odd-offset buffers
// (one Last Segment of three Data Blocks) and reads back both into one
// buffer with PRPs and into three other buffers with an SGL.
func TestSGLScatterGather(t *testing.T) {
	r := sglRig(t, nil)
	q := r.queue(t, 16)
	if err := q.SetDataPointer(nvmelike.DataPointerSGL); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	src := scatter(t, r, 100, 1001, 947+1024)
	for i, b := range src {
		fill(b.Bytes, byte(i+1))
	}
	w := nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: 1, CDW10: 40, CDW12: 6 - 1, Buffers: src}
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}
	want := concat(src)
	if !bytes.Equal(r.dev.NamespaceData(1)[40*512:46*512], want) {
		t.Fatal("device data differs from the gathered buffers")
	}
	// Back through PRPs, contiguous.
	if err := q.SetDataPointer(nvmelike.DataPointerPRP); err != nil {
		t.Fatal(err)
	}
	one := r.alloc(t, 3072)
	rc := nvmelike.ReadCommand(1, 40, 6, one)
	if _, err := q.Exec(ctx, &rc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one.Bytes, want) {
		t.Error("PRP read differs")
	}
	// Back through an SGL, scattered differently; asynchronously.
	if err := q.SetDataPointer(nvmelike.DataPointerSGL); err != nil {
		t.Fatal(err)
	}
	dst := scatter(t, r, 2000, 72, 1000)
	done := false
	rs := nvmelike.Command{Opcode: nvmelike.CmdRead, NSID: 1, CDW10: 40, CDW12: 6 - 1, Buffers: dst, Tag: 7}
	err := q.Submit(&rs, func(cmd *nvmelike.Command, _ nvmelike.Completion, err error) {
		if err != nil || cmd.Tag != 7 || len(cmd.Buffers) != 3 || cmd.Flags&nvmelike.FlagsPSDTMask != nvmelike.FlagsPSDTSGL {
			t.Errorf("callback: %v, %+v", err, cmd)
		}
		done = true
	})
	if err != nil {
		t.Fatal(err)
	}
	q.Ring()
	if _, err := q.Poll(0); err != nil || !done {
		t.Fatalf("poll: %v, done %v", err, done)
	}
	if !bytes.Equal(concat(dst), want) {
		t.Error("scattered SGL read differs")
	}
}

// TestSGLChained scatters 300 buffers: more Data Blocks than a list page
// holds, so the SGL is a Segment whose last descriptor is the Last
// Segment of the rest.
func TestSGLChained(t *testing.T) {
	r := sglRig(t, &nvmelike.Options{MaxTransfer: 4 << 20, DataPointer: nvmelike.DataPointerAuto})
	q := r.queue(t, 8)
	ctx := testContext(t)
	mem := r.alloc(t, 300*600+4096)
	bufs := make([]nvmelike.Buffer, 300)
	for i := range bufs {
		bufs[i] = mem.Slice(i*600+i%4, 512)
		fill(bufs[i].Bytes, byte(i))
	}
	w := nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: 1, CDW10: 1000, CDW12: 300 - 1, Buffers: bufs}
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}
	want := concat(bufs)
	if !bytes.Equal(r.dev.NamespaceData(1)[1000*512:1300*512], want) {
		t.Fatal("device data differs")
	}
	for i := range bufs {
		clear(bufs[i].Bytes)
	}
	rc := w
	rc.Opcode = nvmelike.CmdRead
	if _, err := q.Exec(ctx, &rc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(concat(bufs), want) {
		t.Fatal("read back differs")
	}
}

// TestPRPMultiBuffer: with PRPs, several buffers work when they meet at
// page boundaries, and are refused otherwise.
func TestPRPMultiBuffer(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 1024}}}, nil)
	q := r.queue(t, 8)
	ctx := testContext(t)
	a, b, c := r.alloc(t, 8192), r.alloc(t, 8192), r.alloc(t, 4096)
	for _, tc := range []struct {
		name string
		bufs []nvmelike.Buffer
	}{
		{"in-page + one page (PRP2)", []nvmelike.Buffer{a.Slice(3584, 512), b.Slice(0, 512)}},
		{"three (PRP list)", []nvmelike.Buffer{a.Slice(512, 7680), b.Slice(0, 8192), c.Slice(0, 1024)}},
	} {
		for i := range tc.bufs {
			fill(tc.bufs[i].Bytes, byte(i+len(tc.bufs)))
		}
		want := concat(tc.bufs)
		nlb := uint32(len(want) / 512)
		w := nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: 1, CDW12: nlb - 1, Buffers: tc.bufs}
		if _, err := q.Exec(ctx, &w); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(r.dev.NamespaceData(1)[:len(want)], want) {
			t.Fatalf("%s: device data differs", tc.name)
		}
	}
	bad := nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: 1, CDW12: 1, Buffers: []nvmelike.Buffer{a.Slice(0, 512), b.Slice(0, 512)}}
	if _, err := q.Exec(ctx, &bad); !errors.Is(err, nvmelike.ErrPRPBoundary) {
		t.Errorf("buffers meeting mid-page with PRPs: %v, want ErrPRPBoundary", err)
	}
	// Auto on a controller without SGLs is PRPs, with the same rule.
	if err := q.SetDataPointer(nvmelike.DataPointerAuto); err != nil || q.DataPointer() != nvmelike.DataPointerPRP {
		t.Fatalf("auto without SGLs: %v, %v", err, q.DataPointer())
	}
	if _, err := q.Exec(ctx, &bad); !errors.Is(err, nvmelike.ErrPRPBoundary) {
		t.Errorf("auto without SGLs, buffers meeting mid-page: %v, want ErrPRPBoundary", err)
	}
	if err := q.SetDataPointer(nvmelike.DataPointerSGL); !errors.Is(err, nvmelike.ErrSGLNotSupported) {
		t.Errorf("SGLs on a controller without: %v, want ErrSGLNotSupported", err)
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d commands outstanding", q.Outstanding())
	}
}

// TestSGLCommandErrors: what the engine refuses before the device sees
// it, and SGL statuses from the device as typed errors.
func TestSGLCommandErrors(t *testing.T) {
	r := sglRig(t, &nvmelike.Options{DataPointer: nvmelike.DataPointerSGL, MaxTransfer: 64 << 10})
	q := r.queue(t, 8)
	ctx := testContext(t)
	buf := r.alloc(t, 256<<10)
	for _, tc := range []struct {
		name string
		cmd  nvmelike.Command
		want error
	}{
		{"data and buffers", nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: 1, CDW12: 0, Data: buf.Slice(0, 512), Buffers: []nvmelike.Buffer{buf.Slice(512, 512)}}, nvmelike.ErrBadBuffers},
		{"an empty buffer", nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: 1, CDW12: 0, Buffers: []nvmelike.Buffer{buf.Slice(0, 512), {}}}, nvmelike.ErrBadBuffers},
		{"buffers above the limit", nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: 1, CDW12: 256 - 1, Buffers: []nvmelike.Buffer{buf.Slice(0, 64<<10), buf.Slice(64<<10, 64<<10)}}, nvmelike.ErrTransferTooLarge},
		{"buffers short of the blocks", nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: 1, CDW12: 2, Buffers: []nvmelike.Buffer{buf.Slice(0, 512), buf.Slice(1024, 512)}}, nvmelike.ErrDataLength},
	} {
		if _, err := q.Exec(ctx, &tc.cmd); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// The device rejecting an SGL: a typed status, the tracker freed.
	r.dev.FailSGLs(1, nvmelike.StatusField(nvmelike.SCTGeneric, 0x0d, true))
	rc := nvmelike.ReadCommand(1, 0, 1, buf.Slice(3, 512))
	_, err := q.Exec(ctx, &rc)
	var se *nvmelike.StatusError
	if !errors.Is(err, nvmelike.ErrInvalidSGLSegment) || !errors.As(err, &se) || !se.DNR {
		t.Errorf("an SGL the device rejects: %v, want invalid SGL segment descriptor", err)
	}
	if _, err := q.Exec(ctx, &rc); err != nil {
		t.Errorf("the next SGL command: %v", err)
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d commands outstanding", q.Outstanding())
	}
}

// TestDataPointerAuto: Auto takes PRPs for an aligned buffer within two
// pages and an SGL for an unaligned one or one needing a PRP list (seen
// through the controller's SGL fault, which only SGL commands hit).
func TestDataPointerAuto(t *testing.T) {
	r := sglRig(t, &nvmelike.Options{DataPointer: nvmelike.DataPointerAuto})
	q := r.queue(t, 8)
	ctx := testContext(t)
	buf := r.alloc(t, 64<<10)
	for _, tc := range []struct {
		data nvmelike.Buffer
		sgl  bool
	}{
		{buf.Slice(0, 4096), false},
		{buf.Slice(512, 4096+3584), false}, // PRP1 and PRP2
		{buf.Slice(512, 8192), true},       // a PRP list
		{buf.Slice(2, 512), true},
		{buf.Slice(0, 64<<10), true},
	} {
		r.dev.FailSGLs(1, nvmelike.StatusField(nvmelike.SCTGeneric, 0x0f, true))
		rc := nvmelike.ReadCommand(1, 0, uint32(tc.data.Len()/512), tc.data)
		_, err := q.Exec(ctx, &rc)
		if gotSGL := errors.Is(err, nvmelike.ErrDataSGLLength); gotSGL != tc.sgl {
			t.Errorf("%d bytes at IOVA 0x%x: %v (SGL %v, want %v)", tc.data.Len(), tc.data.IOVA, err, gotSGL, tc.sgl)
		}
		r.dev.FailSGLs(0, 0)
	}
}

// TestAdminRejectsSGL: the software controller, like QEMU, refuses SGLs
// on admin commands (Invalid Field); the engine never sends them.
func TestAdminRejectsSGL(t *testing.T) {
	r := sglRig(t, nil)
	ctx := testContext(t)
	c := nvmelike.GetFeaturesCommand(nvmelike.NVME_FEAT_NUM_QUEUES)
	c.Flags = nvmelike.FlagsPSDTSGL // no data: Flags goes out as it is
	if _, err := r.ctrl.Admin(ctx, &c); !errors.Is(err, nvmelike.ErrInvalidField) {
		t.Errorf("an admin command with PSDT=SGL: %v, want invalid field", err)
	}
	if id := r.ctrl.IdentifyController(); id.SGLS&nvmelike.NVME_CTRL_SGLS_MASK != nvmelike.NVME_CTRL_SGLS_BYTE_ALIGNED {
		t.Errorf("SGLS 0x%x", id.SGLS)
	}
}

// TestNoAllocationsOnSGLPath: SGL commands (one Data Block; three
// buffers; 300 chained) allocate nothing, submit to completion.
func TestNoAllocationsOnSGLPath(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counting is skipped in -short mode")
	}
	r := sglRig(t, &nvmelike.Options{MaxTransfer: 4 << 20, DataPointer: nvmelike.DataPointerSGL})
	q := r.queue(t, 16)
	ctx := testContext(t)
	buf := r.alloc(t, 256<<10)
	three := scatter(t, r, 100, 1001, 947+1024)
	chained := make([]nvmelike.Buffer, 300)
	for i := range chained {
		chained[i] = buf.Slice(i*600+1, 512)
	}
	cb := nvmelike.Callback(func(*nvmelike.Command, nvmelike.Completion, error) {})
	for _, tc := range []struct {
		name string
		cmd  nvmelike.Command
	}{
		{"one data block", nvmelike.ReadCommand(1, 0, 8, buf.Slice(3, 4096))},
		{"three buffers", nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: 1, CDW12: 5, Buffers: three}},
		{"300 buffers", nvmelike.Command{Opcode: nvmelike.CmdRead, NSID: 1, CDW12: 299, Buffers: chained}},
	} {
		allocs := testing.AllocsPerRun(500, func() {
			if err := q.Submit(&tc.cmd, cb); err != nil {
				t.Fatal(err)
			}
			q.Ring()
			if n, err := q.Poll(0); n != 1 || err != nil {
				t.Fatalf("poll %d, %v", n, err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: submit+ring+poll: %v allocations per run", tc.name, allocs)
		}
		allocs = testing.AllocsPerRun(500, func() {
			if _, err := q.Exec(ctx, &tc.cmd); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: Exec: %v allocations per run", tc.name, allocs)
		}
	}
}

// BenchmarkSubmitPoll4KiBReadSGL is BenchmarkSubmitPoll4KiBRead with an
// SGL (one Data Block) instead of PRPs.
func BenchmarkSubmitPoll4KiBReadSGL(b *testing.B) {
	r := newRig(b, sim.Config{SGLS: nvmelike.NVME_CTRL_SGLS_BYTE_ALIGNED, Namespaces: []sim.NamespaceConfig{{Blocks: 4096, LBASize: 4096}}},
		&nvmelike.Options{DataPointer: nvmelike.DataPointerSGL})
	q := r.queue(b, 64)
	buf := r.alloc(b, 4096)
	c := nvmelike.ReadCommand(1, 0, 1, buf)
	cb := nvmelike.Callback(func(*nvmelike.Command, nvmelike.Completion, error) {})
	b.ReportAllocs()
	for b.Loop() {
		if err := q.Submit(&c, cb); err != nil {
			b.Fatal(err)
		}
		q.Ring()
		if _, err := q.Poll(0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSubmitPoll3BufferWriteSGL: one write gathered from three
// buffers (a Last Segment of three Data Blocks) per op.
func BenchmarkSubmitPoll3BufferWriteSGL(b *testing.B) {
	r := sglRig(b, &nvmelike.Options{DataPointer: nvmelike.DataPointerSGL})
	q := r.queue(b, 64)
	bufs := scatter(b, r, 1024, 2048, 1024)
	c := nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: 1, CDW12: 7, Buffers: bufs}
	cb := nvmelike.Callback(func(*nvmelike.Command, nvmelike.Completion, error) {})
	b.ReportAllocs()
	for b.Loop() {
		if err := q.Submit(&c, cb); err != nil {
			b.Fatal(err)
		}
		q.Ring()
		if _, err := q.Poll(0); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSGLDwordAligned: on a controller whose SGL Data Blocks must be
// dword aligned (SGLS 10b), the engine refuses odd buffers itself and
// sends aligned ones.
func TestSGLDwordAligned(t *testing.T) {
	r := newRig(t, sim.Config{SGLS: nvmelike.NVME_CTRL_SGLS_DWORD_ALIGNED, Namespaces: []sim.NamespaceConfig{{Blocks: 64}}},
		&nvmelike.Options{DataPointer: nvmelike.DataPointerSGL})
	q := r.queue(t, 8)
	ctx := testContext(t)
	mem := r.alloc(t, 16384)
	odd := nvmelike.ReadCommand(1, 0, 1, mem.Slice(2, 512))
	if _, err := q.Exec(ctx, &odd); !errors.Is(err, nvmelike.ErrUnalignedBuffer) {
		t.Errorf("an odd buffer: %v, want ErrUnalignedBuffer", err)
	}
	bufs := []nvmelike.Buffer{mem.Slice(4, 100), mem.Slice(8192+8, 924)}
	fill(bufs[0].Bytes, 1)
	fill(bufs[1].Bytes, 2)
	w := nvmelike.Command{Opcode: nvmelike.CmdWrite, NSID: 1, CDW12: 1, Buffers: bufs}
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatalf("dword-aligned buffers: %v", err)
	}
	if !bytes.Equal(r.dev.NamespaceData(1)[:1024], concat(bufs)) {
		t.Error("device data differs")
	}
	bufs[1] = mem.Slice(8192+8, 922)
	w.Buffers = append(bufs, mem.Slice(12288, 2))
	if _, err := q.Exec(ctx, &w); !errors.Is(err, nvmelike.ErrUnalignedBuffer) {
		t.Errorf("a 922-byte buffer: %v, want ErrUnalignedBuffer", err)
	}
}
