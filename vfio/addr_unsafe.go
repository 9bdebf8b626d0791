package vfio

import "unsafe"

// addressOf returns the process virtual address of b's first byte, for
// VFIO_IOMMU_MAP_DMA. b must not be empty.
func addressOf(b []byte) uintptr {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))
}
