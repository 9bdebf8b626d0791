// Command umdprobe shows the PCI functions of a machine the way people
// who run multi-card systems think about them: by card, switch, NUMA node
// and IOMMU group, not as a flat list of addresses.
//
//	umdprobe [list] [SELECTOR...]   one line per function
//	umdprobe tree [SELECTOR...]     the topology, with cards (also -t)
//	umdprobe show SELECTOR...       everything known about some functions
//	umdprobe snapshot               the PCI part of sysfs as text
//	umdprobe bind SELECTOR...       hand functions to vfio-pci (--driver, --dry-run)
//	umdprobe unbind SELECTOR...     give them back to the driver they had
//	umdprobe doctor [SELECTOR...]   is this machine ready for umd?
//	umdprobe identify [SELECTOR...] Identify Controller and namespaces of NVMe on vfio-pci
//	umdprobe trace [SELECTOR...]    IOMMU faults and map/unmap events, live (--duration)
//	umdprobe claim                  in a pod: open a DRA claim's reservations at umdd (--verify)
//
// Flags may come before or after the command and selectors. Run
// `umdprobe --help` for the flags, the selector syntax and examples.
//
// # Exit status
//
//	0  success
//	1  sysfs could not be read (or output could not be written)
//	2  usage error: unknown command or flag, malformed selector
//	3  the selectors matched no function
//	4  bind or unbind refused (not root, IOMMU off, IOMMU group not
//	   viable, device in use, not an endpoint): nothing was changed
//	5  doctor: at least one check failed
//	6  trace: this kernel or process cannot trace DMA faults (the
//	   message says what each probe lacks)
//
// identify exits with 1 when a selected function could not be
// identified (bound to another driver, not NVMe, or Open failed), after
// showing the others; each failure is one line on stderr. claim exits
// with 1 when a device of the claim could not be opened or verified,
// after showing the others (each failure is a line of its output).
//
// A bind that fails part way (the driver's probe fails, a module cannot
// be loaded) exits with 1 after putting the function back where it was.
//
// # JSON output
//
// With -o json every command writes one JSON object whose "schema" member
// names its shape and version; a version changes only when a member is
// removed or changes meaning (new members may appear at any time).
//
//	umd.pcie.functions/v1 (list, show):
//	  {"schema", "sysfs_root", "ids_source", "functions": [FUNCTION...]}
//	umd.pcie.topology/v1 (tree):
//	  {"schema", "sysfs_root", "host_bridges": [NODE...], "cards": [CARD...]}
//	umd.pcie.bind/v1 (bind, unbind):
//	  {"schema", "plan": PLAN, "error", "refused"}
//	umd.pcie.doctor/v1 (doctor):
//	  {"schema", "failed", "summary", "checks": [CHECK...]}
//	umd.nvme.identify/v1 (identify):
//	  {"schema", "controllers": [CONTROLLER...], "errors": [{"bdf", "error"}...]}
//	umd.claim/v1 (claim):
//	  {"schema", "claim", "mode", "socket", "devices": [{"bdf", "var",
//	  "mode", "queues", "depth", "polled", "pool_bytes", "pool_iova",
//	  "namespaces", "verified_blocks", "error"}...]}
//	umd.dmatrace.event/v1 (trace): one object per line, per event:
//	  {"schema", "time", "kind": "fault"|"map"|"unmap", "iova", ...}
//
// CONTROLLER is {"bdf", "vendor_id", "subsystem_vendor_id", "serial",
// "model", "firmware", "version", "controller_id", "mdts",
// "max_transfer" (bytes, 0: no limit), "engine_max_transfer",
// "max_queue_entries", "nn", "oacs", "oacs_features" (words), "oncs",
// "oncs_features", "shadow_doorbells", "volatile_write_cache", "subnqn",
// "pool_page_size", "pool_fallback" (why the DMA pool has small pages,
// when it has), "namespaces": [{"nsid", "blocks", "capacity_blocks",
// "bytes", "lba_size", "format", "formats": [{"index", "lba_size",
// "metadata", "relative_performance", "in_use"}], "csi", "command_set"
// ("NVM", "zoned (ZNS)", ...), "error"}]}.
//
// A trace fault adds "source", "bdf", "direction" ("read"|"write"),
// "reason", "reason_text", "irq_remap", "pasid" (when present), "owned"
// (false: umdprobe drives no device, so it has no ledger to attribute
// to) and "attribution" (words); map adds "pid", "size", "paddr"; unmap
// adds "pid", "size", "unmapped". IOVAs, sizes and addresses are
// strings, "0x4000000000": a JSON number cannot hold every 64-bit value.
//
// FUNCTION is pcie.Function, NODE is pcie.Node ({"name", "role", "card",
// "children"}), CARD is pcie.Card, PLAN is pcie.Plan ({"op", "driver",
// "dry_run", "setup", "functions": [{"bdf", "driver", "driver_override",
// "target", "record", "nothing_to_do", "steps"}]}) and CHECK is
// pcie.Check ({"id", "subject", "status": "pass"|"warn"|"fail", "detail",
// "remedy"}), with the member names of their struct tags. IDs are strings of four hex digits ("1b36"), class codes
// "0x010802", PCI addresses "0000:03:00.0", link speeds "8.0 GT/s"; a
// missing IOMMU group or NUMA node is -1. list writes the same functions
// as its table shows; show and list write the same members.
package main
