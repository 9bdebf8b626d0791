package vfio

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/vfioabi"
)

// Feature is a VFIO device feature (VFIO_DEVICE_FEATURE_*), for
// Device.ProbeFeature, GetFeature and SetFeature.
type Feature uint32

// The device features of <linux/vfio.h>. Which of them a device has
// depends on its driver: plain vfio-pci offers the low power ones on every
// kernel since 6.0, and the VF token on a PF with SR-IOV; migration and
// DMA logging come only with vendor variant drivers (mlx5-vfio-pci and the
// like).
const (
	FeaturePCIVFToken              Feature = vfioabi.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN
	FeatureMigration               Feature = vfioabi.VFIO_DEVICE_FEATURE_MIGRATION
	FeatureMigrationState          Feature = vfioabi.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE
	FeatureLowPowerEntry           Feature = vfioabi.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY
	FeatureLowPowerEntryWithWakeup Feature = vfioabi.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP
	FeatureLowPowerExit            Feature = vfioabi.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT
	FeatureDMALoggingStart         Feature = vfioabi.VFIO_DEVICE_FEATURE_DMA_LOGGING_START
	FeatureDMALoggingStop          Feature = vfioabi.VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP
	FeatureDMALoggingReport        Feature = vfioabi.VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT
)

// String returns the kernel's name of the feature without its
// VFIO_DEVICE_FEATURE_ prefix ("LOW_POWER_ENTRY"), or the number.
func (f Feature) String() string {
	switch f {
	case FeaturePCIVFToken:
		return "PCI_VF_TOKEN"
	case FeatureMigration:
		return "MIGRATION"
	case FeatureMigrationState:
		return "MIG_DEVICE_STATE"
	case FeatureLowPowerEntry:
		return "LOW_POWER_ENTRY"
	case FeatureLowPowerEntryWithWakeup:
		return "LOW_POWER_ENTRY_WITH_WAKEUP"
	case FeatureLowPowerExit:
		return "LOW_POWER_EXIT"
	case FeatureDMALoggingStart:
		return "DMA_LOGGING_START"
	case FeatureDMALoggingStop:
		return "DMA_LOGGING_STOP"
	case FeatureDMALoggingReport:
		return "DMA_LOGGING_REPORT"
	}
	return fmt.Sprint(uint32(f))
}

// FeatureOps says what can be done with a feature: get it, set it, or
// both.
type FeatureOps uint32

// Feature operations.
const (
	FeatureGet FeatureOps = vfioabi.VFIO_DEVICE_FEATURE_GET
	FeatureSet FeatureOps = vfioabi.VFIO_DEVICE_FEATURE_SET
)

func (o FeatureOps) String() string {
	switch o {
	case 0:
		return "none"
	case FeatureGet:
		return "get"
	case FeatureSet:
		return "set"
	case FeatureGet | FeatureSet:
		return "get and set"
	}
	return fmt.Sprintf("ops %#x", uint32(o))
}

// feature issues VFIO_DEVICE_FEATURE with flags and data.
func (d *Device) feature(f Feature, flags uint32, data []byte) error {
	if f > vfioabi.VFIO_DEVICE_FEATURE_MASK {
		return fmt.Errorf("the feature index does not fit the ioctl's 16 bits")
	}
	return d.file.control(func(fd int) error {
		return vfioabi.DeviceFeatureIoctl(fd, uint32(f)|flags, data)
	})
}

// ProbeFeature asks the kernel which operations the device supports for a
// feature (VFIO_DEVICE_FEATURE with PROBE, once for GET and once for SET).
// A feature the device does not have at all is an error wrapping
// ErrNotSupported.
func (d *Device) ProbeFeature(f Feature) (FeatureOps, error) {
	what := fmt.Sprintf("probing device feature %s of %s", f, d.bdf)
	var ops FeatureOps
	var last error
	for _, op := range []FeatureOps{FeatureGet, FeatureSet} {
		err := d.feature(f, vfioabi.VFIO_DEVICE_FEATURE_PROBE|uint32(op), nil)
		switch {
		case err == nil:
			ops |= op
		case errors.Is(err, unix.ENOTTY):
			return 0, fmt.Errorf("%s: %w: %w", what, ErrNotSupported, hint(err, "the device's vfio driver does not implement the feature"))
		case errors.Is(err, unix.EINVAL):
			// The feature exists but not this operation.
			last = err
		default:
			return 0, fmt.Errorf("%s: %w", what, err)
		}
	}
	if ops == 0 {
		return 0, fmt.Errorf("%s: %w: %w", what, ErrNotSupported, last)
	}
	return ops, nil
}

