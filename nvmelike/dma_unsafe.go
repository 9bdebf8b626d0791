package nvmelike

import (
	"sync/atomic"
	"unsafe"
)

// IOVAOf returns the IOVA of p, a non-empty subslice of b.Bytes. It reports
// false if p is empty (an empty slice need not point into its parent) or
// not inside b. It does not allocate and takes constant time.
func (b Buffer) IOVAOf(p []byte) (uint64, bool) {
	if len(b.Bytes) == 0 || len(p) == 0 {
		return 0, false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(b.Bytes)))
	ptr := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	if ptr < base || ptr-base > uintptr(len(b.Bytes)) || uintptr(len(p)) > uintptr(len(b.Bytes))-(ptr-base) {
		return 0, false
	}
	return b.IOVA + uint64(ptr-base), true
}

// AcquireLoad32 loads the little-endian 32-bit word at p[0:4] with acquire
// ordering: loads that follow it in program order (of the rest of a
// completion entry) cannot observe memory older than it. A completion
// decoder reads the word holding the phase tag with it, then the rest of
// the entry. p must be 4-byte aligned, which every queue entry is.
//
// On amd64 and arm64 (little-endian) it is a plain MOV and an LDAR
// respectively; neither is a locked instruction. umd supports little-endian
// hosts only, as NVMe structures are little-endian.
func AcquireLoad32(p []byte) uint32 {
	p = p[:4] // bounds check without touching memory
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(unsafe.SliceData(p))))
}

// ReleaseStore32 stores v to p[0:4] with release ordering: a software
// controller posting a completion writes the word with the phase tag last
// with it. p must be 4-byte aligned.
func ReleaseStore32(p []byte, v uint32) {
	p = p[:4] // bounds check without touching memory
	atomic.StoreUint32((*uint32)(unsafe.Pointer(unsafe.SliceData(p))), v)
}

// storeSeqCst32 stores v to p[0:4] with sequential consistency: a full
// barrier on amd64 (XCHG). For ordinary memory only (a shadow doorbell),
// never for MMIO. p must be 4-byte aligned.
func storeSeqCst32(p []byte, v uint32) {
	p = p[:4] // bounds check without touching memory
	atomic.StoreUint32((*uint32)(unsafe.Pointer(unsafe.SliceData(p))), v)
}
