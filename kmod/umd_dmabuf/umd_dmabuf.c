// SPDX-License-Identifier: GPL-2.0
/*
 * umd_dmabuf - export a range of a sealed memfd as a dma-buf
 *
 * /dev/umd-dmabuf takes a memfd (shmem or hugetlb), an offset and a size,
 * and returns a dma-buf backed by exactly those pages, so that memory a
 * user-space driver owns can be shared with other processes and devices
 * without a copy.
 *
 * Pinning. The pages are held for the whole life of the dma-buf and let
 * go in its release:
 *  - Linux 6.11 and newer: memfd_pin_folios() pins them (FOLL_PIN, with
 *    the long-term semantics: pages in ZONE_MOVABLE or CMA are migrated
 *    first), for shmem and hugetlb memfds alike, allocating any page not
 *    yet there; unpin_folios() lets them go. (What differs between
 *    kernels is found in their headers by Kbuild, which defines the
 *    UMD_HAVE_* macros; no version numbers are compared.)
 *  - Older kernels (Debian's 6.1) export no such call. A shmem page is
 *    looked up (or allocated) with shmem_read_mapping_page(), a hugetlb
 *    folio with filemap_get_folio() on the memfd's mapping; both return
 *    the folio with a reference, which keeps it allocated and, being an
 *    unexpected reference, makes migration and reclaim leave it alone.
 *    folio_put() lets it go. Hugetlb pages are not allocated on this
 *    path: a hugetlb memfd must be populated before it is exported (umd's
 *    hugepage pools always are), and a hole is refused with -EFAULT.
 *
 * Sealing. The memfd must carry F_SEAL_SHRINK, so the range can never
 * fall off the end of the file. memfd_fcntl() is not exported to modules
 * on either kernel, so the seals are read where memfd_fcntl() reads them:
 * shmem_inode_info.seals or hugetlbfs_inode_info.seals, both in public
 * headers on 6.1 and 6.12. Seals only ever grow, so the check cannot be
 * undone after it passed. Only memfds can hold F_SEAL_SHRINK (every
 * other shmem or hugetlbfs inode starts with F_SEAL_SEAL), so the check
 * also refuses tmpfs and hugetlbfs files that are not memfds.
 *
 * Importer self-test. UMD_DMABUF_IOCTL_INSPECT imports any dma-buf as a
 * device driver would, with the misc device as the device, so that the
 * exporter callbacks only drivers reach (attach, map, CPU access, vmap)
 * are exercised in tests; see umd_ioctl_inspect().
 */

#ifndef UMD_HAVE_IOSYS_MAP
/*
 * Older kernels (Debian's 5.10, say) differ in more than this header: no
 * folios, vmap without a map structure, no _unlocked dma-buf calls. umd
 * itself runs on them; this module does not.
 */
#error "umd_dmabuf needs Linux 6.1 or newer (the oldest kernel it is built and tested on); these headers lack linux/iosys-map.h (5.18)"
#endif

#include <linux/atomic.h>
#include <linux/capability.h>
#include <linux/dma-buf.h>
#include <linux/dma-mapping.h>
#include <linux/fcntl.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/hugetlb.h>
#include <linux/iosys-map.h>
#include <linux/magic.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/pagemap.h>
#ifdef UMD_HAVE_PFN_T
#include <linux/pfn_t.h>
#endif
#include <linux/scatterlist.h>
#include <linux/shmem_fs.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "umd_dmabuf.h"

static unsigned long max_bytes = 1UL << 30;
module_param(max_bytes, ulong, 0644);
MODULE_PARM_DESC(max_bytes, "Largest export in bytes (default 1 GiB)");

static unsigned int max_exports = 4096;
module_param(max_exports, uint, 0644);
MODULE_PARM_DESC(max_exports, "Most dma-bufs alive at once (default 4096)");

static atomic_long_t live_exports = ATOMIC_LONG_INIT(0);
static atomic_long_t pinned_pages = ATOMIC_LONG_INIT(0);
static atomic_long_t live_attachments = ATOMIC_LONG_INIT(0);
static atomic_long_t live_vmaps = ATOMIC_LONG_INIT(0);

