package broker

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ProtocolVersion is the version of the broker protocol this package
// speaks. A hello with another version is refused with ErrVersion.
// Version 3 added reservations (reserve, release, open by grant) and the
// fields that carry them; version 4 exclusive reservations and the device
// list's lent and failed fields; version 5 reservation names
// (Request.Name, ReservationStatus.Name), so that one claim may hold
// several reservations of one device. A client of an older version, which
// refuses unknown fields, would misread its responses (a version 4 client
// cannot read a status that lists a named reservation).
const ProtocolVersion = 5

// The control path is framed as a 4-byte big-endian length followed by that
// many bytes of JSON. Control messages are rare (a session is opened once)
// and small, so the cost of JSON does not matter; what matters is that
// every field is named, optional fields can be added without breaking old
// peers, and a malformed message is a decoding error rather than a
// misread struct. MaxFrame bounds the requests a broker reads;
// MaxResponse the responses a client reads (a status of many clients is
// larger than any request).
const (
	MaxFrame    = 64 << 10
	MaxResponse = 4 << 20
)

// Ops a client may send.
const (
	OpHello  = "hello"
	OpList   = "list"
	OpOpen   = "open"
	OpStatus = "status"
	OpIO     = "io"
	OpCmd    = "cmd"
	OpVF     = "vf"
	// OpReserve and OpRelease hold and free resources under a claim
	// (reserve.go); only peers in Config.Reservers may send them.
	OpReserve = "reserve"
	OpRelease = "release"
	// OpRestore serves a retired device again (retire.go); root only.
	OpRestore = "restore"
)

// Session modes (Request.Mode, Layout.Mode).
const (
	// ModeMediated: the broker submits every command for the client,
	// after checking it (the default).
	ModeMediated = "mediated"
	// ModeTrusted: the client gets the device's VFIO descriptor and
	// drives its queue pairs itself; the broker is off the I/O path.
	ModeTrusted = "trusted"
	// ModeExclusive (reservations only): the broker lends the whole
	// device to the claim, closing it (exclusive.go); no session.
	ModeExclusive = "exclusive"
)

// Bounds on what a client may ask for, whatever the quotas say.
const (
	MaxQueuesPerSession = 64
	MaxQueueDepth       = 4096
	MinQueueDepth       = 2
	MaxPoolBytes        = 1 << 40
	maxDeviceName       = 64
	maxClaimName        = 128
	maxReservationName  = 128
	grantBytes          = 16                      // a grant ID is this many random bytes, in hex
	maxFdsPerMessage    = 3 + MaxQueuesPerSession // pool, rings, device, eventfds
)

// Request is one message from a client.
type Request struct {
	Op string `json:"op"`
	// Hello
	Version int `json:"version,omitempty"`
	// Open
	Device    string `json:"device,omitempty"`
	Queues    int    `json:"queues,omitempty"`
	Depth     int    `json:"depth,omitempty"`
	PoolBytes int64  `json:"pool_bytes,omitempty"`
	Mode      string `json:"mode,omitempty"`   // ModeMediated (default) or ModeTrusted
	Polled    bool   `json:"polled,omitempty"` // queue pairs without interrupts (no vectors, no eventfds)
	// Open by grant: the session takes its resources from the
	// reservation, so queues, depth, pool_bytes, mode and polled stay
	// unset.
	Grant string `json:"grant,omitempty"`
	// Reserve, Release: the claim (a Kubernetes ResourceClaim's UID).
	// Reserve also takes device, mode, queues, depth, pool_bytes and
	// polled.
	Claim string `json:"claim,omitempty"`
	// Reserve: the reservation's name within the claim and device, so
	// that one claim may hold several reservations of one device (the
	// DRA driver names them after the shares of a controller); unset is
	// the claim's one unnamed reservation there.
	Name string `json:"name,omitempty"`
	// IO (mediated): Queue indexes the session's queue pairs.
	IO *IORequest `json:"io,omitempty"`
	// Cmd (mediated): a command the client encoded itself.
	Cmd *CommandRequest `json:"cmd,omitempty"`
}

