package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/umdkit/umd/pcie"
)

// functionsDoc is the JSON document of list and show.
type functionsDoc struct {
	Schema    string           `json:"schema"`
	SysfsRoot string           `json:"sysfs_root"`
	IDsSource string           `json:"ids_source"`
	Functions []*pcie.Function `json:"functions"`
}

func writeList(w io.Writer, sys *pcie.System, fns []*pcie.Function, opt options) error {
	if opt.output == "json" {
		if fns == nil {
			fns = []*pcie.Function{}
		}
		return writeJSON(w, functionsDoc{Schema: schemaList, SysfsRoot: sys.SysfsRoot, IDsSource: sys.IDsSource, Functions: fns})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if opt.all {
		fmt.Fprintln(tw, "BDF\tROLE\tCARD\tID\tNAME\tDRIVER\tGROUP\tNUMA\tLINK")
	} else {
		fmt.Fprintln(tw, "BDF\tCARD\tID\tNAME\tDRIVER\tGROUP\tNUMA\tLINK")
	}
	for _, f := range fns {
		card := "-"
		if c := sys.Card(f.Card); c != nil {
			card = shortBDF(c.Head)
		}
		fmt.Fprintf(tw, "%s\t", shortBDF(f.BDF))
		if opt.all {
			fmt.Fprintf(tw, "%s\t", f.Role)
		}
		fmt.Fprintf(tw, "%s\t%s:%s\t%s\t%s\t%s\t%s\t%s\n",
			card, f.VendorID, f.DeviceID, truncate(f.DeviceName, defaultWidth),
			orDash(f.Driver), numOrDash(f.IOMMUGroup), numOrDash(f.NUMANode), linkSummary(f))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing the list: %w", err)
	}
	return nil
}

// linkSummary is the function's own link, plus the narrowest link above it
// when that one is slower: what limits the function's bandwidth.
func linkSummary(f *pcie.Function) string {
	s := "-"
	if f.Link != nil && f.Link.Known() {
		s = f.Link.String()
	}
	n := f.NarrowestLink
	if n == nil || n.Downstream == f.BDF {
		return s
	}
	if f.Link == nil || !f.Link.Known() || n.Bandwidth() < f.Link.Bandwidth() {
		if s == "-" && f.IsVF() {
			return fmt.Sprintf("%v x%d (its PF's)", n.Speed, n.Width)
		}
		s += fmt.Sprintf("; %v x%d above %s", n.Speed, n.Width, shortBDF(n.Downstream))
		if n.Degraded {
			s += " (degraded)"
		}
	}
	return s
}
