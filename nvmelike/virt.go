package nvmelike

import (
	"encoding/binary"
	"fmt"
)

// NVMe virtualization enhancements (NVMe 1.4 §8.5; 2.0 Base §8.26): a
// primary controller (an SR-IOV physical function) lends queue and
// interrupt resources to its secondary controllers (the virtual
// functions) and sets them online or offline. Namespace Attachment
// decides which controllers of the subsystem see a namespace.

// Admin opcodes and Identify CNS values of namespace attachment and
// virtualization management.
const (
	AdminNamespaceAttachment      uint8 = 0x15
	AdminVirtualizationManagement uint8 = 0x1c

	IdentifyCNSPrimaryControllerCaps   uint8 = 0x14
	IdentifyCNSSecondaryControllerList uint8 = 0x15
)

// VirtAction is the action of a Virtualization Management command (CDW10
// bits 3:0).
type VirtAction uint8

// Virtualization Management actions.
const (
	VirtPrimaryFlexibleAllocation VirtAction = 0x1
	VirtSecondaryOffline          VirtAction = 0x7
	VirtSecondaryAssign           VirtAction = 0x8
	VirtSecondaryOnline           VirtAction = 0x9
)

// VirtResource is a controller resource type (CDW10 bits 10:8).
type VirtResource uint8

// Controller resource types.
const (
	VirtQueues     VirtResource = 0 // VQ: a submission/completion queue pair, admin included
	VirtInterrupts VirtResource = 1 // VI: an interrupt vector
)

func (r VirtResource) String() string {
	switch r {
	case VirtQueues:
		return "queue"
	case VirtInterrupts:
		return "interrupt"
	}
	return fmt.Sprintf("resource type %d", uint8(r))
}

// Command specific status codes of Virtualization Management and Namespace
// Attachment, for errors.Is.
var (
	ErrNamespaceAlreadyAttached  = &StatusError{SCT: SCTCommandSpecific, SC: 0x18}
	ErrNamespaceIsPrivate        = &StatusError{SCT: SCTCommandSpecific, SC: 0x19}
	ErrNamespaceNotAttached      = &StatusError{SCT: SCTCommandSpecific, SC: 0x1a}
	ErrControllerListInvalid     = &StatusError{SCT: SCTCommandSpecific, SC: 0x1c}
	ErrInvalidControllerID       = &StatusError{SCT: SCTCommandSpecific, SC: 0x1f}
	ErrInvalidSecondaryState     = &StatusError{SCT: SCTCommandSpecific, SC: 0x20}
	ErrInvalidResourceCount      = &StatusError{SCT: SCTCommandSpecific, SC: 0x21}
	ErrInvalidResourceIdentifier = &StatusError{SCT: SCTCommandSpecific, SC: 0x22}
)

// VirtualizationManagementCommand returns a Virtualization Management
// command: act on controller cntlid, with nr resources of type rt for the
// assign and allocation actions. The completion's DW0 is the number of
// resources the controller now holds.
func VirtualizationManagementCommand(act VirtAction, rt VirtResource, cntlid, nr uint16) Command {
	return Command{
		Opcode: AdminVirtualizationManagement,
		CDW10:  uint32(act)&0xf | (uint32(rt)&0x7)<<8 | uint32(cntlid)<<16,
		CDW11:  uint32(nr),
	}
}

// PrimaryControllerCapsCommand returns an Identify of the Primary
// Controller Capabilities (CNS 14h) into buf (4096 bytes).
func PrimaryControllerCapsCommand(buf Buffer) Command {
	return IdentifyCommand(IdentifyCNSPrimaryControllerCaps, 0, buf)
}

// SecondaryControllerListCommand returns an Identify of the Secondary
// Controller List (CNS 15h), from controller ID from upwards, into buf
// (4096 bytes).
func SecondaryControllerListCommand(from uint16, buf Buffer) Command {
	c := IdentifyCommand(IdentifyCNSSecondaryControllerList, 0, buf)
	c.CDW10 |= uint32(from) << 16
	return c
}

// NamespaceAttachmentCommand returns a Namespace Attachment command that
// attaches namespace nsid to (or, with detach, detaches it from) the
// controllers listed in buf (4096 bytes, written by PutControllerList).
func NamespaceAttachmentCommand(nsid uint32, detach bool, buf Buffer) Command {
	var sel uint32
	if detach {
		sel = 1
	}
	return Command{Opcode: AdminNamespaceAttachment, NSID: nsid, CDW10: sel, Data: buf}
}

// MaxControllerList is the most controller IDs a Controller List holds.
const MaxControllerList = 2047

