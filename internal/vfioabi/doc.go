// Package vfioabi mirrors the VFIO kernel ABI of include/uapi/linux/vfio.h:
// ioctl request numbers, flag bits, extension and capability ids, the PCI
// region and IRQ indexes, and the structs the ioctls take.
//
// Constants keep their kernel spelling (VFIO_IOMMU_MAP_DMA) so they can be
// grepped against the header; types get Go names (IOMMUType1DMAMap) and
// each one's comment names the C struct it mirrors. Every struct has only
// fixed-width fields with explicit padding, and a Sizeof constant. The
// host-only test abi_test.go compiles a C program against the system's
// <linux/vfio.h> and checks every size, field offset, ioctl number and flag
// here against it.
//
// Each ioctl has one typed function (GetAPIVersion, IOMMUMapDMA, …) that
// issues it on a raw file descriptor and returns the kernel's errno wrapped
// with the ioctl's name. The functions do nothing else: no retries, no
// checks of preconditions, no policy. Package vfio builds the
// container/group/device objects on top.
//
// The INFO ioctls can return a capability chain after their fixed struct.
// ParseCapChain walks one and the Parse… functions decode the capabilities
// this project uses; all of them bounds-check and return errors on malformed
// input, they never panic.
//
// All use of package unsafe is in files named *_unsafe.go.
package vfioabi
