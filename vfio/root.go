package vfio

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Root says where the kernel's files are: the /dev that holds vfio/ and the
// /sys that holds bus/pci and kernel/iommu_groups. The zero Root means the
// real ones; tests and tools point it at a copy.
type Root struct {
	Dev string // "" means "/dev"
	Sys string // "" means "/sys"
}

func (r Root) dev() string {
	if r.Dev == "" {
		return "/dev"
	}
	return r.Dev
}

func (r Root) sys() string {
	if r.Sys == "" {
		return "/sys"
	}
	return r.Sys
}

func (r Root) containerPath() string { return filepath.Join(r.dev(), "vfio", "vfio") }

func (r Root) groupPath(number int) string {
	return filepath.Join(r.dev(), "vfio", strconv.Itoa(number))
}

// noIOMMUGroupPath is the node vfio makes for a group in its no-IOMMU
// mode.
func (r Root) noIOMMUGroupPath(number int) string {
	return filepath.Join(r.dev(), "vfio", "noiommu-"+strconv.Itoa(number))
}

func (r Root) pciDevicePath(bdf string) string {
	return filepath.Join(r.sys(), "bus", "pci", "devices", bdf)
}

func (r Root) groupDevicesPath(number int) string {
	return filepath.Join(r.sys(), "kernel", "iommu_groups", strconv.Itoa(number), "devices")
}

// OpenContainer opens /dev/vfio/vfio; see Root.OpenContainer.
func OpenContainer() (*Container, error) { return Root{}.OpenContainer() }

// OpenGroup opens /dev/vfio/number; see Root.OpenGroup.
func OpenGroup(number int) (*Group, error) { return Root{}.OpenGroup(number) }

// GroupOf returns the IOMMU group of a PCI function; see Root.GroupOf.
func GroupOf(bdf string) (int, error) { return Root{}.GroupOf(bdf) }

// GroupDevices lists the devices of an IOMMU group; see Root.GroupDevices.
func GroupDevices(number int) ([]string, error) { return Root{}.GroupDevices(number) }

// bdfPattern matches a PCI address as sysfs spells it:
// domain:bus:device.function, lower-case hex.
var bdfPattern = regexp.MustCompile(`^[0-9a-f]{4,8}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]$`)

// checkBDF rejects anything that is not a full PCI address, so that a
// caller's string never becomes an arbitrary path under /sys.
func checkBDF(bdf string) error {
	if !bdfPattern.MatchString(bdf) {
		return fmt.Errorf("%q is not a PCI address of the form 0000:00:03.0 (domain:bus:device.function, lower-case hex)", bdf)
	}
	return nil
}

// GroupOf returns the number of the IOMMU group that holds the PCI function
// bdf (such as "0000:00:03.0"), read from the iommu_group link under
// <Sys>/bus/pci/devices/<bdf>. A function without the link means the IOMMU
// is off: the error wraps ErrNoIOMMU.
func (r Root) GroupOf(bdf string) (int, error) {
	if err := checkBDF(bdf); err != nil {
		return -1, fmt.Errorf("finding the IOMMU group: %w", err)
	}
	dev := r.pciDevicePath(bdf)
	link, err := os.Readlink(filepath.Join(dev, "iommu_group"))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dev); serr != nil {
			return -1, fmt.Errorf("finding the IOMMU group of %s: no such PCI function: %w", bdf, serr)
		}
		return -1, fmt.Errorf("finding the IOMMU group of %s: the function has no iommu_group link: %w", bdf, ErrNoIOMMU)
	}
	if err != nil {
		return -1, fmt.Errorf("finding the IOMMU group of %s: %w", bdf, err)
	}
	n, err := strconv.Atoi(filepath.Base(link))
	if err != nil || n < 0 {
		return -1, fmt.Errorf("finding the IOMMU group of %s: iommu_group links to %q, which does not end in a group number", bdf, link)
	}
	return n, nil
}

// GroupDevices returns the names (PCI addresses) of the devices in IOMMU
// group number, sorted, from <Sys>/kernel/iommu_groups/<number>/devices.
func (r Root) GroupDevices(number int) ([]string, error) {
	entries, err := os.ReadDir(r.groupDevicesPath(number))
	if err != nil {
		return nil, fmt.Errorf("listing the devices of IOMMU group %d: %w", number, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names, nil
}

// driverOf returns the name of the driver bound to a PCI function, or ""
// when none is (or sysfs cannot say).
func (r Root) driverOf(bdf string) string {
	link, err := os.Readlink(filepath.Join(r.pciDevicePath(bdf), "driver"))
	if err != nil {
		return ""
	}
	return filepath.Base(link)
}

// describeGroup says which devices a group holds and what drives them, for
// error messages: "0000:00:03.0 (vfio-pci), 0000:00:03.1 (nvme)". It
// returns "" when sysfs cannot be read.
func (r Root) describeGroup(number int) string {
	devices, err := r.GroupDevices(number)
	if err != nil || len(devices) == 0 {
		return ""
	}
	parts := make([]string, len(devices))
	for i, d := range devices {
		driver := r.driverOf(d)
		if driver == "" {
			driver = "no driver"
		}
		parts[i] = fmt.Sprintf("%s (%s)", d, driver)
	}
	return strings.Join(parts, ", ")
}
