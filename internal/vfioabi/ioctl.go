package vfioabi

import (
	"encoding/binary"
	"fmt"
	"math"

	"golang.org/x/sys/unix"
)

// Error is a failed ioctl: its name and the errno the kernel returned.
// errors.Is(err, unix.EBUSY) and the like see through it.
type Error struct {
	Ioctl string     // kernel spelling, such as "VFIO_IOMMU_MAP_DMA"
	Errno unix.Errno // what the kernel returned
}

func (e *Error) Error() string { return e.Ioctl + ": " + e.Errno.Error() }

// Unwrap returns the errno.
func (e *Error) Unwrap() error { return e.Errno }

func ioctlError(name string, errno unix.Errno) error {
	return &Error{Ioctl: name, Errno: errno}
}

// ioctlValue issues an ioctl whose argument is passed by value.
func ioctlValue(fd int, req, arg uintptr) (uintptr, unix.Errno) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	return r, errno
}

// GetAPIVersion issues VFIO_GET_API_VERSION on a container fd. Every kernel
// with VFIO answers VFIO_API_VERSION.
func GetAPIVersion(containerFD int) (int, error) {
	r, errno := ioctlValue(containerFD, VFIO_GET_API_VERSION, 0)
	if errno != 0 {
		return 0, ioctlError("VFIO_GET_API_VERSION", errno)
	}
	return int(r), nil
}

// CheckExtension issues VFIO_CHECK_EXTENSION on a container fd. It returns
// 0 when extension (a VFIO_* extension id) is not supported and a positive
// number when it is.
func CheckExtension(containerFD int, extension uint32) (int, error) {
	r, errno := ioctlValue(containerFD, VFIO_CHECK_EXTENSION, uintptr(extension))
	if errno != 0 {
		return 0, ioctlError("VFIO_CHECK_EXTENSION", errno)
	}
	return int(r), nil
}

// SetIOMMU issues VFIO_SET_IOMMU on a container fd, choosing the IOMMU
// driver (an extension id such as VFIO_TYPE1v2_IOMMU). The container must
// have a group set.
func SetIOMMU(containerFD int, iommuType uint32) error {
	if _, errno := ioctlValue(containerFD, VFIO_SET_IOMMU, uintptr(iommuType)); errno != 0 {
		return ioctlError("VFIO_SET_IOMMU", errno)
	}
	return nil
}

// GroupGetStatus issues VFIO_GROUP_GET_STATUS on a group fd.
func GroupGetStatus(groupFD int) (GroupStatus, error) {
	status := GroupStatus{Argsz: SizeofGroupStatus}
	if _, errno := ioctlPointer(groupFD, VFIO_GROUP_GET_STATUS, &status); errno != 0 {
		return GroupStatus{}, ioctlError("VFIO_GROUP_GET_STATUS", errno)
	}
	return status, nil
}

// GroupSetContainer issues VFIO_GROUP_SET_CONTAINER, adding the group to the
// container.
func GroupSetContainer(groupFD, containerFD int) error {
	// The kernel reads the container fd through a pointer to a C int.
	fd := int32(containerFD)
	if _, errno := ioctlPointer(groupFD, VFIO_GROUP_SET_CONTAINER, &fd); errno != 0 {
		return ioctlError("VFIO_GROUP_SET_CONTAINER", errno)
	}
	return nil
}

// GroupUnsetContainer issues VFIO_GROUP_UNSET_CONTAINER. Every device fd of
// the group must be closed first.
func GroupUnsetContainer(groupFD int) error {
	if _, errno := ioctlValue(groupFD, VFIO_GROUP_UNSET_CONTAINER, 0); errno != 0 {
		return ioctlError("VFIO_GROUP_UNSET_CONTAINER", errno)
	}
	return nil
}

// GroupGetDeviceFD issues VFIO_GROUP_GET_DEVICE_FD and returns a new,
// close-on-exec device fd. name is the device's name in the group's sysfs
// devices directory; for PCI, its BDF such as "0000:00:03.0".
func GroupGetDeviceFD(groupFD int, name string) (int, error) {
	cname, err := unix.BytePtrFromString(name)
	if err != nil {
		return -1, fmt.Errorf("VFIO_GROUP_GET_DEVICE_FD: device name %q: %w", name, err)
	}
	r, errno := ioctlPointer(groupFD, VFIO_GROUP_GET_DEVICE_FD, cname)
	if errno != 0 {
		return -1, ioctlError("VFIO_GROUP_GET_DEVICE_FD", errno)
	}
	return int(r), nil
}

