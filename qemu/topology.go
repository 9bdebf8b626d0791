package qemu

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// A Topology is a named machine layout: which NVMe controllers the guest
// has, where they sit in the PCIe hierarchy and how many NUMA nodes there
// are. Every topology has a q35 machine with an emulated Intel IOMMU
// (intel-iommu with interrupt remapping) in front of all devices.
type Topology struct {
	Name        string
	Description string
	// NUMANodes is the number of guest NUMA nodes (0 means no NUMA
	// configuration: one node).
	NUMANodes int
	// Switches are PCIe switches, each behind a root port of its own.
	Switches []Switch
	// RootPorts are controllers, each on a root port of its own.
	RootPorts []Controller
	// Integrated are controllers directly on the root complex (pcie.0).
	Integrated []Controller
	// Expanders are extra root complexes (pxb-pcie) tied to a NUMA node,
	// each with controllers on root ports of their own.
	Expanders []Expander
}

// A Switch is a PCIe switch: one upstream port and one downstream port per
// controller.
type Switch struct {
	Controllers []Controller
}

// An Expander is a PCIe expander bridge (pxb-pcie): a root complex placed
// on a NUMA node.
type Expander struct {
	NUMANode    int
	Controllers []Controller
}

// A Controller is one emulated NVMe controller (QEMU's `nvme` device).
type Controller struct {
	Serial string
	// Namespaces lists the size in MiB of each namespace, in NSID order.
	Namespaces []int
	// BlockSizes lists each namespace's logical block size in bytes, in
	// NSID order; a missing or zero entry means 512.
	BlockSizes []int
	// Properties are more of QEMU's nvme device properties, as
	// "name=value,name=value" (msix_qsize=1, mdts=1, cmb_size_mb=16, ...).
	Properties string
	// NamespaceProperties are more nvme-ns properties for each namespace,
	// in NSID order (zoned=true, ms=8,mset=1, ...); missing or empty for
	// none.
	NamespaceProperties []string
	// Faults makes the host fail some of each namespace's I/O, in NSID
	// order; missing or nil for none.
	Faults []*DiskFaults
	// SRIOV, when set, makes the controller an SR-IOV physical function
	// (QEMU's sriov_max_vfs) in an NVMe subsystem of its own, which SR-IOV
	// needs. Its Namespaces are then private to it; the subsystem also
	// holds SRIOV.VFNamespaces, attached to no controller at boot.
	SRIOV *SRIOV
}

// DiskFaults makes QEMU fail the host I/O that covers one 512-byte
// sector of a namespace's backing file (with EIO, through QEMU's blkdebug
// driver), every time: the controller completes such a command with a
// media error, Unrecovered Read Error for a read and Write Fault for a
// write. A namespace's data starts at sector 0 of its file, so with
// 512-byte blocks a sector is an LBA. 0 means none.
type DiskFaults struct {
	ReadSector, WriteSector int64
}

// driveSpec is the -drive argument of a namespace's backing file at path,
// through blkdebug when it has faults.
func driveSpec(id, path, aio string, f *DiskFaults) string {
	spec := "if=none,format=raw,id=" + id + ",aio=" + aio
	if f == nil {
		return "file=" + path + "," + spec
	}
	spec += ",file.driver=blkdebug,file.image.filename=" + path
	n := 0
	for _, e := range []struct {
		event  string
		sector int64
	}{{"read_aio", f.ReadSector}, {"write_aio", f.WriteSector}} {
		if e.sector > 0 {
			spec += fmt.Sprintf(",file.inject-error.%d.event=%s,file.inject-error.%d.errno=5,file.inject-error.%d.sector=%d", n, e.event, n, n, e.sector)
			n++
		}
	}
	return spec
}

// SRIOV describes the virtual functions of an SR-IOV controller. The
// secondary (VF) controllers start offline with no resources; the primary
// controller hands them queues and interrupt vectors from its flexible
// pools (Virtualization Management) before setting them online.
type SRIOV struct {
	// MaxVFs is the number of virtual functions the PF offers
	// (TotalVFs).
	MaxVFs int
	// FlexibleQueues and FlexibleVectors are the flexible queue and
	// interrupt resources shared out to the VFs: QEMU wants at least two
	// queues (admin and one I/O) and one vector per VF, and takes them
	// from the PF's own max_ioqpairs and msix_qsize.
	FlexibleQueues  int
	FlexibleVectors int
	// MaxQueuesPerVF and MaxVectorsPerVF cap what one VF may be given.
	MaxQueuesPerVF  int
	MaxVectorsPerVF int
	// VFNamespaces lists the size in MiB of namespaces (512 B blocks) put
	// in the subsystem detached, with the NSIDs after the controller's own
	// namespaces, for Namespace Attachment to a VF.
	VFNamespaces []int
}

// BlockSize returns the logical block size of the i-th namespace (from 0).
func (c Controller) BlockSize(i int) int {
	if i < len(c.BlockSizes) && c.BlockSizes[i] != 0 {
		return c.BlockSizes[i]
	}
	return 512
}

