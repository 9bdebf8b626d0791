package qemu

import (
	"strings"
	"testing"
	"time"
)

func TestTraceCounter(t *testing.T) {
	tc := &TraceCounter{Events: DoorbellEvents}
	base := time.Unix(1700000000, 0)
	// Phase a: two SQ and two CQ writes in its first millisecond and one
	// more SQ write 5 ms later; phase b: one of each, 1 s later. Other
	// lines are QEMU's own messages and a timestamp-less trace line.
	log := strings.Join([]string{
		"123@1700000000.000100:pci_nvme_mmio_doorbell_sq sqid 1 new_tail 1",
		"123@1700000000.000200:pci_nvme_mmio_doorbell_cq cqid 1 new_head 1",
		"123@1700000000.000300:pci_nvme_mmio_doorbell_sq sqid 1 new_tail 2",
		"123@1700000000.000900:pci_nvme_mmio_doorbell_cq cqid 1 new_head 2",
		"123@1700000000.005000:pci_nvme_mmio_doorbell_sq sqid 1 new_tail 3",
		"qemu-system-x86_64: warning: something",
		"pci_nvme_mmio_doorbell_sq sqid 1 new_tail 4",
		"123@1700000000.005001:pci_nvme_mmio_doorbell_sq_other x",
		"123@1700000001.000000:pci_nvme_mmio_doorbell_sq sqid 2 new_tail 1",
		"123@1700000001.000999:pci_nvme_mmio_doorbell_cq cqid 2 new_head 1",
	}, "\n")
	tc.consume(strings.NewReader(log))
	tc.mark("begin a", base)
	tc.mark("end a", base.Add(10*time.Millisecond))
	tc.mark("begin b ", base.Add(time.Second))
	tc.mark("end b", base.Add(time.Second+time.Millisecond/2))
	tc.mark("begin c", base.Add(2*time.Second)) // never ends

	ph := tc.Phases()
	if len(ph) != 2 || ph[0].Name != "a" || ph[1].Name != "b" {
		t.Fatalf("phases %+v, want a and b", ph)
	}
	for _, c := range []struct {
		p      Phase
		sq, cq uint64
	}{{ph[0], 3, 2}, {ph[1], 1, 1}} {
		sq := tc.Count(DoorbellEvents[0], c.p.Begin, c.p.End)
		cq := tc.Count(DoorbellEvents[1], c.p.Begin, c.p.End)
		if sq != c.sq || cq != c.cq {
			t.Errorf("phase %s: %d SQ and %d CQ writes, want %d and %d", c.p.Name, sq, cq, c.sq, c.cq)
		}
	}
	if n := tc.Count("no_such_event", base, base.Add(time.Hour)); n != 0 {
		t.Errorf("an event not traced counted %d", n)
	}
	all, other := tc.Lines()
	if all != 10 || other != 3 {
		t.Errorf("%d lines, %d not counted; want 10 and 3", all, other)
	}
}

func TestParseTimestampMS(t *testing.T) {
	for in, want := range map[string]int64{"1700000000.000100": 1700000000000, "12.345678": 12345, "0.999999": 999} {
		if got, ok := parseTimestampMS([]byte(in)); !ok || got != want {
			t.Errorf("%s: %d %v, want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "12", "12.", ".5", "1x.5", "1.5y"} {
		if _, ok := parseTimestampMS([]byte(in)); ok {
			t.Errorf("%q parsed", in)
		}
	}
}
