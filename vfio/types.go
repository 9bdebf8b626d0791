package vfio

import (
	"fmt"
	"strings"

	"github.com/umdkit/umd/internal/vfioabi"
)

// Extension is a VFIO extension id, for Container.CheckExtension. The IOMMU
// types among them are also the argument of Container.SetIOMMU.
type Extension uint32

// The extensions this project cares about.
const (
	Type1IOMMU       Extension = vfioabi.VFIO_TYPE1_IOMMU
	Type1v2IOMMU     Extension = vfioabi.VFIO_TYPE1v2_IOMMU // the IOMMU type umd uses
	DMACoherentIOMMU Extension = vfioabi.VFIO_DMA_CC_IOMMU  // the IOMMU enforces cache coherence of DMA
	NoIOMMU          Extension = vfioabi.VFIO_NOIOMMU_IOMMU // no translation, no isolation; Debian's kernels leave it out
	UnmapAll         Extension = vfioabi.VFIO_UNMAP_ALL
	UpdateVaddr      Extension = vfioabi.VFIO_UPDATE_VADDR
)

func (e Extension) String() string {
	switch e {
	case Type1IOMMU:
		return "type1"
	case Type1v2IOMMU:
		return "type1v2"
	case DMACoherentIOMMU:
		return "DMA cache coherence"
	case NoIOMMU:
		return "no-IOMMU"
	case UnmapAll:
		return "unmap-all"
	case UpdateVaddr:
		return "update-vaddr"
	}
	return fmt.Sprintf("extension %d", uint32(e))
}

// GroupStatus is what VFIO_GROUP_GET_STATUS reports.
type GroupStatus struct {
	// Viable: every device in the group is bound to vfio-pci or to no
	// driver, so the group can be set to a container.
	Viable bool
	// ContainerSet: the group is set to a container.
	ContainerSet bool
}

// Cap is one capability from an INFO ioctl's chain, for capabilities this
// package does not decode itself. IDs are scoped to the ioctl.
type Cap struct {
	ID      uint16
	Version uint16
	Data    []byte // what follows the capability's header
}

func convertCaps(caps []vfioabi.Cap) []Cap {
	if len(caps) == 0 {
		return nil
	}
	out := make([]Cap, len(caps))
	for i, c := range caps {
		out[i] = Cap{ID: c.ID, Version: c.Version, Data: c.Data}
	}
	return out
}

// IOVARange is a range of IOVAs the container's IOMMU accepts. End is
// inclusive.
type IOVARange struct {
	Start, End uint64
}

// Contains reports whether the size bytes from iova lie within r.
func (r IOVARange) Contains(iova, size uint64) bool {
	if size == 0 {
		return false
	}
	last := iova + size - 1
	return last >= iova && iova >= r.Start && last <= r.End
}

func (r IOVARange) String() string { return fmt.Sprintf("0x%x-0x%x", r.Start, r.End) }

