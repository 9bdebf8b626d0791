package hugepage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// AnyNode as Options.NUMANode leaves placement to the kernel (its default
// policy: the node of the CPU that first touches each page).
const AnyNode = -1

// Memory policy modes of mbind(2), from include/uapi/linux/mempolicy.h
// (golang.org/x/sys/unix does not define them).
const (
	mpolPreferred = 1 // MPOL_PREFERRED
	mpolBind      = 2 // MPOL_BIND
)

// checkNode says whether the pool's memory can be placed on node. It
// returns numa=false on a kernel built without NUMA, where node 0 is the
// only node and there is nothing to place.
func checkNode(sys string, node int) (numa bool, err error) {
	dir := filepath.Join(sys, "devices/system/node")
	online, err := os.ReadFile(filepath.Join(dir, "online"))
	if errors.Is(err, os.ErrNotExist) {
		if node == 0 {
			return false, nil
		}
		return false, fmt.Errorf("%w: NUMA node %d asked for, but this kernel has no NUMA support (no %s): all memory is on node 0", ErrNUMANode, node, filepath.Join("/sys/devices/system/node", "online"))
	}
	if err != nil {
		return false, fmt.Errorf("reading the online NUMA nodes: %w", err)
	}
	list := strings.TrimSpace(string(online))
	nodes, err := parseNodeList(list)
	if err != nil {
		return false, fmt.Errorf("reading the online NUMA nodes: %w", err)
	}
	if !nodes[node] {
		return false, fmt.Errorf("%w: NUMA node %d does not exist; this machine's nodes are %s", ErrNUMANode, node, list)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "has_memory")); err == nil {
		withMemory := strings.TrimSpace(string(b))
		if m, err := parseNodeList(withMemory); err == nil && !m[node] {
			return false, fmt.Errorf("%w: NUMA node %d has no memory (nodes with memory: %s)", ErrNUMANode, node, withMemory)
		}
	}
	return true, nil
}

// parseNodeList parses the kernel's list format for node (and CPU) masks,
// such as "0-1,4".
func parseNodeList(s string) (map[int]bool, error) {
	nodes := map[int]bool{}
	if s == "" {
		return nodes, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("bad node list %q", s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("bad node list %q", s)
			}
		}
		if b-a > 1<<16 {
			return nil, fmt.Errorf("bad node list %q", s)
		}
		for n := a; n <= b; n++ {
			nodes[n] = true
		}
	}
	return nodes, nil
}

// nodeMask returns the bitmask mbind(2) takes for a single node.
func nodeMask(node int) []uint64 {
	mask := make([]uint64, node/64+1)
	mask[node/64] = 1 << (node % 64)
	return mask
}

// summarizeNodes turns the node of every page into pages per node and the
// one node they all share (AnyNode when they are spread or any is
// unknown).
func summarizeNodes(status []int32) (perNode map[int]int, node int) {
	perNode = map[int]int{}
	node = AnyNode
	for i, s := range status {
		if s < 0 { // -errno: the kernel could not say
			return nil, AnyNode
		}
		perNode[int(s)]++
		if i == 0 {
			node = int(s)
		} else if node != int(s) {
			node = AnyNode
		}
	}
	return perNode, node
}
