//go:build !guest

// This test needs gcc and the kernel's UAPI headers, which the development
// host has and the QEMU guest does not; it is left out of guest builds.

package vfioabi

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// cStruct pairs a C struct of <linux/vfio.h> with its Go mirror.
type cStruct struct {
	c      string // the C struct's name, without "struct "
	goType reflect.Type
	size   uintptr  // the Go Sizeof constant
	fields []cField // every C field
	flex   string   // the C flexible array member, if any: it must start at size
}

type cField struct{ c, goName string }

func fields(pairs ...string) []cField {
	var fs []cField
	for i := 0; i+1 < len(pairs); i += 2 {
		fs = append(fs, cField{pairs[i], pairs[i+1]})
	}
	return fs
}

var abiStructs = []cStruct{
	{"vfio_group_status", reflect.TypeFor[GroupStatus](), SizeofGroupStatus,
		fields("argsz", "Argsz", "flags", "Flags"), ""},
	{"vfio_device_info", reflect.TypeFor[DeviceInfo](), SizeofDeviceInfo,
		fields("argsz", "Argsz", "flags", "Flags", "num_regions", "NumRegions", "num_irqs", "NumIRQs", "cap_offset", "CapOffset"), ""},
	{"vfio_region_info", reflect.TypeFor[RegionInfo](), SizeofRegionInfo,
		fields("argsz", "Argsz", "flags", "Flags", "index", "Index", "cap_offset", "CapOffset", "size", "Size", "offset", "Offset"), ""},
	{"vfio_region_sparse_mmap_area", reflect.TypeFor[RegionSparseMmapArea](), SizeofRegionSparseMmapArea,
		fields("offset", "Offset", "size", "Size"), ""},
	{"vfio_region_info_cap_sparse_mmap", reflect.TypeFor[RegionInfoCapSparseMmap](), SizeofRegionInfoCapSparseMmap,
		fields("header", "Header", "nr_areas", "NrAreas", "reserved", "Reserved"), "areas"},
	{"vfio_region_info_cap_type", reflect.TypeFor[RegionInfoCapType](), SizeofRegionInfoCapType,
		fields("header", "Header", "type", "Type", "subtype", "Subtype"), ""},
	{"vfio_irq_info", reflect.TypeFor[IRQInfo](), SizeofIRQInfo,
		fields("argsz", "Argsz", "flags", "Flags", "index", "Index", "count", "Count"), ""},
	{"vfio_irq_set", reflect.TypeFor[IRQSet](), SizeofIRQSet,
		fields("argsz", "Argsz", "flags", "Flags", "index", "Index", "start", "Start", "count", "Count"), "data"},
	{"vfio_info_cap_header", reflect.TypeFor[InfoCapHeader](), SizeofInfoCapHeader,
		fields("id", "ID", "version", "Version", "next", "Next"), ""},
	{"vfio_iommu_type1_info", reflect.TypeFor[IOMMUType1Info](), SizeofIOMMUType1Info,
		fields("argsz", "Argsz", "flags", "Flags", "iova_pgsizes", "IOVAPgsizes", "cap_offset", "CapOffset"), ""},
	{"vfio_iova_range", reflect.TypeFor[IOVARange](), SizeofIOVARange,
		fields("start", "Start", "end", "End"), ""},
	{"vfio_iommu_type1_info_cap_iova_range", reflect.TypeFor[IOMMUType1InfoCapIOVARange](), SizeofIOMMUType1InfoCapIOVARange,
		fields("header", "Header", "nr_iovas", "NrIOVAs", "reserved", "Reserved"), "iova_ranges"},
	{"vfio_iommu_type1_info_dma_avail", reflect.TypeFor[IOMMUType1InfoDMAAvail](), SizeofIOMMUType1InfoDMAAvail,
		fields("header", "Header", "avail", "Avail"), ""},
	{"vfio_iommu_type1_dma_map", reflect.TypeFor[IOMMUType1DMAMap](), SizeofIOMMUType1DMAMap,
		fields("argsz", "Argsz", "flags", "Flags", "vaddr", "Vaddr", "iova", "IOVA", "size", "Size"), ""},
	{"vfio_iommu_type1_dma_unmap", reflect.TypeFor[IOMMUType1DMAUnmap](), SizeofIOMMUType1DMAUnmap,
		fields("argsz", "Argsz", "flags", "Flags", "iova", "IOVA", "size", "Size"), "data"},
	{"vfio_device_feature", reflect.TypeFor[DeviceFeature](), SizeofDeviceFeature,
		fields("argsz", "Argsz", "flags", "Flags"), "data"},
	{"vfio_device_feature_migration", reflect.TypeFor[DeviceFeatureMigration](), SizeofDeviceFeatureMigration,
		fields("flags", "Flags"), ""},
	{"vfio_device_low_power_entry_with_wakeup", reflect.TypeFor[DeviceLowPowerEntryWithWakeup](), SizeofDeviceLowPowerEntryWithWakeup,
		fields("wakeup_eventfd", "WakeupEventfd", "reserved", "Reserved"), ""},
}