// CommandRequest is an NVMe I/O command as a mediated client encoded it,
// data pointer included: opcode, namespace, command dwords 10-15 and the
// PRP entries, as IOVAs in the client's window. The broker checks all of
// it (opcode allow-list, namespace and LBA range, every PRP entry inside
// the client's window, PRP lists read once into the broker's own memory)
// before the device sees anything; CID, flags (PRPs only, no fusing) and
// the rest of the entry are the broker's.
type CommandRequest struct {
	Queue  int       `json:"queue"`
	Opcode uint8     `json:"opcode"`
	NSID   uint32    `json:"nsid"`
	CDW    [6]uint32 `json:"cdw"` // CDW10 to CDW15
	PRP1   uint64    `json:"prp1"`
	PRP2   uint64    `json:"prp2"`
}

// IORequest is one command the broker submits for a client on one of the
// client's queue pairs, with data in the client's pool.
type IORequest struct {
	Queue  int    `json:"queue"`
	Opcode string `json:"opcode"` // "read", "write" or "flush"
	NSID   uint32 `json:"nsid"`
	LBA    uint64 `json:"lba"`
	Blocks int    `json:"blocks"`
	Offset int64  `json:"offset"` // where the data starts in the client's pool
}

// Response is one message from the broker. Err is set on failure.
type Response struct {
	Err *Error `json:"error,omitempty"`
	// Hello
	Version int `json:"version,omitempty"`
	// List
	Devices []DeviceInfo `json:"devices,omitempty"`
	// Open: descriptors travel with this message, pool first, then one
	// eventfd per queue pair in Layout.Queues order.
	Layout *Layout `json:"layout,omitempty"`
	// Status
	Clients []ClientStatus `json:"clients,omitempty"`
	// VF: the leased virtual function.
	VF *VFInfo `json:"vf,omitempty"`
	// Reserve: the grant a client presents to open the reservation.
	Grant *Grant `json:"grant,omitempty"`
	// Status: the reservations held (for peers allowed to see them).
	Reservations []ReservationStatus `json:"reservations,omitempty"`
	// IO, Cmd
	Status uint16 `json:"status,omitempty"` // NVMe status field of the completion
	DW0    uint32 `json:"dw0,omitempty"`    // the completion's command-specific dword
}

// DeviceInfo describes one device the broker serves.
type DeviceInfo struct {
	BDF        string          `json:"bdf"`
	Serial     string          `json:"serial"`
	Model      string          `json:"model"`
	Namespaces []NamespaceInfo `json:"namespaces"`
	MaxQueues  int             `json:"max_queues"`         // I/O queue pairs the controller granted
	FreeQueues int             `json:"free_queues"`        // not held by any client
	VFs        int             `json:"vfs,omitempty"`      // SR-IOV VFs the broker leases whole
	FreeVFs    int             `json:"free_vfs,omitempty"` // of those, not leased
	Allowed    bool            `json:"allowed"`            // whether the asking peer may open sessions on it
	// Simulated: a software controller (nvmelike/sim) stands for the
	// device; it serves mediated sessions only.
	Simulated bool `json:"simulated,omitempty"`
	// Lent: the claim the device is lent to by an exclusive
	// reservation; the broker has closed it and serves nothing of it.
	Lent string `json:"lent,omitempty"`
	// Failed: why the device is served no more: closed for an
	// exclusive claim and not opened again, or retired (Server.Retire:
	// the kernel asked for it back); empty when served.
	Failed string `json:"failed,omitempty"`
}

// NamespaceInfo describes a namespace of a device.
type NamespaceInfo struct {
	NSID    uint32 `json:"nsid"`
	LBASize int    `json:"lba_size"`
	Blocks  uint64 `json:"blocks"`
	// MetadataSize is the metadata bytes per block of the namespace's
	// format (0: none). The broker does not mediate data commands to a
	// namespace with metadata (their metadata pointer is not checked).
	MetadataSize int `json:"metadata_size,omitempty"`
	// ExtendedLBA says the metadata travels after each block's data, in
	// the data buffer, rather than in a buffer of its own (MPTR).
	ExtendedLBA bool `json:"extended_lba,omitempty"`
	// CSI is the namespace's command set (nvmelike.CSINVM, 0, for NVM;
	// nvmelike.CSIZoned for a zoned namespace, whose writes must land at
	// each zone's write pointer).
	CSI uint8 `json:"csi,omitempty"`
}

