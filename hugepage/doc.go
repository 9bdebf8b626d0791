// Package hugepage provides DMA-able memory: pools of locked, pre-faulted
// hugepages, placed on a chosen NUMA node, carved into buffers, and
// shareable with another process through their file descriptor.
//
// # What it owns
//
//   - Pools (New). A pool is a file mapped MAP_SHARED: a hugetlb memfd
//     (2 MiB pages by default, 1 GiB when asked for and the kernel has
//     them), or a file on a mounted hugetlbfs, unlinked at once, when the
//     kernel cannot make hugetlb memfds. With Options.AllowFallback a
//     pool falls back to smaller pages, down to a plain memfd of 4 KiB
//     pages, and says so in Info().Fallback; it never does so silently.
//   - Residency. Every page is faulted in when the pool is made
//     (MADV_POPULATE_WRITE; before Linux 5.14, by the kernel copying a
//     byte of each page through a pipe) and locked (mlock), so a device
//     never DMAs to a page that is not there and the kernel never moves
//     one.
//   - NUMA placement (Options.NUMANode): mbind(2) before the first
//     touch, MPOL_BIND or MPOL_PREFERRED, then a check of where every
//     page landed (Info().NodePages).
//   - Carving (Pool.Alloc, Pool.Free): a buddy allocator over 512-byte
//     blocks, for buffers from 512 B to the pool's size with power-of-two
//     alignments up to the page size. It keeps its bookkeeping outside
//     the pool's memory, in arrays sized when the pool is made, so that
//     Alloc and Free never allocate on the Go heap, and it reports double
//     frees and foreign buffers as errors.
//   - Sharing: Pool.Fd / Pool.File hand the pool's descriptor out (for
//     SCM_RIGHTS or exec), and OpenPool maps one received from another
//     process. memfds are sealed against shrinking and growing so that a
//     peer cannot truncate the memory under the others.
//   - Errors that name the remedy: ErrNoHugepages (*HugepageError: how
//     many pages are missing, how many are free, the command that
//     reserves them) and ErrMemlock (*MemlockError: RLIMIT_MEMLOCK and
//     how to raise it).
//
// # What it never does
//
// IOMMU calls. A pool is host memory; making it visible to a device (and
// choosing IOVAs for it) is the iommu package's job, which maps whole
// pools and finds a buffer's device address as the pool's base plus
// Buffer.Offset. It does not log either: warnings are returned.
//
// # Lifetimes
//
// A Pool lives until Close, which unmaps and unlocks the memory and
// closes the descriptor; the pages go back to the kernel when the last
// process holding the file lets go. Buffers are views into the pool and
// must not be used after it is closed, nor while a device may still DMA
// to them (unmap them from the IOMMU first).
//
// All use of package unsafe is in files named *_unsafe.go.
package hugepage