static int counter_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%ld\n", atomic_long_read(kp->arg));
}

static const struct kernel_param_ops counter_ops = {
	.get = counter_get,
};

module_param_cb(live_exports, &counter_ops, &live_exports, 0444);
MODULE_PARM_DESC(live_exports, "dma-bufs alive now (read-only)");
module_param_cb(pinned_pages, &counter_ops, &pinned_pages, 0444);
MODULE_PARM_DESC(pinned_pages, "Pages held by live dma-bufs (read-only)");
module_param_cb(live_attachments, &counter_ops, &live_attachments, 0444);
MODULE_PARM_DESC(live_attachments,
		 "Device attachments to our dma-bufs now (read-only)");
module_param_cb(live_vmaps, &counter_ops, &live_vmaps, 0444);
MODULE_PARM_DESC(live_vmaps, "Kernel mappings of our dma-bufs now (read-only)");

struct umd_buf {
	struct file *memfd;	/* held for the dma-buf's life */
	struct page **pages;	/* one per PAGE_SIZE page of the range */
	pgoff_t nr_pages;
	struct folio **folios;	/* the folio pins (or references) held */
	unsigned long nr_folios;
	bool writable;		/* exported with UMD_DMABUF_FLAG_RDWR */
	struct mutex lock;	/* guards attachments */
	struct list_head attachments;
};

struct umd_attachment {
	struct list_head node;
	struct device *dev;
	struct sg_table *sgt;	/* while mapped */
	enum dma_data_direction dir;
};

static void umd_buf_unpin(struct umd_buf *buf)
{
#ifdef UMD_HAVE_MEMFD_PIN_FOLIOS
	unpin_folios(buf->folios, buf->nr_folios);
#else
	unsigned long i;

	for (i = 0; i < buf->nr_folios; i++)
		folio_put(buf->folios[i]);
#endif
	buf->nr_folios = 0;
}

#ifdef UMD_HAVE_MEMFD_PIN_FOLIOS

/* At most this many pages are pinned per call, to bound its allocation. */
#define UMD_PIN_CHUNK	1024UL

static int umd_buf_pin(struct umd_buf *buf, loff_t start)
{
	pgoff_t done = 0;

	while (done < buf->nr_pages) {
		pgoff_t n = min(buf->nr_pages - done, UMD_PIN_CHUNK);
		loff_t first = start + ((loff_t)done << PAGE_SHIFT);
		loff_t last = first + ((loff_t)n << PAGE_SHIFT) - 1;
		struct folio **folios = buf->folios + buf->nr_folios;
		pgoff_t off, i;
		long got, f;

		got = memfd_pin_folios(buf->memfd, first, last, folios, n,
				       &off);
		if (got < 0)
			return got;
		if (got == 0)
			return -EFAULT;
		buf->nr_folios += got;
		/* off is the byte offset of first in folios[0]. */
		off >>= PAGE_SHIFT;
		for (i = 0, f = 0; i < n; i++) {
			if (f >= got)
				return -EFAULT;
			buf->pages[done + i] = folio_page(folios[f], off);
			if (++off == folio_nr_pages(folios[f])) {
				off = 0;
				f++;
			}
		}
		done += n;
	}
	return 0;
}

#else /* before 6.11: no memfd_pin_folios */

static int umd_buf_pin_hugetlb(struct umd_buf *buf, loff_t start)
{
	struct hstate *h = hstate_file(buf->memfd);
	struct address_space *mapping = buf->memfd->f_mapping;
	unsigned int shift = huge_page_shift(h);
	pgoff_t done = 0;

	while (done < buf->nr_pages) {
		loff_t pos = start + ((loff_t)done << PAGE_SHIFT);
		struct folio *folio;
		pgoff_t sub, n;

		/* The 6.1 hugetlb page cache is indexed in huge pages. */
		folio = filemap_get_folio(mapping, pos >> shift);
		/* A hole: the memfd must be populated first. */
		if (IS_ERR_OR_NULL(folio))
			return -EFAULT;
		buf->folios[buf->nr_folios++] = folio;
		sub = (pos & (huge_page_size(h) - 1)) >> PAGE_SHIFT;
		n = min(buf->nr_pages - done, folio_nr_pages(folio) - sub);
		while (n--)
			buf->pages[done++] = folio_page(folio, sub++);
	}
	return 0;
}

