package compute_test

import (
	"context"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/compute"
	"github.com/umdkit/umd/nvmelike/sim"
)

type rig struct {
	dev  *sim.Controller
	mem  *sim.Memory
	ctrl *nvmelike.Controller
	q    *nvmelike.QueuePair
}

// newRig opens a software controller with 4096 512-byte blocks that
// offers SGLs; install says whether it learns the compute commands.
func newRig(t testing.TB, install bool) (*rig, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	mem := sim.NewMemory()
	dev := sim.New(mem, sim.Config{SGLS: nvmelike.NVME_CTRL_SGLS_BYTE_ALIGNED, Namespaces: []sim.NamespaceConfig{{Blocks: 4096}}})
	if install {
		if err := compute.Install(dev); err != nil {
			t.Fatal(err)
		}
	}
	reg := nvmelike.NewRegistry()
	if err := compute.Register(reg); err != nil {
		t.Fatal(err)
	}
	ctrl, err := nvmelike.Open(ctx, dev, mem, &nvmelike.Options{Registry: reg, DataPointer: nvmelike.DataPointerAuto})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctrl.Close() })
	q, err := ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: 16})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{dev: dev, mem: mem, ctrl: ctrl, q: q}, ctx
}

func (r *rig) alloc(t testing.TB, n int) nvmelike.Buffer {
	t.Helper()
	b, err := r.mem.Alloc(n, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRegistered(t *testing.T) {
	r, _ := newRig(t, true)
	for _, tc := range []struct {
		op   uint8
		name string
		dir  nvmelike.Direction
	}{
		{compute.OpcodeChecksum, "compute checksum", nvmelike.DirNone},
		{compute.OpcodeSearch, "compute search", nvmelike.DirToDevice},
	} {
		if info := r.ctrl.Registry().IO(tc.op); info.Name != tc.name || info.Dir != tc.dir {
			t.Errorf("opcode 0x%02x: %+v", tc.op, info)
		}
	}
	// An Op cannot take a standard opcode.
	bad := &nvmelike.Op[int, int]{Name: "bad", Opcode: 0x02, Encode: func(int) nvmelike.Command { return nvmelike.Command{} }}
	if err := bad.Register(nvmelike.NewRegistry()); err == nil {
		t.Error("an Op registered over the read opcode")
	}
}

func TestChecksum(t *testing.T) {
	r, ctx := newRig(t, true)
	data := r.alloc(t, 64*512)
	for i := range data.Bytes {
		data.Bytes[i] = byte(i * 31)
	}
	w := nvmelike.WriteCommand(1, 100, 64, data)
	if _, err := r.q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}
	table := crc32.MakeTable(crc32.Castagnoli)
	for _, blocks := range []uint32{1, 7, 64} {
		sum, err := compute.Checksum.Exec(ctx, r.q, compute.ChecksumRequest{NSID: 1, LBA: 100, Blocks: blocks})
		if err != nil {
			t.Fatal(err)
		}
		if want := crc32.Checksum(data.Bytes[:blocks*512], table); sum != want {
			t.Errorf("%d blocks: 0x%08x, want 0x%08x", blocks, sum, want)
		}
	}
	// A device error comes back typed and named.
	_, err := compute.Checksum.Exec(ctx, r.q, compute.ChecksumRequest{NSID: 1, LBA: 4095, Blocks: 2})
	var oe *nvmelike.OpError
	if !errors.Is(err, nvmelike.ErrLBAOutOfRange) || !errors.As(err, &oe) || oe.Name != "compute checksum" {
		t.Errorf("past the namespace's end: %v", err)
	}
	// Asynchronously, decoding in the callback.
	var got uint32
	cmd := compute.Checksum.Command(compute.ChecksumRequest{NSID: 1, LBA: 100, Blocks: 64})
	err = r.q.Submit(&cmd, func(cmd *nvmelike.Command, c nvmelike.Completion, err error) {
		got, err = compute.Checksum.Result(cmd, c, err)
		if err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	r.q.Ring()
	if _, err := r.q.Poll(0); err != nil {
		t.Fatal(err)
	}
	if want := crc32.Checksum(data.Bytes, table); got != want {
		t.Errorf("async: 0x%08x, want 0x%08x", got, want)
	}
}

func TestSearch(t *testing.T) {
	r, ctx := newRig(t, true)
	data := r.alloc(t, 32*512)
	copy(data.Bytes[20*512+100:], "needle in block 20")
	copy(data.Bytes[25*512+500:], "needle in block 25") // crosses into 26: not within a block
	w := nvmelike.WriteCommand(1, 0, 32, data)
	if _, err := r.q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}
	pat := r.alloc(t, 4096)
	for _, tc := range []struct {
		lba     uint64
		blocks  uint32
		pattern string
		off     int
		want    compute.SearchResult
	}{
		{0, 32, "needle in block", 0, compute.SearchResult{Found: true, LBA: 20}},
		{21, 11, "needle in block", 0, compute.SearchResult{}},
		{10, 22, "in block 20", 3, compute.SearchResult{Found: true, LBA: 20}}, // an odd-offset pattern: an SGL
		{0, 32, "haystack", 1, compute.SearchResult{}},
	} {
		p := pat.Slice(tc.off, len(tc.pattern))
		copy(p.Bytes, tc.pattern)
		got, err := compute.Search.Exec(ctx, r.q, compute.SearchRequest{NSID: 1, LBA: tc.lba, Blocks: tc.blocks, Pattern: p})
		if err != nil {
			t.Fatalf("%q from %d: %v", tc.pattern, tc.lba, err)
		}
		if got != tc.want {
			t.Errorf("%q from %d: %+v, want %+v", tc.pattern, tc.lba, got, tc.want)
		}
	}
}

// TestUnknownToDevice: a controller that does not implement the opcodes
// answers Invalid Opcode; the error names the command.
func TestUnknownToDevice(t *testing.T) {
	r, ctx := newRig(t, false)
	_, err := compute.Checksum.Exec(ctx, r.q, compute.ChecksumRequest{NSID: 1, LBA: 0, Blocks: 1})
	var oe *nvmelike.OpError
	var se *nvmelike.StatusError
	if !errors.Is(err, nvmelike.ErrInvalidOpcode) || !errors.As(err, &oe) || !errors.As(err, &se) {
		t.Fatalf("%v, want an OpError wrapping invalid opcode", err)
	}
	if oe.Opcode != compute.OpcodeChecksum || se.Opcode != compute.OpcodeChecksum || !strings.Contains(err.Error(), "compute checksum (I/O opcode 0x90)") {
		t.Errorf("%v: does not name the command", err)
	}
}

func TestNoAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counting is skipped in -short mode")
	}
	r, ctx := newRig(t, true)
	pat := r.alloc(t, 64)
	copy(pat.Bytes, "pattern")
	req := compute.ChecksumRequest{NSID: 1, LBA: 0, Blocks: 8}
	sreq := compute.SearchRequest{NSID: 1, LBA: 0, Blocks: 8, Pattern: pat.Slice(1, 6)}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := compute.Checksum.Exec(ctx, r.q, req); err != nil {
			t.Fatal(err)
		}
		if _, err := compute.Search.Exec(ctx, r.q, sreq); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Checksum+Search", allocs)
	}
}
