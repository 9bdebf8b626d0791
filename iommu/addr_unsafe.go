package iommu

import "unsafe"

// addressOf returns the process virtual address of b's first byte (of its
// backing array when b is empty).
func addressOf(b []byte) uintptr {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))
}
