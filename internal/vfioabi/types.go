package vfioabi

// The structs below mirror those of <linux/vfio.h> field for field. A C
// flexible array member (__u8 data[], areas[], …) is not part of the Go
// struct: it starts at the struct's Sizeof, and the caller lays it out in a
// byte buffer after the fixed part. Sizes are checked against the structs at
// compile time (sizes_unsafe.go) and against the C header by abi_test.go.

// GroupStatus mirrors struct vfio_group_status, the argument of
// VFIO_GROUP_GET_STATUS.
type GroupStatus struct {
	Argsz uint32
	Flags uint32 // VFIO_GROUP_FLAGS_*
}

// DeviceInfo mirrors struct vfio_device_info, the argument of
// VFIO_DEVICE_GET_INFO. A capability chain may follow it.
type DeviceInfo struct {
	Argsz      uint32
	Flags      uint32 // VFIO_DEVICE_FLAGS_*
	NumRegions uint32 // highest region index + 1
	NumIRQs    uint32 // highest IRQ index + 1
	CapOffset  uint32 // offset of the first capability from the start of the struct; valid with VFIO_DEVICE_FLAGS_CAPS
}

// RegionInfo mirrors struct vfio_region_info, the argument of
// VFIO_DEVICE_GET_REGION_INFO. A capability chain may follow it.
type RegionInfo struct {
	Argsz     uint32
	Flags     uint32 // VFIO_REGION_INFO_FLAG_*
	Index     uint32
	CapOffset uint32 // valid with VFIO_REGION_INFO_FLAG_CAPS
	Size      uint64 // bytes
	Offset    uint64 // where the region starts in the device fd, for pread/pwrite/mmap
}

// RegionSparseMmapArea mirrors struct vfio_region_sparse_mmap_area.
type RegionSparseMmapArea struct {
	Offset uint64 // from the start of the region
	Size   uint64
}

// RegionInfoCapSparseMmap mirrors struct vfio_region_info_cap_sparse_mmap,
// capability VFIO_REGION_INFO_CAP_SPARSE_MMAP. NrAreas
// RegionSparseMmapArea follow it.
type RegionInfoCapSparseMmap struct {
	Header   InfoCapHeader
	NrAreas  uint32
	Reserved uint32
}

// RegionInfoCapType mirrors struct vfio_region_info_cap_type, capability
// VFIO_REGION_INFO_CAP_TYPE.
type RegionInfoCapType struct {
	Header  InfoCapHeader
	Type    uint32 // global per bus driver
	Subtype uint32 // specific to Type
}

// IRQInfo mirrors struct vfio_irq_info, the argument of
// VFIO_DEVICE_GET_IRQ_INFO.
type IRQInfo struct {
	Argsz uint32
	Flags uint32 // VFIO_IRQ_INFO_*
	Index uint32
	Count uint32 // IRQs in this index; 0 when the device does not implement it
}

// IRQSet mirrors the fixed part of struct vfio_irq_set, the argument of
// VFIO_DEVICE_SET_IRQS. Its data[] (Count bools or eventfds, by Flags)
// follows it.
type IRQSet struct {
	Argsz uint32
	Flags uint32 // one VFIO_IRQ_SET_DATA_* | one VFIO_IRQ_SET_ACTION_*
	Index uint32
	Start uint32
	Count uint32
}

// InfoCapHeader mirrors struct vfio_info_cap_header, which starts every
// capability in an INFO ioctl's chain.
type InfoCapHeader struct {
	ID      uint16
	Version uint16
	Next    uint32 // offset of the next capability from the start of the INFO struct; 0 ends the chain
}

// IOMMUType1Info mirrors struct vfio_iommu_type1_info, the argument of
// VFIO_IOMMU_GET_INFO. A capability chain may follow it.
type IOMMUType1Info struct {
	Argsz       uint32
	Flags       uint32 // VFIO_IOMMU_INFO_*
	IOVAPgsizes uint64 // bitmap of supported IOMMU page sizes
	CapOffset   uint32 // valid with VFIO_IOMMU_INFO_CAPS
	_           uint32 // C pads the struct to 8-byte alignment
}

// IOVARange mirrors struct vfio_iova_range. End is inclusive.
type IOVARange struct {
	Start uint64
	End   uint64
}

// IOMMUType1InfoCapIOVARange mirrors struct
// vfio_iommu_type1_info_cap_iova_range, capability
// VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE. NrIOVAs IOVARange follow it.
type IOMMUType1InfoCapIOVARange struct {
	Header   InfoCapHeader
	NrIOVAs  uint32
	Reserved uint32
}

// IOMMUType1InfoDMAAvail mirrors struct vfio_iommu_type1_info_dma_avail,
// capability VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL.
type IOMMUType1InfoDMAAvail struct {
	Header InfoCapHeader
	Avail  uint32 // how many more DMA mappings the container may hold
}

// IOMMUType1DMAMap mirrors struct vfio_iommu_type1_dma_map, the argument of
// VFIO_IOMMU_MAP_DMA.
type IOMMUType1DMAMap struct {
	Argsz uint32
	Flags uint32 // VFIO_DMA_MAP_FLAG_*
	Vaddr uint64 // process virtual address
	IOVA  uint64
	Size  uint64 // bytes
}

// IOMMUType1DMAUnmap mirrors the fixed part of struct
// vfio_iommu_type1_dma_unmap, the argument of VFIO_IOMMU_UNMAP_DMA. On
// return Size holds the number of bytes the kernel unmapped.
type IOMMUType1DMAUnmap struct {
	Argsz uint32
	Flags uint32 // VFIO_DMA_UNMAP_FLAG_*
	IOVA  uint64
	Size  uint64
}

// DeviceFeature mirrors the fixed part of struct vfio_device_feature, the
// argument of VFIO_DEVICE_FEATURE. The feature's data follows it.
type DeviceFeature struct {
	Argsz uint32
	Flags uint32 // feature index | VFIO_DEVICE_FEATURE_GET/SET/PROBE
}

// DeviceFeatureMigration mirrors struct vfio_device_feature_migration, the
// data of VFIO_DEVICE_FEATURE_GET for VFIO_DEVICE_FEATURE_MIGRATION.
type DeviceFeatureMigration struct {
	Flags uint64 // VFIO_MIGRATION_*
}

// DeviceLowPowerEntryWithWakeup mirrors struct
// vfio_device_low_power_entry_with_wakeup, the data of
// VFIO_DEVICE_FEATURE_SET for VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP.
type DeviceLowPowerEntryWithWakeup struct {
	WakeupEventfd int32 // signalled when the device leaves the low power state
	Reserved      uint32
}

// Sizes of the structs above in bytes, as the kernel's sizeof gives them.
const (
	SizeofGroupStatus                   = 8
	SizeofDeviceInfo                    = 20
	SizeofRegionInfo                    = 32
	SizeofRegionSparseMmapArea          = 16
	SizeofRegionInfoCapSparseMmap       = 16
	SizeofRegionInfoCapType             = 16
	SizeofIRQInfo                       = 16
	SizeofIRQSet                        = 20
	SizeofInfoCapHeader                 = 8
	SizeofIOMMUType1Info                = 24
	SizeofIOVARange                     = 16
	SizeofIOMMUType1InfoCapIOVARange    = 16
	SizeofIOMMUType1InfoDMAAvail        = 12
	SizeofIOMMUType1DMAMap              = 32
	SizeofIOMMUType1DMAUnmap            = 24
	SizeofDeviceFeature                 = 8
	SizeofDeviceFeatureMigration        = 8
	SizeofDeviceLowPowerEntryWithWakeup = 8
)
