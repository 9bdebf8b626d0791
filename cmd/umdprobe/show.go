package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/umdkit/umd/internal/size"
	"github.com/umdkit/umd/pcie"
)

// writeShow writes everything known about each function, one block each.
func writeShow(w io.Writer, sys *pcie.System, fns []*pcie.Function, opt options) error {
	if opt.output == "json" {
		return writeJSON(w, functionsDoc{Schema: schemaList, SysfsRoot: sys.SysfsRoot, IDsSource: sys.IDsSource, Functions: fns})
	}
	var b strings.Builder
	for i, f := range fns {
		if i > 0 {
			b.WriteString("\n")
		}
		showFunction(&b, sys, f)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("writing details: %w", err)
	}
	return nil
}

func showFunction(w io.Writer, sys *pcie.System, f *pcie.Function) {
	fmt.Fprintf(w, "%s  %s\n", f.BDF, f.DeviceName)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
	}

	row("vendor", "%s  %s", f.VendorID, f.VendorName)
	row("device", "%s  %s", f.DeviceID, f.DeviceName)
	if f.SubsystemName != "" {
		row("subsystem", "%s:%s  %s", f.SubsystemVendor, f.SubsystemDevice, f.SubsystemName)
	}
	row("class", "%s  %s", f.Class, f.ClassName)
	row("revision", "0x%02x", f.Revision)
	role := string(f.Role)
	if f.IsVF() {
		role += fmt.Sprintf(", virtual function of %s", f.PhysFn)
	}
	row("role", "%s", role)
	if c := sys.Card(f.Card); c != nil {
		row("card", "%s (%s, %d endpoint%s)", c.ID, c.Kind, len(c.Endpoints), plural(len(c.Endpoints)))
	} else {
		row("card", "-")
	}
	drv := orDash(f.Driver)
	if f.DriverOverride != "" {
		drv += fmt.Sprintf(" (driver_override %s)", f.DriverOverride)
	}
	row("driver", "%s", drv)
	group := numOrDash(f.IOMMUGroup)
	if f.IOMMUGroup != pcie.NoIOMMUGroup {
		if len(f.IOMMUPeers) == 0 {
			group += " (alone in its group)"
		} else {
			var peers []string
			for _, p := range f.IOMMUPeers {
				peer := shortBDF(p)
				if pf := sys.Function(p); pf != nil {
					peer += " " + orDash(pf.Driver)
				}
				peers = append(peers, peer)
			}
			group += " with " + strings.Join(peers, ", ")
		}
	}
	row("IOMMU group", "%s", group)
	row("NUMA node", "%s", numOrDash(f.NUMANode))
	if f.Slot != "" {
		row("slot", "%s", f.Slot)
	}
	row("sysfs", "%s", f.SysfsPath)

	if f.Link != nil && f.Link.Known() {
		row("link", "%s", f.Link)
	}
	for _, h := range f.UpstreamLinks {
		mark := ""
		if f.NarrowestLink != nil && h.Downstream == f.NarrowestLink.Downstream && h.Upstream == f.NarrowestLink.Upstream {
			mark = "  <- narrowest"
		}
		row("path", "%s -> %s  %s%s", shortBDF(h.Upstream), shortBDF(h.Downstream), h.Link, mark)
	}

	for _, bar := range f.BARs {
		row("BAR", "%s", barText(bar, ""))
	}
	for _, bar := range f.VFBARs {
		row("VF BAR", "%s", barText(bar, " (each VF)"))
	}
	if s := f.SRIOV; s != nil {
		var vfs []string
		for _, v := range s.VFs {
			vfs = append(vfs, shortBDF(v))
		}
		row("SR-IOV", "%d of %d VFs enabled  %s", s.NumVFs, s.TotalVFs, strings.Join(vfs, " "))
	}

	switch cfg := f.Config; {
	case cfg == nil:
		row("capabilities", "- (config space unreadable)")
	case !f.HasFullConfig():
		row("capabilities", "- (only %d bytes of config space readable; run as root to see them)", cfg.Size)
	default:
		if len(cfg.Capabilities) == 0 {
			row("capabilities", "none")
		}
		for _, c := range cfg.Capabilities {
			row("capability", "%s%s", c, capDetail(cfg, c))
		}
	}
	for _, p := range f.Problems {
		row("problem", "%s", p)
	}
	tw.Flush()
}