// Layout is what a client needs to use its session: where its pool sits in
// the device's IOVA space and which queue pairs are its.
//
// Descriptors come with it in this order: the pool; in trusted mode the
// rings; one eventfd per queue pair (none for a polled session); in
// trusted mode the VFIO device.
type Layout struct {
	Device         string          `json:"device"`
	Mode           string          `json:"mode"`
	PoolBytes      int64           `json:"pool_bytes"`
	PoolPageSize   int             `json:"pool_page_size"`
	PoolIOVA       uint64          `json:"pool_iova"`
	DoorbellStride int             `json:"doorbell_stride"` // bytes between doorbells (4 << CAP.DSTRD)
	MaxTransfer    int             `json:"max_transfer"`
	Queues         []QueueInfo     `json:"queues"`
	Namespaces     []NamespaceInfo `json:"namespaces"`
	// PageSize is the controller's memory page size (CC.MPS), the page
	// size of PRPs.
	PageSize int `json:"page_size"`
	// SGLS is the controller's Identify Controller SGLS field: whether
	// (and how aligned) trusted queue pairs may describe data with SGLs.
	SGLS uint32 `json:"sgls,omitempty"`
	// Trusted mode: the queue rings live in a second shared memory
	// (RingsBytes, mapped at RingsIOVA).
	RingsBytes int64  `json:"rings_bytes,omitempty"`
	RingsIOVA  uint64 `json:"rings_iova,omitempty"`
	// Polled: the queue pairs have no interrupts (no eventfds come).
	Polled bool `json:"polled,omitempty"`
	// Claim: the session was opened by a grant of this claim.
	Claim string `json:"claim,omitempty"`
}

// QueueInfo describes one of a client's queue pairs.
type QueueInfo struct {
	ID     uint16 `json:"id"`
	Depth  int    `json:"depth"`
	Vector int    `json:"vector"`
	// Trusted mode: where the queue's SQ and CQ are in the rings memory.
	SQOffset int64 `json:"sq_offset,omitempty"`
	CQOffset int64 `json:"cq_offset,omitempty"`
}

// ClientStatus is what one connected client holds.
type ClientStatus struct {
	ID        uint64      `json:"id"`
	PID       int32       `json:"pid"`
	UID       uint32      `json:"uid"`
	GID       uint32      `json:"gid"`
	Device    string      `json:"device,omitempty"`
	Mode      string      `json:"mode,omitempty"`
	VF        string      `json:"vf,omitempty"` // a leased virtual function
	PoolBytes int64       `json:"pool_bytes,omitempty"`
	PoolIOVA  uint64      `json:"pool_iova,omitempty"`
	Queues    []QueueInfo `json:"queues,omitempty"`
	Commands  uint64      `json:"commands"`
	// Claim: the session was opened by a grant of this claim.
	Claim string `json:"claim,omitempty"`
}

// Error codes the broker sends back. Each has a sentinel error that an
// *Error matches with errors.Is.
const (
	CodeBadRequest = "bad-request"
	CodeVersion    = "version"
	CodePermission = "permission"
	CodeQuota      = "quota"
	CodeNoDevice   = "no-device"
	CodeState      = "state"
	CodeDevice     = "device"
)

// Sentinels for the codes.
var (
	ErrBadRequest = errors.New("bad request")
	ErrVersion    = errors.New("protocol version mismatch")
	ErrPermission = errors.New("permission denied")
	ErrQuota      = errors.New("quota exceeded")
	ErrNoDevice   = errors.New("no such device")
	ErrState      = errors.New("request not valid in this state")
	ErrDevice     = errors.New("device error")
	// ErrFrameTooLarge is returned for a frame longer than MaxFrame
	// (a request) or MaxResponse (a response).
	ErrFrameTooLarge = errors.New("frame too large")
)

var codeErrors = map[string]error{
	CodeBadRequest: ErrBadRequest,
	CodeVersion:    ErrVersion,
	CodePermission: ErrPermission,
	CodeQuota:      ErrQuota,
	CodeNoDevice:   ErrNoDevice,
	CodeState:      ErrState,
	CodeDevice:     ErrDevice,
}

// Error is a failure the broker reports to a client.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return "broker: " + e.Message }

// Is matches the sentinel of e's code.
func (e *Error) Is(target error) bool {
	s, ok := codeErrors[e.Code]
	return ok && s == target
}

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// encodeFrame encodes v as one frame of at most limit bytes of JSON.
func encodeFrame(v any, limit int) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding a frame: %w", err)
	}
	if len(body) > limit {
		return nil, fmt.Errorf("encoding a frame of %d bytes: %w", len(body), ErrFrameTooLarge)
	}
	out := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	copy(out[4:], body)
	return out, nil
}

