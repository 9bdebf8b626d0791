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

#endif /* _UAPI_UMD_DMABUF_H */
