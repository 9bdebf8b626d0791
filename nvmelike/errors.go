package nvmelike

import (
	"errors"
	"fmt"
)

// Errors the engine returns, wrapped with context; test them with
// errors.Is.
var (
	// ErrDeviceGone: registers read as all ones, the device was removed
	// or its link is down (surprise removal).
	ErrDeviceGone = errors.New("device gone: registers read as all ones")
	// ErrControllerFatal: the controller set CSTS.CFS.
	ErrControllerFatal = errors.New("controller fatal status (CSTS.CFS)")
	// ErrNotReady: CSTS.RDY is 0 on a controller the engine had enabled:
	// something else reset it (a Function Level Reset through sysfs,
	// another agent clearing CC.EN), and with it every queue it had. Its
	// I/O queues no longer exist on the device; Controller.Reset brings
	// them back, Close releases them.
	ErrNotReady = errors.New("controller no longer ready (CSTS.RDY 0): reset from outside")
	// ErrReadyTimeout: CSTS.RDY did not follow CC.EN within CAP.TO.
	ErrReadyTimeout = errors.New("controller did not change CSTS.RDY within CAP.TO")
	// ErrShutdownTimeout: CSTS.SHST did not report shutdown complete in time.
	ErrShutdownTimeout = errors.New("controller did not complete shutdown in time")
	// ErrQueueFull: no free tracker or SQ slot; complete something first.
	ErrQueueFull = errors.New("queue full")
	// ErrInvalidCID: a completion carried a CID that names no tracker.
	ErrInvalidCID = errors.New("completion with invalid CID")
	// ErrStaleCID: a completion named a tracker that is free or busy with
	// another command (a duplicate, late or garbled completion). It was
	// dropped, not delivered to anyone.
	ErrStaleCID = errors.New("completion with stale CID")
	// ErrTransferTooLarge: a command's data exceeds the maximum transfer
	// size (MDTS) and the engine cannot split it: not an LBA opcode, a
	// namespace of unknown LBA size, a fused command or one with a
	// metadata pointer, or more parts than the queue has trackers.
	ErrTransferTooLarge = errors.New("transfer larger than the maximum transfer size")
	// ErrDataLength: an LBA command's block count and the namespace's
	// LBA size do not add up to the length of its data buffer.
	ErrDataLength = errors.New("data buffer length does not match the block count")
	// ErrNoMetadataPointer: an LBA command on a namespace formatted with
	// metadata in a buffer of its own has no metadata pointer (MPTR): the
	// controller would move the metadata to or from IOVA 0.
	ErrNoMetadataPointer = errors.New("namespace has separate metadata and the command no metadata pointer")
	// ErrUnalignedBuffer: a data buffer's IOVA is not dword aligned, as
	// PRPs require.
	ErrUnalignedBuffer = errors.New("data buffer IOVA not dword aligned")
	// ErrDirection: the command's data does not match its opcode's data
	// direction in the registry (data for a no-data opcode).
	ErrDirection = errors.New("data buffer does not match the opcode's data direction")
	// ErrTimeout: an asynchronous command did not complete within its
	// timeout (QueueOptions.Timeout, SubmitTimeout). The engine sent an
	// Abort for it; its tracker stays held until its late completion.
	ErrTimeout = errors.New("command timed out")
	// ErrReentrantPoll: Poll or Exec was called from a completion callback.
	ErrReentrantPoll = errors.New("poll called from a completion callback")
	// ErrClosed: the queue pair or controller was closed.
	ErrClosed = errors.New("closed")
	// ErrMalformed: a data structure from the controller (Identify data,
	// a log page) is short or inconsistent, e.g. FLBAS names a format past
	// NLBAF.
	ErrMalformed = errors.New("malformed data structure")
)

// Status code types (SCT).
const (
	SCTGeneric         = 0x0
	SCTCommandSpecific = 0x1
	SCTMediaError      = 0x2
	SCTPath            = 0x3
	SCTVendor          = 0x7
)

// StatusError is a command's non-zero NVMe completion status.
//
// errors.Is(err, ErrAbortedSQDeletion) and the other status sentinels
// compare the status code type and status code only.
type StatusError struct {
	SCT    uint8 // status code type
	SC     uint8 // status code
	CRD    uint8 // command retry delay index
	More   bool  // more status in the error information log page
	DNR    bool  // do not retry
	Opcode uint8 // opcode of the failed command (0 in the sentinels)
	QID    uint16
	CID    uint16
}