// abiConsts lists every constant of the package with its Go value; the C
// program prints the header's value of the same name.
var abiConsts = map[string]uint64{
	"VFIO_API_VERSION": VFIO_API_VERSION,

	"VFIO_TYPE1_IOMMU":         VFIO_TYPE1_IOMMU,
	"VFIO_SPAPR_TCE_IOMMU":     VFIO_SPAPR_TCE_IOMMU,
	"VFIO_TYPE1v2_IOMMU":       VFIO_TYPE1v2_IOMMU,
	"VFIO_DMA_CC_IOMMU":        VFIO_DMA_CC_IOMMU,
	"VFIO_EEH":                 VFIO_EEH,
	"VFIO_TYPE1_NESTING_IOMMU": VFIO_TYPE1_NESTING_IOMMU,
	"VFIO_SPAPR_TCE_v2_IOMMU":  VFIO_SPAPR_TCE_v2_IOMMU,
	"VFIO_NOIOMMU_IOMMU":       VFIO_NOIOMMU_IOMMU,
	"VFIO_UNMAP_ALL":           VFIO_UNMAP_ALL,
	"VFIO_UPDATE_VADDR":        VFIO_UPDATE_VADDR,

	"VFIO_TYPE": VFIO_TYPE,
	"VFIO_BASE": VFIO_BASE,

	"VFIO_GET_API_VERSION":        VFIO_GET_API_VERSION,
	"VFIO_CHECK_EXTENSION":        VFIO_CHECK_EXTENSION,
	"VFIO_SET_IOMMU":              VFIO_SET_IOMMU,
	"VFIO_GROUP_GET_STATUS":       VFIO_GROUP_GET_STATUS,
	"VFIO_GROUP_SET_CONTAINER":    VFIO_GROUP_SET_CONTAINER,
	"VFIO_GROUP_UNSET_CONTAINER":  VFIO_GROUP_UNSET_CONTAINER,
	"VFIO_GROUP_GET_DEVICE_FD":    VFIO_GROUP_GET_DEVICE_FD,
	"VFIO_DEVICE_GET_INFO":        VFIO_DEVICE_GET_INFO,
	"VFIO_DEVICE_GET_REGION_INFO": VFIO_DEVICE_GET_REGION_INFO,
	"VFIO_DEVICE_GET_IRQ_INFO":    VFIO_DEVICE_GET_IRQ_INFO,
	"VFIO_DEVICE_SET_IRQS":        VFIO_DEVICE_SET_IRQS,
	"VFIO_DEVICE_RESET":           VFIO_DEVICE_RESET,
	"VFIO_DEVICE_FEATURE":         VFIO_DEVICE_FEATURE,
	"VFIO_IOMMU_GET_INFO":         VFIO_IOMMU_GET_INFO,
	"VFIO_IOMMU_MAP_DMA":          VFIO_IOMMU_MAP_DMA,
	"VFIO_IOMMU_UNMAP_DMA":        VFIO_IOMMU_UNMAP_DMA,

	"VFIO_GROUP_FLAGS_VIABLE":        VFIO_GROUP_FLAGS_VIABLE,
	"VFIO_GROUP_FLAGS_CONTAINER_SET": VFIO_GROUP_FLAGS_CONTAINER_SET,

	"VFIO_DEVICE_FLAGS_RESET":    VFIO_DEVICE_FLAGS_RESET,
	"VFIO_DEVICE_FLAGS_PCI":      VFIO_DEVICE_FLAGS_PCI,
	"VFIO_DEVICE_FLAGS_PLATFORM": VFIO_DEVICE_FLAGS_PLATFORM,
	"VFIO_DEVICE_FLAGS_AMBA":     VFIO_DEVICE_FLAGS_AMBA,
	"VFIO_DEVICE_FLAGS_CCW":      VFIO_DEVICE_FLAGS_CCW,
	"VFIO_DEVICE_FLAGS_AP":       VFIO_DEVICE_FLAGS_AP,
	"VFIO_DEVICE_FLAGS_FSL_MC":   VFIO_DEVICE_FLAGS_FSL_MC,
	"VFIO_DEVICE_FLAGS_CAPS":     VFIO_DEVICE_FLAGS_CAPS,

	"VFIO_REGION_INFO_FLAG_READ":  VFIO_REGION_INFO_FLAG_READ,
	"VFIO_REGION_INFO_FLAG_WRITE": VFIO_REGION_INFO_FLAG_WRITE,
	"VFIO_REGION_INFO_FLAG_MMAP":  VFIO_REGION_INFO_FLAG_MMAP,
	"VFIO_REGION_INFO_FLAG_CAPS":  VFIO_REGION_INFO_FLAG_CAPS,

	"VFIO_REGION_INFO_CAP_SPARSE_MMAP":   VFIO_REGION_INFO_CAP_SPARSE_MMAP,
	"VFIO_REGION_INFO_CAP_TYPE":          VFIO_REGION_INFO_CAP_TYPE,
	"VFIO_REGION_INFO_CAP_MSIX_MAPPABLE": VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,

	"VFIO_IRQ_INFO_EVENTFD":    VFIO_IRQ_INFO_EVENTFD,
	"VFIO_IRQ_INFO_MASKABLE":   VFIO_IRQ_INFO_MASKABLE,
	"VFIO_IRQ_INFO_AUTOMASKED": VFIO_IRQ_INFO_AUTOMASKED,
	"VFIO_IRQ_INFO_NORESIZE":   VFIO_IRQ_INFO_NORESIZE,

	"VFIO_IRQ_SET_DATA_NONE":        VFIO_IRQ_SET_DATA_NONE,
	"VFIO_IRQ_SET_DATA_BOOL":        VFIO_IRQ_SET_DATA_BOOL,
	"VFIO_IRQ_SET_DATA_EVENTFD":     VFIO_IRQ_SET_DATA_EVENTFD,
	"VFIO_IRQ_SET_ACTION_MASK":      VFIO_IRQ_SET_ACTION_MASK,
	"VFIO_IRQ_SET_ACTION_UNMASK":    VFIO_IRQ_SET_ACTION_UNMASK,
	"VFIO_IRQ_SET_ACTION_TRIGGER":   VFIO_IRQ_SET_ACTION_TRIGGER,
	"VFIO_IRQ_SET_DATA_TYPE_MASK":   VFIO_IRQ_SET_DATA_TYPE_MASK,
	"VFIO_IRQ_SET_ACTION_TYPE_MASK": VFIO_IRQ_SET_ACTION_TYPE_MASK,

	"VFIO_PCI_BAR0_REGION_INDEX":   VFIO_PCI_BAR0_REGION_INDEX,
	"VFIO_PCI_BAR1_REGION_INDEX":   VFIO_PCI_BAR1_REGION_INDEX,
	"VFIO_PCI_BAR2_REGION_INDEX":   VFIO_PCI_BAR2_REGION_INDEX,
	"VFIO_PCI_BAR3_REGION_INDEX":   VFIO_PCI_BAR3_REGION_INDEX,
	"VFIO_PCI_BAR4_REGION_INDEX":   VFIO_PCI_BAR4_REGION_INDEX,
	"VFIO_PCI_BAR5_REGION_INDEX":   VFIO_PCI_BAR5_REGION_INDEX,
	"VFIO_PCI_ROM_REGION_INDEX":    VFIO_PCI_ROM_REGION_INDEX,
	"VFIO_PCI_CONFIG_REGION_INDEX": VFIO_PCI_CONFIG_REGION_INDEX,
	"VFIO_PCI_VGA_REGION_INDEX":    VFIO_PCI_VGA_REGION_INDEX,
	"VFIO_PCI_NUM_REGIONS":         VFIO_PCI_NUM_REGIONS,

	"VFIO_PCI_INTX_IRQ_INDEX": VFIO_PCI_INTX_IRQ_INDEX,
	"VFIO_PCI_MSI_IRQ_INDEX":  VFIO_PCI_MSI_IRQ_INDEX,
	"VFIO_PCI_MSIX_IRQ_INDEX": VFIO_PCI_MSIX_IRQ_INDEX,
	"VFIO_PCI_ERR_IRQ_INDEX":  VFIO_PCI_ERR_IRQ_INDEX,
	"VFIO_PCI_REQ_IRQ_INDEX":  VFIO_PCI_REQ_IRQ_INDEX,
	"VFIO_PCI_NUM_IRQS":       VFIO_PCI_NUM_IRQS,

	"VFIO_IOMMU_INFO_PGSIZES": VFIO_IOMMU_INFO_PGSIZES,
	"VFIO_IOMMU_INFO_CAPS":    VFIO_IOMMU_INFO_CAPS,

	"VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE": VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
	"VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION":  VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
	"VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL":      VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,

	"VFIO_DMA_MAP_FLAG_READ":  VFIO_DMA_MAP_FLAG_READ,
	"VFIO_DMA_MAP_FLAG_WRITE": VFIO_DMA_MAP_FLAG_WRITE,
	"VFIO_DMA_MAP_FLAG_VADDR": VFIO_DMA_MAP_FLAG_VADDR,

	"VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP": VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
	"VFIO_DMA_UNMAP_FLAG_ALL":              VFIO_DMA_UNMAP_FLAG_ALL,
	"VFIO_DMA_UNMAP_FLAG_VADDR":            VFIO_DMA_UNMAP_FLAG_VADDR,

	"VFIO_DEVICE_FEATURE_MASK":  VFIO_DEVICE_FEATURE_MASK,
	"VFIO_DEVICE_FEATURE_GET":   VFIO_DEVICE_FEATURE_GET,
	"VFIO_DEVICE_FEATURE_SET":   VFIO_DEVICE_FEATURE_SET,
	"VFIO_DEVICE_FEATURE_PROBE": VFIO_DEVICE_FEATURE_PROBE,

	"VFIO_DEVICE_FEATURE_PCI_VF_TOKEN":                VFIO_DEVICE_FEATURE_PCI_VF_TOKEN,
	"VFIO_DEVICE_FEATURE_MIGRATION":                   VFIO_DEVICE_FEATURE_MIGRATION,
	"VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE":            VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
	"VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY":             VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY,
	"VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP": VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP,
	"VFIO_DEVICE_FEATURE_LOW_POWER_EXIT":              VFIO_DEVICE_FEATURE_LOW_POWER_EXIT,
	"VFIO_DEVICE_FEATURE_DMA_LOGGING_START":           VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
	"VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP":            VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
	"VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT":          VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,

	"VFIO_MIGRATION_STOP_COPY": VFIO_MIGRATION_STOP_COPY,
	"VFIO_MIGRATION_P2P":       VFIO_MIGRATION_P2P,
}

