// Package dmabuf shares hugepage pool memory with other processes and
// devices as dma-bufs, without copying it.
//
// # What it owns
//
//   - Exporters: the umd_dmabuf kernel module's /dev/umd-dmabuf
//     (OpenExporter, built from kmod/umd_dmabuf, on every kernel umd
//     supports) and the kernel's own /dev/udmabuf (OpenUdmabuf, on
//     kernels built with CONFIG_UDMABUF, such as Debian's 6.12 but not its
//     6.1), behind one type, so the two can be compared. Both turn a
//     page-aligned range of a memfd sealed with F_SEAL_SHRINK into a
//     dma-buf whose pages the kernel pins until the dma-buf's last
//     reference goes.
//   - Buffers: owned dma-buf descriptors (Close safe twice), with
//     DMA_BUF_IOCTL_SYNC around CPU access (Sync) and sync_file export
//     (ExportSyncFile, Linux 6.0).
//   - Regions: buffers of a hugepage pool that cannot be freed while
//     exported (Region.Free returns ErrExported), so a pool's allocator
//     never hands memory a peer still uses to another owner.
//   - Importing: Import maps a dma-buf received from elsewhere.
//   - Inspect: a diagnostic that runs the umd_dmabuf module's kernel
//     importer on any dma-buf (attach, map, begin/end CPU access, vmap, as
//     a device driver would) and reports its scatter-gather table, page
//     frames and a checksum of the contents.
//   - Passing descriptors between processes: SendFds and ReceiveFds
//     (SCM_RIGHTS over a unix socket).
//   - The kernel ABI of <linux/dma-buf.h>, <linux/udmabuf.h> and
//     kmod/umd_dmabuf/umd_dmabuf.h (abi.go), checked against the C
//     headers by its tests.
//
// # What it never does
//
// Map anything into an IOMMU (the iommu package does that for the pool as
// a whole), attach dma-bufs to devices (importing drivers do), log, or
// panic. Errors wrap the sentinels of errors.go and the kernel's errno.
//
// # Lifetimes
//
// The kernel pins an exported range when it makes the dma-buf and unpins
// it when the last reference goes: every descriptor closed (in every
// process it was sent to), every mapping unmapped, every device detached.
// Closing the pool, or the memfd, before that is safe: the pages stay.
// Reusing the memory is not: export Regions, whose Free waits for their
// Buffers to be closed. docs/zero-copy.md has the whole model.
package dmabuf