// PutControllerList writes a Controller List (a count, then the IDs) for
// Namespace Attachment into b, which must be 4096 bytes.
func PutControllerList(b []byte, ids []uint16) error {
	if len(b) != IdentifyDataSize {
		return fmt.Errorf("controller list buffer is %d bytes, not %d", len(b), IdentifyDataSize)
	}
	if len(ids) > MaxControllerList {
		return fmt.Errorf("%d controller IDs, more than a controller list holds (%d)", len(ids), MaxControllerList)
	}
	clear(b)
	binary.LittleEndian.PutUint16(b, uint16(len(ids)))
	for i, id := range ids {
		binary.LittleEndian.PutUint16(b[2+2*i:], id)
	}
	return nil
}

// PrimaryControllerCaps is the Primary Controller Capabilities data
// structure (Identify CNS 14h): the flexible resources the controller
// lends to its secondary controllers.
type PrimaryControllerCaps struct {
	ControllerID uint16
	PortID       uint16
	// Queues and Interrupts say which resource types the controller
	// supports (CRT bits 0 and 1).
	Queues, Interrupts bool
	VQ, VI             FlexibleResources
}

// FlexibleResources are the counts of one resource type.
type FlexibleResources struct {
	Total            uint32 // VQFRT/VIFRT: flexible resources in all
	Assigned         uint32 // VQRFA/VIRFA: assigned to secondary controllers
	AllocatedPrimary uint16 // VQRFAP/VIRFAP: allocated to the primary
	PrivatePrimary   uint16 // VQPRT/VIPRT: the primary's private resources
	MaxPerSecondary  uint16 // VQFRSM/VIFRSM: most one secondary may hold
	Granularity      uint16 // VQGRAN/VIGRAN: preferred granularity
}

// Free returns the flexible resources neither assigned to a secondary nor
// allocated to the primary.
func (f FlexibleResources) Free() int {
	return int(f.Total) - int(f.Assigned) - int(f.AllocatedPrimary)
}

// ParsePrimaryControllerCaps decodes Identify CNS 14h data.
func ParsePrimaryControllerCaps(b []byte) (*PrimaryControllerCaps, error) {
	if len(b) < IdentifyDataSize {
		return nil, fmt.Errorf("primary controller capabilities: %d bytes, want %d: %w", len(b), IdentifyDataSize, ErrMalformed)
	}
	le := binary.LittleEndian
	flex := func(off int) FlexibleResources {
		return FlexibleResources{
			Total:            le.Uint32(b[off:]),
			Assigned:         le.Uint32(b[off+4:]),
			AllocatedPrimary: le.Uint16(b[off+8:]),
			PrivatePrimary:   le.Uint16(b[off+10:]),
			MaxPerSecondary:  le.Uint16(b[off+12:]),
			Granularity:      le.Uint16(b[off+14:]),
		}
	}
	c := &PrimaryControllerCaps{
		ControllerID: le.Uint16(b[0:]),
		PortID:       le.Uint16(b[2:]),
		Queues:       b[4]&1 != 0,
		Interrupts:   b[4]&2 != 0,
		VQ:           flex(32),
		VI:           flex(64),
	}
	for _, f := range []struct {
		name string
		r    FlexibleResources
	}{{"VQ", c.VQ}, {"VI", c.VI}} {
		if f.r.Free() < 0 {
			return nil, fmt.Errorf("primary controller capabilities: %s resources: %d assigned and %d allocated of %d: %w",
				f.name, f.r.Assigned, f.r.AllocatedPrimary, f.r.Total, ErrMalformed)
		}
	}
	return c, nil
}

// SecondaryController is one entry of the Secondary Controller List.
type SecondaryController struct {
	ID        uint16 // SCID: its controller ID
	PrimaryID uint16 // PCID: its primary controller's ID
	Online    bool   // SCS bit 0
	// VFNumber is the virtual function it belongs to, from 1 (VFN); 0
	// when it is not a VF.
	VFNumber uint16
	// Queues and Interrupts are the flexible resources assigned to it
	// (NVQ, NVI): queues count the admin queue.
	Queues, Interrupts uint16
}

// MaxSecondaryControllers is the most entries a Secondary Controller List
// holds.
const MaxSecondaryControllers = 127

// ParseSecondaryControllerList decodes Identify CNS 15h data.
func ParseSecondaryControllerList(b []byte) ([]SecondaryController, error) {
	if len(b) < IdentifyDataSize {
		return nil, fmt.Errorf("secondary controller list: %d bytes, want %d: %w", len(b), IdentifyDataSize, ErrMalformed)
	}
	n := int(b[0])
	if n > MaxSecondaryControllers {
		return nil, fmt.Errorf("secondary controller list: %d entries, at most %d fit: %w", n, MaxSecondaryControllers, ErrMalformed)
	}
	le := binary.LittleEndian
	list := make([]SecondaryController, n)
	for i := range list {
		e := b[32+32*i:]
		list[i] = SecondaryController{
			ID:         le.Uint16(e[0:]),
			PrimaryID:  le.Uint16(e[2:]),
			Online:     e[4]&1 != 0,
			VFNumber:   le.Uint16(e[8:]),
			Queues:     le.Uint16(e[10:]),
			Interrupts: le.Uint16(e[12:]),
		}
	}
	return list, nil
}
