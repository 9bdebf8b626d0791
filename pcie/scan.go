package pcie

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultSysfsRoot is where sysfs is mounted on a running system.
const DefaultSysfsRoot = "/sys"

// Options tell Scan where to look.
type Options struct {
	// SysfsRoot is the directory to read instead of /sys: a test tree,
	// or a copy of another machine's sysfs. "" means DefaultSysfsRoot.
	SysfsRoot string
	// IDs names vendors, devices and classes; nil means DefaultIDs().
	// Pass &IDs{} for hex IDs only.
	IDs *IDs
}

// A System is everything Scan found: the functions, the tree they form
// and the cards they sit on.
type System struct {
	SysfsRoot string `json:"sysfs_root"`
	IDsSource string `json:"ids_source"` // where names came from
	// Functions holds every PCI function, sorted by BDF.
	Functions []*Function `json:"functions"`
	// HostBridges are the roots of the topology, sorted by name. A host
	// bridge below a function (as with Intel VMD) is that function's
	// child instead.
	HostBridges []*Node `json:"host_bridges"`
	// Cards are the groups of functions a person would call one card,
	// sorted by ID; see Card.
	Cards []*Card `json:"cards"`
	// Problems lists what Scan skipped, one sentence each.
	Problems []string `json:"problems,omitempty"`

	byBDF  map[BDF]*Function
	nodes  map[BDF]*Node
	cards  map[string]*Card
	groups map[int][]BDF
}

// A Node is one element of the topology tree: a host bridge (Function is
// nil; Name is the kernel's "pci0000:00") or a PCI function (Name is its
// BDF). Children are sorted by name; the virtual functions of an SR-IOV
// physical function hang below it rather than beside it, as sysfs has
// them, because that is where a reader looks for them.
type Node struct {
	Name     string
	Function *Function // nil for a host bridge, and for a function on a sysfs path that bus/pci/devices does not list
	Parent   *Node
	Children []*Node
	host     bool
}

// IsHostBridge reports whether the node is a host bridge (a root bus).
func (n *Node) IsHostBridge() bool { return n.host }

// MarshalJSON writes the node without its parent (which would loop):
// {"name", "role", "card", "children"}.
func (n *Node) MarshalJSON() ([]byte, error) {
	type jsonNode struct {
		Name     string  `json:"name"`
		Role     Role    `json:"role"`
		Card     string  `json:"card,omitempty"`
		Children []*Node `json:"children,omitempty"`
	}
	j := jsonNode{Name: n.Name, Role: "unknown", Children: n.Children}
	switch {
	case n.host:
		j.Role = RoleHostBridge
	case n.Function != nil:
		j.Role, j.Card = n.Function.Role, n.Function.Card
	}
	return json.Marshal(j)
}

// CardKind says what holds a card's functions together.
type CardKind string

// Card kinds.
const (
	// CardSwitch: a switch (its upstream port on a root port) and every
	// function below it.
	CardSwitch CardKind = "switch"
	// CardDevice: the functions of one device on a root port of its own
	// (one or several functions, and their VFs).
	CardDevice CardKind = "device"
	// CardIntegrated: the functions of one device on a root bus, with no
	// root port (integrated in the root complex, or on QEMU's pcie.0).
	CardIntegrated CardKind = "integrated"
)

// A Card groups the functions a person would call one card: everything
// below one root port (a switch with its endpoints, or a single- or
// multi-function device), or one device on a root bus. The root port is
// the point of attachment, so an add-in card with a switch on it is one
// card however many endpoints it has.
//
// A caveat for real machines: a switch soldered on the motherboard with
// slots on its downstream ports looks the same as a switch card from
// sysfs, and is reported as one card.
type Card struct {
	// ID is stable as long as the hardware stays where it is: the BDF of
	// the card's head, the function directly below the root port (the
	// switch upstream port, or function 0 of the device).
	ID       string   `json:"id"`
	Kind     CardKind `json:"kind"`
	Head     BDF      `json:"head"`
	RootPort *BDF     `json:"root_port,omitempty"` // nil for CardIntegrated
	Slot     string   `json:"slot,omitempty"`      // physical slot name of the head, when the platform has one
	// Functions lists every function on the card (switch ports
	// included), sorted; Endpoints and Switches are subsets of it.
	Functions []BDF `json:"functions"`
	Endpoints []BDF `json:"endpoints"`
	Switches  []BDF `json:"switches,omitempty"` // switch upstream ports
	// NUMANode is the node the endpoints share; NoNUMANode if they do not
	// agree or none is known.
	NUMANode    int   `json:"numa_node"`
	IOMMUGroups []int `json:"iommu_groups"`
	// Link is the link from the root port to the head: the card's slot.
	Link *LinkHop `json:"link,omitempty"`
}

