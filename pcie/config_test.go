package pcie

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/umdkit/umd/pcie/pcietest"
)

var update = flag.Bool("update", false, "rewrite golden files and the fuzz seed corpus in testdata/")

// nvmeImage is a config space like QEMU's NVMe controller's.
func nvmeImage() []byte {
	return pcietest.NewConfig(0x1b36, 0x0010, 0x010802).Revision(2).Subsystem(0x1af4, 0x1100).
		PowerManagement().MSIX(65, 0, 0x2000, 0, 0x3000).PCIe(pcietest.Endpoint, pcietest.Gen3, 4, pcietest.Gen1, 1).
		AER(0x10, 0x2000).Bytes()
}

// sriovImage is an SR-IOV PF with everything the parser decodes.
func sriovImage() []byte {
	return pcietest.NewConfig(0x8086, 0x1572, 0x020000).MultiFunction().
		MSI(3).MSIX(129, 3, 0, 3, 0x1000).PCIe(pcietest.Endpoint, pcietest.Gen4, 8, pcietest.Gen4, 8).
		AER(0, 0).ACS(0x5f, 0x1d).SRIOV(64, 4, 16, 2, 0x154c).ATS().PRI(512).PASID(20).ARIAndSerial().Bytes()
}

func bridgeImage() []byte {
	return pcietest.NewConfig(0x104c, 0x8232, 0x060400).Buses(1, 2, 4).
		PCIe(pcietest.UpstreamPort, pcietest.Gen3, 4, pcietest.Gen3, 4).MSI(0).Cap(0x0d, 0, 0, 0x86, 0x80, 0x34, 0x12).Bytes()
}

func TestParseConfigNVMe(t *testing.T) {
	cfg, err := ParseConfig(nvmeImage())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.VendorID != 0x1b36 || cfg.DeviceID != 0x10 || cfg.Class != ClassNVMe || cfg.Revision != 2 ||
		cfg.SubsystemVendor != 0x1af4 || cfg.SubsystemDevice != 0x1100 || cfg.HeaderType != 0 || cfg.IsBridge() {
		t.Errorf("header = %+v", cfg)
	}
	var names []string
	for _, c := range cfg.Capabilities {
		names = append(names, c.String())
	}
	if got, want := strings.Join(names, " "), "Power Management@0x40 MSI-X@0x48 PCI Express@0x54 AER@0x100"; got != want {
		t.Errorf("capabilities = %s; want %s", got, want)
	}
	want := &MSIXCap{Offset: 0x48, TableSize: 65, TableBIR: 0, TableOffset: 0x2000, PBABIR: 0, PBAOffset: 0x3000}
	if !reflect.DeepEqual(cfg.MSIX, want) {
		t.Errorf("MSIX = %+v; want %+v", cfg.MSIX, want)
	}
	p := cfg.PCIe
	if p == nil || p.PortType != PortEndpoint || p.Version != 2 || p.MaxLinkSpeed != 8000 || p.MaxLinkWidth != 4 ||
		p.LinkSpeed != 2500 || p.LinkWidth != 1 || p.MaxPayload != 256 {
		t.Errorf("PCIe = %+v", p)
	}
	if cfg.AER == nil || cfg.AER.UncorrectableStatus != 0x10 || cfg.AER.CorrectableStatus != 0x2000 {
		t.Errorf("AER = %+v", cfg.AER)
	}
	if cfg.MSI != nil || cfg.SRIOV != nil || cfg.ACS != nil || len(cfg.Problems) != 0 {
		t.Errorf("unexpected: MSI %v SRIOV %v ACS %v problems %q", cfg.MSI, cfg.SRIOV, cfg.ACS, cfg.Problems)
	}
	if !cfg.Has(CapMSIX, false) || cfg.Has(CapMSIX, true) || !cfg.Has(ExtCapAER, true) {
		t.Error("Has does not tell the two lists apart")
	}
}

func TestParseConfigSRIOV(t *testing.T) {
	cfg, err := ParseConfig(sriovImage())
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.MultiFunction {
		t.Error("multi-function bit not seen")
	}
	if m := cfg.MSI; m == nil || m.Vectors != 8 || !m.Address64 || m.Enabled {
		t.Errorf("MSI = %+v", m)
	}
	if a := cfg.ACS; a == nil || a.Capability != 0x5f || a.Control != 0x1d {
		t.Errorf("ACS = %+v", a)
	}
	wantSRIOV := &SRIOVCap{Offset: cfg.SRIOV.Offset, Enabled: true, InitialVFs: 64, TotalVFs: 64, NumVFs: 4, VFOffset: 16, VFStride: 2, VFDeviceID: 0x154c}
	if !reflect.DeepEqual(cfg.SRIOV, wantSRIOV) {
		t.Errorf("SRIOV = %+v; want %+v", cfg.SRIOV, wantSRIOV)
	}
	if a := cfg.ATS; a == nil || a.InvalidateQDepth != 32 || a.Enabled {
		t.Errorf("ATS = %+v", a)
	}
	if p := cfg.PRI; p == nil || p.Outstanding != 512 {
		t.Errorf("PRI = %+v", p)
	}
	if p := cfg.PASID; p == nil || p.Width != 20 {
		t.Errorf("PASID = %+v", p)
	}
	var ext []string
	for _, c := range cfg.Capabilities {
		if c.Extended {
			ext = append(ext, c.Name)
		}
	}
	if got, want := strings.Join(ext, ","), "AER,ACS,SR-IOV,ATS,PRI,PASID,ARI,Device Serial Number"; got != want {
		t.Errorf("extended capabilities = %s; want %s", got, want)
	}
}

