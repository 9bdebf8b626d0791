// Package mmio reads and writes device registers in memory-mapped I/O
// space, such as a PCI BAR mapped through VFIO.
//
// Go has no volatile. A plain load or store through a pointer may be
// cached in a register, merged with a neighbour, moved, or dropped by the
// compiler when it cannot see anyone else looking; for device registers
// each of those is a bug (a status bit polled forever from a stale copy, a
// doorbell that never rings). The sync/atomic functions do force every
// access, but on amd64 an atomic store is an XCHG, a locked instruction:
// on real hardware a bus lock against uncached memory, and under QEMU's
// TCG a stop-the-world that costs about 1 µs against about 0.1 µs for a
// plain store (measured on these machines' guests on NVMe BAR0 before umd
// existed; the figures are in the project's shared ARCHITECTURE.md).
//
// So on amd64 each access is one MOV of the register's width in a tiny
// assembly function. Go never inlines assembly, so every call performs
// exactly one access of exactly that width, in program order with the
// caller's other memory accesses (a call is a compiler barrier). x86
// keeps stores in order across memory types (except write-combining and
// non-temporal stores, which umd does not use for queues), so a doorbell
// written after a submission entry reaches the device after the entry: no
// fence is needed. On other architectures the package falls back to
// sync/atomic, whose release/acquire semantics give the same ordering.
//
// Accessors check bounds like slice indexing does; a caller that computes
// offsets from device-reported values (a doorbell stride, say) validates
// them once with Region.Check before the hot path.
package mmio
