//go:build guest

package vfio_test

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/vfio"
)

// TestGuestDeviceInterrupt has the NVMe controller itself raise MSI-X
// vector 0: it brings up an admin queue pair in DMA memory, submits one
// Identify Controller command, and waits for the completion's interrupt on
// the vector's eventfd. This is the smallest real use of the whole path:
// bus mastering, an IOMMU mapping, BAR0 registers, MSI-X through interrupt
// remapping, and the eventfd on the runtime poller. The protocol engine
// proper (package nvmelike, later) does this for real; the register
// offsets here are the NVMe base specification's.
func TestGuestDeviceInterrupt(t *testing.T) {
	guest.Require(t)
	s, d := openFirst(t)
	irq := newInterrupts(t, d, 1)[0]
	if err := d.ConnectIRQ(vfio.IRQMSIX, 0, irq); err != nil {
		t.Fatal(err)
	}

	// DMA memory: admin SQ, admin CQ, Identify data, a page each.
	const page = 4096
	mem, err := unix.Mmap(-1, 0, 3*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	const iova = 1 << 30
	if err := s.container.MapDMA(mem, iova, vfio.DMAReadWrite); err != nil {
		t.Fatal(err)
	}
	defer s.container.UnmapDMA(iova, uint64(len(mem)))
	sq, cq, data := mem[0:page], mem[page:2*page], mem[2*page:]
	sqIOVA, cqIOVA, dataIOVA := uint64(iova), uint64(iova+page), uint64(iova+2*page)

	// Bus mastering on, so the controller may DMA (and signal MSI-X).
	const pciCommand, busMaster = 0x04, 1 << 2
	cmd := make([]byte, 2)
	if _, err := d.ReadConfig(cmd, pciCommand); err != nil {
		t.Fatal(err)
	}
	old := binary.LittleEndian.Uint16(cmd)
	binary.LittleEndian.PutUint16(cmd, old|busMaster)
	if _, err := d.WriteConfig(cmd, pciCommand); err != nil {
		t.Fatal(err)
	}
	defer func() {
		binary.LittleEndian.PutUint16(cmd, old)
		if _, err := d.WriteConfig(cmd, pciCommand); err != nil {
			t.Error(err)
		}
	}()

	bar0, err := d.Mmap(vfio.RegionBAR0, 0, 0x2000)
	if err != nil {
		t.Fatal(err)
	}
	defer bar0.Close()
	regs := bar0.Bytes()
	// 32-bit register accesses: the compiler turns these into single
	// 4-byte loads and stores, which is what the controller accepts.
	read32 := func(off int) uint32 { return binary.LittleEndian.Uint32(regs[off:]) }
	write32 := func(off int, v uint32) { binary.LittleEndian.PutUint32(regs[off:], v) }
	const (
		regCAP       = 0x00
		regCC        = 0x14
		regCSTS      = 0x1c
		regAQA       = 0x24
		regASQ       = 0x28
		regACQ       = 0x30
		regDoorbells = 0x1000
	)
	stride := 4 << (read32(regCAP+4) & 0xf) // doorbell stride, from CAP.DSTRD (bits 35:32)
	awaitReady := func(want uint32) {
		t.Helper()
		for start := time.Now(); time.Since(start) < guard; time.Sleep(time.Millisecond) {
			csts := read32(regCSTS)
			if csts&2 != 0 {
				t.Fatalf("controller fatal status (CSTS %#x)", csts)
			}
			if csts&1 == want {
				return
			}
		}
		t.Fatalf("CSTS.RDY did not become %d", want)
	}
	disable := func() {
		write32(regCC, 0)
		awaitReady(0)
	}
	disable()
	defer disable()

	const depth = 2
	write32(regAQA, (depth-1)<<16|(depth-1))
	write32(regASQ, uint32(sqIOVA))
	write32(regASQ+4, uint32(sqIOVA>>32))
	write32(regACQ, uint32(cqIOVA))
	write32(regACQ+4, uint32(cqIOVA>>32))
	// CC: enable, NVM command set, 4 KiB pages, 64-byte SQ and 16-byte CQ
	// entries.
	write32(regCC, 1|6<<16|4<<20)
	awaitReady(1)

	// Identify Controller (opcode 0x06, CNS 1) into data, command id 7.
	clear(sq[:64])
	binary.LittleEndian.PutUint32(sq[0:], 0x06|7<<16)
	binary.LittleEndian.PutUint64(sq[24:], dataIOVA)
	binary.LittleEndian.PutUint32(sq[40:], 1)
	if n, err := irq.TryRead(); n != 0 || err != nil {
		t.Fatalf("the vector fired before the command was submitted: %d, %v", n, err)
	}
	write32(regDoorbells, 1) // admin SQ tail

	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	n, err := irq.Wait(ctx)
	if err != nil || n < 1 {
		t.Fatalf("waiting for the completion interrupt on MSI-X vector 0: %d, %v", n, err)
	}
	dw3 := binary.LittleEndian.Uint32(cq[12:])
	cid, phase, status := dw3&0xffff, dw3>>16&1, dw3>>17
	if cid != 7 || phase != 1 || status != 0 {
		t.Errorf("completion: command id %d, phase %d, status %#x; want 7, 1, 0", cid, phase, status)
	}
	write32(regDoorbells+stride, 1) // admin CQ head

	vid := binary.LittleEndian.Uint16(data[0:])
	serial := strings.TrimSpace(string(data[4:24]))
	t.Logf("Identify: vendor %#04x, serial %q; %d interrupt(s) on vector 0", vid, serial, n)
	if vid != qemuVendor || !strings.HasPrefix(serial, "umd-") {
		t.Errorf("Identify data: vendor %#04x serial %q; want %#04x and a umd serial", vid, serial, qemuVendor)
	}
}
