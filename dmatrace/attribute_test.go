package dmatrace

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/iommu"
)

// identitySpace is a Space over the identity mapper (no kernel), closed
// at the end of the test.
func identitySpace(t *testing.T) *iommu.Space {
	t.Helper()
	m, err := iommu.NewIdentity(iommu.IdentityOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := iommu.New(m, iommu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// anonMemory is page-aligned memory, as MapPool wants, unmapped at the end
// of the test. (The identity mapper never touches it, so the order of
// this cleanup and the Space's does not matter.)
func anonMemory(t *testing.T, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Munmap(mem); err != nil {
			t.Error(err)
		}
	})
	return mem
}

type fakeEngine struct {
	bdf  string
	iova uint64
	cmd  Command
}

func (e fakeEngine) InFlight(bdf string, iova uint64) (Command, bool) {
	if bdf == e.bdf && iova>>12 == e.iova>>12 {
		return e.cmd, true
	}
	return Command{}, false
}

func TestAttribute(t *testing.T) {
	s := identitySpace(t)
	queues, err := s.MapPool(anonMemory(t, 8<<10), iommu.Owner{Name: "admin queues"}, iommu.MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ro, err := s.MapPool(anonMemory(t, 4<<10), iommu.Owner{Name: "firmware image", ID: 3}, iommu.MapOptions{Perm: iommu.PermRead})
	if err != nil {
		t.Fatal(err)
	}
	data, err := s.MapPool(anonMemory(t, 16<<10), iommu.Owner{Name: "client pool", ID: 9, Tag: "qpair 2"}, iommu.MapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dataIOVA := data.IOVA()
	if err := data.Unmap(); err != nil {
		t.Fatal(err)
	}
	unmappedAt := s.Ledger().Recent()[0].Unmapped
	eng := fakeEngine{bdf: "0000:00:03.0", iova: dataIOVA + 0x2000, cmd: Command{Queue: 2, CID: 17, Opcode: 0x02}}
	fault := func(iova uint64) Fault {
		return Fault{Source: SourceDMAR, Time: unmappedAt.Add(3 * time.Millisecond), BDF: "0000:00:03.0", IOVA: iova, Write: true, Reason: 5}
	}

	// Use after unmap, with the command that pointed there.
	a := Attribute(fault(dataIOVA+0x2000), s, eng)
	if a.Verdict != Unmapped || a.Record.Owner.Name != "client pool" || a.Offset != 0x2000 || a.Since != 3*time.Millisecond {
		t.Errorf("unmapped: %+v", a)
	}
	if !a.HasCommand || a.Command != eng.cmd {
		t.Errorf("unmapped: command %v, %t; want %v", a.Command, a.HasCommand, eng.cmd)
	}
	for _, want := range []string{`"client pool" (owner 9, qpair 2) at offset 0x2000`, "unmapped 3ms ago (use after unmap)", "command queue 2 CID 17 opcode 0x02"} {
		if !strings.Contains(a.String(), want) {
			t.Errorf("%q lacks %q", a, want)
		}
	}
	err = a.Err()
	var fe *DMAFaultError
	if !errors.Is(err, ErrDMAFault) || !errors.As(err, &fe) || fe.Attribution.Command.CID != 17 {
		t.Errorf("Err() = %v", err)
	}

	// A write into memory mapped read-only: live.
	a = Attribute(fault(ro.IOVA()+0x10), s.Ledger(), nil)
	if a.Verdict != Live || a.Record.Owner.Name != "firmware image" || a.Offset != 0x10 || a.HasCommand {
		t.Errorf("read-only: %+v", a)
	}
	if !strings.Contains(a.What(), "mapped read (live)") {
		t.Errorf("read-only: %q", a.What())
	}

	// Never mapped; no book at all; an interrupt-remapping fault.
	for name, a := range map[string]Attribution{
		"never mapped": Attribute(fault(0x40_0000_0000), s, eng),
		"no book":      Attribute(fault(queues.IOVA()), nil, nil),
		"irq remap":    Attribute(Fault{IRQRemap: true, IOVA: queues.IOVA(), Reason: 0x22}, s, eng),
	} {
		if a.Verdict != NeverMapped || a.HasCommand || a.What() != "never mapped" {
			t.Errorf("%s: %+v", name, a)
		}
	}
}

func TestVerdictString(t *testing.T) {
	for v, want := range map[Verdict]string{NeverMapped: "never mapped", Unmapped: "unmapped", Live: "live", 7: "verdict(7)"} {
		if got := v.String(); got != want {
			t.Errorf("Verdict(%d) = %q; want %q", int(v), got, want)
		}
	}
}
