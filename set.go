package umd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/umdkit/umd/hugepage"
	"github.com/umdkit/umd/internal/mmio"
	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/pcie"
	"github.com/umdkit/umd/vfio"
)

// Errors OpenSet and Set methods wrap; test them with errors.Is.
var (
	// ErrNoDevices: the selection picks no function of the set's class.
	ErrNoDevices = errors.New("the selection picks no device")
	// ErrNotVFIO: a selected device is not bound to vfio-pci.
	ErrNotVFIO = errors.New("not bound to vfio-pci")
	// ErrMixedPageSizes: the set's pools ended up with different page
	// sizes (one fell back to smaller pages, see
	// SetOptions.AllowSmallPages).
	ErrMixedPageSizes = errors.New("the set's DMA pools have different page sizes")
)

// An OpenError says which device of a set could not be opened, and why
// (errors.Is reaches the cause: ErrNotVFIO, vfio.ErrNotViable, an EBUSY of
// a group held elsewhere, ...). Nothing of the set stays open after it.
type OpenError struct {
	BDF string
	Err error
}

func (e *OpenError) Error() string { return "opening " + e.BDF + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *OpenError) Unwrap() error { return e.Err }

// SetOptions configure OpenSet. The zero value (or nil) is usable.
type SetOptions struct {
	// PoolSize is the size of each node's DMA pool in bytes, rounded up
	// to whole pages; 0 means 16 MiB per device on the node, at least 64
	// MiB. The set has one pool per NUMA node its devices are attached
	// to (one in all when the platform does not say). The devices' queues
	// come from it too: a queue pair of depth 256 takes about 1 MiB (its
	// PRP lists).
	PoolSize int
	// HugepageSize is the pools' page size; 0 means 2 MiB.
	HugepageSize int
	// AllowSmallPages lets a pool fall back to smaller pages when
	// hugepages run out. Every pool of a set must end up with the same
	// page size (else OpenSet fails with ErrMixedPageSizes).
	AllowSmallPages bool
	// Class is the class code a selection is narrowed to: bridges, ports
	// and other functions a selector such as card= or numa= also picks
	// are left out. 0 means pcie.ClassNVMe.
	Class pcie.Class
	// Controller configures the protocol engine of every device.
	Controller nvmelike.Options
	// Sysfs is the sysfs root; "" means /sys.
	Sysfs string
}

// A Set is several devices opened as one: their IOMMU groups share one
// VFIO container, so one IOMMU domain and one DMA address space
// (iommu.Space and its ledger); its DMA memory is one hugepage pool per
// NUMA node, placed on that node and mapped once into the shared domain,
// so that a buffer from any pool can be handed to any device of the set.
//
// A Set's methods are safe for concurrent use; its devices' and queue
// pairs' rules are their own.
type Set struct {
	name      string // for errors: the BDF of a set of one, else "a set of N devices"
	sysfs     string
	container *vfio.Container
	groups    []*vfio.Group
	space     *iommu.Space
	pools     []*PoolDMA // by node, ascending (AnyNode first)
	devices   []*Device  // in BDF order
	distance  map[[2]int]int

	mu     sync.Mutex
	closed bool
}

// testHookOpenDevice, when set (by tests only), runs before each device
// of a set is opened; an error fails the open there, after the devices
// before it are up.
var testHookOpenDevice func(bdf string) error

// member is a device to open: its address, IOMMU group and NUMA node.
type member struct {
	bdf    string
	group  int
	node   int  // hugepage.AnyNode when unknown
	strict bool // the pool must be on node (Options.NUMANode)
}

// setConfig is what Open and OpenSet pass to openSet.
type setConfig struct {
	poolSize, pageSize int
	poolPerDevice      int // when poolSize is 0: bytes per device on the node, if that beats 64 MiB
	allowSmall         bool
	controller         nvmelike.Options
	sysfs              string
	poolName           func(node int) string
}