static int umd_buf_pin(struct umd_buf *buf, loff_t start)
{
	struct address_space *mapping = buf->memfd->f_mapping;
	pgoff_t first = start >> PAGE_SHIFT;
	pgoff_t i;

	if (file_inode(buf->memfd)->i_sb->s_magic == HUGETLBFS_MAGIC)
		return umd_buf_pin_hugetlb(buf, start);
	for (i = 0; i < buf->nr_pages; i++) {
		struct page *page = shmem_read_mapping_page(mapping, first + i);

		if (IS_ERR(page))
			return PTR_ERR(page);
		buf->folios[buf->nr_folios++] = page_folio(page);
		buf->pages[i] = page;
	}
	return 0;
}

#endif

/*
 * umd_memfd_seals - the seals of a shmem or hugetlb memfd, or -EBADFD for
 * any other file. The file system is told by its magic number:
 * is_file_hugepages() and shmem_file() need symbols 6.1 does not export
 * (hugetlbfs_file_operations, shmem_mapping).
 */
static int umd_memfd_seals(struct file *file)
{
	struct inode *inode = file_inode(file);

	if (!S_ISREG(inode->i_mode))
		return -EBADFD;
	switch (inode->i_sb->s_magic) {
	case TMPFS_MAGIC:
		return READ_ONCE(SHMEM_I(inode)->seals);
	case HUGETLBFS_MAGIC:
		return READ_ONCE(HUGETLBFS_I(inode)->seals);
	}
	return -EBADFD;
}

static int umd_attach(struct dma_buf *dmabuf, struct dma_buf_attachment *attach)
{
	struct umd_buf *buf = dmabuf->priv;
	struct umd_attachment *a;

	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	a->dev = attach->dev;
	a->dir = DMA_NONE;
	attach->priv = a;
	mutex_lock(&buf->lock);
	list_add(&a->node, &buf->attachments);
	mutex_unlock(&buf->lock);
	atomic_long_inc(&live_attachments);
	return 0;
}

static void umd_detach(struct dma_buf *dmabuf,
		       struct dma_buf_attachment *attach)
{
	struct umd_buf *buf = dmabuf->priv;
	struct umd_attachment *a = attach->priv;

	mutex_lock(&buf->lock);
	list_del(&a->node);
	mutex_unlock(&buf->lock);
	kfree(a);
	atomic_long_dec(&live_attachments);
}

static struct sg_table *umd_map(struct dma_buf_attachment *attach,
				enum dma_data_direction dir)
{
	struct umd_buf *buf = attach->dmabuf->priv;
	struct umd_attachment *a = attach->priv;
	struct sg_table *sgt;
	unsigned long size;
	int ret;

	/* Devices may read a read-only dma-buf, never write it. */
	if (dir != DMA_TO_DEVICE && !buf->writable)
		return ERR_PTR(-EACCES);
	sgt = kzalloc(sizeof(*sgt), GFP_KERNEL);
	if (!sgt)
		return ERR_PTR(-ENOMEM);
	size = (unsigned long)buf->nr_pages << PAGE_SHIFT;
	ret = sg_alloc_table_from_pages(sgt, buf->pages, buf->nr_pages, 0, size,
					GFP_KERNEL);
	if (ret)
		goto err_free;
	ret = dma_map_sgtable(attach->dev, sgt, dir, 0);
	if (ret)
		goto err_table;
	mutex_lock(&buf->lock);
	if (a->sgt) {
		mutex_unlock(&buf->lock);
		ret = -EBUSY;
		goto err_unmap;
	}
	a->sgt = sgt;
	a->dir = dir;
	mutex_unlock(&buf->lock);
	return sgt;

err_unmap:
	dma_unmap_sgtable(attach->dev, sgt, dir, 0);
err_table:
	sg_free_table(sgt);
err_free:
	kfree(sgt);
	return ERR_PTR(ret);
}