func TestParseConfigBridge(t *testing.T) {
	cfg, err := ParseConfig(bridgeImage())
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.IsBridge() || cfg.PrimaryBus != 1 || cfg.SecondaryBus != 2 || cfg.SubordinateBus != 4 {
		t.Errorf("bridge header = %+v", cfg)
	}
	if cfg.PCIe == nil || cfg.PCIe.PortType != PortUpstream {
		t.Errorf("PCIe = %+v", cfg.PCIe)
	}
	// A bridge's subsystem IDs live in the Bridge Subsystem ID capability.
	if cfg.SubsystemVendor != 0x8086 || cfg.SubsystemDevice != 0x1234 {
		t.Errorf("subsystem = %v:%v; want 8086:1234", cfg.SubsystemVendor, cfg.SubsystemDevice)
	}
}

func TestParseConfigUnprivileged(t *testing.T) {
	// 64 bytes is all an unprivileged reader gets: header only, and
	// that is not a problem of the device.
	cfg, err := ParseConfig(nvmeImage()[:64])
	if err != nil {
		t.Fatal(err)
	}
	if cfg.VendorID != 0x1b36 || len(cfg.Capabilities) != 0 || len(cfg.Problems) != 0 {
		t.Errorf("64-byte parse: vendor %v, caps %v, problems %q", cfg.VendorID, cfg.Capabilities, cfg.Problems)
	}
	if _, err := ParseConfig(make([]byte, 63)); !errors.Is(err, ErrShortConfig) {
		t.Errorf("63 bytes: err = %v; want ErrShortConfig", err)
	}
}

// damaged returns images whose capability lists are broken in one way
// each, with the problem the parser must report.
func damaged() map[string]struct {
	image   []byte
	problem string
} {
	out := map[string]struct {
		image   []byte
		problem string
	}{}
	add := func(name string, b []byte, problem string) {
		out[name] = struct {
			image   []byte
			problem string
		}{b, problem}
	}

	// Conventional list looping back on itself: 0x40 -> 0x48 -> 0x40.
	b := nvmeImage()
	b[0x48+1] = 0x40
	add("loop", b, "capability list loops back to 0x40")

	// A capability pointing to itself.
	b = nvmeImage()
	b[0x41] = 0x40
	add("self-loop", b, "loops back to 0x40")

	// A pointer into the header.
	b = nvmeImage()
	b[0x34] = 0x10
	add("into-header", b, "capability pointer 0x10 is outside 0x40-0xff")

	// Extended list looping.
	b = sriovImage()
	hdr := binary.LittleEndian.Uint32(b[0x100:])
	second := int(hdr >> 20)
	h2 := binary.LittleEndian.Uint32(b[second:])
	binary.LittleEndian.PutUint32(b[second:], h2&0xfffff|0x100<<20)
	add("ext-loop", b, "extended capability list loops back to 0x100")

	// Extended pointer below 0x100.
	b = sriovImage()
	hdr = binary.LittleEndian.Uint32(b[0x100:])
	binary.LittleEndian.PutUint32(b[0x100:], hdr&0xfffff|0x40<<20)
	add("ext-low", b, "extended capability pointer 0x40 is outside 0x100-0xffc")

	// Cut in the middle of the PCIe capability.
	add("cut-pcie", nvmeImage()[:0x60], "PCI Express capability at 0x54 is cut short")

	// Cut before the extended list's end.
	add("cut-ext", sriovImage()[:0x104], "lies past the 260 bytes read")

	// The function is gone: everything reads as ones.
	ones := make([]byte, 4096)
	for i := range ones {
		ones[i] = 0xff
	}
	add("all-ones", ones, "vendor ID reads 0xffff")
	return out
}

func TestParseConfigDamaged(t *testing.T) {
	for name, tc := range damaged() {
		t.Run(name, func(t *testing.T) {
			cfg, err := ParseConfig(tc.image)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(cfg.Problems, "\n"), tc.problem) {
				t.Errorf("problems = %q; want one containing %q", cfg.Problems, tc.problem)
			}
		})
	}
}

// TestFuzzSeeds writes the seed corpus of FuzzParseConfig with -update,
// and otherwise checks it is there.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParseConfig")
	seeds := map[string][]byte{
		"nvme":     nvmeImage(),
		"sriov":    sriovImage(),
		"bridge":   bridgeImage(),
		"header64": nvmeImage()[:64],
	}
	for name, d := range damaged() {
		seeds[name] = d.image
	}
	for name, b := range seeds {
		// Trailing zeros add nothing to a seed but size; the parser
		// reads a short image as cut there, which is a case of its own.
		n := len(b)
		for n > 64 && b[n-1] == 0 {
			n--
		}
		b = b[:min(len(b), (n+15)&^15)]
		p := filepath.Join(dir, name)
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got, err := os.ReadFile(p); err != nil || string(got) != content {
			t.Errorf("seed %s is missing or stale; run go test ./pcie -run TestFuzzSeeds -update", p)
		}
	}
}

// FuzzParseConfig feeds the parser any bytes: it must not panic, must end,
// and must only report capabilities that lie inside the image.
func FuzzParseConfig(f *testing.F) {
	f.Add(nvmeImage())
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseConfig(b)
		if err != nil {
			if len(b) >= 64 {
				t.Fatalf("error on %d bytes: %v", len(b), err)
			}
			return
		}
		if len(cfg.Capabilities) > (256-64)/4+(4096-256)/4 {
			t.Fatalf("%d capabilities: more than fit", len(cfg.Capabilities))
		}
		for _, c := range cfg.Capabilities {
			if int(c.Offset) >= len(b) {
				t.Fatalf("capability %v lies past the %d bytes", c, len(b))
			}
		}
	})
}
