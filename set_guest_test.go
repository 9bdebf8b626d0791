//go:build guest

package umd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/pcie"
	"github.com/umdkit/umd/qemu"
	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/vfio"
)

// allVFIO selects every NVMe bound to vfio-pci.
func allVFIO(t *testing.T) *pcie.Selector {
	t.Helper()
	sel, err := pcie.ParseSelector("class=nvme driver=vfio-pci")
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

// vfioFDs counts this process's open descriptors of /dev/vfio/vfio (the
// containers) and of /dev/vfio/N (the groups).
func vfioFDs(t *testing.T) (containers, groups int) {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue
		}
		switch {
		case target == "/dev/vfio/vfio":
			containers++
		case strings.HasPrefix(target, "/dev/vfio/"):
			groups++
		}
	}
	return containers, groups
}

// topologyNodes returns the NUMA nodes the guest's devices are on, as a
// set's pools are keyed: hugepage.AnyNode for a guest without NUMA.
func topologyNodes(t *testing.T) (qemu.Topology, []int) {
	t.Helper()
	topo, err := qemu.LookupTopology(guest.Topology())
	if err != nil {
		t.Fatal(err)
	}
	if topo.NUMANodes < 2 {
		return topo, []int{hugepage.AnyNode}
	}
	var nodes []int
	for _, e := range topo.Expanders {
		if !slices.Contains(nodes, e.NUMANode) {
			nodes = append(nodes, e.NUMANode)
		}
	}
	slices.Sort(nodes)
	return topo, nodes
}

func nodeFreeHugepages(t *testing.T, node int) int {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/sys/devices/system/node/node%d/hugepages/hugepages-2048kB/free_hugepages", node))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	return n
}

// TestGuestSetOfAll opens every vfio-bound NVMe as one set and checks it
// shares one container and Space, has a pool per node on that node, and
// spreads writes and reads over every device.
func TestGuestSetOfAll(t *testing.T) {
	guest.Require(t)
	_, nodes := topologyNodes(t)
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	free := freeHugepages(t)
	containers0, groups0 := vfioFDs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const poolSize = 8 << 20
	set, err := umd.OpenSet(ctx, allVFIO(t), &umd.SetOptions{PoolSize: poolSize})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			set.Close()
		}
	}()

	devs := set.Devices()
	var got []string
	groupSet := map[string]bool{}
	for _, d := range devs {
		got = append(got, d.BDF())
		groupSet[guest.IOMMUGroup(t, d.BDF())] = true
		if d.Space() != set.Space() {
			t.Errorf("%s has a DMA address space of its own", d.BDF())
		}
	}
	if !slices.Equal(got, bdfs) {
		t.Fatalf("the set has %v, vfio-pci has %v", got, bdfs)
	}
	containers, groups := vfioFDs(t)
	if containers-containers0 != 1 || groups-groups0 != len(groupSet) {
		t.Errorf("the set of %d devices holds %d container and %d group descriptors, want 1 and %d", len(devs), containers-containers0, groups-groups0, len(groupSet))
	}
	if n := set.Space().Stats().Mappings; n != len(nodes) {
		t.Errorf("the Space holds %d mappings, want one per pool (%d)", n, len(nodes))
	}

	pools := set.Pools()
	if len(pools) != len(nodes) {
		t.Fatalf("%d pools for nodes %v", len(pools), nodes)
	}
	for i, p := range pools {
		info := p.Info()
		if nodes[i] == hugepage.AnyNode {
			continue // the kernel places them; a one-node guest has node 0 only
		}
		if info.NUMANode != nodes[i] || info.NodePages[nodes[i]] != poolSize/info.PageSize {
			t.Errorf("pool %d: wanted on node %d, pages per node %v", i, nodes[i], info.NodePages)
		}
	}
	for _, d := range devs {
		if d.NUMANode() != hugepage.AnyNode && d.PoolInfo().NUMANode != d.NUMANode() {
			t.Errorf("%s on node %d allocates from a pool on node %d", d.BDF(), d.NUMANode(), d.PoolInfo().NUMANode)
		}
	}

	st, err := set.Striped(ctx, umd.StripeOptions{StripeSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if st.Devices() != len(devs) {
		t.Errorf("the stripes spread over %d of %d devices", st.Devices(), len(devs))
	}
	// Three rounds over every device and a bit, starting mid-stripe;
	// written from a buffer of the first node's pool and read into one of
	// the last node's: any pool serves any device.
	const lba = 7
	blocks := int(st.StripeBlocks())*(3*st.Devices()) + 9
	n := blocks * st.BlockSize()
	src, err := set.AllocOn(nodes[0], n)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Free(src)
	dst, err := set.AllocOn(nodes[len(nodes)-1], n)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Free(dst)
	for i := range src.Bytes {
		src.Bytes[i] = byte(i*13 + i>>12 + 1)
	}
	start := time.Now()
	if err := st.Write(ctx, lba, src); err != nil {
		t.Fatal(err)
	}
	wrote := time.Since(start)
	if err := st.Read(ctx, lba, dst); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d KiB over %d devices in stripes of %d KiB: written in %v, read in %v (one call each)",
		n>>10, st.Devices(), int(st.StripeBlocks())*st.BlockSize()>>10, wrote, time.Since(start)-wrote)
	if !bytes.Equal(src.Bytes, dst.Bytes) {
		t.Error("data read back across the set differs from what was written")
	}
	// Each device holds its stripes where Locate says: read one block of
	// every stripe of the first round through the device's own queue.
	blk := st.BlockSize()
	one, err := set.Alloc(blk)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Free(one)
	for s := range st.Devices() {
		logical := uint64(s) * st.StripeBlocks() // the first block of stripe s, or lba for s=0
		if logical < lba {
			logical = lba
		}
		i, dlba := st.Locate(logical)
		d, nsid := st.Member(i)
		q, err := d.CreateQueuePair(ctx, umd.QueueOptions{Depth: 8})
		if err != nil {
			t.Fatal(err)
		}
		cmd := nvmelike.ReadCommand(nsid, dlba, 1, one)
		_, err = q.Exec(ctx, &cmd)
		q.Close()
		if err != nil {
			t.Fatal(err)
		}
		off := int(logical-lba) * blk
		if !bytes.Equal(one.Bytes, src.Bytes[off:off+blk]) {
			t.Errorf("logical block %d is not at block %d of namespace %d of %s", logical, dlba, nsid, d.BDF())
		}
	}
	if err := st.Close(); err != nil {
		t.Error(err)
	}

	closed = true
	if err := set.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := set.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if c, g := vfioFDs(t); c != containers0 || g != groups0 {
		t.Errorf("after Close: %d container and %d group descriptors, %d and %d before", c, g, containers0, groups0)
	}
	if got := freeHugepages(t); got != free {
		t.Errorf("free hugepages %d before, %d after Close", free, got)
	}
}