// OpenSet opens the NVMe functions the selector picks as one Set. The
// selection is narrowed to functions of SetOptions.Class (NVMe), so
// "card=0000:03:00.0", "numa=1" or "class=nvme driver=vfio-pci" (every
// NVMe bound to vfio-pci) each pick whole devices. Every one of them must
// be bound to vfio-pci, and their IOMMU groups viable.
//
// When anything fails, everything opened so far is released and the
// error names the device (*OpenError) where it can.
func OpenSet(ctx context.Context, sel *pcie.Selector, o *SetOptions) (*Set, error) {
	if o == nil {
		o = &SetOptions{}
	}
	sys, err := pcie.Scan(pcie.Options{SysfsRoot: o.Sysfs, IDs: &pcie.IDs{}})
	if err != nil {
		return nil, fmt.Errorf("opening a set: %w", err)
	}
	ms, err := selectMembers(sys, sel, o.Class)
	if err != nil {
		return nil, fmt.Errorf("opening a set: %w", err)
	}
	return openSet(ctx, ms, setConfig{
		poolSize: o.PoolSize, poolPerDevice: 16 << 20, pageSize: o.HugepageSize, allowSmall: o.AllowSmallPages,
		controller: o.Controller, sysfs: o.Sysfs,
		poolName: func(node int) string {
			if node == hugepage.AnyNode {
				return "umd set"
			}
			return "umd set node " + strconv.Itoa(node)
		},
	})
}