// Scan reads every PCI function from sysfs and builds the topology. It
// fails only when the list of functions itself cannot be read; whatever
// is wrong with one function is noted in its Problems (or, if it cannot be
// identified at all, in the System's) and the scan goes on.
func Scan(opts Options) (*System, error) {
	root := opts.SysfsRoot
	if root == "" {
		root = DefaultSysfsRoot
	}
	ids := opts.IDs
	if ids == nil {
		ids = DefaultIDs()
	}
	s := &System{SysfsRoot: root, IDsSource: ids.Source}
	if s.IDsSource == "" {
		s.IDsSource = "none"
	}

	dir := filepath.Join(root, "bus", "pci", "devices")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing PCI functions: %w", err)
	}
	for _, e := range entries {
		b, err := ParseBDF(e.Name())
		if err != nil {
			s.Problems = append(s.Problems, fmt.Sprintf("skipping %s: %v", filepath.Join(dir, e.Name()), err))
			continue
		}
		f, err := readFunction(root, b, ids)
		if err != nil {
			s.Problems = append(s.Problems, fmt.Sprintf("skipping %s: %v", b, err))
			continue
		}
		s.Functions = append(s.Functions, f)
	}
	sort.Slice(s.Functions, func(i, j int) bool { return s.Functions[i].BDF.Compare(s.Functions[j].BDF) < 0 })
	s.byBDF = make(map[BDF]*Function, len(s.Functions))
	for _, f := range s.Functions {
		s.byBDF[f.BDF] = f
	}

	s.readSlots()
	s.buildTree()
	s.assignRoles()
	s.linkPeers()
	s.upstreamLinks()
	s.buildCards()
	s.buildGroups()
	return s, nil
}

// Function returns the function at b, or nil.
func (s *System) Function(b BDF) *Function { return s.byBDF[b] }

// Node returns the tree node of the function at b, or nil.
func (s *System) Node(b BDF) *Node { return s.nodes[b] }

// Card returns the card with the given ID, or nil.
func (s *System) Card(id string) *Card { return s.cards[id] }

// CardOf returns the card the function at b is on, or nil.
func (s *System) CardOf(b BDF) *Card {
	if f := s.byBDF[b]; f != nil {
		return s.cards[f.Card]
	}
	return nil
}

// Group returns the functions of IOMMU group n, sorted.
func (s *System) Group(n int) []BDF { return s.groups[n] }

// readSlots maps the physical slots of bus/pci/slots (each a directory
// whose "address" file holds "dddd:bb:dd") to the functions in them.
func (s *System) readSlots() {
	dir := filepath.Join(s.SysfsRoot, "bus", "pci", "slots")
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.Problems = append(s.Problems, fmt.Sprintf("listing slots: %v", err))
		}
		return
	}
	bySlot := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "address"))
		if err != nil {
			continue // a slot without an address has nothing to say
		}
		bySlot[strings.TrimSpace(string(b))] = e.Name()
	}
	for _, f := range s.Functions {
		f.Slot = bySlot[f.BDF.Slot()]
	}
}

// isHostBridgeName reports whether name is the kernel's name of a root
// bus directory, "pci0000:00" (domain, bus).
func isHostBridgeName(name string) bool {
	rest, ok := strings.CutPrefix(name, "pci")
	if !ok {
		return false
	}
	dom, bus, ok := strings.Cut(rest, ":")
	return ok && len(dom) >= 4 && len(dom) <= 8 && isHex(dom) && len(bus) == 2 && isHex(bus)
}