// TestGuestSetMixedBlockSizes: namespace 1 has 4 KiB blocks on some of
// the cards topology's devices and 512-byte ones on others.
func TestGuestSetMixedBlockSizes(t *testing.T) {
	guest.Require(t)
	topo, _ := topologyNodes(t)
	mixed := false
	for _, c := range topo.Controllers() {
		mixed = mixed || c.BlockSize(0) != topo.Controllers()[0].BlockSize(0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	set, err := umd.OpenSet(ctx, allVFIO(t), &umd.SetOptions{PoolSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	st, err := set.Striped(ctx, umd.StripeOptions{NSID: 1, Depth: 16})
	if mixed {
		if !errors.Is(err, umd.ErrMixedBlockSizes) {
			t.Errorf("namespaces 1 of mixed block sizes: %v", err)
		}
	} else if err != nil {
		t.Errorf("namespaces 1 of one block size: %v", err)
	}
	if st != nil {
		st.Close()
	}
	// Picking each device's first 512-byte namespace works on any
	// topology.
	st, err = set.Striped(ctx, umd.StripeOptions{Depth: 16})
	if err != nil {
		t.Fatal(err)
	}
	if st.BlockSize() != 512 || st.Devices() != len(set.Devices()) {
		t.Errorf("%d-byte blocks over %d devices", st.BlockSize(), st.Devices())
	}
	if err := st.Close(); err != nil {
		t.Error(err)
	}
}

// nodeCPUs reads the CPUs of a NUMA node.
func nodeCPUs(t *testing.T, node int) unix.CPUSet {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/sys/devices/system/node/node%d/cpulist", node))
	if err != nil {
		t.Fatal(err)
	}
	var set unix.CPUSet
	for _, part := range strings.Split(strings.TrimSpace(string(raw)), ",") {
		lo, hi, found := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			t.Fatalf("cpulist %q", raw)
		}
		b := a
		if found {
			if b, err = strconv.Atoi(hi); err != nil {
				t.Fatalf("cpulist %q", raw)
			}
		}
		for c := a; c <= b; c++ {
			set.Set(c)
		}
	}
	return set
}

// onNode runs fn on a thread pinned to node's CPUs.
func onNode(t *testing.T, node int, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	cpus := nodeCPUs(t, node)
	if err := unix.SchedSetaffinity(0, &cpus); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &old)
	fn()
}

// TestGuestSetPlacement creates queue pairs from threads pinned to each
// node: they land on devices of that node, spread over them, and work.
func TestGuestSetPlacement(t *testing.T) {
	guest.Require(t)
	topo, _ := topologyNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	set, err := umd.OpenSet(ctx, allVFIO(t), &umd.SetOptions{PoolSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()

	perNode := map[int]int{}
	for _, d := range set.Devices() {
		perNode[max(d.NUMANode(), 0)]++
	}
	for node := range max(topo.NUMANodes, 1) {
		t.Run(fmt.Sprintf("node%d", node), func(t *testing.T) {
			onNode(t, node, func() {
				if got, err := umd.CurrentNUMANode(); err != nil || got != node {
					t.Fatalf("pinned to node %d, CurrentNUMANode says %d, %v", node, got, err)
				}
				// One queue pair per device of the node: each on another
				// device of the node.
				used := map[string]bool{}
				var qs []*umd.QueuePair
				defer func() {
					for _, q := range qs {
						q.Close()
					}
				}()
				for range perNode[node] {
					q, err := set.CreateQueuePair(ctx, umd.QueueOptions{Depth: 16})
					if err != nil {
						t.Fatal(err)
					}
					qs = append(qs, q)
					d := q.Device()
					if max(d.NUMANode(), 0) != node {
						t.Errorf("a thread on node %d got a queue pair on %s, on node %d", node, d.BDF(), d.NUMANode())
					}
					if used[d.BDF()] {
						t.Errorf("a second queue pair on %s while other devices of node %d have none", d.BDF(), node)
					}
					used[d.BDF()] = true
					buf, err := set.Alloc(4096)
					if err != nil {
						t.Fatal(err)
					}
					if _, ok := d.PoolOffset(buf); !ok {
						t.Errorf("a buffer allocated on node %d is not from the pool of %s, on that node", node, d.BDF())
					}
					cmd := nvmelike.ReadCommand(d.Controller().Namespaces()[0], 0, uint32(4096/blockSize(t, ctx, d)), buf)
					if _, err := q.Exec(ctx, &cmd); err != nil {
						t.Errorf("reading through the queue pair on %s: %v", d.BDF(), err)
					}
					set.Free(buf)
				}
			})
		})
	}
}

func blockSize(t *testing.T, ctx context.Context, d *umd.Device) int {
	t.Helper()
	ns, err := d.Controller().IdentifyNamespace(ctx, d.Controller().Namespaces()[0])
	if err != nil {
		t.Fatal(err)
	}
	return ns.LBASize
}

// TestGuestSetPartialFailure holds the third device's group open (as
// another user of it would), then fails the third device's bring-up after
// the first two are up, and checks each time that OpenSet fails naming it
// and leaves nothing behind; then the same set opens.
func TestGuestSetPartialFailure(t *testing.T) {
	guest.Require(t)
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	if len(bdfs) < 3 {
		t.Skipf("the topology has %d vfio-pci devices; this test needs 3 (cards and numa have them)", len(bdfs))
	}
	victim := bdfs[2]
	n, err := vfio.GroupOf(victim)
	if err != nil {
		t.Fatal(err)
	}
	held, err := vfio.OpenGroup(n)
	if err != nil {
		t.Fatal(err)
	}
	free := freeHugepages(t)
	containers0, groups0 := vfioFDs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	set, err := umd.OpenSet(ctx, allVFIO(t), &umd.SetOptions{PoolSize: 4 << 20})
	var oe *umd.OpenError
	if err == nil {
		set.Close()
		t.Fatal("OpenSet succeeded with a group held elsewhere")
	}
	t.Logf("with %s's group held: %v", victim, err)
	if !errors.As(err, &oe) || oe.BDF != victim || !errors.Is(err, unix.EBUSY) {
		t.Errorf("OpenSet with %s's group held: %v", victim, err)
	}
	if c, g := vfioFDs(t); c != containers0 || g != groups0 {
		t.Errorf("after the failed OpenSet: %d container and %d group descriptors, %d and %d before", c, g, containers0, groups0)
	}
	if got := freeHugepages(t); got != free {
		t.Errorf("free hugepages %d before, %d after the failed OpenSet", free, got)
	}
	// A single Open of the held device fails the same way.
	if d, err := umd.Open(ctx, victim, &umd.Options{PoolSize: 4 << 20}); err == nil {
		d.Close()
		t.Error("Open succeeded with the group held elsewhere")
	} else if !errors.As(err, &oe) || oe.BDF != victim {
		t.Errorf("Open with the group held: %v", err)
	}

	if err := held.Close(); err != nil {
		t.Fatal(err)
	}
	containers0, groups0 = vfioFDs(t)

	// Now fail the third device's bring-up after the first two are up:
	// their controllers enabled, bus mastering on, queues in the pool.
	injected := errors.New("injected failure")
	up := 0
	restore := umd.SetOpenDeviceHook(func(bdf string) error {
		if bdf == victim {
			return injected
		}
		up++
		return nil
	})
	set, err = umd.OpenSet(ctx, allVFIO(t), &umd.SetOptions{PoolSize: 4 << 20})
	restore()
	if err == nil {
		set.Close()
		t.Fatal("OpenSet succeeded with a bring-up failing")
	}
	if !errors.As(err, &oe) || oe.BDF != victim || !errors.Is(err, injected) || up != 2 {
		t.Errorf("OpenSet with %s's bring-up failing after %d devices: %v", victim, up, err)
	}
	if c, g := vfioFDs(t); c != containers0 || g != groups0 {
		t.Errorf("after the failed bring-up: %d container and %d group descriptors, %d and %d before", c, g, containers0, groups0)
	}
	if got := freeHugepages(t); got != free {
		t.Errorf("free hugepages %d before, %d after the failed bring-up", free, got)
	}

	// Everything came back: the same set opens whole.
	set, err = umd.OpenSet(ctx, allVFIO(t), &umd.SetOptions{PoolSize: 4 << 20})
	if err != nil {
		t.Fatalf("OpenSet after the group was released: %v", err)
	}
	if len(set.Devices()) != len(bdfs) {
		t.Errorf("the set has %d devices, want %d", len(set.Devices()), len(bdfs))
	}
	if err := set.Close(); err != nil {
		t.Error(err)
	}
}

// TestGuestSetMixedPageSizes leaves no hugepages for the second node's
// pool: with AllowSmallPages it falls back to 4 KiB pages while the
// first node's has 2 MiB ones, which OpenSet refuses.
func TestGuestSetMixedPageSizes(t *testing.T) {
	guest.Require(t)
	_, nodes := topologyNodes(t)
	if len(nodes) < 2 {
		t.Skip("needs devices on two NUMA nodes (topology numa)")
	}
	const poolSize = 4 << 20
	// Keep the first node's pool's pages, take every other free hugepage.
	var holds []*hugepage.Pool
	defer func() {
		for _, h := range holds {
			h.Close()
		}
	}()
	for _, node := range nodes {
		n := nodeFreeHugepages(t, node)
		if node == nodes[0] {
			n -= poolSize / hugepage.Page2M
		}
		if n <= 0 {
			continue
		}
		h, err := hugepage.New(hugepage.Options{Size: n * hugepage.Page2M, NUMANode: node})
		if err != nil {
			t.Fatal(err)
		}
		holds = append(holds, h)
	}
	free := freeHugepages(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	set, err := umd.OpenSet(ctx, allVFIO(t), &umd.SetOptions{PoolSize: poolSize, AllowSmallPages: true})
	if err == nil {
		set.Close()
		t.Fatal("OpenSet succeeded with pools of 2 MiB and 4 KiB pages")
	}
	t.Logf("pools of mixed page sizes: %v", err)
	if !errors.Is(err, umd.ErrMixedPageSizes) {
		t.Errorf("pools of mixed page sizes: %v", err)
	}
	if got := freeHugepages(t); got != free {
		t.Errorf("free hugepages %d before, %d after the failed OpenSet", free, got)
	}
}
