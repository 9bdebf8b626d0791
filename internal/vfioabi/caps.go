package vfioabi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrBadCapChain is wrapped by every error about a malformed capability
// chain or capability.
var ErrBadCapChain = errors.New("malformed vfio capability chain")

// Cap is one capability from the chain an INFO ioctl (VFIO_DEVICE_GET_INFO,
// VFIO_DEVICE_GET_REGION_INFO, VFIO_IOMMU_GET_INFO) wrote after its fixed
// struct. Capability ids are scoped to the ioctl that returned them.
type Cap struct {
	ID      uint16
	Version uint16
	// Offset is where the capability's header starts, counted from the
	// start of the INFO buffer.
	Offset uint32
	// Data is what follows the header, up to the next capability or the end
	// of the buffer; it may include the kernel's alignment padding.
	Data []byte
}

// ParseCapChain walks the capability chain of an INFO ioctl. buf is the
// ioctl's whole argument buffer (cut to the Argsz the kernel returned, if
// that is shorter), fixedSize the size of its fixed struct (say
// SizeofRegionInfo), and first the struct's CapOffset. A first of 0 means
// no chain.
//
// The kernel builds every chain by appending (vfio_info_cap_add), so each
// capability starts after the previous one's header. ParseCapChain insists on
// that: a next offset that points backwards, into the fixed struct, into the
// previous header, or past the buffer is reported as ErrBadCapChain. That
// also rules out loops, so the walk always ends. It never panics.
func ParseCapChain(buf []byte, fixedSize int, first uint32) ([]Cap, error) {
	if first == 0 {
		return nil, nil
	}
	if fixedSize < 0 {
		fixedSize = 0
	}
	var caps []Cap
	off := uint64(first)
	lowest := uint64(fixedSize) // where the next header may start at the earliest
	for {
		if off < lowest {
			if len(caps) == 0 {
				return nil, fmt.Errorf("%w: first capability at offset %d lies inside the %d-byte fixed struct", ErrBadCapChain, off, fixedSize)
			}
			return nil, fmt.Errorf("%w: capability at offset %d points back to offset %d", ErrBadCapChain, caps[len(caps)-1].Offset, off)
		}
		end := off + SizeofInfoCapHeader
		if end > uint64(len(buf)) {
			return nil, fmt.Errorf("%w: capability header at offset %d runs past the %d-byte buffer", ErrBadCapChain, off, len(buf))
		}
		hdr := buf[off:end]
		c := Cap{
			ID:      binary.NativeEndian.Uint16(hdr[0:2]),
			Version: binary.NativeEndian.Uint16(hdr[2:4]),
			Offset:  uint32(off),
		}
		next := uint64(binary.NativeEndian.Uint32(hdr[4:8]))
		dataEnd := uint64(len(buf))
		if next != 0 && next >= end && next < dataEnd {
			dataEnd = next
		}
		// The three-index slice keeps Data's capacity at its length, so a
		// decoder that appends or reslices cannot reach the next capability.
		c.Data = buf[end:dataEnd:dataEnd]
		caps = append(caps, c)
		if next == 0 {
			return caps, nil
		}
		off, lowest = next, end
	}
}

// FindCap returns the first capability with the given id.
func FindCap(caps []Cap, id uint16) (Cap, bool) {
	for _, c := range caps {
		if c.ID == id {
			return c, true
		}
	}
	return Cap{}, false
}

// checkCap checks a capability's id and version (every capability decoded
// here is version 1, and later versions only append fields) and that its
// data holds at least size bytes.
func checkCap(c Cap, id uint16, name string, size int) error {
	if c.ID != id {
		return fmt.Errorf("%w: capability id %d is not %s (%d)", ErrBadCapChain, c.ID, name, id)
	}
	if c.Version < 1 {
		return fmt.Errorf("%w: %s capability has version 0", ErrBadCapChain, name)
	}
	if len(c.Data) < size {
		return fmt.Errorf("%w: %s capability has %d bytes after its header, needs %d", ErrBadCapChain, name, len(c.Data), size)
	}
	return nil
}

// checkArray checks that c.Data, after a body of bodySize bytes, holds n
// elements of elemSize bytes.
func checkArray(c Cap, name string, bodySize int, n uint32, elemSize int) error {
	need := uint64(bodySize) + uint64(n)*uint64(elemSize)
	if need > uint64(len(c.Data)) {
		return fmt.Errorf("%w: %s capability claims %d entries, which need %d bytes after its header; it has %d", ErrBadCapChain, name, n, need, len(c.Data))
	}
	return nil
}

// ParseSparseMmap decodes a VFIO_REGION_INFO_CAP_SPARSE_MMAP capability:
// the areas of a region that may be mmap'd.
func ParseSparseMmap(c Cap) ([]RegionSparseMmapArea, error) {
	const name, body = "sparse mmap", SizeofRegionInfoCapSparseMmap - SizeofInfoCapHeader
	if err := checkCap(c, VFIO_REGION_INFO_CAP_SPARSE_MMAP, name, body); err != nil {
		return nil, err
	}
	n := binary.NativeEndian.Uint32(c.Data[0:4])
	if err := checkArray(c, name, body, n, SizeofRegionSparseMmapArea); err != nil {
		return nil, err
	}
	areas := make([]RegionSparseMmapArea, n)
	for i := range areas {
		a := c.Data[body+i*SizeofRegionSparseMmapArea:]
		areas[i] = RegionSparseMmapArea{
			Offset: binary.NativeEndian.Uint64(a[0:8]),
			Size:   binary.NativeEndian.Uint64(a[8:16]),
		}
	}
	return areas, nil
}

// ParseRegionType decodes a VFIO_REGION_INFO_CAP_TYPE capability.
func ParseRegionType(c Cap) (RegionInfoCapType, error) {
	const name, body = "region type", SizeofRegionInfoCapType - SizeofInfoCapHeader
	if err := checkCap(c, VFIO_REGION_INFO_CAP_TYPE, name, body); err != nil {
		return RegionInfoCapType{}, err
	}
	return RegionInfoCapType{
		Header:  InfoCapHeader{ID: c.ID, Version: c.Version},
		Type:    binary.NativeEndian.Uint32(c.Data[0:4]),
		Subtype: binary.NativeEndian.Uint32(c.Data[4:8]),
	}, nil
}

// ParseIOVARanges decodes a VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE capability:
// the IOVA ranges a container may map, ends inclusive.
func ParseIOVARanges(c Cap) ([]IOVARange, error) {
	const name, body = "IOVA range", SizeofIOMMUType1InfoCapIOVARange - SizeofInfoCapHeader
	if err := checkCap(c, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, name, body); err != nil {
		return nil, err
	}
	n := binary.NativeEndian.Uint32(c.Data[0:4])
	if err := checkArray(c, name, body, n, SizeofIOVARange); err != nil {
		return nil, err
	}
	ranges := make([]IOVARange, n)
	for i := range ranges {
		r := c.Data[body+i*SizeofIOVARange:]
		ranges[i] = IOVARange{
			Start: binary.NativeEndian.Uint64(r[0:8]),
			End:   binary.NativeEndian.Uint64(r[8:16]),
		}
	}
	return ranges, nil
}

// ParseDMAAvail decodes a VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL capability: how
// many more DMA mappings the container may hold.
func ParseDMAAvail(c Cap) (uint32, error) {
	const name, body = "DMA avail", SizeofIOMMUType1InfoDMAAvail - SizeofInfoCapHeader
	if err := checkCap(c, VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, name, body); err != nil {
		return 0, err
	}
	return binary.NativeEndian.Uint32(c.Data[0:4]), nil
}