// DeviceGetInfo issues VFIO_DEVICE_GET_INFO with buf as its argument; see
// infoIoctl for how buf is used.
func DeviceGetInfo(deviceFD int, buf []byte) (DeviceInfo, error) {
	var info DeviceInfo
	if err := infoIoctl(deviceFD, VFIO_DEVICE_GET_INFO, "VFIO_DEVICE_GET_INFO", &info, buf); err != nil {
		return DeviceInfo{}, err
	}
	return info, nil
}

// DeviceGetRegionInfo issues VFIO_DEVICE_GET_REGION_INFO for the region
// index with buf as its argument; see infoIoctl for how buf is used.
func DeviceGetRegionInfo(deviceFD int, index uint32, buf []byte) (RegionInfo, error) {
	info := RegionInfo{Index: index}
	if err := infoIoctl(deviceFD, VFIO_DEVICE_GET_REGION_INFO, "VFIO_DEVICE_GET_REGION_INFO", &info, buf); err != nil {
		return RegionInfo{}, err
	}
	return info, nil
}

// IOMMUGetInfo issues VFIO_IOMMU_GET_INFO on a container fd with a type1
// IOMMU set, with buf as its argument; see infoIoctl for how buf is used.
func IOMMUGetInfo(containerFD int, buf []byte) (IOMMUType1Info, error) {
	var info IOMMUType1Info
	if err := infoIoctl(containerFD, VFIO_IOMMU_GET_INFO, "VFIO_IOMMU_GET_INFO", &info, buf); err != nil {
		return IOMMUType1Info{}, err
	}
	return info, nil
}

// infoIoctl issues one of the INFO ioctls, whose argument is a fixed struct
// (*in) followed by room for a capability chain. buf is the whole argument:
// it must be at least as long as the struct, *in is copied to its start and
// argsz is set to len(buf). On success buf holds the kernel's answer
// (capability offsets count from buf[0]) and *in is updated from it.
//
// When the chain does not fit, the kernel leaves it out, sets the struct's
// CapOffset to 0 and its Argsz to the size it needs: call again with a
// buffer of Argsz bytes.
func infoIoctl[T any](fd int, req uintptr, name string, in *T, buf []byte) error {
	fixed := bytesOf(in)
	if len(buf) < len(fixed) {
		return fmt.Errorf("%s: argument buffer of %d bytes is shorter than the %d-byte struct", name, len(buf), len(fixed))
	}
	if uint64(len(buf)) > math.MaxUint32 {
		return fmt.Errorf("%s: argument buffer of %d bytes does not fit argsz", name, len(buf))
	}
	clear(buf)
	copy(buf, fixed)
	binary.NativeEndian.PutUint32(buf, uint32(len(buf))) // argsz is every INFO struct's first field
	if _, errno := ioctlBytes(fd, req, buf); errno != 0 {
		return ioctlError(name, errno)
	}
	copy(fixed, buf)
	return nil
}

// DeviceGetIRQInfo issues VFIO_DEVICE_GET_IRQ_INFO for the IRQ index.
func DeviceGetIRQInfo(deviceFD int, index uint32) (IRQInfo, error) {
	info := IRQInfo{Argsz: SizeofIRQInfo, Index: index}
	if _, errno := ioctlPointer(deviceFD, VFIO_DEVICE_GET_IRQ_INFO, &info); errno != 0 {
		return IRQInfo{}, ioctlError("VFIO_DEVICE_GET_IRQ_INFO", errno)
	}
	return info, nil
}