func barText(b pcie.BAR, suffix string) string {
	kind := "memory"
	if b.IO {
		kind = "I/O"
	}
	if b.Index == pcie.ROMIndex && !b.IO {
		kind = "ROM"
	}
	var attrs []string
	if b.Is64 {
		attrs = append(attrs, "64-bit")
	} else if !b.IO {
		attrs = append(attrs, "32-bit")
	}
	if b.Prefetchable {
		attrs = append(attrs, "prefetchable")
	}
	where := fmt.Sprintf("at %#x", b.Start)
	if b.Unassigned {
		where = "unassigned"
	}
	extra := ""
	if len(attrs) > 0 {
		extra = ", " + strings.Join(attrs, ", ")
	}
	return fmt.Sprintf("%d: %s %s, %s%s%s", b.Index, kind, size.Exact(b.Size), where, extra, suffix)
}

// capDetail decodes the capabilities the pcie package understands.
func capDetail(cfg *pcie.Config, c pcie.Capability) string {
	switch {
	case !c.Extended && c.ID == pcie.CapPCIe && cfg.PCIe != nil:
		p := cfg.PCIe
		s := fmt.Sprintf(": %s, max payload %d", p.PortType, p.MaxPayload)
		if p.HasLinkFields && p.MaxLinkSpeed != 0 { // VFs leave the link registers zero
			s += fmt.Sprintf(", link %v x%d of %v x%d", p.LinkSpeed, p.LinkWidth, p.MaxLinkSpeed, p.MaxLinkWidth)
		}
		return s
	case !c.Extended && c.ID == pcie.CapMSI && cfg.MSI != nil:
		m := cfg.MSI
		return fmt.Sprintf(": %d vector%s%s%s", m.Vectors, plural(m.Vectors), onOff(m.Address64, ", 64-bit"), onOff(m.Enabled, ", enabled"))
	case !c.Extended && c.ID == pcie.CapMSIX && cfg.MSIX != nil:
		m := cfg.MSIX
		return fmt.Sprintf(": %d vectors, table BAR%d+%#x, PBA BAR%d+%#x%s", m.TableSize, m.TableBIR, m.TableOffset, m.PBABIR, m.PBAOffset, onOff(m.Enabled, ", enabled"))
	case c.Extended && c.ID == pcie.ExtCapAER && cfg.AER != nil:
		a := cfg.AER
		if a.UncorrectableStatus == 0 && a.CorrectableStatus == 0 {
			return ": no errors logged"
		}
		return fmt.Sprintf(": errors logged: uncorrectable %#08x, correctable %#08x", a.UncorrectableStatus, a.CorrectableStatus)
	case c.Extended && c.ID == pcie.ExtCapACS && cfg.ACS != nil:
		return fmt.Sprintf(": capable %#04x, enabled %#04x", cfg.ACS.Capability, cfg.ACS.Control)
	case c.Extended && c.ID == pcie.ExtCapSRIOV && cfg.SRIOV != nil:
		s := cfg.SRIOV
		return fmt.Sprintf(": %d of %d VFs, offset %d, stride %d, VF device %s", s.NumVFs, s.TotalVFs, s.VFOffset, s.VFStride, s.VFDeviceID)
	case c.Extended && c.ID == pcie.ExtCapATS && cfg.ATS != nil:
		return fmt.Sprintf(": invalidate queue depth %d%s", cfg.ATS.InvalidateQDepth, onOff(cfg.ATS.Enabled, ", enabled"))
	case c.Extended && c.ID == pcie.ExtCapPRI && cfg.PRI != nil:
		return fmt.Sprintf(": %d outstanding requests%s", cfg.PRI.Outstanding, onOff(cfg.PRI.Enabled, ", enabled"))
	case c.Extended && c.ID == pcie.ExtCapPASID && cfg.PASID != nil:
		return fmt.Sprintf(": %d bits%s", cfg.PASID.Width, onOff(cfg.PASID.Enabled, ", enabled"))
	}
	return ""
}

func onOff(b bool, s string) string {
	if b {
		return s
	}
	return ""
}
