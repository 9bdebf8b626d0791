package vfioabi

import "unsafe"

// Compile-time checks that each struct has the size its Sizeof constant
// claims: if a struct and its constant disagree, one of the two array
// lengths below is negative (or overflows uintptr) and the package does not
// compile. abi_test.go checks the constants against the C header.
var (
	_ [SizeofGroupStatus - unsafe.Sizeof(GroupStatus{})]struct{}
	_ [unsafe.Sizeof(GroupStatus{}) - SizeofGroupStatus]struct{}

	_ [SizeofDeviceInfo - unsafe.Sizeof(DeviceInfo{})]struct{}
	_ [unsafe.Sizeof(DeviceInfo{}) - SizeofDeviceInfo]struct{}

	_ [SizeofRegionInfo - unsafe.Sizeof(RegionInfo{})]struct{}
	_ [unsafe.Sizeof(RegionInfo{}) - SizeofRegionInfo]struct{}

	_ [SizeofRegionSparseMmapArea - unsafe.Sizeof(RegionSparseMmapArea{})]struct{}
	_ [unsafe.Sizeof(RegionSparseMmapArea{}) - SizeofRegionSparseMmapArea]struct{}

	_ [SizeofRegionInfoCapSparseMmap - unsafe.Sizeof(RegionInfoCapSparseMmap{})]struct{}
	_ [unsafe.Sizeof(RegionInfoCapSparseMmap{}) - SizeofRegionInfoCapSparseMmap]struct{}

	_ [SizeofRegionInfoCapType - unsafe.Sizeof(RegionInfoCapType{})]struct{}
	_ [unsafe.Sizeof(RegionInfoCapType{}) - SizeofRegionInfoCapType]struct{}

	_ [SizeofIRQInfo - unsafe.Sizeof(IRQInfo{})]struct{}
	_ [unsafe.Sizeof(IRQInfo{}) - SizeofIRQInfo]struct{}

	_ [SizeofIRQSet - unsafe.Sizeof(IRQSet{})]struct{}
	_ [unsafe.Sizeof(IRQSet{}) - SizeofIRQSet]struct{}

	_ [SizeofInfoCapHeader - unsafe.Sizeof(InfoCapHeader{})]struct{}
	_ [unsafe.Sizeof(InfoCapHeader{}) - SizeofInfoCapHeader]struct{}

	_ [SizeofIOMMUType1Info - unsafe.Sizeof(IOMMUType1Info{})]struct{}
	_ [unsafe.Sizeof(IOMMUType1Info{}) - SizeofIOMMUType1Info]struct{}

	_ [SizeofIOVARange - unsafe.Sizeof(IOVARange{})]struct{}
	_ [unsafe.Sizeof(IOVARange{}) - SizeofIOVARange]struct{}

	_ [SizeofIOMMUType1InfoCapIOVARange - unsafe.Sizeof(IOMMUType1InfoCapIOVARange{})]struct{}
	_ [unsafe.Sizeof(IOMMUType1InfoCapIOVARange{}) - SizeofIOMMUType1InfoCapIOVARange]struct{}

	_ [SizeofIOMMUType1InfoDMAAvail - unsafe.Sizeof(IOMMUType1InfoDMAAvail{})]struct{}
	_ [unsafe.Sizeof(IOMMUType1InfoDMAAvail{}) - SizeofIOMMUType1InfoDMAAvail]struct{}

	_ [SizeofIOMMUType1DMAMap - unsafe.Sizeof(IOMMUType1DMAMap{})]struct{}
	_ [unsafe.Sizeof(IOMMUType1DMAMap{}) - SizeofIOMMUType1DMAMap]struct{}

	_ [SizeofIOMMUType1DMAUnmap - unsafe.Sizeof(IOMMUType1DMAUnmap{})]struct{}
	_ [unsafe.Sizeof(IOMMUType1DMAUnmap{}) - SizeofIOMMUType1DMAUnmap]struct{}

	_ [SizeofDeviceFeature - unsafe.Sizeof(DeviceFeature{})]struct{}
	_ [unsafe.Sizeof(DeviceFeature{}) - SizeofDeviceFeature]struct{}

	_ [SizeofDeviceFeatureMigration - unsafe.Sizeof(DeviceFeatureMigration{})]struct{}
	_ [unsafe.Sizeof(DeviceFeatureMigration{}) - SizeofDeviceFeatureMigration]struct{}

	_ [SizeofDeviceLowPowerEntryWithWakeup - unsafe.Sizeof(DeviceLowPowerEntryWithWakeup{})]struct{}
	_ [unsafe.Sizeof(DeviceLowPowerEntryWithWakeup{}) - SizeofDeviceLowPowerEntryWithWakeup]struct{}
)
