// Package pcie discovers the PCI functions of a Linux machine from sysfs and
// puts them in order: what each function is, where it sits in the PCIe
// hierarchy, which "card" it belongs to, and which IOMMU group it shares.
//
// Discovery is read-only and needs no privileges, with one exception:
// the kernel shows unprivileged readers only the first 64 bytes of a
// function's config space, so capabilities (PCIe port type, MSI-X, AER,
// ACS, SR-IOV, ...) are only known when the caller may read all of it
// (usually root). Functions report how much config space they saw.
//
// The entry point is [Scan], which reads a sysfs tree (the real /sys, or a
// test tree given by [Options].SysfsRoot) and returns a [System]: every
// [Function], the topology as a tree of [Node]s under host bridges, and the
// [Card]s. [ParseSelector] turns the selector syntax shared by every umd
// command ("0000:03:00.0", "1b36:0010", "class=nvme", "card=...") into a
// [Selector] that picks functions out of a System. [ParseConfig] decodes a
// config-space image on its own; it accepts any bytes without panicking.
// [WriteSnapshot] saves the part of sysfs that Scan reads as text, and
// [RestoreSnapshot] rebuilds a tree from it, for bug reports and test
// fixtures (testdata/snapshots holds trees captured in the QEMU guests).
// Package pcietest builds fake sysfs trees for tests.
//
// The package builds on github.com/u-root/u-root/pkg/pci for its compiled-in
// copy of the pci.ids vendor and device names and for parsing lines of the
// sysfs resource file; function.go says why the rest of that package is
// not used, and BuiltinIDs what its names lack.
//
// [Bind] hands functions to vfio-pci (or another driver) through
// driver_override, unbind and drivers_probe, after refusing, with nothing
// changed, when that would be harmful or useless (the caller is not root,
// the IOMMU is off, the IOMMU group is not viable, a namespace is mounted
// or open); it remembers each function's previous driver in a state file
// so that [Unbind] can restore it from any process. With
// [BindOptions].DryRun both only plan. [Preflight] is `umdprobe doctor`:
// the IOMMU, VFIO modules and device files, the functions' binding and
// groups, hugepages, RLIMIT_MEMLOCK and privileges, each finding with its
// remedy. Binding is the only thing in this package that writes.
//
// This package never maps BARs or sets up DMA (that is vfio/ and iommu/).
package pcie