// cProgram returns a C program that prints, one per line, "key value" for
// every size, field offset and field size of abiStructs and every constant
// of abiConsts, as the system's <linux/vfio.h> defines them.
func cProgram() string {
	var b strings.Builder
	b.WriteString("#include <stddef.h>\n#include <stdio.h>\n#include <linux/vfio.h>\n\n")
	b.WriteString("#define P(key, v) printf(\"%s %llu\\n\", key, (unsigned long long)(v))\n\n")
	b.WriteString("int main(void) {\n")
	for _, s := range abiStructs {
		fmt.Fprintf(&b, "\tP(\"sizeof %s\", sizeof(struct %s));\n", s.c, s.c)
		for _, f := range s.fields {
			fmt.Fprintf(&b, "\tP(\"offsetof %s.%s\", offsetof(struct %s, %s));\n", s.c, f.c, s.c, f.c)
			fmt.Fprintf(&b, "\tP(\"sizeof %s.%s\", sizeof(((struct %s *)0)->%s));\n", s.c, f.c, s.c, f.c)
		}
		if s.flex != "" {
			fmt.Fprintf(&b, "\tP(\"offsetof %s.%s\", offsetof(struct %s, %s));\n", s.c, s.flex, s.c, s.flex)
		}
	}
	for _, name := range sortedKeys(abiConsts) {
		fmt.Fprintf(&b, "\tP(%q, %s);\n", name, name)
	}
	b.WriteString("\treturn 0;\n}\n")
	return b.String()
}

