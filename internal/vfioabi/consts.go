package vfioabi

// VFIO_API_VERSION is the only version of the VFIO API there is;
// VFIO_GET_API_VERSION returns it.
const VFIO_API_VERSION = 0

// Extension ids, for VFIO_CHECK_EXTENSION. The IOMMU type ids among them
// are also the argument of VFIO_SET_IOMMU.
const (
	VFIO_TYPE1_IOMMU         = 1
	VFIO_SPAPR_TCE_IOMMU     = 2
	VFIO_TYPE1v2_IOMMU       = 3
	VFIO_DMA_CC_IOMMU        = 4 // the IOMMU enforces DMA cache coherence
	VFIO_EEH                 = 5
	VFIO_TYPE1_NESTING_IOMMU = 6
	VFIO_SPAPR_TCE_v2_IOMMU  = 7
	VFIO_NOIOMMU_IOMMU       = 8  // no translation, no isolation; taints the kernel
	VFIO_UNMAP_ALL           = 9  // VFIO_DMA_UNMAP_FLAG_ALL is supported
	VFIO_UPDATE_VADDR        = 10 // VFIO_DMA_MAP_FLAG_VADDR and VFIO_DMA_UNMAP_FLAG_VADDR are supported
)

// The ioctl request numbers. VFIO encodes neither a direction nor a size in
// them: every one is _IO(VFIO_TYPE, VFIO_BASE + n), that is
// VFIO_TYPE<<8 | (VFIO_BASE+n), and the argument structs carry their own
// size in argsz instead.
const (
	VFIO_TYPE = ';'
	VFIO_BASE = 100

	iocTypeShift = 8 // _IOC_TYPESHIFT
	vfioIO       = VFIO_TYPE<<iocTypeShift | VFIO_BASE

	// On the container (/dev/vfio/vfio).
	VFIO_GET_API_VERSION = vfioIO + 0
	VFIO_CHECK_EXTENSION = vfioIO + 1
	VFIO_SET_IOMMU       = vfioIO + 2

	// On a group (/dev/vfio/N).
	VFIO_GROUP_GET_STATUS      = vfioIO + 3
	VFIO_GROUP_SET_CONTAINER   = vfioIO + 4
	VFIO_GROUP_UNSET_CONTAINER = vfioIO + 5
	VFIO_GROUP_GET_DEVICE_FD   = vfioIO + 6

	// On a device fd.
	VFIO_DEVICE_GET_INFO        = vfioIO + 7
	VFIO_DEVICE_GET_REGION_INFO = vfioIO + 8
	VFIO_DEVICE_GET_IRQ_INFO    = vfioIO + 9
	VFIO_DEVICE_SET_IRQS        = vfioIO + 10
	VFIO_DEVICE_RESET           = vfioIO + 11
	VFIO_DEVICE_FEATURE         = vfioIO + 17

	// On a container with a type1 IOMMU set.
	VFIO_IOMMU_GET_INFO  = vfioIO + 12
	VFIO_IOMMU_MAP_DMA   = vfioIO + 13
	VFIO_IOMMU_UNMAP_DMA = vfioIO + 14
)

// GroupStatus.Flags.
const (
	VFIO_GROUP_FLAGS_VIABLE        = 1 << 0
	VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1
)

// DeviceInfo.Flags.
const (
	VFIO_DEVICE_FLAGS_RESET    = 1 << 0 // the device supports VFIO_DEVICE_RESET
	VFIO_DEVICE_FLAGS_PCI      = 1 << 1 // vfio-pci device
	VFIO_DEVICE_FLAGS_PLATFORM = 1 << 2
	VFIO_DEVICE_FLAGS_AMBA     = 1 << 3
	VFIO_DEVICE_FLAGS_CCW      = 1 << 4
	VFIO_DEVICE_FLAGS_AP       = 1 << 5
	VFIO_DEVICE_FLAGS_FSL_MC   = 1 << 6
	VFIO_DEVICE_FLAGS_CAPS     = 1 << 7 // DeviceInfo.CapOffset is valid
)

// RegionInfo.Flags.
const (
	VFIO_REGION_INFO_FLAG_READ  = 1 << 0
	VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
	VFIO_REGION_INFO_FLAG_MMAP  = 1 << 2
	VFIO_REGION_INFO_FLAG_CAPS  = 1 << 3 // RegionInfo.CapOffset is valid
)

// Capability ids in a VFIO_DEVICE_GET_REGION_INFO chain.
const (
	VFIO_REGION_INFO_CAP_SPARSE_MMAP   = 1 // RegionInfoCapSparseMmap: only these areas may be mmap'd
	VFIO_REGION_INFO_CAP_TYPE          = 2 // RegionInfoCapType: a device-specific region
	VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3 // no body: the MSI-X table may be mmap'd with the rest of its BAR
)

// IRQInfo.Flags.
const (
	VFIO_IRQ_INFO_EVENTFD    = 1 << 0
	VFIO_IRQ_INFO_MASKABLE   = 1 << 1
	VFIO_IRQ_INFO_AUTOMASKED = 1 << 2
	VFIO_IRQ_INFO_NORESIZE   = 1 << 3
)

