package pcie

import (
	"fmt"
	"strconv"
	"strings"
)

// LinkSpeed is a PCI Express link's transfer rate per lane in MT/s:
// 2500 (gen 1), 5000, 8000, 16000, 32000 or 64000 (gen 6). 0 means
// unknown.
type LinkSpeed uint32

// linkSpeedFromCode decodes the speed fields of the Link Capabilities and
// Link Status registers.
func linkSpeedFromCode(code uint32) LinkSpeed {
	switch code {
	case 1:
		return 2500
	case 2:
		return 5000
	case 3:
		return 8000
	case 4:
		return 16000
	case 5:
		return 32000
	case 6:
		return 64000
	}
	return 0
}

// ParseLinkSpeed parses a sysfs current_link_speed or max_link_speed
// value: "8.0 GT/s PCIe" (kernels since 4.20 or so), "8 GT/s" (older
// ones) or "Unknown" (no link or a speed the kernel does not know),
// which gives 0.
func ParseLinkSpeed(s string) (LinkSpeed, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.HasPrefix(s, "Unknown") {
		return 0, nil
	}
	num, rest, ok := strings.Cut(s, " ")
	if !ok || !strings.HasPrefix(rest, "GT/s") {
		return 0, fmt.Errorf("link speed %q is not \"N GT/s\"", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || v > 1000 {
		return 0, fmt.Errorf("link speed %q is not \"N GT/s\"", s)
	}
	return LinkSpeed(v*1000 + 0.5), nil
}

// Gen returns the PCI Express generation of the speed, 0 if unknown.
func (s LinkSpeed) Gen() int {
	switch s {
	case 2500:
		return 1
	case 5000:
		return 2
	case 8000:
		return 3
	case 16000:
		return 4
	case 32000:
		return 5
	case 64000:
		return 6
	}
	return 0
}

func (s LinkSpeed) String() string {
	if s == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GT/s", float64(s)/1000)
}

// MarshalText writes the String form, such as "8.0 GT/s".
func (s LinkSpeed) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// encodingEfficiency is the share of the raw bit rate left after line
// coding: 8b/10b up to 5 GT/s, 128b/130b from 8 to 32 GT/s, and about
// 242/256 for the FLIT mode of 64 GT/s.
func (s LinkSpeed) encodingEfficiency() float64 {
	switch {
	case s == 0:
		return 0
	case s <= 5000:
		return 8.0 / 10
	case s <= 32000:
		return 128.0 / 130
	}
	return 242.0 / 256
}

// Link is the state of the PCI Express link above a function (for a root
// or switch downstream port: the link below it), as sysfs reports it.
type Link struct {
	Speed    LinkSpeed `json:"speed"` // negotiated
	Width    int       `json:"width"` // negotiated lanes; 0 when the link is down
	MaxSpeed LinkSpeed `json:"max_speed"`
	MaxWidth int       `json:"max_width"`
	// Degraded is set when the link trained below what both of its ends
	// can do (when only this end is known: below what this end can do).
	Degraded bool `json:"degraded"`
}

// Known reports whether the kernel told us anything about the link.
func (l Link) Known() bool { return l.Speed != 0 || l.Width != 0 || l.MaxSpeed != 0 || l.MaxWidth != 0 }

// Bandwidth returns the link's usable rate in GB/s per direction, after
// line coding and before packet overheads; 0 if unknown or down.
func (l Link) Bandwidth() float64 {
	return float64(l.Speed) * float64(l.Width) * l.Speed.encodingEfficiency() / 8 / 1000
}

// String gives "8.0 GT/s x4", and when degraded also what the link could
// do: "2.5 GT/s x1 (degraded, capable of 8.0 GT/s x4)".
func (l Link) String() string {
	if !l.Known() {
		return "unknown"
	}
	if l.Width == 0 && l.Speed == 0 {
		return "down"
	}
	s := fmt.Sprintf("%v x%d", l.Speed, l.Width)
	if l.Degraded {
		s += fmt.Sprintf(" (degraded, capable of %v x%d)", l.MaxSpeed, l.MaxWidth)
	}
	return s
}

// degradedAgainst reports whether the link trained below the best both ends
// support; a zero maximum on either side means "unknown" and does not
// count. A link that is down is not degraded, only down.
func (l Link) degradedAgainst(peerMaxSpeed LinkSpeed, peerMaxWidth int) bool {
	if l.Width == 0 {
		return false
	}
	speed, width := l.MaxSpeed, l.MaxWidth
	if peerMaxSpeed != 0 && (speed == 0 || peerMaxSpeed < speed) {
		speed = peerMaxSpeed
	}
	if peerMaxWidth != 0 && (width == 0 || peerMaxWidth < width) {
		width = peerMaxWidth
	}
	return (l.Speed != 0 && speed != 0 && l.Speed < speed) || (width != 0 && l.Width < width)
}

// A LinkHop is one physical link on the way from a root port down to a
// function: Upstream is the root or switch downstream port, Downstream the
// function (switch upstream port or endpoint) below it.
type LinkHop struct {
	Upstream   BDF `json:"upstream"`
	Downstream BDF `json:"downstream"`
	Link
}

func (h LinkHop) String() string {
	return fmt.Sprintf("%s -> %s: %v", h.Upstream.Short(), h.Downstream.Short(), h.Link)
}