// GetFeature reads a feature (VFIO_DEVICE_FEATURE with GET) into data,
// whose layout the feature defines. A feature the device does not have is
// an error wrapping ErrNotSupported.
func (d *Device) GetFeature(f Feature, data []byte) error {
	if err := d.feature(f, vfioabi.VFIO_DEVICE_FEATURE_GET, data); err != nil {
		return featureError(fmt.Sprintf("getting device feature %s of %s", f, d.bdf), err)
	}
	return nil
}

// SetFeature sets a feature (VFIO_DEVICE_FEATURE with SET) from data,
// whose layout the feature defines. A feature the device does not have is
// an error wrapping ErrNotSupported.
func (d *Device) SetFeature(f Feature, data []byte) error {
	if err := d.feature(f, vfioabi.VFIO_DEVICE_FEATURE_SET, data); err != nil {
		return featureError(fmt.Sprintf("setting device feature %s of %s", f, d.bdf), err)
	}
	return nil
}

func featureError(what string, err error) error {
	if errors.Is(err, unix.ENOTTY) {
		return fmt.Errorf("%s: %w: %w", what, ErrNotSupported, hint(err, "the device's vfio driver does not implement the feature"))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// MigrationFlags are the migration protocols a device supports.
type MigrationFlags uint64

// Migration flags.
const (
	MigrationStopCopy MigrationFlags = vfioabi.VFIO_MIGRATION_STOP_COPY // STOP, STOP_COPY and RESUMING
	MigrationP2P      MigrationFlags = vfioabi.VFIO_MIGRATION_P2P       // and RUNNING_P2P
)

// Migration returns the migration protocols the device supports (GET of
// FeatureMigration). Devices driven by plain vfio-pci have none: the error
// wraps ErrNotSupported.
func (d *Device) Migration() (MigrationFlags, error) {
	data := make([]byte, vfioabi.SizeofDeviceFeatureMigration)
	if err := d.GetFeature(FeatureMigration, data); err != nil {
		return 0, err
	}
	return MigrationFlags(binary.NativeEndian.Uint64(data)), nil
}

// EnterLowPower lets the kernel put the device in a low power state (D3hot)
// through runtime power management (SET of FeatureLowPowerEntry). Whether
// and when it does is the kernel's decision; any access through the device
// fd (an ioctl, a config space read) brings it back to D0 for the access.
//
// Until ExitLowPower, the kernel revokes the device's BAR mappings: a load
// or store through a Mapping faults (SIGBUS, which kills a Go program).
// Stop every user of the mappings first.
func (d *Device) EnterLowPower() error {
	if err := d.SetFeature(FeatureLowPowerEntry, nil); err != nil {
		return lowPowerError(err)
	}
	return nil
}

// EnterLowPowerWithWakeup is EnterLowPower with a notification: when the
// device leaves the low power state on its own (a wakeup, or an access
// through the device fd), the kernel signals wake and the device stays out
// of low power until the next entry. The kernel keeps its own reference to
// the eventfd until then, so closing wake early is harmless. A device that
// never got to a low power state does not signal.
func (d *Device) EnterLowPowerWithWakeup(wake *Interrupt) error {
	what := fmt.Sprintf("setting device feature %s of %s", FeatureLowPowerEntryWithWakeup, d.bdf)
	if wake == nil {
		return fmt.Errorf("%s: no wakeup eventfd given", what)
	}
	// Hold the eventfd's number through the ioctl, so that a concurrent
	// Close cannot hand it to another file before the kernel reads it.
	var setErr error
	err := wake.rc.Control(func(fd uintptr) {
		data := make([]byte, vfioabi.SizeofDeviceLowPowerEntryWithWakeup)
		binary.NativeEndian.PutUint32(data, uint32(int32(fd)))
		setErr = d.SetFeature(FeatureLowPowerEntryWithWakeup, data)
	})
	if err != nil {
		return fmt.Errorf("%s: the wakeup eventfd: %w", what, ErrClosed)
	}
	if setErr != nil {
		return lowPowerError(setErr)
	}
	return nil
}

// ExitLowPower stops the kernel from putting the device in a low power
// state (SET of FeatureLowPowerExit) and brings it back to D0; the BAR
// mappings work again. Exiting when not in low power does nothing.
func (d *Device) ExitLowPower() error {
	return d.SetFeature(FeatureLowPowerExit, nil)
}

func lowPowerError(err error) error {
	if errors.Is(err, unix.EINVAL) && !errors.Is(err, ErrNotSupported) {
		return hint(err, "low power entry is already on: ExitLowPower before entering again")
	}
	return err
}