func formatRanges(ranges []IOVARange) string {
	parts := make([]string, len(ranges))
	for i, r := range ranges {
		parts[i] = r.String()
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// IOMMUInfo is what VFIO_IOMMU_GET_INFO reports about a container's IOMMU.
type IOMMUInfo struct {
	// PageSizes is a bitmap of the IOMMU page sizes: bit n set means 2^n
	// bytes. DMA mappings must be aligned to the smallest.
	PageSizes uint64
	// IOVARanges are the IOVAs the container may map, sorted; DMA maps
	// outside them fail.
	IOVARanges []IOVARange
	// DMAAvail is how many more DMA mappings the container may hold, when
	// HasDMAAvail says the kernel reported it.
	DMAAvail    uint32
	HasDMAAvail bool
	// Caps is the whole capability chain, decoded or not.
	Caps []Cap
}

// DMAPerm says what the device may do with DMA-mapped memory.
type DMAPerm uint32

// DMA permissions for Container.MapDMA.
const (
	DMARead      DMAPerm = vfioabi.VFIO_DMA_MAP_FLAG_READ  // the device may read the memory
	DMAWrite     DMAPerm = vfioabi.VFIO_DMA_MAP_FLAG_WRITE // the device may write the memory
	DMAReadWrite         = DMARead | DMAWrite
)

// DeviceFlags are the flags of DeviceInfo.
type DeviceFlags uint32

// Device flags.
const (
	DeviceResettable DeviceFlags = vfioabi.VFIO_DEVICE_FLAGS_RESET // Device.Reset is supported
	DevicePCI        DeviceFlags = vfioabi.VFIO_DEVICE_FLAGS_PCI   // a vfio-pci device
	DeviceCaps       DeviceFlags = vfioabi.VFIO_DEVICE_FLAGS_CAPS  // the info has a capability chain
)

// DeviceInfo is what VFIO_DEVICE_GET_INFO reports.
type DeviceInfo struct {
	Flags      DeviceFlags
	NumRegions int // region indexes run from 0 to NumRegions-1
	NumIRQs    int // IRQ indexes run from 0 to NumIRQs-1
	Caps       []Cap
}

// RegionIndex names a region of a device. vfio-pci fixes the first
// NumPCIRegions; higher ones are device-specific (RegionInfo.Type says what
// they are).
type RegionIndex uint32

// The fixed regions of a vfio-pci device.
const (
	RegionBAR0    RegionIndex = vfioabi.VFIO_PCI_BAR0_REGION_INDEX
	RegionBAR1    RegionIndex = vfioabi.VFIO_PCI_BAR1_REGION_INDEX
	RegionBAR2    RegionIndex = vfioabi.VFIO_PCI_BAR2_REGION_INDEX
	RegionBAR3    RegionIndex = vfioabi.VFIO_PCI_BAR3_REGION_INDEX
	RegionBAR4    RegionIndex = vfioabi.VFIO_PCI_BAR4_REGION_INDEX
	RegionBAR5    RegionIndex = vfioabi.VFIO_PCI_BAR5_REGION_INDEX
	RegionROM     RegionIndex = vfioabi.VFIO_PCI_ROM_REGION_INDEX
	RegionConfig  RegionIndex = vfioabi.VFIO_PCI_CONFIG_REGION_INDEX
	RegionVGA     RegionIndex = vfioabi.VFIO_PCI_VGA_REGION_INDEX
	NumPCIRegions             = vfioabi.VFIO_PCI_NUM_REGIONS
)

func (i RegionIndex) String() string {
	switch {
	case i <= RegionBAR5:
		return fmt.Sprintf("BAR%d", uint32(i))
	case i == RegionROM:
		return "ROM"
	case i == RegionConfig:
		return "config"
	case i == RegionVGA:
		return "VGA"
	}
	return fmt.Sprintf("region %d", uint32(i))
}

// RegionFlags are the flags of RegionInfo.
type RegionFlags uint32

// Region flags.
const (
	RegionReadable RegionFlags = vfioabi.VFIO_REGION_INFO_FLAG_READ
	RegionWritable RegionFlags = vfioabi.VFIO_REGION_INFO_FLAG_WRITE
	RegionMappable RegionFlags = vfioabi.VFIO_REGION_INFO_FLAG_MMAP
	RegionCaps     RegionFlags = vfioabi.VFIO_REGION_INFO_FLAG_CAPS
)

// MmapArea is a part of a region that may be mmap'd.
type MmapArea struct {
	Offset uint64 // from the start of the region
	Size   uint64
}

// RegionType identifies a device-specific region
// (VFIO_REGION_INFO_CAP_TYPE).
type RegionType struct {
	Type, Subtype uint32
}

// RegionInfo is what VFIO_DEVICE_GET_REGION_INFO reports about one region.
type RegionInfo struct {
	Index RegionIndex
	Flags RegionFlags
	// Size is the region's size in bytes; 0 for a region the device does
	// not implement (an absent BAR, the upper half of a 64-bit BAR).
	Size uint64
	// Offset is where the region starts in the device fd, for pread,
	// pwrite and mmap.
	Offset uint64
	// SparseMmap is non-nil when the kernel restricts mmap of a mappable
	// region to these areas (typically to keep the MSI-X table out). An
	// empty non-nil slice means no part may be mmap'd.
	SparseMmap []MmapArea
	// MSIXMappable: the MSI-X table may be mmap'd along with the rest of
	// its BAR (the platform remaps interrupts).
	MSIXMappable bool
	// Type is set for device-specific regions.
	Type *RegionType
	// Caps is the whole capability chain, decoded or not.
	Caps []Cap
}

// MmapAreas returns the parts of the region that may be mmap'd: none when
// the region is not mappable, the sparse areas when the kernel gave some,
// else the whole region.
func (r RegionInfo) MmapAreas() []MmapArea {
	switch {
	case r.Flags&RegionMappable == 0 || r.Size == 0:
		return nil
	case r.SparseMmap != nil:
		return r.SparseMmap
	}
	return []MmapArea{{Offset: 0, Size: r.Size}}
}

// IRQIndex names an interrupt index of a device.
type IRQIndex uint32

// The fixed IRQ indexes of a vfio-pci device.
const (
	IRQINTx    IRQIndex = vfioabi.VFIO_PCI_INTX_IRQ_INDEX
	IRQMSI     IRQIndex = vfioabi.VFIO_PCI_MSI_IRQ_INDEX
	IRQMSIX    IRQIndex = vfioabi.VFIO_PCI_MSIX_IRQ_INDEX
	IRQErr     IRQIndex = vfioabi.VFIO_PCI_ERR_IRQ_INDEX // AER error notification
	IRQReq     IRQIndex = vfioabi.VFIO_PCI_REQ_IRQ_INDEX // the kernel asks for the device back
	NumPCIIRQs          = vfioabi.VFIO_PCI_NUM_IRQS
)

func (i IRQIndex) String() string {
	switch i {
	case IRQINTx:
		return "INTx"
	case IRQMSI:
		return "MSI"
	case IRQMSIX:
		return "MSI-X"
	case IRQErr:
		return "ERR"
	case IRQReq:
		return "REQ"
	}
	return fmt.Sprintf("IRQ index %d", uint32(i))
}

// IRQFlags are the flags of IRQInfo.
type IRQFlags uint32

// IRQ flags.
const (
	IRQEventfd    IRQFlags = vfioabi.VFIO_IRQ_INFO_EVENTFD    // can signal an eventfd
	IRQMaskable   IRQFlags = vfioabi.VFIO_IRQ_INFO_MASKABLE   // supports mask and unmask
	IRQAutomasked IRQFlags = vfioabi.VFIO_IRQ_INFO_AUTOMASKED // masked by the kernel after each interrupt (level-triggered)
	IRQNoResize   IRQFlags = vfioabi.VFIO_IRQ_INFO_NORESIZE   // vectors are enabled as a set
)

// IRQInfo is what VFIO_DEVICE_GET_IRQ_INFO reports about one IRQ index.
type IRQInfo struct {
	Index IRQIndex
	Flags IRQFlags
	Count int // interrupts in the index; 0 when the device does not implement it
}