static void umd_unmap(struct dma_buf_attachment *attach, struct sg_table *sgt,
		      enum dma_data_direction dir)
{
	struct umd_buf *buf = attach->dmabuf->priv;
	struct umd_attachment *a = attach->priv;

	mutex_lock(&buf->lock);
	if (a->sgt == sgt) {
		a->sgt = NULL;
		a->dir = DMA_NONE;
	}
	mutex_unlock(&buf->lock);
	dma_unmap_sgtable(attach->dev, sgt, dir, 0);
	sg_free_table(sgt);
	kfree(sgt);
}

static int umd_begin_cpu_access(struct dma_buf *dmabuf,
				enum dma_data_direction dir)
{
	struct umd_buf *buf = dmabuf->priv;
	struct umd_attachment *a;

	mutex_lock(&buf->lock);
	list_for_each_entry(a, &buf->attachments, node)
		if (a->sgt)
			dma_sync_sgtable_for_cpu(a->dev, a->sgt, a->dir);
	mutex_unlock(&buf->lock);
	return 0;
}

static int umd_end_cpu_access(struct dma_buf *dmabuf,
			      enum dma_data_direction dir)
{
	struct umd_buf *buf = dmabuf->priv;
	struct umd_attachment *a;

	mutex_lock(&buf->lock);
	list_for_each_entry(a, &buf->attachments, node)
		if (a->sgt)
			dma_sync_sgtable_for_device(a->dev, a->sgt, a->dir);
	mutex_unlock(&buf->lock);
	return 0;
}

/*
 * Mapping to user space. The pinned pages are inserted by PFN in a
 * VM_MIXEDMAP mapping (special PTEs: no refcount or rmap of their own), at
 * mmap time and again on fault. Not vm_insert_page(): hugetlb folios
 * cannot be mapped by PTE through the page's rmap. Not VM_PFNMAP either:
 * /proc/PID/pagemap skips VM_PFNMAP mappings, and the tests prove zero
 * copy with it. The mapping holds the dma-buf's file, so the pins outlive
 * it.
 */
/*
 * umd_insert_page - map the page at pfn at addr of vma. vmf_insert_mixed()
 * took a pfn_t until Linux 6.17 removed the type; it takes the pfn itself
 * since.
 */
static vm_fault_t umd_insert_page(struct vm_area_struct *vma, unsigned long addr, unsigned long pfn)
{
#ifdef UMD_HAVE_PFN_T
	return vmf_insert_mixed(vma, addr, __pfn_to_pfn_t(pfn, 0));
#else
	return vmf_insert_mixed(vma, addr, pfn);
#endif
}

static vm_fault_t umd_vm_fault(struct vm_fault *vmf)
{
	struct umd_buf *buf = vmf->vma->vm_private_data;
	unsigned long pfn;

	if (vmf->pgoff >= buf->nr_pages)
		return VM_FAULT_SIGBUS;
	pfn = page_to_pfn(buf->pages[vmf->pgoff]);
	return umd_insert_page(vmf->vma, vmf->address, pfn);
}

static const struct vm_operations_struct umd_vm_ops = {
	.fault = umd_vm_fault,
};

/*
 * umd_prefault - map every page now, as remap_pfn_range() would: one trap
 * per page on first touch costs more than the insertion (tens of
 * microseconds each under emulation). The fault handler stays for pages
 * zapped later (madvise(MADV_DONTNEED), say).
 */