// buildTree turns each function's sysfs path into nodes:
// devices/pci0000:00/0000:00:1c.0/0000:01:00.0 puts 01:00.0 below 00:1c.0
// below host bridge pci0000:00.
func (s *System) buildTree() {
	s.nodes = map[BDF]*Node{}
	hosts := map[string]*Node{}
	nodeFor := func(name string, parent *Node) *Node {
		if isHostBridgeName(name) {
			if n, ok := hosts[name]; ok {
				return n
			}
			n := &Node{Name: name, Parent: parent, host: true}
			hosts[name] = n
			if parent == nil {
				s.HostBridges = append(s.HostBridges, n)
			} else {
				parent.Children = append(parent.Children, n)
			}
			return n
		}
		b, err := ParseBDF(name)
		if err != nil {
			return nil
		}
		if n, ok := s.nodes[b]; ok {
			return n
		}
		// A function on the path that was not in bus/pci/devices
		// still gets a node, without a Function, so the tree holds.
		n := &Node{Name: b.String(), Function: s.byBDF[b], Parent: parent}
		s.nodes[b] = n
		if parent != nil {
			parent.Children = append(parent.Children, n)
		}
		return n
	}

	for _, f := range s.Functions {
		var parent *Node
		rest, ok := strings.CutPrefix(f.SysfsPath, "devices/")
		if !ok {
			// No path: guess the host bridge from the function's own
			// domain and bus.
			parent = nodeFor(fmt.Sprintf("pci%04x:%02x", f.BDF.Domain, f.BDF.Bus), nil)
			rest = f.BDF.String()
		}
		parts := strings.Split(rest, "/")
		if parts[len(parts)-1] != f.BDF.String() {
			f.problemf("sysfs path %s does not end in the function's address", f.SysfsPath)
		}
		for _, p := range parts[:len(parts)-1] {
			if n := nodeFor(p, parent); n != nil {
				parent = n
			}
		}
		if parent == nil {
			parent = nodeFor(fmt.Sprintf("pci%04x:%02x", f.BDF.Domain, f.BDF.Bus), nil)
		}
		n := nodeFor(f.BDF.String(), parent)
		n.Function = f
		for p := n.Parent; p != nil; p = p.Parent {
			if p.IsHostBridge() {
				f.HostBridge = p.Name
				break
			}
		}
		if n.Parent != nil && !n.Parent.IsHostBridge() {
			pb, _ := ParseBDF(n.Parent.Name)
			f.Parent = &pb
		}
	}

	// Move virtual functions below their physical function. Only to a
	// PF that is not itself a VF: nodes that are not VFs never move, so
	// no garbled physfn links can make the tree loop.
	for _, f := range s.Functions {
		if f.PhysFn == nil {
			continue
		}
		n, pf := s.nodes[f.BDF], s.nodes[*f.PhysFn]
		if pf == nil || pf.Function == nil || pf.Function.PhysFn != nil || n.Parent == pf {
			continue
		}
		if old := n.Parent; old != nil {
			for i, c := range old.Children {
				if c == n {
					old.Children = append(old.Children[:i], old.Children[i+1:]...)
					break
				}
			}
		}
		n.Parent = pf
		pf.Children = append(pf.Children, n)
	}

	var sortTree func(ns []*Node)
	sortTree = func(ns []*Node) {
		sort.Slice(ns, func(i, j int) bool { return nodeLess(ns[i], ns[j]) })
		for _, n := range ns {
			sortTree(n.Children)
		}
	}
	sortTree(s.HostBridges)
}

// nodeLess orders functions by BDF before host bridges by name.
func nodeLess(a, b *Node) bool {
	ab, aerr := ParseBDF(a.Name)
	bb, berr := ParseBDF(b.Name)
	switch {
	case aerr == nil && berr == nil:
		return ab.Compare(bb) < 0
	case aerr == nil:
		return true
	case berr == nil:
		return false
	}
	return a.Name < b.Name
}

// walk calls fn for every node below ns, parents before children.
func walk(ns []*Node, fn func(*Node)) {
	for _, n := range ns {
		fn(n)
		walk(n.Children, fn)
	}
}

// assignRoles gives every function its Role, top down so that a
// function's role can depend on its parent's.
func (s *System) assignRoles() {
	walk(s.HostBridges, func(n *Node) {
		f := n.Function
		if f == nil {
			return
		}
		var parent *Function
		if n.Parent != nil {
			parent = n.Parent.Function
		}
		f.Role = roleOf(f, n.Parent == nil || n.Parent.IsHostBridge(), parent)
		if f.Role == RoleIntegratedEndpoint || f.Role == RoleEventCollector {
			// No link above it, whatever the link attributes say: the
			// kernel shows them for every PCI Express function, and
			// on these they read "Unknown" and 0 (QEMU's q35).
			f.Link = nil
		}
	})
}

