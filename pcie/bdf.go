package pcie

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// A BDF is the address of one PCI function: domain (also called segment),
// bus, device and function. Its text form is the kernel's,
// "dddd:bb:dd.f" in lower-case hex, such as "0000:03:00.0".
type BDF struct {
	Domain   uint32 // 16 bits on most machines; VMD domains use 0x10000 and up
	Bus      uint8
	Device   uint8 // 0 to 31
	Function uint8 // 0 to 7
}

// ErrBadBDF is the error every malformed PCI address wraps; the concrete
// error is a *BDFError that says what is wrong.
var ErrBadBDF = errors.New("bad PCI address")

// A BDFError describes a string that is not a PCI address.
type BDFError struct {
	Input  string // what was given
	Reason string // what is wrong with it, for a human
}

func (e *BDFError) Error() string {
	return fmt.Sprintf("bad PCI address %q: %s (want dddd:bb:dd.f or bb:dd.f, such as 0000:03:00.0)", e.Input, e.Reason)
}

// Unwrap makes errors.Is(err, ErrBadBDF) true.
func (e *BDFError) Unwrap() error { return ErrBadBDF }

// ParseBDF parses a PCI address in the kernel's form "dddd:bb:dd.f" or in
// the short form "bb:dd.f", which means domain 0. It is strict: the bus and
// device take exactly two hex digits, the function one digit from 0 to 7,
// the domain four to eight hex digits, and nothing may follow. Upper-case
// hex is accepted.
func ParseBDF(s string) (BDF, error) {
	b, _, err := parseBDF(s)
	return b, err
}

// parseBDF is ParseBDF that also says whether the domain was given, which
// selectors need: a short address there matches every domain.
func parseBDF(s string) (b BDF, hasDomain bool, err error) {
	fail := func(format string, args ...any) (BDF, bool, error) {
		return BDF{}, false, &BDFError{Input: s, Reason: fmt.Sprintf(format, args...)}
	}
	if s == "" {
		return fail("empty")
	}
	dot := strings.LastIndexByte(s, '.')
	if dot < 0 {
		return fail("no \".\" before the function number")
	}
	head, fn := s[:dot], s[dot+1:]
	parts := strings.Split(head, ":")
	var domain, bus, dev string
	switch len(parts) {
	case 2:
		bus, dev = parts[0], parts[1]
	case 3:
		domain, bus, dev = parts[0], parts[1], parts[2]
		hasDomain = true
	default:
		return fail("want two or three \":\"-separated fields before the \".\", got %d", len(parts))
	}
	if hasDomain {
		if len(domain) < 4 || len(domain) > 8 || !isHex(domain) {
			return fail("domain %q is not 4 to 8 hex digits", domain)
		}
		v, _ := strconv.ParseUint(domain, 16, 32)
		b.Domain = uint32(v)
	}
	if len(bus) != 2 || !isHex(bus) {
		return fail("bus %q is not two hex digits", bus)
	}
	v, _ := strconv.ParseUint(bus, 16, 8)
	b.Bus = uint8(v)
	if len(dev) != 2 || !isHex(dev) {
		return fail("device %q is not two hex digits", dev)
	}
	v, _ = strconv.ParseUint(dev, 16, 8)
	if v > 0x1f {
		return fail("device 0x%s is above 0x1f", dev)
	}
	b.Device = uint8(v)
	if len(fn) != 1 || fn[0] < '0' || fn[0] > '7' {
		return fail("function %q is not one digit from 0 to 7", fn)
	}
	b.Function = fn[0] - '0'
	return b, hasDomain, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return s != ""
}

// String returns the kernel's form, "0000:03:00.0".
func (b BDF) String() string {
	return fmt.Sprintf("%04x:%02x:%02x.%d", b.Domain, b.Bus, b.Device, b.Function)
}

// Short returns "03:00.0", without the domain.
func (b BDF) Short() string {
	return fmt.Sprintf("%02x:%02x.%d", b.Bus, b.Device, b.Function)
}

// Slot returns the address of the function's device as /sys/bus/pci/slots
// writes it: "0000:03:00".
func (b BDF) Slot() string {
	return fmt.Sprintf("%04x:%02x:%02x", b.Domain, b.Bus, b.Device)
}

// Compare orders addresses by domain, bus, device, then function; it
// returns -1, 0 or +1.
func (b BDF) Compare(o BDF) int {
	x := uint64(b.Domain)<<16 | uint64(b.Bus)<<8 | uint64(b.Device)<<3 | uint64(b.Function)
	y := uint64(o.Domain)<<16 | uint64(o.Bus)<<8 | uint64(o.Device)<<3 | uint64(o.Function)
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// MarshalText writes the kernel's form, so BDFs are strings in JSON.
func (b BDF) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText parses with ParseBDF.
func (b *BDF) UnmarshalText(text []byte) error {
	v, err := ParseBDF(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}