static int umd_prefault(struct vm_area_struct *vma, struct umd_buf *buf)
{
	unsigned long addr;
	pgoff_t i = vma->vm_pgoff;

	for (addr = vma->vm_start; addr < vma->vm_end; addr += PAGE_SIZE, i++) {
		unsigned long pfn = page_to_pfn(buf->pages[i]);
		vm_fault_t ret;

		ret = umd_insert_page(vma, addr, pfn);
		if (ret & VM_FAULT_ERROR)
			return ret & VM_FAULT_OOM ? -ENOMEM : -EFAULT;
		cond_resched();
	}
	return 0;
}

static int umd_mmap(struct dma_buf *dmabuf, struct vm_area_struct *vma)
{
	struct umd_buf *buf = dmabuf->priv;
	pgoff_t end;

	/* A shared mapping of a read-only file has no VM_SHARED. */
	if (!(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;
	if (check_add_overflow(vma->vm_pgoff, vma_pages(vma), &end) ||
	    end > buf->nr_pages)
		return -EINVAL;
#ifdef UMD_HAVE_VM_FLAGS_SET
	vm_flags_set(vma, VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP);
#else
	vma->vm_flags |= VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP;
#endif
	vma->vm_ops = &umd_vm_ops;
	vma->vm_private_data = buf;
	return umd_prefault(vma, buf);
}

static int umd_vmap(struct dma_buf *dmabuf, struct iosys_map *map)
{
	struct umd_buf *buf = dmabuf->priv;
	void *vaddr;

	if (buf->nr_pages > UINT_MAX)
		return -E2BIG;
	vaddr = vm_map_ram(buf->pages, buf->nr_pages, NUMA_NO_NODE);
	if (!vaddr)
		return -ENOMEM;
	iosys_map_set_vaddr(map, vaddr);
	atomic_long_inc(&live_vmaps);
	return 0;
}

static void umd_vunmap(struct dma_buf *dmabuf, struct iosys_map *map)
{
	struct umd_buf *buf = dmabuf->priv;

	vm_unmap_ram(map->vaddr, buf->nr_pages);
	atomic_long_dec(&live_vmaps);
}

static void umd_buf_free(struct umd_buf *buf)
{
	umd_buf_unpin(buf);
	kvfree(buf->folios);
	kvfree(buf->pages);
	if (buf->memfd)
		fput(buf->memfd);
	mutex_destroy(&buf->lock);
	kfree(buf);
}

static void umd_release(struct dma_buf *dmabuf)
{
	struct umd_buf *buf = dmabuf->priv;

	atomic_long_sub(buf->nr_pages, &pinned_pages);
	umd_buf_free(buf);
	atomic_long_dec(&live_exports);
}

static const struct dma_buf_ops umd_dmabuf_ops = {
	.attach = umd_attach,
	.detach = umd_detach,
	.map_dma_buf = umd_map,
	.unmap_dma_buf = umd_unmap,
	.release = umd_release,
	.begin_cpu_access = umd_begin_cpu_access,
	.end_cpu_access = umd_end_cpu_access,
	.mmap = umd_mmap,
	.vmap = umd_vmap,
	.vunmap = umd_vunmap,
};

/* umd_check_memfd - may file's range [offset, end) be exported as asked? */
static int umd_check_memfd(struct file *file, u64 end, u32 flags)
{
	int seals = umd_memfd_seals(file);

	if (seals < 0)
		return seals;
	if (!(seals & F_SEAL_SHRINK))
		return -EPERM;
	if (end > i_size_read(file_inode(file)))
		return -ERANGE;
	if (flags & UMD_DMABUF_FLAG_RDWR) {
		if (!(file->f_mode & FMODE_WRITE))
			return -EACCES;
		if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
			return -EACCES;
	}
	return 0;
}

static struct dma_buf *umd_export(const struct umd_dmabuf_export *arg)
{
	DEFINE_DMA_BUF_EXPORT_INFO(info);
	struct dma_buf *dmabuf;
	struct umd_buf *buf;
	u64 end;
	int ret;

	if (check_add_overflow(arg->offset, arg->size, &end) ||
	    end > MAX_LFS_FILESIZE)
		return ERR_PTR(-EOVERFLOW);
	if (arg->size > READ_ONCE(max_bytes))
		return ERR_PTR(-E2BIG);

	buf = kzalloc(sizeof(*buf), GFP_KERNEL_ACCOUNT);
	if (!buf)
		return ERR_PTR(-ENOMEM);
	mutex_init(&buf->lock);
	INIT_LIST_HEAD(&buf->attachments);
	buf->memfd = fget(arg->memfd);
	if (!buf->memfd) {
		ret = -EBADF;
		goto err;
	}
	ret = umd_check_memfd(buf->memfd, end, arg->flags);
	if (ret)
		goto err;

	buf->writable = arg->flags & UMD_DMABUF_FLAG_RDWR;
	buf->nr_pages = arg->size >> PAGE_SHIFT;
	buf->pages = kvmalloc_array(buf->nr_pages, sizeof(*buf->pages),
				    GFP_KERNEL_ACCOUNT);
	buf->folios = kvmalloc_array(buf->nr_pages, sizeof(*buf->folios),
				     GFP_KERNEL_ACCOUNT);
	if (!buf->pages || !buf->folios) {
		ret = -ENOMEM;
		goto err;
	}
	ret = umd_buf_pin(buf, arg->offset);
	if (ret)
		goto err;

	info.owner = THIS_MODULE;
	info.ops = &umd_dmabuf_ops;
	info.size = arg->size;
	info.flags = (arg->flags & UMD_DMABUF_FLAG_RDWR) ? O_RDWR : O_RDONLY;
	info.priv = buf;
	dmabuf = dma_buf_export(&info);
	if (IS_ERR(dmabuf)) {
		ret = PTR_ERR(dmabuf);
		goto err;
	}
	/* From here on umd_release() frees buf. */
	atomic_long_add(buf->nr_pages, &pinned_pages);
	return dmabuf;

err:
	umd_buf_free(buf);
	return ERR_PTR(ret);
}

static long umd_ioctl_export(struct umd_dmabuf_export __user *uarg)
{
	struct umd_dmabuf_export arg;
	struct dma_buf *dmabuf;
	int fd;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.flags & ~UMD_DMABUF_FLAGS_ALL || arg.reserved)
		return -EINVAL;
	if (!arg.size || !PAGE_ALIGNED(arg.offset) || !PAGE_ALIGNED(arg.size))
		return -EINVAL;

	if (atomic_long_inc_return(&live_exports) > READ_ONCE(max_exports)) {
		atomic_long_dec(&live_exports);
		return -ENOSPC;
	}
	dmabuf = umd_export(&arg);
	if (IS_ERR(dmabuf)) {
		atomic_long_dec(&live_exports);
		return PTR_ERR(dmabuf);
	}
	/* From here on live_exports drops in umd_release(). */

	fd = get_unused_fd_flags((arg.flags & UMD_DMABUF_FLAG_CLOEXEC) ?
				 O_CLOEXEC : 0);
	if (fd < 0) {
		dma_buf_put(dmabuf);
		return fd;
	}
	if (put_user(fd, &uarg->fd)) {
		put_unused_fd(fd);
		dma_buf_put(dmabuf);
		return -EFAULT;
	}
	fd_install(fd, dmabuf->file);
	return 0;
}

/*
 * The kernel importer behind UMD_DMABUF_IOCTL_INSPECT. It uses any
 * dma-buf (this module's, udmabuf's, a heap's) as a device driver would,
 * with the misc device as the importing device, so that attach, map,
 * begin/end CPU access and vmap of an exporter run as they would for a
 * real device, and reports what it saw. It reads the pages of the
 * sg_table, which a real importer must not do (the table is for DMA), to
 * show that they are the pages the exporter pinned; CONFIG_DMABUF_DEBUG
 * scrambles them, so there it refuses.
 */

/* 64-bit FNV-1a, the checksum reported by UMD_DMABUF_IOCTL_INSPECT. */
#define UMD_FNV_OFFSET	0xcbf29ce484222325ULL
#define UMD_FNV_PRIME	0x100000001b3ULL

static u64 umd_fnv1a(u64 hash, const u8 *p, size_t n)
{
	while (n--) {
		hash ^= *p++;
		hash *= UMD_FNV_PRIME;
	}
	return hash;
}

static int umd_vmap_unlocked(struct dma_buf *dmabuf, struct iosys_map *map)
{
#ifdef UMD_HAVE_DMA_BUF_VMAP_UNLOCKED
	return dma_buf_vmap_unlocked(dmabuf, map);
#else
	/* Before 6.2 dma_buf_vmap() takes the dma-buf's own lock. */
	return dma_buf_vmap(dmabuf, map);
#endif
}

static void umd_vunmap_unlocked(struct dma_buf *dmabuf, struct iosys_map *map)
{
#ifdef UMD_HAVE_DMA_BUF_VMAP_UNLOCKED
	dma_buf_vunmap_unlocked(dmabuf, map);
#else
	dma_buf_vunmap(dmabuf, map);
#endif
}

/* umd_inspect_sgt - count the table's entries and report its pages. */
static int umd_inspect_sgt(struct sg_table *sgt,
			   struct umd_dmabuf_inspect *arg)
{
	u64 __user *out = u64_to_user_ptr(arg->pfns);
	struct scatterlist *sg;
	unsigned int i;

	for_each_sgtable_sg(sgt, sg, i) {
		struct page *page = sg_page(sg);
		unsigned long pfn, n;

		if (!page)
			return -EOPNOTSUPP;
		pfn = page_to_pfn(page) + (sg->offset >> PAGE_SHIFT);
		n = DIV_ROUND_UP(offset_in_page(sg->offset) + sg->length,
				 PAGE_SIZE);
		arg->sg_bytes += sg->length;
		for (; n; n--, pfn++, arg->nr_pfns++)
			if (arg->nr_pfns < arg->max_pfns &&
			    put_user((u64)pfn, out + arg->nr_pfns))
				return -EFAULT;
		cond_resched();
	}
	arg->sg_nents = sgt->orig_nents;
	for_each_sgtable_dma_sg(sgt, sg, i)
		arg->dma_bytes += sg_dma_len(sg);
	arg->dma_nents = sgt->nents;
	return 0;
}

/* umd_inspect_own - what this module, as exporter, sees of the import. */
static void umd_inspect_own(struct dma_buf *dmabuf,
			    struct umd_dmabuf_inspect *arg)
{
	struct umd_buf *buf = dmabuf->priv;
	struct umd_attachment *a;

	if (dmabuf->ops != &umd_dmabuf_ops)
		return;
	arg->exporter = UMD_DMABUF_INSPECT_OWN;
	mutex_lock(&buf->lock);
	list_for_each_entry(a, &buf->attachments, node) {
		arg->attached++;
		if (a->sgt)
			arg->mapped++;
	}
	mutex_unlock(&buf->lock);
}

/* umd_inspect_contents - checksum the contents through a kernel mapping. */
static int umd_inspect_contents(struct dma_buf *dmabuf, u64 *sum)
{
	struct iosys_map map;
	u8 chunk[256];
	size_t off, n;
	int ret, end;

	ret = dma_buf_begin_cpu_access(dmabuf, DMA_FROM_DEVICE);
	if (ret)
		return ret;
	ret = umd_vmap_unlocked(dmabuf, &map);
	if (ret)
		goto end_access;
	*sum = UMD_FNV_OFFSET;
	for (off = 0; off < dmabuf->size; off += n) {
		n = min_t(size_t, dmabuf->size - off, sizeof(chunk));
		/* Handles I/O memory too, which some exporters map. */
		iosys_map_memcpy_from(chunk, &map, off, n);
		*sum = umd_fnv1a(*sum, chunk, n);
		if (!(off & (SZ_1M - 1)))
			cond_resched();
	}
	umd_vunmap_unlocked(dmabuf, &map);
end_access:
	end = dma_buf_end_cpu_access(dmabuf, DMA_FROM_DEVICE);
	return ret ? ret : end;
}

static long umd_ioctl_inspect(struct device *dev,
			      struct umd_dmabuf_inspect __user *uarg)
{
	struct umd_dmabuf_inspect in, arg = {};
	struct dma_buf_attachment *attach;
	enum dma_data_direction dir;
	struct dma_buf *dmabuf;
	struct sg_table *sgt;
	int ret;

	/* Physical addresses are for root only, as in /proc/PID/pagemap. */
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	if (IS_ENABLED(CONFIG_DMABUF_DEBUG))
		return -EOPNOTSUPP;
	if (copy_from_user(&in, uarg, sizeof(in)))
		return -EFAULT;
	if (in.flags & ~UMD_DMABUF_INSPECT_FLAG_WRITE || in.reserved)
		return -EINVAL;
	dir = (in.flags & UMD_DMABUF_INSPECT_FLAG_WRITE) ?
	      DMA_BIDIRECTIONAL : DMA_TO_DEVICE;
	arg.fd = in.fd;
	arg.flags = in.flags;
	arg.pfns = in.pfns;
	arg.max_pfns = in.pfns ? in.max_pfns : 0;

	dmabuf = dma_buf_get(in.fd);
	if (IS_ERR(dmabuf))
		return PTR_ERR(dmabuf);
	arg.size = dmabuf->size;
	attach = dma_buf_attach(dmabuf, dev);
	if (IS_ERR(attach)) {
		ret = PTR_ERR(attach);
		goto put;
	}
	sgt = dma_buf_map_attachment_unlocked(attach, dir);
	if (IS_ERR(sgt)) {
		ret = PTR_ERR(sgt);
		goto detach;
	}
	umd_inspect_own(dmabuf, &arg);
	ret = umd_inspect_sgt(sgt, &arg);
	if (!ret)
		ret = umd_inspect_contents(dmabuf, &arg.checksum);
	dma_buf_unmap_attachment_unlocked(attach, sgt, dir);
detach:
	dma_buf_detach(dmabuf, attach);
put:
	dma_buf_put(dmabuf);
	if (!ret && copy_to_user(uarg, &arg, sizeof(arg)))
		ret = -EFAULT;
	return ret;
}

static long umd_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	/* misc_open() points private_data at the miscdevice. */
	struct miscdevice *misc = file->private_data;

	switch (cmd) {
	case UMD_DMABUF_IOCTL_EXPORT:
		return umd_ioctl_export((void __user *)arg);
	case UMD_DMABUF_IOCTL_INSPECT:
		return umd_ioctl_inspect(misc->this_device,
					 (void __user *)arg);
	}
	return -ENOTTY;
}

static const struct file_operations umd_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = umd_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static struct miscdevice umd_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "umd-dmabuf",
	.fops = &umd_fops,
};

static int __init umd_init(void)
{
	int ret;

	ret = misc_register(&umd_misc);
	if (ret)
		return ret;
	/*
	 * The misc device is the importing device of
	 * UMD_DMABUF_IOCTL_INSPECT: without a DMA mask no exporter could map
	 * a dma-buf for it.
	 */
	ret = dma_coerce_mask_and_coherent(umd_misc.this_device,
					   DMA_BIT_MASK(64));
	if (ret)
		misc_deregister(&umd_misc);
	return ret;
}
module_init(umd_init);

static void __exit umd_exit(void)
{
	misc_deregister(&umd_misc);
}
module_exit(umd_exit);

MODULE_DESCRIPTION("Export ranges of sealed memfds as dma-bufs");
MODULE_AUTHOR("The umd authors");
MODULE_LICENSE("GPL");
/* Linux 6.13 made the namespace a string literal. */
#ifdef UMD_IMPORT_NS_STRINGIFIES
MODULE_IMPORT_NS(DMA_BUF);
#else
MODULE_IMPORT_NS("DMA_BUF");
#endif
