package dmabuf

// Kernel ABI: the structs and ioctl numbers of <linux/dma-buf.h>,
// <linux/udmabuf.h> and the module's own kmod/umd_dmabuf/umd_dmabuf.h,
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

// Sizes of the structs above, as C's sizeof gives them.
const (
	sizeofDmaBufSync           = 8
	sizeofDmaBufExportSyncFile = 8
	sizeofUdmabufCreate        = 24
	sizeofUmdDmabufExport      = 32
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

// kmod/umd_dmabuf/umd_dmabuf.h
const (
	UMD_DMABUF_FLAG_CLOEXEC = 0x1
	UMD_DMABUF_FLAG_RDWR    = 0x2
	UMD_DMABUF_FLAGS_ALL    = UMD_DMABUF_FLAG_CLOEXEC | UMD_DMABUF_FLAG_RDWR
	UMD_DMABUF_IOCTL_EXPORT = (iocRead|iocWrite)<<iocDirShift | 'u'<<iocTypeShift | 0x40<<iocNRShift | sizeofUmdDmabufExport<<iocSizeShift
)