func roleOf(f *Function, onRootBus bool, parent *Function) Role {
	if f.Class.IsHostBridge() {
		return RoleHostBridge
	}
	if f.Config != nil && f.Config.PCIe != nil {
		switch f.Config.PCIe.PortType {
		case PortEndpoint, PortLegacyEndpoint:
			return RoleEndpoint
		case PortRootPort:
			return RoleRootPort
		case PortUpstream:
			return RoleUpstreamPort
		case PortDownstream:
			return RoleDownstreamPort
		case PortPCIeToPCIBridge, PortPCIToPCIeBridge:
			return RoleBridge
		case PortIntegratedEndpoint:
			return RoleIntegratedEndpoint
		case PortEventCollector:
			return RoleEventCollector
		}
	}
	// No PCI Express capability to go by (not readable, or conventional
	// PCI): judge by position.
	var parentRole Role
	if parent != nil {
		parentRole = parent.Role
	}
	if f.Bridge {
		switch {
		case onRootBus:
			return RoleRootPort
		case parentRole == RoleRootPort || parentRole == RoleDownstreamPort:
			return RoleUpstreamPort
		case parentRole == RoleUpstreamPort:
			return RoleDownstreamPort
		}
		return RoleBridge
	}
	if onRootBus {
		return RoleIntegratedEndpoint
	}
	return RoleEndpoint
}

// hasLinkBelow reports whether a function is a port with a physical link
// below it: root ports and switch downstream ports. (An upstream port's
// children are on the switch's internal bus, with no link between.)
func hasLinkBelow(f *Function) bool {
	return f != nil && (f.Role == RoleRootPort || f.Role == RoleDownstreamPort)
}

// linkPeers decides Degraded for each link by looking at both of its ends:
// a x4 device in a x16 slot running at x4 is not degraded, it runs as fast
// as it can. Each end of a link reports the same negotiated speed and
// width; the best the link can do is the lower of the two ends' maxima.
func (s *System) linkPeers() {
	downSeen := map[BDF]bool{} // ports whose Degraded was recomputed
	for _, f := range s.Functions {
		n := s.nodes[f.BDF]
		if n == nil || n.Parent == nil || f.IsVF() || f.Link == nil {
			continue
		}
		port := n.Parent.Function
		if !hasLinkBelow(port) || port.Link == nil {
			continue
		}
		deg := f.Link.degradedAgainst(port.Link.MaxSpeed, port.Link.MaxWidth)
		f.Link.Degraded = deg
		if !downSeen[port.BDF] {
			port.Link.Degraded = false
			downSeen[port.BDF] = true
		}
		port.Link.Degraded = port.Link.Degraded || deg
	}
}

// upstreamLinks fills UpstreamLinks and NarrowestLink: the links crossed
// from the root port down to each function. A virtual function uses its
// physical function's link (it has none of its own).
func (s *System) upstreamLinks() {
	for _, f := range s.Functions {
		n := s.nodes[f.BDF]
		var hops []LinkHop
		for c := n; c != nil && c.Parent != nil; c = c.Parent {
			cf, pf := c.Function, c.Parent.Function
			if cf == nil || !hasLinkBelow(pf) {
				continue
			}
			link := cf.Link
			if link == nil || !link.Known() {
				link = pf.Link
			}
			if link == nil {
				continue
			}
			hops = append(hops, LinkHop{Upstream: pf.BDF, Downstream: cf.BDF, Link: *link})
		}
		// Collected bottom-up; present them top-down.
		for i, j := 0, len(hops)-1; i < j; i, j = i+1, j-1 {
			hops[i], hops[j] = hops[j], hops[i]
		}
		f.UpstreamLinks = hops
		for i := range hops {
			h := hops[i]
			if h.Bandwidth() == 0 {
				continue
			}
			if f.NarrowestLink == nil || h.Bandwidth() < f.NarrowestLink.Bandwidth() {
				f.NarrowestLink = &h
			}
		}
	}
}