// selectMembers turns a selection into the devices of a set, checking
// that each is bound to vfio-pci and sits in an IOMMU group.
func selectMembers(sys *pcie.System, sel *pcie.Selector, class pcie.Class) ([]member, error) {
	if class == 0 {
		class = pcie.ClassNVMe
	}
	picked := sys.Select(sel)
	var ms []member
	var errs []error
	for _, f := range picked {
		if f.Class != class {
			continue
		}
		bdf := f.BDF.String()
		switch {
		case !isVFIODriver(f.Driver):
			driver := "no driver"
			if f.Driver != "" {
				driver = f.Driver
			}
			errs = append(errs, &OpenError{BDF: bdf, Err: fmt.Errorf("%w: bound to %s (umdprobe bind %s hands it over)", ErrNotVFIO, driver, bdf)})
		case f.IOMMUGroup == pcie.NoIOMMUGroup:
			errs = append(errs, &OpenError{BDF: bdf, Err: fmt.Errorf("it has no IOMMU group: %w", vfio.ErrNoIOMMU)})
		default:
			node := f.NUMANode
			if node < 0 {
				node = hugepage.AnyNode
			}
			ms = append(ms, member{bdf: bdf, group: f.IOMMUGroup, node: node})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("selector %q: %w of class %s (it picks %d functions)", sel.String(), ErrNoDevices, class, len(picked))
	}
	return ms, nil
}

// isVFIODriver reports whether a driver name is vfio-pci or one of its
// variant drivers (mlx5_vfio_pci, ...), which all hand the device to VFIO.
func isVFIODriver(name string) bool {
	return name == "vfio-pci" || strings.HasSuffix(name, "vfio_pci") || strings.HasSuffix(name, "vfio-pci")
}

// memberOf describes the single device Open takes.
func memberOf(sysfs, bdf string) (member, error) {
	n, err := vfio.Root{Sys: sysfs}.GroupOf(bdf)
	if err != nil {
		return member{}, &OpenError{BDF: bdf, Err: err}
	}
	if driver, ok := driverOf(sysfs, bdf); ok && !isVFIODriver(driver) {
		if driver == "" {
			driver = "no driver"
		}
		return member{}, &OpenError{BDF: bdf, Err: fmt.Errorf("%w: bound to %s (umdprobe bind %s hands it over)", ErrNotVFIO, driver, bdf)}
	}
	m := member{bdf: bdf, group: n, node: hugepage.AnyNode}
	if node, ok := numaNode(sysfs, bdf); ok {
		m.node = node
	}
	return m, nil
}

// driverOf reads the name of the driver bound to bdf ("" for none); ok is
// false when sysfs does not have the device.
func driverOf(sysfs, bdf string) (string, bool) {
	if sysfs == "" {
		sysfs = "/sys"
	}
	dir := filepath.Join(sysfs, "bus", "pci", "devices", bdf)
	if _, err := os.Stat(dir); err != nil {
		return "", false
	}
	link, err := os.Readlink(filepath.Join(dir, "driver"))
	if err != nil {
		return "", true
	}
	return filepath.Base(link), true
}

// openSet opens the members as one set: one container for all their
// groups, one Space, one pool per node, then each device and its engine.
// It is the only bring-up path: Open calls it with one member.
func openSet(ctx context.Context, ms []member, cfg setConfig) (_ *Set, err error) {
	s := &Set{name: ms[0].bdf, sysfs: cfg.sysfs}
	if len(ms) > 1 {
		s.name = fmt.Sprintf("a set of %d devices", len(ms))
	}
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	fail := func(err error) error { return fmt.Errorf("opening %s: %w", s.name, err) }

	root := vfio.Root{Sys: cfg.sysfs}
	if s.container, err = root.OpenContainer(); err != nil {
		return nil, fail(err)
	}
	// Every group joins before the IOMMU type is set and before anything
	// is mapped: the IOVA ranges can shrink as groups join.
	groups := map[int]*vfio.Group{}
	for _, m := range ms {
		if groups[m.group] != nil {
			continue
		}
		g, err := root.OpenGroup(m.group)
		if err != nil {
			return nil, &OpenError{BDF: m.bdf, Err: err}
		}
		s.groups = append(s.groups, g)
		groups[m.group] = g
		if err := g.SetContainer(s.container); err != nil {
			return nil, &OpenError{BDF: m.bdf, Err: err}
		}
	}
	if err := s.container.SetIOMMU(vfio.Type1v2IOMMU); err != nil {
		return nil, fail(err)
	}
	mapper, err := iommu.NewVFIO(s.container)
	if err != nil {
		return nil, fail(err)
	}
	if s.space, err = iommu.New(mapper, iommu.Options{}); err != nil {
		return nil, fail(err)
	}
	if err := s.openPools(ms, cfg); err != nil {
		return nil, fail(err)
	}
	s.distance = nodeDistances(cfg.sysfs, s.nodes())

	for _, m := range ms {
		if testHookOpenDevice != nil {
			if err := testHookOpenDevice(m.bdf); err != nil {
				return nil, &OpenError{BDF: m.bdf, Err: err}
			}
		}
		d := &Device{bdf: m.bdf, node: m.node, set: s, group: groups[m.group], space: s.space}
		d.dma = s.poolOn(m.node)
		d.pool = d.dma.pool
		s.devices = append(s.devices, d)
		if err := d.openVFIO(); err != nil {
			return nil, &OpenError{BDF: m.bdf, Err: err}
		}
		if d.ctrl, err = nvmelike.Open(ctx, mmio.New(d.bar.Bytes()), d.dma, &cfg.controller); err != nil {
			return nil, &OpenError{BDF: m.bdf, Err: fmt.Errorf("bringing up the controller: %w", err)}
		}
	}
	return s, nil
}

// openPools makes one pool per node the members are on and maps each
// whole into the set's Space.
func (s *Set) openPools(ms []member, cfg setConfig) error {
	page := cfg.pageSize
	if page == 0 {
		page = 2 << 20
	}
	strict := map[int]bool{}
	count := map[int]int{}
	for _, m := range ms {
		strict[m.node] = strict[m.node] || m.strict
		count[m.node]++
	}
	nodes := make([]int, 0, len(strict))
	for n := range strict {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, node := range nodes {
		size := cfg.poolSize
		if size == 0 {
			size = max(64<<20, count[node]*cfg.poolPerDevice)
		}
		size = (size + page - 1) / page * page
		name := cfg.poolName(node)
		pool, err := hugepage.New(hugepage.Options{
			Size: size, PageSize: page, NUMANode: node, NUMAPreferred: !strict[node],
			AllowFallback: cfg.allowSmall, Name: name,
		})
		if err != nil {
			return fmt.Errorf("making the DMA pool %q: %w", name, err)
		}
		m, err := s.space.MapPool(pool.Bytes(), iommu.Owner{Name: "DMA pool", Tag: name}, iommu.MapOptions{Align: uint64(pool.PageSize())})
		if err != nil {
			pool.Close()
			return fmt.Errorf("mapping the DMA pool %q: %w", name, err)
		}
		p := &PoolDMA{pool: pool, mapping: m, node: node, live: map[uint64]hugepage.Buffer{}}
		s.pools = append(s.pools, p)
		if first := s.pools[0].pool; first.PageSize() != pool.PageSize() {
			return fmt.Errorf("%w: node %d's has %d-byte pages, node %d's %d-byte pages; reserve hugepages on every node of the set, or ask for the smaller size",
				ErrMixedPageSizes, s.pools[0].node, first.PageSize(), node, pool.PageSize())
		}
	}
	return nil
}

// nodes returns the nodes the set has pools on.
func (s *Set) nodes() []int {
	var ns []int
	for _, p := range s.pools {
		ns = append(ns, p.node)
	}
	return ns
}

// poolOn returns the pool of node, or the nearest one.
func (s *Set) poolOn(node int) *PoolDMA {
	best := s.pools[0]
	for _, p := range s.pools {
		if s.dist(node, p.node) < s.dist(node, best.node) {
			best = p
		}
	}
	return best
}

// dist is the distance between two nodes for placement: 0 on the same
// node, the firmware's distance when sysfs gives it, else a large one.
func (s *Set) dist(a, b int) int {
	if a == b {
		return 0
	}
	if d, ok := s.distance[[2]int{a, b}]; ok {
		return d
	}
	if d, ok := s.distance[[2]int{b, a}]; ok {
		return d
	}
	return 1 << 16
}

// nodeDistances reads the NUMA distance table
// (devices/system/node/nodeN/distance) for the given nodes.
func nodeDistances(sysfs string, nodes []int) map[[2]int]int {
	if sysfs == "" {
		sysfs = "/sys"
	}
	out := map[[2]int]int{}
	for _, a := range nodes {
		if a < 0 {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(sysfs, "devices", "system", "node", "node"+strconv.Itoa(a), "distance"))
		if err != nil {
			continue
		}
		for b, f := range strings.Fields(string(raw)) {
			if d, err := strconv.Atoi(f); err == nil {
				out[[2]int{a, b}] = d
			}
		}
	}
	return out
}

// Devices returns the set's devices in BDF order.
func (s *Set) Devices() []*Device { return slices.Clone(s.devices) }

// Space returns the set's one DMA address space: every device's and
// every pool's IOVAs are in its ledger.
func (s *Set) Space() *iommu.Space { return s.space }

// Pools returns the set's DMA pools, one per NUMA node (ascending; a pool
// of devices whose node the platform does not give comes first, as
// hugepage.AnyNode).
func (s *Set) Pools() []*hugepage.Pool {
	out := make([]*hugepage.Pool, len(s.pools))
	for i, p := range s.pools {
		out[i] = p.pool
	}
	return out
}

// CurrentNUMANode returns the NUMA node of the CPU the calling thread runs
// on (getcpu(2)). A goroutine moves between threads, and a thread between
// CPUs: the answer holds only while the caller stays put, which it can
// make sure of with runtime.LockOSThread and a CPU affinity
// (sched_setaffinity) within one node. Otherwise it is a hint.
func CurrentNUMANode() (int, error) {
	_, node, err := getcpu()
	if err != nil {
		return hugepage.AnyNode, fmt.Errorf("getting the caller's NUMA node: %w", err)
	}
	return node, nil
}

// DeviceNear returns the open device of the set nearest to NUMA node
// node: on that node if the set has one there, else on the nearest node
// (by the firmware's distance table); among equally near devices, the one
// with the fewest queue pairs, then the first in BDF order. It returns nil
// when every device is closed.
func (s *Set) DeviceNear(node int) *Device {
	var best *Device
	bestDist, bestQueues := 0, 0
	for _, d := range s.devices {
		d.mu.Lock()
		closed, queues := d.closed, d.queues
		d.mu.Unlock()
		if closed {
			continue
		}
		dist := s.dist(node, d.node)
		if best == nil || dist < bestDist || dist == bestDist && queues < bestQueues {
			best, bestDist, bestQueues = d, dist, queues
		}
	}
	return best
}

// CreateQueuePair creates a queue pair on the device nearest the calling
// thread (DeviceNear of CurrentNUMANode); its rings come from that
// device's pool, on the device's node. Lock the goroutine to its thread
// (runtime.LockOSThread) and the thread to the node's CPUs before calling
// it, and use the queue pair from there: a goroutine that migrates to
// another node keeps working, only with remote memory and device
// accesses. QueuePair.Device says which device it got.
func (s *Set) CreateQueuePair(ctx context.Context, o QueueOptions) (*QueuePair, error) {
	node, err := CurrentNUMANode()
	if err != nil {
		node = hugepage.AnyNode // placement is a preference: any device will do
	}
	d := s.DeviceNear(node)
	if d == nil {
		return nil, fmt.Errorf("creating a queue pair on %s: %w", s.name, ErrClosed)
	}
	return d.CreateQueuePair(ctx, o)
}

// Alloc returns size bytes of zeroed DMA memory from the pool nearest the
// calling thread's NUMA node (see CurrentNUMANode). Any device of the set
// can use it; free it with Set.Free or any device's Free.
func (s *Set) Alloc(size int) (nvmelike.Buffer, error) {
	node, err := CurrentNUMANode()
	if err != nil {
		node = hugepage.AnyNode
	}
	return s.AllocOn(node, size)
}

// AllocOn is Alloc from the pool of node (or the nearest one).
func (s *Set) AllocOn(node, size int) (nvmelike.Buffer, error) {
	return allocAligned(s.poolOn(node), size)
}

// Free returns a buffer from any of the set's pools.
func (s *Set) Free(b nvmelike.Buffer) error {
	for _, p := range s.pools {
		if p.contains(b.IOVA) {
			return p.Free(b)
		}
	}
	return fmt.Errorf("freeing DMA memory at IOVA 0x%x: not allocated from a pool of %s", b.IOVA, s.name)
}

// Close closes every device of the set, then unmaps and frees the pools,
// then closes the groups and the container, in that order. It is safe to
// call twice.
func (s *Set) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	return s.release()
}

// release undoes openSet, however far it got.
func (s *Set) release() error {
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(s.devices) - 1; i >= 0; i-- {
		keep(s.devices[i].close())
	}
	var shared []error
	if s.space != nil {
		// Unmapping before the groups leave: the last one would take
		// the container's mappings with it (vfio refuses).
		if err := s.space.Close(); err != nil {
			shared = append(shared, err)
		}
	}
	for _, p := range s.pools {
		if err := p.pool.Close(); err != nil {
			shared = append(shared, err)
		}
	}
	for i := len(s.groups) - 1; i >= 0; i-- {
		if err := s.groups[i].Close(); err != nil {
			shared = append(shared, err)
		}
	}
	if s.container != nil {
		if err := s.container.Close(); err != nil {
			shared = append(shared, err)
		}
	}
	if len(shared) > 0 {
		errs = append(errs, fmt.Errorf("closing %s: %w", s.name, errors.Join(shared...)))
	}
	return errors.Join(errs...)
}
