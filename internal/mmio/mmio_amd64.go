package mmio

// Implemented in mmio_amd64.s: one MOV each, never inlined.

//go:noescape
func load32(p *byte) uint32

//go:noescape
func store32(p *byte, v uint32)

//go:noescape
func load64(p *byte) uint64

//go:noescape
func store64(p *byte, v uint64)