// IRQSet.Flags: one DATA_ bit (what follows the header) and one ACTION_ bit.
const (
	VFIO_IRQ_SET_DATA_NONE      = 1 << 0 // no data
	VFIO_IRQ_SET_DATA_BOOL      = 1 << 1 // one uint8 per IRQ
	VFIO_IRQ_SET_DATA_EVENTFD   = 1 << 2 // one int32 eventfd per IRQ, -1 to unassign
	VFIO_IRQ_SET_ACTION_MASK    = 1 << 3
	VFIO_IRQ_SET_ACTION_UNMASK  = 1 << 4
	VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5

	VFIO_IRQ_SET_DATA_TYPE_MASK   = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD
	VFIO_IRQ_SET_ACTION_TYPE_MASK = VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER
)

// The fixed region indexes of a vfio-pci device. Unimplemented regions (an
// absent BAR, or the upper half of a 64-bit BAR) report size 0.
const (
	VFIO_PCI_BAR0_REGION_INDEX   = 0
	VFIO_PCI_BAR1_REGION_INDEX   = 1
	VFIO_PCI_BAR2_REGION_INDEX   = 2
	VFIO_PCI_BAR3_REGION_INDEX   = 3
	VFIO_PCI_BAR4_REGION_INDEX   = 4
	VFIO_PCI_BAR5_REGION_INDEX   = 5
	VFIO_PCI_ROM_REGION_INDEX    = 6
	VFIO_PCI_CONFIG_REGION_INDEX = 7
	VFIO_PCI_VGA_REGION_INDEX    = 8
	VFIO_PCI_NUM_REGIONS         = 9 // indexes from here on are device-specific, described by VFIO_REGION_INFO_CAP_TYPE
)

// The fixed IRQ indexes of a vfio-pci device. Unimplemented ones report
// count 0.
const (
	VFIO_PCI_INTX_IRQ_INDEX = 0
	VFIO_PCI_MSI_IRQ_INDEX  = 1
	VFIO_PCI_MSIX_IRQ_INDEX = 2
	VFIO_PCI_ERR_IRQ_INDEX  = 3 // AER error reported to user space
	VFIO_PCI_REQ_IRQ_INDEX  = 4 // the kernel asks user space to release the device
	VFIO_PCI_NUM_IRQS       = 5
)

// IOMMUType1Info.Flags.
const (
	VFIO_IOMMU_INFO_PGSIZES = 1 << 0 // IOVAPgsizes is valid
	VFIO_IOMMU_INFO_CAPS    = 1 << 1 // CapOffset is valid
)

// Capability ids in a VFIO_IOMMU_GET_INFO chain.
const (
	VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1 // IOMMUType1InfoCapIOVARange
	VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION  = 2 // dirty page tracking; not mirrored here
	VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL      = 3 // IOMMUType1InfoDMAAvail
)

// IOMMUType1DMAMap.Flags.
const (
	VFIO_DMA_MAP_FLAG_READ  = 1 << 0 // the device may read the memory
	VFIO_DMA_MAP_FLAG_WRITE = 1 << 1 // the device may write the memory
	VFIO_DMA_MAP_FLAG_VADDR = 1 << 2 // update the process address of an existing mapping
)

// IOMMUType1DMAUnmap.Flags.
const (
	VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0
	VFIO_DMA_UNMAP_FLAG_ALL              = 1 << 1 // unmap everything; IOVA and Size must be 0
	VFIO_DMA_UNMAP_FLAG_VADDR            = 1 << 2 // invalidate the process addresses, keep the IOVAs
)

// DeviceFeature.Flags: the low 16 bits select the feature, the others say
// what to do with it.
const (
	VFIO_DEVICE_FEATURE_MASK  = 0xffff
	VFIO_DEVICE_FEATURE_GET   = 1 << 16
	VFIO_DEVICE_FEATURE_SET   = 1 << 17
	VFIO_DEVICE_FEATURE_PROBE = 1 << 18
)

// Feature indexes for VFIO_DEVICE_FEATURE.
const (
	VFIO_DEVICE_FEATURE_PCI_VF_TOKEN                = 0
	VFIO_DEVICE_FEATURE_MIGRATION                   = 1
	VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE            = 2
	VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY             = 3
	VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP = 4
	VFIO_DEVICE_FEATURE_LOW_POWER_EXIT              = 5
	VFIO_DEVICE_FEATURE_DMA_LOGGING_START           = 6
	VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP            = 7
	VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT          = 8
)

// DeviceFeatureMigration.Flags: the migration protocols a device supports,
// answered by VFIO_DEVICE_FEATURE_GET of VFIO_DEVICE_FEATURE_MIGRATION.
const (
	VFIO_MIGRATION_STOP_COPY = 1 << 0 // the STOP, STOP_COPY and RESUMING states
	VFIO_MIGRATION_P2P       = 1 << 1 // and RUNNING_P2P
)