// DeviceSetIRQs issues VFIO_DEVICE_SET_IRQS with the header set followed by
// data (set.Count uint8 bools or native-endian int32 eventfds, as set.Flags
// says; see IRQSetEventfds). Argsz is computed here.
//
// It returns the ioctl's non-negative result as it is. That is 0 on
// success, but vfio-pci has one other answer: when it enables MSI or MSI-X
// and the PCI core grants fewer vectors than start+count, it frees them
// again and returns how many it could have had, with no errno. The caller
// decides what that means.
func DeviceSetIRQs(deviceFD int, set IRQSet, data []byte) (int, error) {
	size := SizeofIRQSet + len(data)
	if uint64(size) > math.MaxUint32 {
		return 0, fmt.Errorf("VFIO_DEVICE_SET_IRQS: %d bytes of data do not fit argsz", len(data))
	}
	set.Argsz = uint32(size)
	buf := make([]byte, size)
	copy(buf, bytesOf(&set))
	copy(buf[SizeofIRQSet:], data)
	r, errno := ioctlBytes(deviceFD, VFIO_DEVICE_SET_IRQS, buf)
	if errno != 0 {
		return 0, ioctlError("VFIO_DEVICE_SET_IRQS", errno)
	}
	return int(r), nil
}

// IRQSetEventfds lays out fds as the data of a VFIO_DEVICE_SET_IRQS with
// VFIO_IRQ_SET_DATA_EVENTFD: one native-endian int32 per IRQ, -1 to take
// the IRQ's eventfd away. An fd that does not fit an int32 is an error.
func IRQSetEventfds(fds []int) ([]byte, error) {
	data := make([]byte, 4*len(fds))
	for i, fd := range fds {
		if fd < -1 || fd > math.MaxInt32 {
			return nil, fmt.Errorf("VFIO_DEVICE_SET_IRQS: fd %d is not an int32 eventfd or -1", fd)
		}
		binary.NativeEndian.PutUint32(data[4*i:], uint32(int32(fd)))
	}
	return data, nil
}

// DeviceReset issues VFIO_DEVICE_RESET.
func DeviceReset(deviceFD int) error {
	if _, errno := ioctlValue(deviceFD, VFIO_DEVICE_RESET, 0); errno != 0 {
		return ioctlError("VFIO_DEVICE_RESET", errno)
	}
	return nil
}

// DeviceFeatureIoctl issues VFIO_DEVICE_FEATURE with flags (a feature index
// and VFIO_DEVICE_FEATURE_GET, _SET or _PROBE) followed by data. Whatever
// the kernel writes into the data part (for GET) is copied back into data.
func DeviceFeatureIoctl(deviceFD int, flags uint32, data []byte) error {
	size := SizeofDeviceFeature + len(data)
	if uint64(size) > math.MaxUint32 {
		return fmt.Errorf("VFIO_DEVICE_FEATURE: %d bytes of data do not fit argsz", len(data))
	}
	hdr := DeviceFeature{Argsz: uint32(size), Flags: flags}
	buf := make([]byte, size)
	copy(buf, bytesOf(&hdr))
	copy(buf[SizeofDeviceFeature:], data)
	if _, errno := ioctlBytes(deviceFD, VFIO_DEVICE_FEATURE, buf); errno != 0 {
		return ioctlError("VFIO_DEVICE_FEATURE", errno)
	}
	copy(data, buf[SizeofDeviceFeature:])
	return nil
}

// IOMMUMapDMA issues VFIO_IOMMU_MAP_DMA on a container fd: the kernel pins
// m.Size bytes of process memory at m.Vaddr and maps them at m.IOVA. Argsz
// is set here. The call may sleep while pages are pinned.
func IOMMUMapDMA(containerFD int, m IOMMUType1DMAMap) error {
	m.Argsz = SizeofIOMMUType1DMAMap
	if _, errno := ioctlPointer(containerFD, VFIO_IOMMU_MAP_DMA, &m); errno != 0 {
		return ioctlError("VFIO_IOMMU_MAP_DMA", errno)
	}
	return nil
}

// IOMMUUnmapDMA issues VFIO_IOMMU_UNMAP_DMA on a container fd and returns
// the number of bytes the kernel unmapped. Argsz is set here; the dirty
// bitmap form (VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) is not supported.
func IOMMUUnmapDMA(containerFD int, u IOMMUType1DMAUnmap) (uint64, error) {
	if u.Flags&VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
		return 0, fmt.Errorf("VFIO_IOMMU_UNMAP_DMA: the dirty bitmap form is not supported")
	}
	u.Argsz = SizeofIOMMUType1DMAUnmap
	if _, errno := ioctlPointer(containerFD, VFIO_IOMMU_UNMAP_DMA, &u); errno != 0 {
		return 0, ioctlError("VFIO_IOMMU_UNMAP_DMA", errno)
	}
	return u.Size, nil
}
