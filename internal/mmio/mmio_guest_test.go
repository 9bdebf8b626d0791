//go:build guest

package mmio_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/internal/mmio"
	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/vfio"
)

// NVMe controller registers (NVMe base specification, "Controller
// Registers").
const (
	regCAP  = 0x00 // Controller Capabilities, 64 bits
	regVS   = 0x08 // Version
	regCC   = 0x14 // Controller Configuration
	regCSTS = 0x1c // Controller Status
)

// TestNVMeRegistersThroughVFIO reads the controller registers of every
// vfio-bound NVMe through its BAR0 mapped by VFIO, and checks them against
// a second, independent mapping of the same BAR (sysfs resource0) and
// against what the NVMe specification requires of them.
func TestNVMeRegistersThroughVFIO(t *testing.T) {
	guest.Require(t)
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	if len(bdfs) == 0 {
		t.Fatal("no function bound to vfio-pci")
	}
	c, err := vfio.OpenContainer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, bdf := range bdfs {
		t.Run(bdf, func(t *testing.T) { checkRegisters(t, c, bdf) })
	}
}

func checkRegisters(t *testing.T, c *vfio.Container, bdf string) {
	n, err := vfio.GroupOf(bdf)
	if err != nil {
		t.Fatal(err)
	}
	g, err := vfio.OpenGroup(n)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.SetContainer(c); err != nil {
		t.Fatal(err)
	}
	if c.IOMMU() == 0 {
		if err := c.SetIOMMU(vfio.Type1v2IOMMU); err != nil {
			t.Fatal(err)
		}
	}
	d, err := g.Device(bdf)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	info, err := d.RegionInfo(vfio.RegionBAR0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := d.Mmap(vfio.RegionBAR0, 0, info.Size)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	bar := mmio.New(m.Bytes())

	// The same registers through the device fd (pread/pwrite): the
	// kernel does those accesses itself, an independent path to the
	// same device memory. (sysfs resource0 cannot be mapped while
	// vfio-pci holds the BAR.)
	sys := kernelPath{t, d}
	if sysSize, err := resourceSize(bdf); err != nil || sysSize != info.Size {
		t.Errorf("VFIO says BAR0 is 0x%x bytes, sysfs resource says 0x%x (%v)", info.Size, sysSize, err)
	}

	capReg := bar.Read64(regCAP)
	if got := sys.Read64(regCAP); got != capReg {
		t.Errorf("CAP 0x%x through the mapping, 0x%x through the kernel", capReg, got)
	}
	if lo, hi := bar.Read32(regCAP), bar.Read32(regCAP+4); uint64(hi)<<32|uint64(lo) != capReg {
		t.Errorf("CAP read as two halves 0x%x:%x differs from the 64-bit read 0x%x", hi, lo, capReg)
	}
	vs := bar.Read32(regVS)
	if got := sys.Read32(regVS); got != vs {
		t.Errorf("VS 0x%x through the mapping, 0x%x through the kernel", vs, got)
	}
	major, minor := vs>>16, vs>>8&0xff
	if major != 1 || minor < 2 {
		t.Errorf("VS = 0x%x (NVMe %d.%d), want 1.2 or later", vs, major, minor)
	}
	if mqes := capReg & 0xffff; mqes == 0 {
		t.Error("CAP.MQES = 0: a queue of one entry is not allowed")
	}
	if css := capReg >> 37 & 0xff; css&1 == 0 {
		t.Errorf("CAP.CSS = 0x%x lacks the NVM command set", css)
	}
	if to := capReg >> 24 & 0xff; to == 0 {
		t.Error("CAP.TO = 0")
	}
	// The doorbells (at 0x1000 + stride) must lie inside the BAR.
	stride := uint64(4) << (capReg >> 32 & 0xf)
	if err := bar.Check(0x1000+stride, 4); err != nil {
		t.Errorf("first completion doorbell: %v", err)
	}
	// A register write reaches the device: INTMS/INTMC write-1-to-set
	// semantics are only defined with INTx, so use CC.IOSQES while the
	// controller is disabled (CC.EN = 0 after the guest's boot), restore it.
	cc := bar.Read32(regCC)
	if cc&1 != 0 {
		// An earlier test left it enabled: disable it and wait for
		// CSTS.RDY to clear, as long as CAP.TO allows.
		cc &^= 1
		bar.Write32(regCC, cc)
		deadline := time.Now().Add(time.Duration(capReg>>24&0xff) * 500 * time.Millisecond)
		for bar.Read32(regCSTS)&1 != 0 {
			if time.Now().After(deadline) {
				t.Fatal("controller did not become ready for configuration (CSTS.RDY stayed 1)")
			}
			time.Sleep(time.Millisecond)
		}
	}
	bar.Write32(regCC, cc&^(0xf<<16)|6<<16) // IOSQES = 6 (64-byte entries)
	if got := sys.Read32(regCC); got>>16&0xf != 6 {
		t.Errorf("CC written through the mapping reads back 0x%x through the kernel", got)
	}
	bar.Write32(regCC, cc)
	if got := bar.Read32(regCC); got != cc {
		t.Errorf("CC restored to 0x%x reads 0x%x", cc, got)
	}

	// Config space through VFIO agrees with sysfs.
	var id [4]byte
	if _, err := d.ReadConfig(id[:], 0); err != nil {
		t.Fatal(err)
	}
	vendor, _ := os.ReadFile(filepath.Join("/sys/bus/pci/devices", bdf, "vendor"))
	want, _ := strconv.ParseUint(strings.TrimSpace(string(vendor)), 0, 16)
	if got := uint64(id[0]) | uint64(id[1])<<8; got != want {
		t.Errorf("vendor 0x%x through VFIO config space, 0x%x in sysfs", got, want)
	}
}

// kernelPath reads BAR0 registers with pread on the VFIO device fd.
type kernelPath struct {
	t *testing.T
	d *vfio.Device
}

func (k kernelPath) Read32(off int64) uint32 {
	var b [4]byte
	if _, err := k.d.ReadRegion(vfio.RegionBAR0, b[:], off); err != nil {
		k.t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

func (k kernelPath) Read64(off int64) uint64 {
	return uint64(k.Read32(off+4))<<32 | uint64(k.Read32(off))
}

// resourceSize returns the size of BAR0 from the function's sysfs
// resource file (start, end, flags per line).
func resourceSize(bdf string) (uint64, error) {
	data, err := os.ReadFile(filepath.Join("/sys/bus/pci/devices", bdf, "resource"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
	if len(f) < 2 {
		return 0, fmt.Errorf("resource line %q", f)
	}
	start, err1 := strconv.ParseUint(f[0], 0, 64)
	end, err2 := strconv.ParseUint(f[1], 0, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("resource line %q", f)
	}
	return end - start + 1, nil
}
