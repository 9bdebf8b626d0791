package dmatrace

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The kmsg fallback is not eBPF. Where no probe point exposes a fault's
// fields, the kernel's own log line still has them:
//
//	DMAR: [DMA Write NO_PASID] Request device [00:03.0] fault addr 0x900000 [fault reason 0x05] PTE Write access is not set
//
// Kernels before 5.13 wrote the PASID after the device (ffffffff for
// none), the address without 0x and the reason in decimal:
//
//	DMAR: [DMA Write] Request device [00:03.0] PASID ffffffff fault addr 900000 [fault reason 05] PTE Write access is not set
//
// and some between wrote the bus and device with 0x ([0x00:0x03.0]).
//
// The kernel rate-limits these lines (10 per 5 s), prints no PCI segment,
// and the line reaches /dev/kmsg after the handler ran; Fault.Time is when
// this package read it.

const kmsgPath = "/dev/kmsg"

var dmarLine = regexp.MustCompile(`DMAR: \[(DMA Read|DMA Write|INTR-REMAP)(?: NO_PASID| PASID 0x([0-9a-fA-F]+))?\] Request device \[(?:([0-9a-fA-F]{4}):)?(?:0x)?([0-9a-fA-F]{2}):(?:0x)?([0-9a-fA-F]{2})\.([0-7])\](?: PASID ([0-9a-fA-F]+))? fault (?:addr|index) (?:0x)?([0-9a-fA-F]+) \[fault reason (0x)?([0-9a-fA-F]+)\]`)

// ParseKmsg parses one kernel log line (a /dev/kmsg record, a dmesg line)
// as a VT-d fault. ok is false when the line is not one.
func ParseKmsg(line string) (f Fault, ok bool) {
	m := dmarLine.FindStringSubmatch(line)
	if m == nil {
		return Fault{}, false
	}
	num := func(s string, bits int) uint64 {
		v, _ := strconv.ParseUint(s, 16, bits) // the pattern admits only hex digits
		return v
	}
	seg := uint64(0)
	if m[3] != "" {
		seg = num(m[3], 16)
	}
	bus, dev, fn := num(m[4], 8), num(m[5], 8), num(m[6], 8)
	base := 16
	if m[9] == "" { // no 0x: the old kernels' decimal
		base = 10
	}
	reason, err := strconv.ParseUint(m[10], base, 8)
	if err != nil {
		return Fault{}, false
	}
	f = Fault{
		Source:   SourceKmsg,
		BDF:      fmt.Sprintf("%04x:%02x:%02x.%d", seg, bus, dev, fn),
		IOVA:     num(m[8], 64),
		Write:    m[1] == "DMA Write",
		Reason:   uint8(reason),
		IRQRemap: m[1] == "INTR-REMAP",
	}
	if m[2] != "" {
		f.HasPASID, f.PASID = true, uint32(num(m[2], 32))
	} else if m[7] != "" && !strings.EqualFold(m[7], "ffffffff") {
		f.HasPASID, f.PASID = true, uint32(num(m[7], 32))
	}
	if dev > 0x1f {
		return Fault{}, false
	}
	return f, true
}

// openKmsg opens /dev/kmsg positioned after the last record, so that only
// new lines are read.
func (t *Tracer) openKmsg() error {
	fd, err := unix.Open(kmsgPath, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		missing := MissingKmsg
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			missing = MissingPrivilege
		}
		return &NotSupportedError{Source: SourceKmsg, Missing: missing, Detail: kmsgPath, Err: err}
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		unix.Close(fd)
		return &NotSupportedError{Source: SourceKmsg, Missing: MissingKmsg, Detail: "seeking to the end of " + kmsgPath, Err: err}
	}
	// Non-blocking, so reads wait on the runtime poller and Close ends them.
	t.kmsg = os.NewFile(uintptr(fd), kmsgPath)
	return nil
}

// readKmsg reads /dev/kmsg records until the file is closed. Each read
// returns one record: "prio,seq,usec,flags;message", then continuation
// lines.
func (t *Tracer) readKmsg() {
	defer t.wg.Done()
	buf := make([]byte, 8192)
	for {
		n, err := t.kmsg.Read(buf)
		if err != nil {
			if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.EINVAL) {
				continue // records overwritten before we read them; or one too long
			}
			if !errors.Is(err, os.ErrClosed) {
				t.stopped(fmt.Errorf("reading %s: %w", kmsgPath, err))
			}
			return
		}
		rec := string(buf[:n])
		if i := strings.IndexByte(rec, ';'); i >= 0 {
			rec = rec[i+1:]
		}
		if i := strings.IndexByte(rec, '\n'); i >= 0 {
			rec = rec[:i]
		}
		if f, ok := ParseKmsg(rec); ok {
			f.Time = time.Now()
			t.deliver(&f)
		}
	}
}
