package nvmelike

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
)

// Asynchronous event types: bits 2:0 of an Asynchronous Event Request's
// completion DW0 (NVMe base specification, Asynchronous Event Request).
const (
	AsyncEventError        uint8 = 0 // error status
	AsyncEventSMART        uint8 = 1 // SMART / health status
	AsyncEventNotice       uint8 = 2 // notice (namespace attribute changed, firmware activation, …)
	AsyncEventIOCommandSet uint8 = 6 // I/O command set specific status
	AsyncEventVendor       uint8 = 7 // vendor specific
)

// AsyncEvent is an event the controller reported by completing an
// Asynchronous Event Request. The controller masks further events of
// the same type until the host reads LogPage (with Get Log Page).
type AsyncEvent struct {
	Type    uint8  // AsyncEventError, AsyncEventSMART, …
	Info    uint8  // asynchronous event information; its meaning depends on Type
	LogPage uint8  // identifier of the log page with the details
	DW0     uint32 // the completion's DW0 as it came
}

// ParseAsyncEvent decodes the completion DW0 of an Asynchronous Event
// Request.
func ParseAsyncEvent(dw0 uint32) AsyncEvent {
	return AsyncEvent{Type: uint8(dw0 & 7), Info: uint8(dw0 >> 8), LogPage: uint8(dw0 >> 16), DW0: dw0}
}

func (e AsyncEvent) String() string {
	var name string
	switch e.Type {
	case AsyncEventError:
		name = "error"
	case AsyncEventSMART:
		name = "smart/health"
	case AsyncEventNotice:
		name = "notice"
	case AsyncEventIOCommandSet:
		name = "I/O command set"
	case AsyncEventVendor:
		name = "vendor"
	default:
		name = fmt.Sprintf("type %d", e.Type)
	}
	return fmt.Sprintf("%s event, info 0x%02x, log page 0x%02x", name, e.Info, e.LogPage)
}

// AsyncEventRequestCommand is an Asynchronous Event Request: it completes
// when the controller has an event to report.
func AsyncEventRequestCommand() Command { return Command{Opcode: AdminAsyncEvent} }

// asyncEvents is the controller's state for Asynchronous Event Requests,
// guarded by the controller's mu (the admin queue's lock).
type asyncEvents struct {
	ch          chan AsyncEvent
	want        int // requests to keep outstanding
	outstanding int
	closed      bool // ch was closed
	cb          Callback
	dropped     atomic.Uint64 // events lost to a full channel
	failed      atomic.Uint64 // requests completed with an error status
}

// asyncEventBuffer is the capacity of the event channel.
const asyncEventBuffer = 64

// EnableAsyncEvents submits n Asynchronous Event Requests (1 to the
// controller's limit, Identify Controller AERL+1) and keeps n outstanding:
// each completed one is resubmitted once its event is on the returned
// channel. Events arrive whenever the admin queue is polled: by every
// admin command, and by PollAdmin, which the caller runs when it wants
// events without other admin traffic (from a ticker, or when the admin
// queue's interrupt fires). An event the channel has no room for
// (capacity 64) is dropped and counted (AsyncEventsDropped). After Reset
// the requests are submitted again; Close closes the channel.
//
// A request completing with an error status (Asynchronous Event Request
// Limit Exceeded, an abort) is not resubmitted.
func (c *Controller) EnableAsyncEvents(n int) (<-chan AsyncEvent, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.aer.ch != nil {
		return nil, errors.New("enabling asynchronous events: already enabled")
	}
	limit := int(c.id.AERL) + 1
	if n < 1 || n > limit || n > len(c.admin.trackers)/2 {
		return nil, fmt.Errorf("enabling %d asynchronous event requests: the controller allows 1 to %d and the admin queue's depth %d", n, limit, c.admin.depth)
	}
	c.aer.ch = make(chan AsyncEvent, asyncEventBuffer)
	c.aer.want = n
	c.aer.cb = c.asyncEventDone
	if err := c.armAsyncEvents(); err != nil {
		return nil, fmt.Errorf("enabling asynchronous events: %w", err)
	}
	return c.aer.ch, nil
}

// armAsyncEvents submits requests until want are outstanding. The caller
// holds c.mu.
func (c *Controller) armAsyncEvents() error {
	for c.aer.ch != nil && c.aer.outstanding < c.aer.want {
		cmd := AsyncEventRequestCommand()
		if _, err := c.admin.submit(&cmd, c.aer.cb, trackerBusy); err != nil {
			c.admin.Ring()
			return err
		}
		c.aer.outstanding++
	}
	c.admin.Ring()
	return nil
}