// statusFromField decodes the 15-bit status field of a completion (DW3 bits
// 31:17, shifted down).
func statusFromField(f uint16) StatusError {
	return StatusError{
		SC:   uint8(f),
		SCT:  uint8(f>>8) & 7,
		CRD:  uint8(f>>11) & 3,
		More: f>>13&1 == 1,
		DNR:  f>>14&1 == 1,
	}
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("nvme status sct 0x%x sc 0x%02x", e.SCT, e.SC)
	if name := statusName(e.SCT, e.SC); name != "" {
		s += " (" + name + ")"
	}
	if e.DNR {
		s += " dnr"
	}
	if e.More {
		s += " more"
	}
	return s
}

// Is reports whether target is a *StatusError with the same SCT and SC.
func (e *StatusError) Is(target error) bool {
	t, ok := target.(*StatusError)
	return ok && t.SCT == e.SCT && t.SC == e.SC
}

// Common statuses, for errors.Is.
var (
	ErrInvalidOpcode          = &StatusError{SCT: SCTGeneric, SC: 0x01}
	ErrInvalidField           = &StatusError{SCT: SCTGeneric, SC: 0x02}
	ErrCIDConflict            = &StatusError{SCT: SCTGeneric, SC: 0x03}
	ErrDataTransfer           = &StatusError{SCT: SCTGeneric, SC: 0x04}
	ErrAbortedPowerLoss       = &StatusError{SCT: SCTGeneric, SC: 0x05}
	ErrInternal               = &StatusError{SCT: SCTGeneric, SC: 0x06}
	ErrAbortRequested         = &StatusError{SCT: SCTGeneric, SC: 0x07}
	ErrAbortedSQDeletion      = &StatusError{SCT: SCTGeneric, SC: 0x08}
	ErrInvalidNamespace       = &StatusError{SCT: SCTGeneric, SC: 0x0b}
	ErrCommandSequence        = &StatusError{SCT: SCTGeneric, SC: 0x0c}
	ErrInvalidPRPOffset       = &StatusError{SCT: SCTGeneric, SC: 0x13}
	ErrLBAOutOfRange          = &StatusError{SCT: SCTGeneric, SC: 0x80}
	ErrCapacityExceeded       = &StatusError{SCT: SCTGeneric, SC: 0x81}
	ErrNamespaceNotReady      = &StatusError{SCT: SCTGeneric, SC: 0x82}
	ErrInvalidCQ              = &StatusError{SCT: SCTCommandSpecific, SC: 0x00}
	ErrInvalidQueueID         = &StatusError{SCT: SCTCommandSpecific, SC: 0x01}
	ErrInvalidQueueSize       = &StatusError{SCT: SCTCommandSpecific, SC: 0x02}
	ErrInvalidInterruptVector = &StatusError{SCT: SCTCommandSpecific, SC: 0x08}
	ErrZoneInvalidWrite       = &StatusError{SCT: SCTCommandSpecific, SC: 0xbc}
	ErrInvalidQueueDeletion   = &StatusError{SCT: SCTCommandSpecific, SC: 0x0c}
	ErrWriteFault             = &StatusError{SCT: SCTMediaError, SC: 0x80}
	ErrUnrecoveredRead        = &StatusError{SCT: SCTMediaError, SC: 0x81}
	ErrCompareFailure         = &StatusError{SCT: SCTMediaError, SC: 0x85}
)

