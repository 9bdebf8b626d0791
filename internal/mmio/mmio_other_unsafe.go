//go:build !amd64

package mmio

import (
	"sync/atomic"
	"unsafe"
)

// Without an assembly MOV, sync/atomic forces each access and orders it
// (release for stores, acquire for loads).

func load32(p *byte) uint32     { return atomic.LoadUint32((*uint32)(unsafe.Pointer(p))) }
func store32(p *byte, v uint32) { atomic.StoreUint32((*uint32)(unsafe.Pointer(p)), v) }
func load64(p *byte) uint64     { return atomic.LoadUint64((*uint64)(unsafe.Pointer(p))) }
func store64(p *byte, v uint64) { atomic.StoreUint64((*uint64)(unsafe.Pointer(p)), v) }
