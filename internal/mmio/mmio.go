package mmio

import (
	"errors"
	"fmt"
)

// A Region is a range of device memory mapped into the process. Its zero
// value is an empty region. It holds no resources: whoever mapped the
// memory unmaps it, after the last access.
type Region struct {
	mem []byte
}

// New returns a Region over mem, which must stay mapped while the Region
// is used.
func New(mem []byte) Region { return Region{mem: mem} }

// Len returns the size of the region in bytes.
func (r Region) Len() int { return len(r.mem) }

// ErrOutOfRange is returned by Check for an access that does not fit the
// region or is misaligned.
var ErrOutOfRange = errors.New("register access outside the mapped region")

// Check reports whether an access of width bytes (4 or 8) at off is inside
// the region and naturally aligned.
func (r Region) Check(off uint64, width int) error {
	if width != 4 && width != 8 {
		return fmt.Errorf("register width %d: only 4 and 8 are supported: %w", width, ErrOutOfRange)
	}
	if off%uint64(width) != 0 || off > uint64(len(r.mem)) || uint64(len(r.mem))-off < uint64(width) {
		return fmt.Errorf("%d-byte register at 0x%x in a 0x%x-byte region: %w", width, off, len(r.mem), ErrOutOfRange)
	}
	return nil
}

// Read32 reads the 32-bit register at byte offset off.
func (r Region) Read32(off uint64) uint32 {
	return load32(&r.mem[off : off+4 : off+4][0])
}

// Write32 writes the 32-bit register at byte offset off.
func (r Region) Write32(off uint64, v uint32) {
	store32(&r.mem[off : off+4 : off+4][0], v)
}

// Read64 reads the 64-bit register at byte offset off in one access.
func (r Region) Read64(off uint64) uint64 {
	return load64(&r.mem[off : off+8 : off+8][0])
}

// Write64 writes the 64-bit register at byte offset off in one access.
// Some devices require 64-bit registers to be written as two 32-bit
// halves (NVMe permits either for ASQ/ACQ); the caller decides.
func (r Region) Write64(off uint64, v uint64) {
	store64(&r.mem[off : off+8 : off+8][0], v)
}