func sortedKeys(m map[string]uint64) []string {
	return slices.Sorted(maps.Keys(m))
}

// cValues compiles and runs cProgram and returns what it printed. It fails
// the test, with the Debian package to install, when gcc or the header is
// missing: this test never skips.
func cValues(t *testing.T) map[string]uint64 {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatalf("this test compiles a C program against <linux/vfio.h> and needs gcc: install it with `apt-get install gcc` (%v)", err)
	}
	const header = "/usr/include/linux/vfio.h"
	if _, err := os.Stat(header); err != nil {
		t.Fatalf("this test needs the kernel UAPI header %s: install it with `apt-get install linux-libc-dev` (%v)", header, err)
	}

	dir := t.TempDir()
	src := filepath.Join(dir, "vfioabi.c")
	bin := filepath.Join(dir, "vfioabi")
	if err := os.WriteFile(src, []byte(cProgram()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(gcc, "-Wall", "-Werror", "-o", bin, src).CombinedOutput()
	if err != nil {
		t.Fatalf("compiling the ABI check program %s: %v\n%s", src, err, out)
	}
	out, err = exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("running the ABI check program: %v", err)
	}

	values := make(map[string]uint64)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("unexpected line from the ABI check program: %q", line)
		}
		v, err := strconv.ParseUint(line[i+1:], 10, 64)
		if err != nil {
			t.Fatalf("unexpected line from the ABI check program: %q", line)
		}
		values[line[:i]] = v
	}
	return values
}

