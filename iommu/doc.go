// Package iommu owns the DMA address space of a user-space driver: which
// IOVA each region of memory is mapped at, how many mappings are left, and
// the book of what is (and recently was) mapped where.
//
// # What it owns
//
//   - Mapper: one IOMMU address space as the kernel sees it (Map, Unmap,
//     its IOVA ranges, page sizes and mapping limit). VFIO implements it
//     over a VFIO type1 container; Identity implements it in memory for
//     tests, and resolves IOVAs back to the bytes mapped there. iommufd is
//     the next implementation.
//   - Allocator: hands out IOVA ranges inside the ranges the kernel
//     reports, aligned to the IOMMU page size or more, never at IOVA 0,
//     reusing freed ranges (coalesced) as late as it can.
//   - Ledger: every live mapping (IOVA range → Owner) and a bounded ring
//     of recently unmapped ones with timestamps, looked up by IOVA, so that
//     a DMA fault's address can be named.
//   - Space: ties them together. MapPool maps a whole pool of memory at
//     once and returns a Mapping, through which a byte offset or a
//     sub-slice translates to its IOVA in O(1), without a lock or an
//     allocation.
//
// # What it never does
//
// It never touches device registers, queues or NVMe, and never allocates
// the memory it maps (package hugepage does). It does not open VFIO
// objects: the caller opens the container, sets its groups and IOMMU type
// (package vfio) and hands the container to NewVFIO.
//
// # IOVA layout
//
// IOVAs come from the ranges the kernel reports (VFIO_IOMMU_GET_INFO). For
// a device behind QEMU's intel-iommu with its default 39-bit width those
// are [0x0-0xfedfffff 0xfef00000-0x7fffffffff]:
//
//	0x0     0x1000                      0xfee00000  0xfef00000             0x7fffffffff
//	├───────┼───────────────────────────┼───────────┼──────────────────────────────┤
//	│ never │ pools (one range each)    │ interrupt │ pools                        │
//	│       │ next-fit, upwards ──▶     │  window   │                              │
//	└───────┴───────────────────────────┴───────────┴──────────────────────────────┘
//	  first page: IOVA 0 is never        not in the ranges:
//	  handed out                         never mapped
//
// IOVAs are not process virtual addresses (those do not fit in 39 bits).
// The first IOMMU page is never allocated, so a zero IOVA in a command is
// always a bug. Each MapPool takes one range, aligned as asked (2 MiB for
// hugepage pools, so that the IOMMU can use large pages) and never across
// the interrupt window. The allocator searches next-fit, so a freed range
// is reused only after the rest of the space was used once, and a stale
// IOVA in a device faults instead of reaching a newer buffer.
//
// # The mapping limit
//
// VFIO type1 limits how many mappings a container holds, not how many
// bytes: dma_avail in VFIO_IOMMU_GET_INFO, set by the module parameter
// vfio_iommu_type1.dma_entry_limit (65535 by default). A Space counts its
// mappings against the dma_avail it saw when it was made (or the lower
// Options.MaxMappings) and fails with a *LimitError before the kernel
// would. When another user of the container took the last slots, the
// kernel's ENOSPC comes back as a *LimitError too (with Kernel set). Map
// few, large pools rather than many small buffers.
//
// # Lifetimes
//
// The memory handed to MapPool must be mapped by the process (mmap, a
// hugetlb memfd; never the Go heap) and stay mapped until its Mapping is
// unmapped; the device must be done with it by then. A Space does not own
// its Mapper: close the Space (which unmaps everything still mapped) before
// the container's groups. If the groups are closed first, the kernel has
// already dropped the mappings and Close just settles the books.
//
// # Concurrency
//
// Space.MapPool, Mapping.Unmap and Space.Close take the Space's mutex:
// they are control-path operations, during which the kernel pins or unpins
// memory. Mapping's accessors (Translate, IOVAOf, IOVA) take no lock and
// allocate nothing; they may run concurrently with anything, though
// translating through a mapping while it is being unmapped is the caller's
// bug. Ledger lookups take a read lock and may run concurrently with
// mapping and unmapping, as a fault handler needs. Allocator is not safe
// for concurrent use on its own.
//
// # Errors
//
// Errors say what was being done, in lower case, and wrap the cause with
// %w: "mapping 0x200000 bytes of "pool" (owner 1): IOVA space exhausted:
// ...". errors.Is finds the sentinels (ErrIOVAExhausted, ErrMappingLimit,
// ErrNotMapped, ...) and the kernel's errno; errors.As finds
// *ExhaustedError and *LimitError.
package iommu
