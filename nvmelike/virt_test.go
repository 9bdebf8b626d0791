package nvmelike

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestVirtualizationManagementCommand(t *testing.T) {
	c := VirtualizationManagementCommand(VirtSecondaryAssign, VirtInterrupts, 0x0102, 3)
	if c.Opcode != 0x1c || c.CDW10 != 0x0102_0108 || c.CDW11 != 3 || c.Data.Len() != 0 {
		t.Errorf("assign: opcode 0x%x CDW10 0x%08x CDW11 %d", c.Opcode, c.CDW10, c.CDW11)
	}
	c = VirtualizationManagementCommand(VirtSecondaryOnline, VirtQueues, 7, 0)
	if c.CDW10 != 0x0007_0009 || c.CDW11 != 0 {
		t.Errorf("online: CDW10 0x%08x CDW11 %d", c.CDW10, c.CDW11)
	}
	if d := NewRegistry().Admin(c.Opcode).Dir; d != DirNone {
		t.Errorf("registry direction of virtualization management: %v, want none", d)
	}
	if d := NewRegistry().Admin(AdminNamespaceAttachment).Dir; d != DirToDevice {
		t.Errorf("registry direction of namespace attachment: %v, want to device", d)
	}
}

func TestIdentifyVirtCommands(t *testing.T) {
	buf := Buffer{Bytes: make([]byte, IdentifyDataSize), IOVA: 0x1000}
	if c := PrimaryControllerCapsCommand(buf); c.Opcode != AdminIdentify || c.CDW10 != 0x14 || c.Data.IOVA != 0x1000 {
		t.Errorf("primary caps: %+v", c)
	}
	if c := SecondaryControllerListCommand(5, buf); c.CDW10 != 0x0005_0015 {
		t.Errorf("secondary list CDW10 0x%08x", c.CDW10)
	}
	c := NamespaceAttachmentCommand(3, true, buf)
	if c.Opcode != 0x15 || c.NSID != 3 || c.CDW10 != 1 {
		t.Errorf("detach: %+v", c)
	}
	if c := NamespaceAttachmentCommand(3, false, buf); c.CDW10 != 0 {
		t.Errorf("attach CDW10 %d", c.CDW10)
	}
}

func TestPutControllerList(t *testing.T) {
	b := make([]byte, IdentifyDataSize)
	b[10] = 0xff
	if err := PutControllerList(b, []uint16{2, 0x0304}); err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint16(b) != 2 || binary.LittleEndian.Uint16(b[2:]) != 2 || binary.LittleEndian.Uint16(b[4:]) != 0x0304 || b[10] != 0 {
		t.Errorf("list bytes % x", b[:12])
	}
	if err := PutControllerList(b[:100], nil); err == nil {
		t.Error("short buffer accepted")
	}
	if err := PutControllerList(b, make([]uint16, MaxControllerList+1)); err == nil {
		t.Error("2048 IDs accepted")
	}
}

func TestParsePrimaryControllerCaps(t *testing.T) {
	b := make([]byte, IdentifyDataSize)
	le := binary.LittleEndian
	le.PutUint16(b[0:], 1)
	b[4] = 3
	le.PutUint32(b[32:], 8) // VQFRT
	le.PutUint32(b[36:], 3) // VQRFA
	le.PutUint16(b[42:], 56)
	le.PutUint16(b[44:], 4) // VQFRSM
	le.PutUint16(b[46:], 1)
	le.PutUint32(b[64:], 4) // VIFRT
	le.PutUint16(b[76:], 2) // VIFRSM
	c, err := ParsePrimaryControllerCaps(b)
	if err != nil {
		t.Fatal(err)
	}
	want := PrimaryControllerCaps{ControllerID: 1, Queues: true, Interrupts: true,
		VQ: FlexibleResources{Total: 8, Assigned: 3, PrivatePrimary: 56, MaxPerSecondary: 4, Granularity: 1},
		VI: FlexibleResources{Total: 4, MaxPerSecondary: 2}}
	if *c != want {
		t.Errorf("got %+v\nwant %+v", *c, want)
	}
	if c.VQ.Free() != 5 || c.VI.Free() != 4 {
		t.Errorf("free VQ %d VI %d, want 5 and 4", c.VQ.Free(), c.VI.Free())
	}
	le.PutUint32(b[68:], 9) // more assigned than there are
	if _, err := ParsePrimaryControllerCaps(b); !errors.Is(err, ErrMalformed) {
		t.Errorf("over-assigned VI: %v", err)
	}
	if _, err := ParsePrimaryControllerCaps(b[:64]); !errors.Is(err, ErrMalformed) {
		t.Errorf("short: %v", err)
	}
}

func TestParseSecondaryControllerList(t *testing.T) {
	b := make([]byte, IdentifyDataSize)
	le := binary.LittleEndian
	b[0] = 2
	for i, e := range []SecondaryController{
		{ID: 2, PrimaryID: 1, Online: true, VFNumber: 1, Queues: 3, Interrupts: 1},
		{ID: 3, PrimaryID: 1, VFNumber: 2},
	} {
		o := b[32+32*i:]
		le.PutUint16(o[0:], e.ID)
		le.PutUint16(o[2:], e.PrimaryID)
		if e.Online {
			o[4] = 1
		}
		le.PutUint16(o[8:], e.VFNumber)
		le.PutUint16(o[10:], e.Queues)
		le.PutUint16(o[12:], e.Interrupts)
	}
	list, err := ParseSecondaryControllerList(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0] != (SecondaryController{ID: 2, PrimaryID: 1, Online: true, VFNumber: 1, Queues: 3, Interrupts: 1}) ||
		list[1] != (SecondaryController{ID: 3, PrimaryID: 1, VFNumber: 2}) {
		t.Errorf("got %+v", list)
	}
	b[0] = 128
	if _, err := ParseSecondaryControllerList(b); !errors.Is(err, ErrMalformed) {
		t.Errorf("128 entries: %v", err)
	}
	if _, err := ParseSecondaryControllerList(b[:31]); !errors.Is(err, ErrMalformed) {
		t.Errorf("short: %v", err)
	}
}

func FuzzParseVirt(f *testing.F) {
	f.Add(make([]byte, IdentifyDataSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParsePrimaryControllerCaps(b)
		ParseSecondaryControllerList(b)
	})
}