func TestABIMatchesCHeader(t *testing.T) {
	c := cValues(t)
	get := func(key string) uint64 {
		t.Helper()
		v, ok := c[key]
		if !ok {
			t.Fatalf("the ABI check program printed no %q", key)
		}
		return v
	}

	for _, s := range abiStructs {
		t.Run(s.c, func(t *testing.T) {
			if got, want := uint64(s.goType.Size()), get("sizeof "+s.c); got != want {
				t.Errorf("sizeof: Go %s is %d bytes, C struct %s is %d", s.goType, got, s.c, want)
			}
			if got, want := uint64(s.size), get("sizeof "+s.c); got != want {
				t.Errorf("Sizeof constant for %s is %d, C sizeof is %d", s.goType, got, want)
			}
			named := 0
			for i := range s.goType.NumField() {
				if s.goType.Field(i).Name != "_" {
					named++
				}
			}
			if named != len(s.fields) {
				t.Errorf("Go %s has %d named fields, the table lists %d C fields", s.goType, named, len(s.fields))
			}
			for _, f := range s.fields {
				gf, ok := s.goType.FieldByName(f.goName)
				if !ok {
					t.Errorf("Go %s has no field %s (C %s)", s.goType, f.goName, f.c)
					continue
				}
				if got, want := uint64(gf.Offset), get("offsetof "+s.c+"."+f.c); got != want {
					t.Errorf("offset of %s.%s is %d, C %s.%s is at %d", s.goType, f.goName, got, s.c, f.c, want)
				}
				if got, want := uint64(gf.Type.Size()), get("sizeof "+s.c+"."+f.c); got != want {
					t.Errorf("size of %s.%s is %d, C %s.%s is %d", s.goType, f.goName, got, s.c, f.c, want)
				}
			}
			if s.flex != "" {
				if got, want := uint64(s.goType.Size()), get("offsetof "+s.c+"."+s.flex); got != want {
					t.Errorf("C %s.%s[] starts at %d, but Go %s ends at %d", s.c, s.flex, want, s.goType, got)
				}
			}
		})
	}

	for _, name := range sortedKeys(abiConsts) {
		if got, want := abiConsts[name], get(name); got != want {
			t.Errorf("%s = %#x in Go, %#x in <linux/vfio.h>", name, got, want)
		}
	}
}

// TestABIConstsComplete keeps abiConsts honest: every exported constant
// declared in consts.go must be in it, so none escapes the C comparison.
func TestABIConstsComplete(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "consts.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			for _, name := range spec.(*ast.ValueSpec).Names {
				if _, ok := abiConsts[name.Name]; name.IsExported() && !ok {
					t.Errorf("constant %s of consts.go is not checked against the C header: add it to abiConsts", name.Name)
				}
			}
		}
	}
}