// buildCards groups functions into cards; see Card.
func (s *System) buildCards() {
	s.cards = map[string]*Card{}
	byKey := map[string]*Card{}
	for _, f := range s.Functions {
		if f.Role == RoleRootPort || f.Role == RoleHostBridge || f.Role == RoleEventCollector {
			continue
		}
		n := s.nodes[f.BDF]
		// Climb to the function just below a root port, or to the top
		// function below the host bridge if there is no root port.
		top, rootPort := n, (*Node)(nil)
		for p := n.Parent; p != nil && !p.IsHostBridge(); p = p.Parent {
			if p.Function != nil && p.Function.Role == RoleRootPort {
				rootPort = p
				break
			}
			top = p
		}
		var key string
		var head BDF
		kind := CardDevice
		switch {
		case rootPort != nil:
			key = "port " + rootPort.Name
			head = firstFunction(rootPort.Children)
			if hf := s.byBDF[head]; hf != nil && hf.Role == RoleUpstreamPort {
				kind = CardSwitch
			}
		case f.Role.IsEndpoint():
			if top.Function == nil {
				continue
			}
			// Functions are visited in BDF order, so the first one
			// of a device seen here is its lowest: the head.
			key = "device " + top.Function.BDF.Slot()
			head = f.BDF
			kind = CardIntegrated
		default:
			continue // a bridge with no root port above: not a card
		}
		c := byKey[key]
		if c == nil {
			c = &Card{ID: head.String(), Kind: kind, Head: head, NUMANode: NoNUMANode}
			if rootPort != nil {
				rp := rootPort.Function.BDF
				c.RootPort = &rp
			}
			if hf := s.byBDF[c.Head]; hf != nil {
				c.Slot = hf.Slot
				for i := range hf.UpstreamLinks {
					if c.RootPort != nil && hf.UpstreamLinks[i].Upstream == *c.RootPort {
						h := hf.UpstreamLinks[i]
						c.Link = &h
					}
				}
			}
			byKey[key] = c
			s.Cards = append(s.Cards, c)
		}
		c.Functions = append(c.Functions, f.BDF)
		switch {
		case f.Role.IsEndpoint():
			c.Endpoints = append(c.Endpoints, f.BDF)
		case f.Role == RoleUpstreamPort:
			c.Switches = append(c.Switches, f.BDF)
		}
	}
	sort.Slice(s.Cards, func(i, j int) bool { return s.Cards[i].Head.Compare(s.Cards[j].Head) < 0 })
	for _, c := range s.Cards {
		s.cards[c.ID] = c
		numa, groups := NoNUMANode, map[int]bool{}
		for i, b := range c.Endpoints {
			f := s.byBDF[b]
			f.Card = c.ID
			if i == 0 {
				numa = f.NUMANode
			} else if f.NUMANode != numa {
				numa = NoNUMANode
			}
			if f.IOMMUGroup != NoIOMMUGroup {
				groups[f.IOMMUGroup] = true
			}
		}
		for _, b := range c.Functions {
			s.byBDF[b].Card = c.ID
		}
		c.NUMANode = numa
		c.IOMMUGroups = sortedKeys(groups)
	}
}

// firstFunction returns the lowest BDF among nodes (sorted already).
func firstFunction(ns []*Node) BDF {
	for _, n := range ns {
		if b, err := ParseBDF(n.Name); err == nil {
			return b
		}
	}
	return BDF{}
}

func sortedKeys(m map[int]bool) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	return ks
}

// buildGroups collects the IOMMU groups and each function's peers in its
// group: the functions that must be bound to vfio-pci (or to no driver)
// before VFIO will hand out any one of them.
func (s *System) buildGroups() {
	s.groups = map[int][]BDF{}
	for _, f := range s.Functions {
		if f.IOMMUGroup != NoIOMMUGroup {
			s.groups[f.IOMMUGroup] = append(s.groups[f.IOMMUGroup], f.BDF)
		}
	}
	for _, f := range s.Functions {
		f.IOMMUPeers = []BDF{}
		for _, b := range s.groups[f.IOMMUGroup] {
			if b != f.BDF {
				f.IOMMUPeers = append(f.IOMMUPeers, b)
			}
		}
	}
}
