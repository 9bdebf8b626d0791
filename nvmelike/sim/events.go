package sim

import (
	"encoding/binary"

	"github.com/umdkit/umd/nvmelike"
)

// errorLogEntries is how many entries the Error Information log page
// keeps (Identify Controller ELPE + 1).
const errorLogEntries = 16

// events are the controller's outstanding Asynchronous Event Requests,
// the events waiting for one, and the Error Information log.
type events struct {
	requests []uint16 // CIDs of outstanding Asynchronous Event Requests, oldest first
	pending  []uint32 // completion DW0s of events no request was outstanding for

	errorCount uint64                    // errors logged since power on
	errorLog   [errorLogEntries][64]byte // a ring of the latest entries
	errorNext  int                       // next slot of errorLog
}

// reset forgets the requests (a controller reset aborts them); events and
// the error log persist.
func (e *events) reset() { e.requests = e.requests[:0] }

// asyncEventRequest takes an Asynchronous Event Request: it completes now
// with an event already waiting or with a limit-exceeded status, or is
// held (held true) until PostAsyncEvent.
func (c *Controller) asyncEventRequest(cid uint16) (dw0 uint32, status uint16, held bool) {
	ev := &c.events
	if len(ev.pending) > 0 {
		dw0 = ev.pending[0]
		ev.pending = append(ev.pending[:0], ev.pending[1:]...)
		return dw0, 0, false
	}
	if len(ev.requests) > int(c.cfg.AERL) {
		return 0, statusAERLimit, false
	}
	ev.requests = append(ev.requests, cid)
	return 0, 0, true
}

// AsyncEventDW0 builds the completion DW0 of an Asynchronous Event
// Request: event type (bits 2:0), event information (15:8) and the log
// page to read (23:16).
func AsyncEventDW0(typ, info, logPage uint8) uint32 {
	return uint32(typ&7) | uint32(info)<<8 | uint32(logPage)<<16
}

// PostAsyncEvent reports an asynchronous event: it completes the oldest
// outstanding Asynchronous Event Request with it, or keeps it for the
// next request. It reports whether a request was completed.
func (c *Controller) PostAsyncEvent(typ, info, logPage uint8) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	dw0 := AsyncEventDW0(typ, info, logPage)
	ev := &c.events
	s := c.sqs[0]
	if c.removed || s == nil || len(ev.requests) == 0 {
		ev.pending = append(ev.pending, dw0)
		return false
	}
	cid := ev.requests[0]
	ev.requests = append(ev.requests[:0], ev.requests[1:]...)
	c.complete(s, nvmelike.Completion{DW0: dw0, SQHead: s.head, CID: cid})
	return true
}

// AsyncEventRequests returns the number of Asynchronous Event Requests
// outstanding.
func (c *Controller) AsyncEventRequests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events.requests)
}

// logError adds an entry for a command that completed with status to the
// Error Information log.
func (c *Controller) logError(sqid uint16, e nvmelike.SQE, status uint16) {
	ev := &c.events
	ev.errorCount++
	b := ev.errorLog[ev.errorNext][:]
	clear(b)
	le := binary.LittleEndian
	le.PutUint64(b[0:], ev.errorCount)
	le.PutUint16(b[8:], sqid)
	le.PutUint16(b[10:], e.CID())
	le.PutUint16(b[12:], status<<1) // bit 0 is the phase tag
	le.PutUint16(b[14:], 0xffff)    // parameter error location: not given
	if sqid != 0 {
		le.PutUint64(b[16:], uint64(e.CDW(10))|uint64(e.CDW(11))<<32)
	}
	le.PutUint32(b[24:], e.NSID())
	ev.errorNext = (ev.errorNext + 1) % errorLogEntries
}

// errorLogPage fills page with the Error Information log, newest entry
// first; entries past those logged are zero.
func (c *Controller) errorLogPage(page []byte) {
	ev := &c.events
	n := int(min(ev.errorCount, errorLogEntries))
	for i := 0; i < n && (i+1)*64 <= len(page); i++ {
		slot := (ev.errorNext - 1 - i + 2*errorLogEntries) % errorLogEntries
		copy(page[i*64:], ev.errorLog[slot][:])
	}
}
