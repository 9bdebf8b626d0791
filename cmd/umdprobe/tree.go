package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/umdkit/umd/pcie"
)

// topologyDoc is the JSON document of tree.
type topologyDoc struct {
	Schema      string       `json:"schema"`
	SysfsRoot   string       `json:"sysfs_root"`
	HostBridges []*pcie.Node `json:"host_bridges"`
	Cards       []*pcie.Card `json:"cards"`
}

// writeTree draws the topology. With selectors, only the selected
// functions and the way down to them are drawn, and only their cards
// listed.
func writeTree(w io.Writer, sys *pcie.System, sel *pcie.Selector, opt options) error {
	keep := map[*pcie.Node]bool{}
	for _, f := range sys.Select(sel) {
		for n := sys.Node(f.BDF); n != nil; n = n.Parent {
			keep[n] = true
		}
	}
	roots := prune(sys.HostBridges, keep)
	var cards []*pcie.Card
	for _, c := range sys.Cards {
		for _, b := range c.Functions {
			if keep[sys.Node(b)] {
				cards = append(cards, c)
				break
			}
		}
	}
	if cards == nil {
		cards = []*pcie.Card{}
	}
	if opt.output == "json" {
		return writeJSON(w, topologyDoc{Schema: schemaTopo, SysfsRoot: sys.SysfsRoot, HostBridges: roots, Cards: cards})
	}

	var b strings.Builder
	for _, r := range roots {
		b.WriteString(r.Name)
		b.WriteString("\n")
		drawChildren(&b, sys, r.Children, "")
	}
	if len(cards) > 0 {
		b.WriteString("\nCards:\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  CARD\tKIND\tROOT PORT\tSLOT\tENDPOINTS\tNUMA\tGROUPS\tLINK")
		for _, c := range cards {
			rp := "-"
			if c.RootPort != nil {
				rp = shortBDF(*c.RootPort)
			}
			link := "-"
			if c.Link != nil {
				link = c.Link.Link.String()
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortBDF(c.Head), c.Kind, rp, orDash(c.Slot),
				endpointList(c.Endpoints), numOrDash(c.NUMANode), groupList(c.IOMMUGroups), link)
		}
		tw.Flush()
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("writing the tree: %w", err)
	}
	return nil
}

// prune copies the nodes that are in keep, each with its kept children;
// the System's own tree is left alone.
func prune(ns []*pcie.Node, keep map[*pcie.Node]bool) []*pcie.Node {
	out := []*pcie.Node{}
	for _, n := range ns {
		if !keep[n] {
			continue
		}
		c := *n
		c.Children = prune(n.Children, keep)
		out = append(out, &c)
	}
	return out
}

// drawChildren draws nodes below a parent whose own line is already
// written; prefix is what goes before the branch marks.
func drawChildren(b *strings.Builder, sys *pcie.System, ns []*pcie.Node, prefix string) {
	for i, n := range ns {
		branch, next := "├── ", "│   "
		if i == len(ns)-1 {
			branch, next = "└── ", "    "
		}
		b.WriteString(prefix + branch + nodeLine(sys, n) + "\n")
		drawChildren(b, sys, n.Children, prefix+next)
	}
}

// nodeLine is one node's annotation: address, what it is, driver, group,
// NUMA node, link, and at a card's head the card.
func nodeLine(sys *pcie.System, n *pcie.Node) string {
	f := n.Function
	if f == nil {
		return n.Name // a host bridge below a function (Intel VMD), or a function not listed
	}
	parts := []string{shortBDF(f.BDF)}
	what := fmt.Sprintf("%s [%s:%s]", f.DeviceName, f.VendorID, f.DeviceID)
	switch {
	case f.IsVF():
		what = "VF " + what
	case !f.Role.IsEndpoint():
		what = string(f.Role) + ": " + what
	}
	parts = append(parts, what)
	if f.Driver != "" {
		parts = append(parts, f.Driver)
	}
	if f.IOMMUGroup != pcie.NoIOMMUGroup {
		parts = append(parts, fmt.Sprintf("group %d", f.IOMMUGroup))
	}
	if f.NUMANode != pcie.NoNUMANode {
		parts = append(parts, fmt.Sprintf("numa %d", f.NUMANode))
	}
	if f.Link != nil && f.Link.Known() {
		parts = append(parts, f.Link.String())
	}
	if c := sys.Card(f.Card); c != nil && c.Head == f.BDF {
		parts = append(parts, fmt.Sprintf("<- card %s (%s, %d endpoint%s)", shortBDF(c.Head), c.Kind, len(c.Endpoints), plural(len(c.Endpoints))))
	}
	return strings.Join(parts, "  ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// endpointList names up to four endpoints and counts the rest.
func endpointList(bs []pcie.BDF) string {
	var parts []string
	for i, b := range bs {
		if i == 4 {
			parts = append(parts, fmt.Sprintf("+%d more", len(bs)-4))
			break
		}
		parts = append(parts, shortBDF(b))
	}
	return orDash(strings.Join(parts, " "))
}

func groupList(gs []int) string {
	var parts []string
	for _, g := range gs {
		parts = append(parts, fmt.Sprint(g))
	}
	return orDash(strings.Join(parts, " "))
}
