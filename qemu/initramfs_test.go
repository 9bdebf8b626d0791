package qemu

import (
	"reflect"
	"strings"
	"testing"
)

const sampleModulesDep = `kernel/drivers/vfio/vfio.ko.xz:
kernel/drivers/vfio/vfio_iommu_type1.ko.xz: kernel/drivers/vfio/vfio.ko.xz
kernel/drivers/vfio/pci/vfio-pci-core.ko.xz: kernel/drivers/vfio/vfio.ko.xz kernel/virt/lib/irqbypass.ko.xz
kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz kernel/drivers/vfio/vfio.ko.xz kernel/virt/lib/irqbypass.ko.xz
kernel/virt/lib/irqbypass.ko.xz:
kernel/drivers/nvme/host/nvme.ko.xz: kernel/drivers/nvme/host/nvme-core.ko.xz
kernel/drivers/nvme/host/nvme-core.ko.xz:
kernel/fs/unrelated.ko.xz:
`

func TestModuleClosure(t *testing.T) {
	got, err := parseModuleClosure(strings.NewReader(sampleModulesDep), []string{"vfio_pci", "vfio-iommu-type1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/drivers/vfio/pci/vfio-pci-core.ko.xz",
		"kernel/drivers/vfio/pci/vfio-pci.ko.xz",
		"kernel/drivers/vfio/vfio.ko.xz",
		"kernel/drivers/vfio/vfio_iommu_type1.ko.xz",
		"kernel/virt/lib/irqbypass.ko.xz",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("closure:\n got %v\nwant %v", got, want)
	}
	if _, err := parseModuleClosure(strings.NewReader(sampleModulesDep), []string{"nvmet"}); err == nil || !strings.Contains(err.Error(), "nvmet") {
		t.Errorf("missing module: err = %v", err)
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/vfio/pci/vfio-pci.ko.xz": "vfio_pci",
		"vfio-pci":                               "vfio_pci",
		"nvme.ko":                                "nvme",
		"a/b/nvme-core.ko.zst":                   "nvme_core",
	} {
		if got := moduleName(in); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", in, got, want)
		}
	}
}