// Topologies lists every named topology; this is the one place they are
// defined. Serial numbers are unique across all topologies so a test can
// tell which controller it is looking at.
var Topologies = map[string]Topology{
	"single": {
		Name:        "single",
		Description: "one NVMe controller (one 64 MiB namespace) on the root complex",
		Integrated:  []Controller{{Serial: "umd-single0", Namespaces: []int{64}}},
	},
	"cards": {
		Name: "cards",
		Description: "two PCIe switches with two NVMe controllers each, " +
			"plus one NVMe controller on a root port of its own; " +
			"namespaces of 512 B and 4 KiB blocks",
		Switches: []Switch{
			{Controllers: []Controller{
				{Serial: "umd-card1-a", Namespaces: []int{64}},
				{Serial: "umd-card1-b", Namespaces: []int{32, 32}, BlockSizes: []int{4096, 512}},
			}},
			{Controllers: []Controller{
				{Serial: "umd-card2-a", Namespaces: []int{128}},
				{Serial: "umd-card2-b", Namespaces: []int{16, 16, 16}, BlockSizes: []int{512, 4096, 512}},
			}},
		},
		RootPorts: []Controller{{Serial: "umd-solo0", Namespaces: []int{96}}},
	},
	"numa": {
		Name:        "numa",
		Description: "two NUMA nodes, each with a PCIe expander bridge holding two NVMe controllers",
		NUMANodes:   2,
		Expanders: []Expander{
			{NUMANode: 0, Controllers: []Controller{
				{Serial: "umd-numa0-a", Namespaces: []int{64}},
				{Serial: "umd-numa0-b", Namespaces: []int{32}},
			}},
			{NUMANode: 1, Controllers: []Controller{
				{Serial: "umd-numa1-a", Namespaces: []int{64}},
				{Serial: "umd-numa1-b", Namespaces: []int{48, 16}},
			}},
		},
	},
	"quirks": {
		Name: "quirks",
		Description: "NVMe controllers unlike the common case, each on a root port: a controller " +
			"memory buffer; a zoned namespace; namespaces formatted with metadata, in a separate " +
			"buffer and extended; one MSI-X vector; one I/O queue pair and 8 KiB transfers; a disk that " +
			"fails reads of LBA 1000 and writes of LBA 2000 (media errors)",
		RootPorts: []Controller{
			{Serial: "umd-quirk-cmb", Namespaces: []int{64}, Properties: "cmb_size_mb=16"},
			{Serial: "umd-quirk-zns", Namespaces: []int{64}, NamespaceProperties: []string{"zoned=true,zoned.zone_size=4M"}},
			{Serial: "umd-quirk-meta", Namespaces: []int{32, 32}, NamespaceProperties: []string{"ms=8,mset=0", "ms=8,mset=1"}},
			{Serial: "umd-quirk-1vec", Namespaces: []int{64}, Properties: "msix_qsize=1"},
			{Serial: "umd-quirk-small", Namespaces: []int{32}, Properties: "max_ioqpairs=1,mdts=1"},
			{Serial: "umd-quirk-media", Namespaces: []int{32}, Faults: []*DiskFaults{{ReadSector: 1000, WriteSector: 2000}}},
		},
	},
	"sriov": {
		Name: "sriov",
		Description: "one SR-IOV NVMe controller (2 VFs, a 64 MiB namespace of its own and two " +
			"detached 32 MiB ones for the VFs) on a root port with ACS, so each VF has its own IOMMU group",
		RootPorts: []Controller{{
			Serial: "umd-sriov0", Namespaces: []int{64},
			SRIOV: &SRIOV{
				MaxVFs: 2, FlexibleQueues: 6, FlexibleVectors: 4,
				MaxQueuesPerVF: 4, MaxVectorsPerVF: 2,
				VFNamespaces: []int{32, 32},
			},
		}},
	},
}

