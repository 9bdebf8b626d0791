package sim

import "unsafe"

// alignedBytes returns size zeroed bytes starting at a virtual address
// that is a multiple of align.
func alignedBytes(size, align int) []byte {
	b := make([]byte, size+align)
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	off := int((uintptr(align) - p%uintptr(align)) % uintptr(align))
	return b[off : off+size : off+size]
}