// decodeFrame parses one whole frame (length prefix included) into v,
// rejecting unknown fields and trailing bytes.
func decodeFrame(frame []byte, v any) error {
	if len(frame) < 4 {
		return fmt.Errorf("decoding a frame of %d bytes: %w", len(frame), io.ErrUnexpectedEOF)
	}
	n := binary.BigEndian.Uint32(frame)
	if n > MaxFrame {
		return fmt.Errorf("decoding a frame of %d bytes: %w", n, ErrFrameTooLarge)
	}
	if int(n) != len(frame)-4 {
		return fmt.Errorf("decoding a frame: length says %d bytes, %d present: %w", n, len(frame)-4, io.ErrUnexpectedEOF)
	}
	return decodeBody(frame[4:], v)
}

func decodeBody(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding a frame: %w", err)
	}
	if dec.More() {
		return fmt.Errorf("decoding a frame: trailing data")
	}
	return nil
}

// readFrame reads one frame's body from r.
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return nil, fmt.Errorf("reading a frame of %d bytes: %w", n, ErrFrameTooLarge)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("reading a frame of %d bytes: %w", n, err)
	}
	return body, nil
}

// validate checks every field of a request for its op.
func (r *Request) validate() *Error {
	switch r.Op {
	case OpHello:
		if r.Version <= 0 {
			return errorf(CodeBadRequest, "hello without a version")
		}
	case OpList, OpStatus:
	case OpOpen:
		if r.Grant != "" {
			return r.validateGrantOpen()
		}
		if r.Claim != "" || r.Name != "" {
			return errorf(CodeBadRequest, "open: a claim and its reservations are named by their grants, not by claim or name fields")
		}
		return r.validateSession("open", fmt.Sprintf("%q or %q", ModeMediated, ModeTrusted))
	case OpReserve:
		return r.validateReserve()
	case OpRelease:
		if e := validClaim("release", r.Claim); e != nil {
			return e
		}
		if r.Device != "" || r.Grant != "" || r.Name != "" || r.Queues != 0 || r.Depth != 0 || r.PoolBytes != 0 || r.Mode != "" || r.Polled {
			return errorf(CodeBadRequest, "release takes only a claim (it releases all the claim's reservations)")
		}
	case OpVF:
		if r.Device == "" || len(r.Device) > maxDeviceName {
			return errorf(CodeBadRequest, "vf: device name of %d bytes", len(r.Device))
		}
	case OpRestore:
		if r.Device == "" || len(r.Device) > maxDeviceName {
			return errorf(CodeBadRequest, "restore: device name of %d bytes", len(r.Device))
		}
		if r.Claim != "" || r.Grant != "" || r.Name != "" || r.Queues != 0 || r.Depth != 0 || r.PoolBytes != 0 || r.Mode != "" || r.Polled {
			return errorf(CodeBadRequest, "restore takes only a device")
		}
	case OpCmd:
		c := r.Cmd
		if c == nil {
			return errorf(CodeBadRequest, "cmd without a command")
		}
		if c.Queue < 0 || c.Queue >= MaxQueuesPerSession {
			return errorf(CodeBadRequest, "cmd: queue %d", c.Queue)
		}
		if _, ok := mediatedOpcodes[c.Opcode]; !ok {
			return errorf(CodeBadRequest, "cmd: opcode 0x%02x not allowed (read, write, compare, flush, write zeroes)", c.Opcode)
		}
	case OpIO:
		io := r.IO
		if io == nil {
			return errorf(CodeBadRequest, "io without a command")
		}
		switch io.Opcode {
		case "read", "write":
			if io.Blocks < 1 || io.Blocks > 65536 {
				return errorf(CodeBadRequest, "io: %d blocks, must be 1 to 65536", io.Blocks)
			}
			if io.Offset < 0 {
				return errorf(CodeBadRequest, "io: negative pool offset %d", io.Offset)
			}
		case "flush":
		default:
			return errorf(CodeBadRequest, "io: opcode %q not allowed (read, write, flush)", io.Opcode)
		}
		if io.Queue < 0 || io.Queue >= MaxQueuesPerSession {
			return errorf(CodeBadRequest, "io: queue %d", io.Queue)
		}
	default:
		return errorf(CodeBadRequest, "unknown op %q", r.Op)
	}
	return nil
}
