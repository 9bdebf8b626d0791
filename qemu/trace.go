package qemu

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"sync"
	"time"
)

// DoorbellEvents are QEMU's trace events for MMIO writes to an NVMe
// controller's submission and completion queue doorbells (hw/nvme in
// QEMU 7.2). Writes that go to shadow doorbells only are not MMIO and do
// not show here.
var DoorbellEvents = []string{"pci_nvme_mmio_doorbell_sq", "pci_nvme_mmio_doorbell_cq"}

// A TraceCounter counts QEMU trace events over a run, in millisecond
// buckets of the host's clock, so that the events of any stretch of the
// run can be counted afterwards. The guest marks stretches by writing
// "mark TEXT" lines to its status port (ttyS2); Run stamps each with the
// host time it arrived. Lines are counted as they stream in and never
// kept: a benchmark can trace millions of doorbell writes.
//
// QEMU runs with -trace events=FILE (the Events), -msg timestamp=on (each
// line starts "PID@SECONDS.MICROSECONDS:") and -D pointing at a pipe the
// counter reads. Marks and trace lines come over different pipes, so they
// are matched by time, not by order: leave the device idle for a few tens
// of milliseconds around each mark.
type TraceCounter struct {
	// Events are the trace event names to enable and count.
	Events []string

	mu     sync.Mutex
	base   int64      // Unix milliseconds of bucket 0
	counts [][]uint64 // [event][ms since base]
	marks  []Mark
	lines  uint64 // every line read
	other  uint64 // lines that were not a counted event with a timestamp
}

// A Mark is a line the guest wrote to mark a point of its run, and when
// the host read it.
type Mark struct {
	Text string
	At   time.Time
}

// consume counts the trace lines of r until it ends.
func (t *TraceCounter) consume(r io.Reader) {
	names := make([][]byte, len(t.Events))
	for i, e := range t.Events {
		names[i] = []byte(e)
	}
	sc := bufio.NewScanner(&pacedReader{r: r, pause: tracePause})
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		t.countLine(sc.Bytes(), names)
	}
	// A read error ends the count; the run's own checks report QEMU's
	// failures.
}

// tracePause is how long the counter waits after draining the trace
// pipe. Reading each line as QEMU writes it woke the reader for every
// doorbell write, and those wakeups, on a loaded two-core host, halved
// the guest's QD1 IOPS; a pipe buffer (64 KiB, ~900 lines) fills in no
// less than ~50 ms at the rates seen here.
const tracePause = 10 * time.Millisecond

// pacedReader reads in large bites: after a read that did not fill the
// buffer (the pipe is drained) it waits pause before reading again, so
// the writer's lines pile up in the pipe instead of waking the reader.
type pacedReader struct {
	r     io.Reader
	pause time.Duration
	short bool
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if p.short {
		time.Sleep(p.pause)
	}
	n, err := p.r.Read(b)
	p.short = n < len(b)/2
	return n, err
}

// countLine counts one line of QEMU's log:
// "PID@SECONDS.MICROSECONDS:EVENT ARGS…".
func (t *TraceCounter) countLine(line []byte, names [][]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines++
	at := bytes.IndexByte(line, '@')
	colon := bytes.IndexByte(line, ':')
	if at < 0 || colon < at {
		t.other++
		return
	}
	ms, ok := parseTimestampMS(line[at+1 : colon])
	if !ok {
		t.other++
		return
	}
	rest := line[colon+1:]
	if sp := bytes.IndexByte(rest, ' '); sp >= 0 {
		rest = rest[:sp]
	}
	for i, n := range names {
		if bytes.Equal(rest, n) {
			t.add(i, ms)
			return
		}
	}
	t.other++
}

// add counts one event i at Unix millisecond ms.
func (t *TraceCounter) add(i int, ms int64) {
	if t.counts == nil {
		t.counts = make([][]uint64, len(t.Events))
		t.base = ms
	}
	if ms < t.base {
		ms = t.base // a clock step back; keep it in the first bucket
	}
	k := int(ms - t.base)
	c := t.counts[i]
	if k >= len(c) {
		c = append(c, make([]uint64, k+1-len(c))...)
		t.counts[i] = c
	}
	c[k]++
}

// parseTimestampMS parses "SECONDS.MICROSECONDS" into Unix milliseconds.
func parseTimestampMS(b []byte) (int64, bool) {
	dot := bytes.IndexByte(b, '.')
	if dot <= 0 || dot == len(b)-1 {
		return 0, false
	}
	var sec, usec int64
	for _, c := range b[:dot] {
		if c < '0' || c > '9' {
			return 0, false
		}
		sec = sec*10 + int64(c-'0')
	}
	for _, c := range b[dot+1:] {
		if c < '0' || c > '9' {
			return 0, false
		}
		usec = usec*10 + int64(c-'0')
	}
	return sec*1000 + usec/1000, true
}

// mark records a mark line from the guest.
func (t *TraceCounter) mark(text string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.marks = append(t.marks, Mark{Text: strings.TrimSpace(text), At: at})
}

// Marks returns the guest's marks in the order they came.
func (t *TraceCounter) Marks() []Mark {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Mark(nil), t.marks...)
}

// Count returns how many times event fired from the millisecond of from
// to the millisecond of to, both included.
func (t *TraceCounter) Count(event string, from, to time.Time) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := -1
	for k, e := range t.Events {
		if e == event {
			i = k
		}
	}
	if i < 0 || t.counts == nil {
		return 0
	}
	c := t.counts[i]
	lo := max(from.UnixMilli()-t.base, 0)
	hi := min(to.UnixMilli()-t.base, int64(len(c))-1)
	var n uint64
	for k := lo; k <= hi; k++ {
		n += c[k]
	}
	return n
}

// Lines returns how many lines were read and how many of them were not a
// counted event with a timestamp (QEMU's own messages, or trace lines
// without -msg timestamp=on).
func (t *TraceCounter) Lines() (all, other uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lines, t.other
}

// Phase is a stretch of a run between the guest's "begin NAME" and
// "end NAME" marks.
type Phase struct {
	Name       string
	Begin, End time.Time
}

// Phases pairs the guest's "begin NAME" and "end NAME" marks, in the
// order the phases began; a phase without its end is left out.
func (t *TraceCounter) Phases() []Phase {
	var out []Phase
	open := map[string]int{}
	for _, m := range t.Marks() {
		verb, name, _ := strings.Cut(m.Text, " ")
		switch verb {
		case "begin":
			open[name] = len(out)
			out = append(out, Phase{Name: name, Begin: m.At})
		case "end":
			if i, ok := open[name]; ok {
				out[i].End = m.At
				delete(open, name)
			}
		}
	}
	done := out[:0]
	for _, p := range out {
		if !p.End.IsZero() {
			done = append(done, p)
		}
	}
	return done
}