// TopologyNames returns the names of all topologies, sorted.
func TopologyNames() []string {
	var names []string
	for n := range Topologies {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LookupTopology returns the named topology or an error that lists the
// valid names.
func LookupTopology(name string) (Topology, error) {
	t, ok := Topologies[name]
	if !ok {
		return Topology{}, fmt.Errorf("unknown topology %q (known: %s)", name, strings.Join(TopologyNames(), ", "))
	}
	return t, nil
}

// Controllers returns every controller of the topology.
func (t Topology) Controllers() []Controller {
	var cs []Controller
	cs = append(cs, t.Integrated...)
	for _, s := range t.Switches {
		cs = append(cs, s.Controllers...)
	}
	cs = append(cs, t.RootPorts...)
	for _, e := range t.Expanders {
		cs = append(cs, e.Controllers...)
	}
	return cs
}

// A disk is a backing file QEMU needs for one namespace.
type disk struct {
	Path string
	MiB  int
}

// qemuArgs returns the QEMU arguments that build the topology's devices,
// with namespace backing files placed in dir, and the files to create.
// The memory size is split evenly across NUMA nodes.
func (t Topology) qemuArgs(dir string, memMiB, cpus int, aio string) ([]string, []disk) {
	var args []string
	var disks []disk
	add := func(a ...string) { args = append(args, a...) }

	if t.NUMANodes > 1 {
		per := memMiB / t.NUMANodes
		for n := 0; n < t.NUMANodes; n++ {
			add("-object", fmt.Sprintf("memory-backend-ram,id=mem%d,size=%dM", n, per))
			node := fmt.Sprintf("node,nodeid=%d,memdev=mem%d", n, n)
			if cpus >= t.NUMANodes {
				lo := n * cpus / t.NUMANodes
				hi := (n+1)*cpus/t.NUMANodes - 1
				node += fmt.Sprintf(",cpus=%d-%d", lo, hi)
			}
			add("-numa", node)
		}
	}

	// chassis numbers must be unique per PCIe port; slot 0 is fine then.
	chassis := 0
	port := func(kind, id, bus string) {
		chassis++
		add("-device", fmt.Sprintf("%s,id=%s,bus=%s,chassis=%d,slot=0", kind, id, bus, chassis))
	}
	nctrl := 0
	nvme := func(c Controller, bus string) {
		id := fmt.Sprintf("nvme%d", nctrl)
		nctrl++
		dev := fmt.Sprintf("nvme,id=%s,serial=%s", id, c.Serial)
		if bus != "" {
			dev += ",bus=" + bus
		}
		if c.Properties != "" {
			dev += "," + c.Properties
		}
		// Namespaces of an SR-IOV controller stay its own (shared=off):
		// the subsystem would otherwise attach them to every VF too.
		nsExtra := ""
		if v := c.SRIOV; v != nil {
			add("-device", fmt.Sprintf("nvme-subsys,id=%s-subsys,nqn=%s", id, c.Serial))
			dev += fmt.Sprintf(",subsys=%s-subsys,sriov_max_vfs=%d,sriov_vq_flexible=%d,sriov_vi_flexible=%d,sriov_max_vq_per_vf=%d,sriov_max_vi_per_vf=%d",
				id, v.MaxVFs, v.FlexibleQueues, v.FlexibleVectors, v.MaxQueuesPerVF, v.MaxVectorsPerVF)
			nsExtra = ",shared=off"
		}
		add("-device", dev)
		namespace := func(nsid, mib, bs int, extra string, faults *DiskFaults) {
			drive := fmt.Sprintf("%s-ns%d", id, nsid)
			p := filepath.Join(dir, drive+".img")
			disks = append(disks, disk{Path: p, MiB: mib})
			add("-drive", driveSpec(drive, p, aio, faults))
			add("-device", fmt.Sprintf("nvme-ns,drive=%s,bus=%s,nsid=%d,logical_block_size=%d,physical_block_size=%d%s", drive, id, nsid, bs, bs, extra))
		}
		for i, mib := range c.Namespaces {
			extra := nsExtra
			if i < len(c.NamespaceProperties) && c.NamespaceProperties[i] != "" {
				extra += "," + c.NamespaceProperties[i]
			}
			var faults *DiskFaults
			if i < len(c.Faults) {
				faults = c.Faults[i]
			}
			namespace(i+1, mib, c.BlockSize(i), extra, faults)
		}
		if c.SRIOV != nil {
			for i, mib := range c.SRIOV.VFNamespaces {
				namespace(len(c.Namespaces)+i+1, mib, 512, ",detached=on", nil)
			}
		}
	}

	for _, c := range t.Integrated {
		nvme(c, "pcie.0")
	}
	for i, s := range t.Switches {
		rp := fmt.Sprintf("sw%d-rp", i)
		up := fmt.Sprintf("sw%d-up", i)
		port("pcie-root-port", rp, "pcie.0")
		add("-device", fmt.Sprintf("x3130-upstream,id=%s,bus=%s", up, rp))
		for j, c := range s.Controllers {
			dn := fmt.Sprintf("sw%d-dn%d", i, j)
			port("xio3130-downstream", dn, up)
			nvme(c, dn)
		}
	}
	for i, c := range t.RootPorts {
		rp := "rp" + strconv.Itoa(i)
		port("pcie-root-port", rp, "pcie.0")
		nvme(c, rp)
	}
	for i, e := range t.Expanders {
		pxb := fmt.Sprintf("pxb%d", i)
		// Bus numbers of expanders must not overlap the main hierarchy
		// or each other: give each a window of 32 buses.
		add("-device", fmt.Sprintf("pxb-pcie,id=%s,bus=pcie.0,bus_nr=%d,numa_node=%d", pxb, 64+32*i, e.NUMANode))
		for j, c := range e.Controllers {
			rp := fmt.Sprintf("pxb%d-rp%d", i, j)
			port("pcie-root-port", rp, pxb)
			nvme(c, rp)
		}
	}
	return args, disks
}