// asyncEventDone is the callback of every Asynchronous Event Request. It
// runs on the admin queue's poller, under c.mu.
func (c *Controller) asyncEventDone(_ *Command, cpl Completion, err error) {
	a := &c.aer
	a.outstanding--
	switch {
	case errors.Is(err, ErrClosed):
		if !a.closed {
			a.closed = true
			close(a.ch)
		}
		return
	case errors.Is(err, ErrReset):
		return // Reset submits them again
	case err != nil:
		a.failed.Add(1)
		a.want = max(a.want-1, 0) // the controller refused it: do not insist
		return
	}
	select {
	case a.ch <- ParseAsyncEvent(cpl.DW0):
	default:
		a.dropped.Add(1)
	}
	_ = c.armAsyncEvents() // a full admin queue: the next Reset or event re-arms
}

// AsyncEventsDropped returns the number of asynchronous events dropped
// because the channel was full.
func (c *Controller) AsyncEventsDropped() uint64 { return c.aer.dropped.Load() }

// PollAdmin processes the admin queue's completions (asynchronous events,
// Aborts of timed-out commands) and returns how many it processed. It
// takes the admin queue's lock, and never waits for a completion.
func (c *Controller) PollAdmin() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, ErrClosed
	}
	c.sendAborts()
	return c.admin.Poll(0)
}

// ErrorLogEntrySize is the size of one Error Information log entry.
const ErrorLogEntrySize = 64

// ErrorLogEntry is one entry of the Error Information log page (01h).
type ErrorLogEntry struct {
	ErrorCount uint64 // unique, incrementing identifier of the error; 0 for an empty entry
	SQID       uint16 // SQ of the command that failed (0xffff: not command specific)
	CID        uint16 // its CID (0xffff: not command specific)
	// Status is the status field of the failed command's completion
	// (as Completion.Status).
	Status uint16
	// ParamErrorLocation is the byte (bits 7:0) and bit (10:8) of the
	// command that was in error; 0xffff if not given.
	ParamErrorLocation uint16
	LBA                uint64 // first LBA in error, for LBA commands
	NSID               uint32 // namespace in error
	VendorLogPage      uint8  // a vendor log page with more information; 0: none
	TransportType      uint8
	CommandSpecific    uint64
	TransportSpecific  uint16
}

// Err returns the entry's status as a *StatusError (with the entry's
// SQID and CID), nil if it is zero.
func (e *ErrorLogEntry) Err() error {
	if e.Status == 0 {
		return nil
	}
	se := statusFromField(e.Status)
	se.QID = e.SQID
	se.CID = e.CID
	return &se
}

// ParseErrorLog decodes an Error Information log page: b holds whole
// 64-byte entries. Empty entries (error count 0) are left out, so the
// result holds the errors the page reports, newest first as the
// controller orders them.
func ParseErrorLog(b []byte) ([]ErrorLogEntry, error) {
	if len(b)%ErrorLogEntrySize != 0 {
		return nil, fmt.Errorf("error information log: %d bytes, not a multiple of %d: %w", len(b), ErrorLogEntrySize, ErrMalformed)
	}
	le := binary.LittleEndian
	var out []ErrorLogEntry
	for off := 0; off < len(b); off += ErrorLogEntrySize {
		r := b[off : off+ErrorLogEntrySize]
		e := ErrorLogEntry{
			ErrorCount:         le.Uint64(r[0:]),
			SQID:               le.Uint16(r[8:]),
			CID:                le.Uint16(r[10:]),
			Status:             le.Uint16(r[12:]) >> 1, // bit 0 is the phase tag
			ParamErrorLocation: le.Uint16(r[14:]),
			LBA:                le.Uint64(r[16:]),
			NSID:               le.Uint32(r[24:]),
			VendorLogPage:      r[28],
			TransportType:      r[29],
			CommandSpecific:    le.Uint64(r[32:]),
			TransportSpecific:  le.Uint16(r[40:]),
		}
		if e.ErrorCount != 0 {
			out = append(out, e)
		}
	}
	return out, nil
}

// ErrorLog reads the Error Information log page: as many entries as the
// controller keeps (Identify Controller ELPE+1), at most 64, and returns
// the non-empty ones, newest first.
func (c *Controller) ErrorLog(ctx context.Context) ([]ErrorLogEntry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	n := min(int(c.id.ELPE)+1, IdentifyDataSize/ErrorLogEntrySize)
	buf := c.scratch.Slice(0, n*ErrorLogEntrySize)
	clear(buf.Bytes)
	cmd := GetLogPageCommand(NVME_LOG_ERROR, NVME_NSID_ALL, buf)
	if _, err := c.adminExec(ctx, &cmd); err != nil {
		c.retireScratch(err)
		return nil, fmt.Errorf("get log page error information: %w", err)
	}
	return ParseErrorLog(buf.Bytes)
}
