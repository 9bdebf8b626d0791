/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * umd_dmabuf: export a range of a sealed memfd as a dma-buf.
 *
 * Userspace ABI of /dev/umd-dmabuf. The Go package
 * github.com/umdkit/umd/dmabuf mirrors it; its tests compare the layout
 * and the ioctl number with this header.
 */
#ifndef _UAPI_UMD_DMABUF_H
#define _UAPI_UMD_DMABUF_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* The dma-buf descriptor is close-on-exec. */
#define UMD_DMABUF_FLAG_CLOEXEC	0x1
/*
 * The dma-buf is writable (O_RDWR): mmap with PROT_WRITE, DMA from
 * devices. Needs a memfd opened for writing and not sealed against it.
 */
#define UMD_DMABUF_FLAG_RDWR	0x2
#define UMD_DMABUF_FLAGS_ALL \
	(UMD_DMABUF_FLAG_CLOEXEC | UMD_DMABUF_FLAG_RDWR)

/**
 * struct umd_dmabuf_export - argument of UMD_DMABUF_IOCTL_EXPORT
 * @memfd:	in: a memfd (shmem or hugetlb) sealed with F_SEAL_SHRINK
 * @flags:	in: UMD_DMABUF_FLAG_*
 * @offset:	in: first byte of the range, a multiple of the page size
 * @size:	in: bytes, a non-zero multiple of the page size
 * @fd:		out: the new dma-buf descriptor
 * @reserved:	must be zero
 */
struct umd_dmabuf_export {
	__s32 memfd;
	__u32 flags;
	__u64 offset;
	__u64 size;
	__s32 fd;
	__u32 reserved;
};

#define UMD_DMABUF_IOCTL_EXPORT \
	_IOWR('u', 0x40, struct umd_dmabuf_export)

/*
 * umd_dmabuf_inspect.flags: map the dma-buf for device writes too
 * (DMA_BIDIRECTIONAL). Without it the importer maps it for device reads
 * only (DMA_TO_DEVICE), which read-only dma-bufs also allow.
 */
#define UMD_DMABUF_INSPECT_FLAG_WRITE	0x1
/* Set in umd_dmabuf_inspect.exporter when this module made the dma-buf. */
#define UMD_DMABUF_INSPECT_OWN		0x1

/**
 * struct umd_dmabuf_inspect - argument of UMD_DMABUF_IOCTL_INSPECT
 * @fd:		in: any dma-buf descriptor
 * @flags:	in: UMD_DMABUF_INSPECT_FLAG_*
 * @pfns:	in: user address of an array of __u64, or 0
 * @max_pfns:	in: entries of @pfns
 * @size:	out: the dma-buf's size in bytes
 * @nr_pfns:	out: pages the sg_table covers; the page frame number of
 *		each, in order, is stored in @pfns (the first @max_pfns)
 * @sg_bytes:	out: total length of the sg_table's CPU entries
 * @dma_bytes:	out: total length of its DMA-mapped segments
 * @checksum:	out: 64-bit FNV-1a of the contents, read through vmap
 * @sg_nents:	out: CPU entries of the sg_table (orig_nents)
 * @dma_nents:	out: DMA-mapped segments (nents)
 * @exporter:	out: UMD_DMABUF_INSPECT_OWN or 0
 * @attached:	out: own dma-bufs: attachments the exporter listed while
 *		the importer was attached and mapped
 * @mapped:	out: own dma-bufs: of those, how many had an sg_table
 * @reserved:	must be zero
 */
struct umd_dmabuf_inspect {
	__s32 fd;
	__u32 flags;
	__u64 pfns;
	__u64 max_pfns;
	__u64 size;
	__u64 nr_pfns;
	__u64 sg_bytes;
	__u64 dma_bytes;
	__u64 checksum;
	__u32 sg_nents;
	__u32 dma_nents;
	__u32 exporter;
	__u32 attached;
	__u32 mapped;
	__u32 reserved;
};

/*
 * A diagnostic for root (CAP_SYS_ADMIN: it reveals physical addresses):
 * the module imports the dma-buf the way a device driver would (attach
 * with its own device, map the attachment, begin CPU access, vmap) and
 * reports what it saw, then undoes it all.
 */
#define UMD_DMABUF_IOCTL_INSPECT \
	_IOWR('u', 0x41, struct umd_dmabuf_inspect)

#endif /* _UAPI_UMD_DMABUF_H */
