package dmabuf

// Kernel ABI: the structs and ioctl numbers of <linux/dma-buf.h>,
// <linux/udmabuf.h>, <linux/dma-heap.h> (used by the tests only, as a
// third exporter) and the module's own kmod/umd_dmabuf/umd_dmabuf.h,
// in the kernel's spellings. abi_test.go compares every size, offset and
// number here with the C headers, compiled by gcc.

// _IOC encoding of asm-generic/ioctl.h (x86-64).
const (
	iocWrite = 1
	iocRead  = 2

	iocNRShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30
)

// dmaBufSync mirrors struct dma_buf_sync of <linux/dma-buf.h>.
type dmaBufSync struct {
	Flags uint64
}

// dmaBufExportSyncFile mirrors struct dma_buf_export_sync_file of
// <linux/dma-buf.h> (Linux 6.0).
type dmaBufExportSyncFile struct {
	Flags uint32
	Fd    int32
}

// udmabufCreate mirrors struct udmabuf_create of <linux/udmabuf.h>.
type udmabufCreate struct {
	Memfd  uint32
	Flags  uint32
	Offset uint64
	Size   uint64
}

// dmaHeapAllocationData mirrors struct dma_heap_allocation_data of
// <linux/dma-heap.h>.
type dmaHeapAllocationData struct {
	Len       uint64
	Fd        uint32
	FdFlags   uint32
	HeapFlags uint64
}

// umdDmabufExport mirrors struct umd_dmabuf_export of
// kmod/umd_dmabuf/umd_dmabuf.h.
type umdDmabufExport struct {
	Memfd    int32
	Flags    uint32
	Offset   uint64
	Size     uint64
	Fd       int32
	Reserved uint32
}

// umdDmabufInspect mirrors struct umd_dmabuf_inspect of
// kmod/umd_dmabuf/umd_dmabuf.h.
type umdDmabufInspect struct {
	Fd       int32
	Flags    uint32
	Pfns     uint64 // user address of a []uint64
	MaxPfns  uint64
	Size     uint64
	NrPfns   uint64
	SgBytes  uint64
	DmaBytes uint64
	Checksum uint64
	SgNents  uint32
	DmaNents uint32
	Exporter uint32
	Attached uint32
	Mapped   uint32
	Reserved uint32
}

// Sizes of the structs above, as C's sizeof gives them.
const (
	sizeofDmaBufSync           = 8
	sizeofDmaBufExportSyncFile = 8
	sizeofUdmabufCreate        = 24
	sizeofDmaHeapAllocation    = 24
	sizeofUmdDmabufExport      = 32
	sizeofUmdDmabufInspect     = 88
)

// <linux/dma-buf.h>
const (
	DMA_BUF_SYNC_READ  = 1 << 0
	DMA_BUF_SYNC_WRITE = 2 << 0
	DMA_BUF_SYNC_RW    = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE
	DMA_BUF_SYNC_START = 0 << 2
	DMA_BUF_SYNC_END   = 1 << 2

	DMA_BUF_BASE                   = 'b'
	DMA_BUF_IOCTL_SYNC             = iocWrite<<iocDirShift | DMA_BUF_BASE<<iocTypeShift | 0<<iocNRShift | sizeofDmaBufSync<<iocSizeShift
	DMA_BUF_IOCTL_EXPORT_SYNC_FILE = (iocRead|iocWrite)<<iocDirShift | DMA_BUF_BASE<<iocTypeShift | 2<<iocNRShift | sizeofDmaBufExportSyncFile<<iocSizeShift
)

// <linux/udmabuf.h>
const (
	UDMABUF_FLAGS_CLOEXEC = 0x01
	UDMABUF_CREATE        = iocWrite<<iocDirShift | 'u'<<iocTypeShift | 0x42<<iocNRShift | sizeofUdmabufCreate<<iocSizeShift
)

// <linux/dma-heap.h>
const (
	DMA_HEAP_IOCTL_ALLOC = (iocRead|iocWrite)<<iocDirShift | 'H'<<iocTypeShift | 0<<iocNRShift | sizeofDmaHeapAllocation<<iocSizeShift
)

// kmod/umd_dmabuf/umd_dmabuf.h
const (
	UMD_DMABUF_FLAG_CLOEXEC = 0x1
	UMD_DMABUF_FLAG_RDWR    = 0x2
	UMD_DMABUF_FLAGS_ALL    = UMD_DMABUF_FLAG_CLOEXEC | UMD_DMABUF_FLAG_RDWR
	UMD_DMABUF_IOCTL_EXPORT = (iocRead|iocWrite)<<iocDirShift | 'u'<<iocTypeShift | 0x40<<iocNRShift | sizeofUmdDmabufExport<<iocSizeShift

	UMD_DMABUF_INSPECT_FLAG_WRITE = 0x1
	UMD_DMABUF_INSPECT_OWN        = 0x1
	UMD_DMABUF_IOCTL_INSPECT      = (iocRead|iocWrite)<<iocDirShift | 'u'<<iocTypeShift | 0x41<<iocNRShift | sizeofUmdDmabufInspect<<iocSizeShift
)
