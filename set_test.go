package umd

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
	"github.com/umdkit/umd/pcie"
	"github.com/umdkit/umd/pcie/pcietest"
)

// simSet is a set of software controllers that reach one memory, as the
// devices of a Set reach one IOMMU domain.
type simSet struct {
	mem   *sim.Memory
	devs  []*sim.Controller
	srcs  []stripeSource
	ctrls []*nvmelike.Controller
}

func newSimSet(t testing.TB, depth int, namespaces ...[]sim.NamespaceConfig) *simSet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	s := &simSet{mem: sim.NewMemory()}
	for i, ns := range namespaces {
		dev := sim.New(s.mem, sim.Config{Namespaces: ns, MDTS: 5}) // 128 KiB transfers at most
		ctrl, err := nvmelike.Open(ctx, dev, s.mem, &nvmelike.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ctrl.Close() })
		q, err := ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: depth})
		if err != nil {
			t.Fatal(err)
		}
		s.devs = append(s.devs, dev)
		s.ctrls = append(s.ctrls, ctrl)
		s.srcs = append(s.srcs, stripeSource{name: "sim" + strconv.Itoa(i), ctrl: ctrl, q: q})
	}
	return s
}

func (s *simSet) alloc(t testing.TB, n int) nvmelike.Buffer {
	t.Helper()
	b, err := s.mem.Alloc(n, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func same(n int, ns sim.NamespaceConfig) [][]sim.NamespaceConfig {
	out := make([][]sim.NamespaceConfig, n)
	for i := range out {
		out[i] = []sim.NamespaceConfig{ns}
	}
	return out
}

// TestStripedSpreadsAndVerifies writes a range that starts and ends
// mid-stripe over four devices, checks every block landed on the device
// and at the block Locate names, and reads it back in one call.
func TestStripedSpreadsAndVerifies(t *testing.T) {
	s := newSimSet(t, 32, same(4, sim.NamespaceConfig{Blocks: 1000})...)
	st, err := newStriped(t.Context(), s.srcs, StripeOptions{StripeSize: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	// 1000 blocks per device, in whole 16-block stripes: 992 each.
	if st.BlockSize() != 512 || st.StripeBlocks() != 16 || st.Blocks() != 4*992 || st.Devices() != 4 {
		t.Fatalf("layout: %d-byte blocks, stripes of %d, %d blocks over %d devices", st.BlockSize(), st.StripeBlocks(), st.Blocks(), st.Devices())
	}
	const lba, blocks = 5, 200 // 13 stripes' worth, starting 5 blocks into one
	src := s.alloc(t, blocks*512+512)
	data := src.Slice(512, blocks*512) // not page-aligned: PRP1 has an offset
	for i := range data.Bytes {
		data.Bytes[i] = byte(i*31 + i>>9)
	}
	doorbells := make([]uint64, 4)
	for i, src := range s.srcs {
		doorbells[i] = src.q.Stats().SQDoorbells
	}
	if err := st.Write(t.Context(), lba, data); err != nil {
		t.Fatal(err)
	}
	for i, src := range s.srcs {
		if got := src.q.Stats().SQDoorbells - doorbells[i]; got != 1 {
			t.Errorf("device %d: %d SQ doorbell writes for one call, want 1", i, got)
		}
		if s.devs[i].Stats().HostWrites == 0 {
			t.Errorf("device %d got no write", i)
		}
	}
	for b := range uint64(blocks) {
		dev, dlba := st.Locate(lba + b)
		want := data.Bytes[b*512 : (b+1)*512]
		if got := s.devs[dev].NamespaceData(1)[dlba*512 : (dlba+1)*512]; !bytes.Equal(got, want) {
			t.Fatalf("logical block %d is not at block %d of device %d", lba+b, dlba, dev)
		}
	}
	// Block 5 is in stripe 0 (device 0); block 16 starts stripe 1 (device
	// 1); block 69 is in stripe 4, the second round, on device 0 at 16+5.
	for lba, want := range map[uint64][2]uint64{5: {0, 5}, 16: {1, 0}, 69: {0, 21}, 63: {3, 15}} {
		if dev, dlba := st.Locate(lba); uint64(dev) != want[0] || dlba != want[1] {
			t.Errorf("Locate(%d) = device %d block %d, want %v", lba, dev, dlba, want)
		}
	}
	dst := s.alloc(t, blocks*512)
	if err := st.Read(t.Context(), lba, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Bytes, data.Bytes) {
		t.Error("reading back across the devices gives other data")
	}
}

// TestStripedQueueFull moves more pieces to each device than its queue
// holds: the call rings, polls and goes on.
func TestStripedQueueFull(t *testing.T) {
	s := newSimSet(t, 4, same(2, sim.NamespaceConfig{Blocks: 4096})...)
	st, err := newStriped(t.Context(), s.srcs, StripeOptions{StripeSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	buf := s.alloc(t, 64*512) // 64 one-block pieces, 32 per device, queues of 3 slots
	for i := range buf.Bytes {
		buf.Bytes[i] = byte(i / 512)
	}
	if err := st.Write(t.Context(), 100, buf); err != nil {
		t.Fatal(err)
	}
	back := s.alloc(t, 64*512)
	if err := st.Read(t.Context(), 100, back); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Bytes, buf.Bytes) {
		t.Error("data read back differs")
	}
	if st.pending != 0 {
		t.Errorf("%d pieces still counted as pending", st.pending)
	}
}

func TestStripedErrors(t *testing.T) {
	t.Run("mixed block sizes", func(t *testing.T) {
		s := newSimSet(t, 8,
			[]sim.NamespaceConfig{{Blocks: 512, LBASize: 4096}, {Blocks: 4096}},
			[]sim.NamespaceConfig{{Blocks: 4096}})
		_, err := newStriped(t.Context(), s.srcs, StripeOptions{NSID: 1})
		if !errors.Is(err, ErrMixedBlockSizes) || !strings.Contains(err.Error(), "sim1") {
			t.Errorf("namespace 1 of 4 KiB and 512 B blocks: %v", err)
		}
		// By block size instead: namespace 2 of the first, 1 of the second.
		st, err := newStriped(t.Context(), s.srcs, StripeOptions{StripeSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		if st.members[0].nsid != 2 || st.members[1].nsid != 1 {
			t.Errorf("picked namespaces %d and %d, want 2 and 1", st.members[0].nsid, st.members[1].nsid)
		}
		_, err = newStriped(t.Context(), s.srcs, StripeOptions{BlockSize: 4096})
		if !errors.Is(err, ErrMixedBlockSizes) || !strings.Contains(err.Error(), "sim1") {
			t.Errorf("no 4 KiB namespace on sim1: %v", err)
		}
	})
	t.Run("stripe size", func(t *testing.T) {
		s := newSimSet(t, 8, same(2, sim.NamespaceConfig{Blocks: 64})...)
		for _, size := range []int{1000, 512 * 65537} {
			if _, err := newStriped(t.Context(), s.srcs, StripeOptions{StripeSize: size}); err == nil {
				t.Errorf("stripe size %d accepted", size)
			}
		}
		if _, err := newStriped(t.Context(), s.srcs, StripeOptions{StripeSize: 128 << 10}); err == nil {
			t.Error("a stripe larger than the namespaces accepted")
		}
	})
	t.Run("range", func(t *testing.T) {
		s := newSimSet(t, 8, same(2, sim.NamespaceConfig{Blocks: 64})...)
		st, err := newStriped(t.Context(), s.srcs, StripeOptions{StripeSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		buf := s.alloc(t, 8192)
		for _, tc := range []struct {
			lba uint64
			n   int
		}{{0, 0}, {0, 100}, {120, 8192}, {128, 512}, {1 << 62, 512}} {
			if err := st.Write(t.Context(), tc.lba, buf.Slice(0, tc.n)); !errors.Is(err, ErrStripeRange) {
				t.Errorf("%d bytes at block %d of 128: %v", tc.n, tc.lba, err)
			}
		}
		if err := st.Write(t.Context(), 112, buf.Slice(0, 8192)); err != nil {
			t.Errorf("the last 16 blocks: %v", err)
		}
	})
	t.Run("device error", func(t *testing.T) {
		s := newSimSet(t, 8, same(2, sim.NamespaceConfig{Blocks: 64})...)
		st, err := newStriped(t.Context(), s.srcs, StripeOptions{StripeSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		s.devs[1].SetFatal()
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		if err := st.Write(ctx, 0, s.alloc(t, 16384)); err == nil {
			t.Error("a write to a failed device succeeded")
		}
	})
}

// TestStripedAllocatesNothing is the hot-path promise: a Write and a Read
// spread over four devices allocate nothing.
func TestStripedAllocatesNothing(t *testing.T) {
	s := newSimSet(t, 64, same(4, sim.NamespaceConfig{Blocks: 4096})...)
	st, err := newStriped(t.Context(), s.srcs, StripeOptions{StripeSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	buf := s.alloc(t, 64<<10) // 16 pieces, 4 per device
	ctx := context.Background()
	allocs := testing.AllocsPerRun(200, func() {
		if err := st.Write(ctx, 8, buf); err != nil {
			t.Fatal(err)
		}
		if err := st.Read(ctx, 8, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per striped write+read, want 0", allocs)
	}
}

// BenchmarkStripedWrite measures the host's cost of one 64 KiB write
// spread over four instant software controllers (16 pieces).
func BenchmarkStripedWrite(b *testing.B) {
	s := newSimSet(b, 64, same(4, sim.NamespaceConfig{Blocks: 4096})...)
	st, err := newStriped(b.Context(), s.srcs, StripeOptions{StripeSize: 4096})
	if err != nil {
		b.Fatal(err)
	}
	buf := s.alloc(b, 64<<10)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := st.Write(ctx, 0, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSelectMembers narrows selections of the sample tree (see
// pcietest.Sample) to devices a set can open.
func TestSelectMembers(t *testing.T) {
	tr := pcietest.Sample(t)
	sys, err := pcie.Scan(pcie.Options{SysfsRoot: tr.Root, IDs: &pcie.IDs{}})
	if err != nil {
		t.Fatal(err)
	}
	pick := func(args ...string) ([]member, error) {
		t.Helper()
		sel, err := pcie.ParseSelector(args...)
		if err != nil {
			t.Fatal(err)
		}
		return selectMembers(sys, sel, 0)
	}
	bdfs := func(ms []member) string {
		var s []string
		for _, m := range ms {
			s = append(s, m.bdf+"@"+strconv.Itoa(m.node))
		}
		return strings.Join(s, " ")
	}
	// Every NVMe bound to vfio-pci: 07:00.0 (nvme) is not picked.
	ms, err := pick("class=nvme", "driver=vfio-pci")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bdfs(ms), "0000:03:00.0@-1 0000:04:00.0@-1 0000:08:00.0@-1 0000:09:00.0@-1 0000:81:00.0@1"; got != want {
		t.Errorf("class=nvme driver=vfio-pci: %s, want %s", got, want)
	}
	// A card: its switch ports are left out.
	if ms, err = pick("card=01:00.0"); err != nil || bdfs(ms) != "0000:03:00.0@-1 0000:04:00.0@-1" {
		t.Errorf("card=01:00.0: %s, %v", bdfs(ms), err)
	}
	// A NUMA node: its root port is left out.
	if ms, err = pick("numa=1"); err != nil || bdfs(ms) != "0000:81:00.0@1" {
		t.Errorf("numa=1: %s, %v", bdfs(ms), err)
	}
	// A card with a device bound to nvme.
	_, err = pick("card=05:00.0")
	var oe *OpenError
	if !errors.Is(err, ErrNotVFIO) || !errors.As(err, &oe) || oe.BDF != "0000:07:00.0" || !strings.Contains(err.Error(), "bound to nvme") {
		t.Errorf("card=05:00.0 with 07:00.0 on nvme: %v", err)
	}
	// Nothing NVMe.
	if _, err = pick("class=ethernet"); !errors.Is(err, ErrNoDevices) {
		t.Errorf("class=ethernet: %v", err)
	}
	if _, err = pick("vendor=abcd"); !errors.Is(err, ErrNoDevices) || !strings.Contains(err.Error(), "vendor=abcd") {
		t.Errorf("vendor=abcd: %v", err)
	}
	// Another class asked for: the X710's VF bound to vfio-pci.
	sel, _ := pcie.ParseSelector("driver=vfio-pci")
	if ms, err = selectMembers(sys, sel, pcie.ClassEthernet); err != nil || bdfs(ms) != "0000:0a:02.1@-1" {
		t.Errorf("ethernet functions on vfio-pci: %s, %v", bdfs(ms), err)
	}
}

// TestDeviceNear checks placement: same node first, then the nearest
// node by distance, then the fewest queue pairs.
func TestDeviceNear(t *testing.T) {
	s := &Set{distance: map[[2]int]int{{0, 1}: 20, {0, 2}: 30, {2, 1}: 15, {2, 0}: 30}}
	for i, node := range []int{0, 0, 1, hugepage.AnyNode} {
		s.devices = append(s.devices, &Device{bdf: "dev" + strconv.Itoa(i), node: node, set: s})
	}
	near := func(node int) string { return s.DeviceNear(node).bdf }
	if got := near(0); got != "dev0" {
		t.Errorf("node 0: %s", got)
	}
	s.devices[0].queues = 1
	if got := near(0); got != "dev1" {
		t.Errorf("node 0 with dev0 busier: %s", got)
	}
	if got := near(1); got != "dev2" {
		t.Errorf("node 1: %s", got)
	}
	if got := near(2); got != "dev2" { // node 1 is at 15, node 0 at 30
		t.Errorf("node 2: %s", got)
	}
	s.devices[2].closed = true
	if got := near(1); got != "dev1" { // node 0 is 20 away (the table has it one way round), then fewest queue pairs
		t.Errorf("node 1 with its device closed: %s", got)
	}
	if got := near(hugepage.AnyNode); got != "dev3" {
		t.Errorf("unknown node: %s", got)
	}
	for _, d := range s.devices {
		d.closed = true
	}
	if s.DeviceNear(0) != nil {
		t.Error("a closed set placed a queue pair")
	}
}

func TestNodeDistances(t *testing.T) {
	root := t.TempDir()
	for node, line := range []string{"10 21\n", "21 10\n"} {
		dir := filepath.Join(root, "devices", "system", "node", "node"+strconv.Itoa(node))
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "distance"), []byte(line), 0o644)
	}
	d := nodeDistances(root, []int{hugepage.AnyNode, 0, 1, 2})
	if d[[2]int{0, 1}] != 21 || d[[2]int{1, 0}] != 21 || d[[2]int{1, 1}] != 10 || len(d) != 4 {
		t.Errorf("distances %v", d)
	}
}

// TestCurrentNUMANode checks getcpu against sysfs: the node it names
// holds the CPU it names.
func TestCurrentNUMANode(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu, node, err := getcpu()
	if err != nil {
		t.Fatal(err)
	}
	n, err := CurrentNUMANode()
	if err != nil || n < 0 {
		t.Fatalf("CurrentNUMANode: %d, %v", n, err)
	}
	if _, err := os.Stat("/sys/devices/system/node"); err != nil {
		return // no NUMA in this kernel: getcpu says node 0
	}
	if _, err := os.Stat(filepath.Join("/sys/devices/system/node", "node"+strconv.Itoa(node), "cpu"+strconv.Itoa(cpu))); err != nil {
		t.Errorf("getcpu says CPU %d on node %d, sysfs does not: %v", cpu, node, err)
	}
}
