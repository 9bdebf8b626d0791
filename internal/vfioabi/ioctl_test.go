package vfioabi

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The ioctl functions are exercised for real in package vfio's guest tests.
// Here, on a host without VFIO, each one is issued on /dev/null, which
// answers every ioctl with ENOTTY: that checks the wiring (the request
// reaches the kernel, the errno comes back typed and named) and that no
// argument handling panics.
func TestIoctlsOnNonVFIOFile(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())

	calls := map[string]func() error{
		"VFIO_GET_API_VERSION":       func() error { _, err := GetAPIVersion(fd); return err },
		"VFIO_CHECK_EXTENSION":       func() error { _, err := CheckExtension(fd, VFIO_TYPE1v2_IOMMU); return err },
		"VFIO_SET_IOMMU":             func() error { return SetIOMMU(fd, VFIO_TYPE1v2_IOMMU) },
		"VFIO_GROUP_GET_STATUS":      func() error { _, err := GroupGetStatus(fd); return err },
		"VFIO_GROUP_SET_CONTAINER":   func() error { return GroupSetContainer(fd, fd) },
		"VFIO_GROUP_UNSET_CONTAINER": func() error { return GroupUnsetContainer(fd) },
		"VFIO_GROUP_GET_DEVICE_FD": func() error {
			_, err := GroupGetDeviceFD(fd, "0000:00:03.0")
			return err
		},
		"VFIO_DEVICE_GET_INFO": func() error {
			_, err := DeviceGetInfo(fd, make([]byte, SizeofDeviceInfo))
			return err
		},
		"VFIO_DEVICE_GET_REGION_INFO": func() error {
			_, err := DeviceGetRegionInfo(fd, VFIO_PCI_CONFIG_REGION_INDEX, make([]byte, 256))
			return err
		},
		"VFIO_DEVICE_GET_IRQ_INFO": func() error { _, err := DeviceGetIRQInfo(fd, VFIO_PCI_MSIX_IRQ_INDEX); return err },
		"VFIO_DEVICE_SET_IRQS": func() error {
			_, err := DeviceSetIRQs(fd, IRQSet{Flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER}, nil)
			return err
		},
		"VFIO_DEVICE_RESET": func() error { return DeviceReset(fd) },
		"VFIO_DEVICE_FEATURE": func() error {
			return DeviceFeatureIoctl(fd, VFIO_DEVICE_FEATURE_PROBE|VFIO_DEVICE_FEATURE_MIGRATION, nil)
		},
		"VFIO_IOMMU_GET_INFO": func() error {
			_, err := IOMMUGetInfo(fd, make([]byte, SizeofIOMMUType1Info))
			return err
		},
		"VFIO_IOMMU_MAP_DMA": func() error {
			return IOMMUMapDMA(fd, IOMMUType1DMAMap{Flags: VFIO_DMA_MAP_FLAG_READ, IOVA: 1 << 20, Size: 4096})
		},
		"VFIO_IOMMU_UNMAP_DMA": func() error {
			_, err := IOMMUUnmapDMA(fd, IOMMUType1DMAUnmap{IOVA: 1 << 20, Size: 4096})
			return err
		},
	}
	for name, call := range calls {
		err := call()
		var ioctlErr *Error
		if !errors.As(err, &ioctlErr) || ioctlErr.Ioctl != name || !errors.Is(err, unix.ENOTTY) {
			t.Errorf("%s on %s: got %v, want an *Error naming %s and wrapping ENOTTY", name, os.DevNull, err, name)
		}
		if err != nil && !strings.HasPrefix(err.Error(), name+": ") {
			t.Errorf("%s: error %q does not start with the ioctl's name", name, err)
		}
	}
}

func TestIoctlArgumentChecks(t *testing.T) {
	if _, err := DeviceGetRegionInfo(-1, 0, make([]byte, SizeofRegionInfo-1)); err == nil || !strings.Contains(err.Error(), "shorter") {
		t.Errorf("short region info buffer: got %v, want an error about its length", err)
	}
	if _, err := DeviceGetInfo(-1, nil); err == nil {
		t.Error("nil device info buffer: got no error")
	}
	if _, err := GroupGetDeviceFD(-1, "bad\x00name"); err == nil {
		t.Error("device name with a NUL byte: got no error")
	}
	if _, err := IOMMUUnmapDMA(-1, IOMMUType1DMAUnmap{Flags: VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP}); err == nil {
		t.Error("unmap with the dirty bitmap flag: got no error")
	}
	if _, err := GetAPIVersion(-1); !errors.Is(err, unix.EBADF) {
		t.Errorf("VFIO_GET_API_VERSION on fd -1: got %v, want EBADF", err)
	}
}

func TestIRQSetEventfds(t *testing.T) {
	data, err := IRQSetEventfds([]int{7, -1, 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{7, -1, 1 << 20}
	if len(data) != 4*len(want) {
		t.Fatalf("got %d bytes, want %d", len(data), 4*len(want))
	}
	for i, w := range want {
		if got := int32(binary.NativeEndian.Uint32(data[4*i:])); got != w {
			t.Errorf("fd %d encodes as %d, want %d", i, got, w)
		}
	}
	for _, bad := range []int{-2, math.MaxInt32 + 1} {
		if _, err := IRQSetEventfds([]int{bad}); err == nil {
			t.Errorf("fd %d: got no error", bad)
		}
	}
	if data, err := IRQSetEventfds(nil); err != nil || len(data) != 0 {
		t.Errorf("no fds: got %v, %v", data, err)
	}
}
