package cycles

// Now returns the time-stamp counter.
//
//go:noescape
func Now() uint64

// native reports whether Now reads a hardware counter.
const native = true