var statusNames = []struct {
	e    *StatusError
	name string
}{
	{ErrInvalidOpcode, "invalid opcode"},
	{ErrInvalidSGLSegment, "invalid SGL segment descriptor"},
	{ErrInvalidSGLCount, "invalid number of SGL descriptors"},
	{ErrDataSGLLength, "data SGL length invalid"},
	{ErrSGLDescriptorType, "SGL descriptor type invalid"},
	{ErrInvalidField, "invalid field in command"},
	{ErrCIDConflict, "command ID conflict"},
	{ErrDataTransfer, "data transfer error"},
	{ErrAbortedPowerLoss, "aborted: power loss"},
	{ErrInternal, "internal error"},
	{ErrAbortRequested, "aborted: abort requested"},
	{ErrAbortedSQDeletion, "aborted: SQ deletion"},
	{ErrInvalidNamespace, "invalid namespace or format"},
	{ErrCommandSequence, "command sequence error"},
	{ErrInvalidPRPOffset, "PRP offset invalid"},
	{ErrLBAOutOfRange, "LBA out of range"},
	{ErrCapacityExceeded, "capacity exceeded"},
	{ErrNamespaceNotReady, "namespace not ready"},
	{ErrInvalidCQ, "completion queue invalid"},
	{ErrInvalidQueueID, "invalid queue identifier"},
	{ErrInvalidQueueSize, "invalid queue size"},
	{ErrInvalidInterruptVector, "invalid interrupt vector"},
	{ErrInvalidQueueDeletion, "invalid queue deletion"},
	{ErrWriteFault, "write fault"},
	{ErrUnrecoveredRead, "unrecovered read error"},
	{ErrCompareFailure, "compare failure"},
	// Without sentinels: named so that messages say what happened.
	{&StatusError{SCT: SCTGeneric, SC: 0x09}, "aborted: failed fused command"},
	{&StatusError{SCT: SCTGeneric, SC: 0x0a}, "aborted: missing fused command"},
	{&StatusError{SCT: SCTGeneric, SC: 0x10}, "metadata SGL length invalid"},
	{&StatusError{SCT: SCTGeneric, SC: 0x15}, "operation denied"},
	{&StatusError{SCT: SCTGeneric, SC: 0x16}, "SGL offset invalid"},
	{&StatusError{SCT: SCTGeneric, SC: 0x1d}, "sanitize in progress"},
	{&StatusError{SCT: SCTGeneric, SC: 0x20}, "namespace is write protected"},
	{&StatusError{SCT: SCTGeneric, SC: 0x21}, "command interrupted"},
	{&StatusError{SCT: SCTGeneric, SC: 0x83}, "reservation conflict"},
	{&StatusError{SCT: SCTGeneric, SC: 0x84}, "format in progress"},
	// Command specific, of I/O commands (0x80 up; admin commands use
	// the codes below 0x80), with the zoned namespace ones (0xb8-0xbf).
	{&StatusError{SCT: SCTCommandSpecific, SC: 0x80}, "conflicting attributes"},
	{&StatusError{SCT: SCTCommandSpecific, SC: 0x81}, "invalid protection information"},
	{&StatusError{SCT: SCTCommandSpecific, SC: 0x82}, "write to a read-only range"},
	{&StatusError{SCT: SCTCommandSpecific, SC: 0xb8}, "zone boundary error"},
	{&StatusError{SCT: SCTCommandSpecific, SC: 0xb9}, "zone is full"},
	{&StatusError{SCT: SCTCommandSpecific, SC: 0xba}, "zone is read only"},
	{&StatusError{SCT: SCTCommandSpecific, SC: 0xbb}, "zone is offline"},
	{&StatusError{SCT: SCTCommandSpecific, SC: 0xbc}, "zone invalid write (not at the write pointer)"},
	{&StatusError{SCT: SCTCommandSpecific, SC: 0xbd}, "too many active zones"},
	{&StatusError{SCT: SCTCommandSpecific, SC: 0xbe}, "too many open zones"},
	{&StatusError{SCT: SCTCommandSpecific, SC: 0xbf}, "invalid zone state transition"},
	{&StatusError{SCT: SCTMediaError, SC: 0x82}, "end-to-end guard check error"},
	{&StatusError{SCT: SCTMediaError, SC: 0x83}, "end-to-end application tag check error"},
	{&StatusError{SCT: SCTMediaError, SC: 0x84}, "end-to-end reference tag check error"},
	{&StatusError{SCT: SCTMediaError, SC: 0x86}, "access denied"},
	{&StatusError{SCT: SCTMediaError, SC: 0x87}, "deallocated or unwritten logical block"},
}

func statusName(sct, sc uint8) string {
	for _, n := range statusNames {
		if n.e.SCT == sct && n.e.SC == sc {
			return n.name
		}
	}
	return ""
}

// CQEError describes a completion the engine could not deliver: it was
// consumed from the CQ and dropped. Err is ErrInvalidCID or ErrStaleCID.
type CQEError struct {
	QID    uint16
	CID    uint16
	SQHead uint16
	Err    error
}

func (e *CQEError) Error() string {
	return fmt.Sprintf("queue %d: cid 0x%04x sqhd %d: %v", e.QID, e.CID, e.SQHead, e.Err)
}

func (e *CQEError) Unwrap() error { return e.Err }
