package pcie

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// SelectorHelp explains the selector syntax; commands print it in their
// help.
const SelectorHelp = `Selectors pick PCI functions. Each is one of:
  0000:03:00.0 or 03:00.0  a PCI address (the short form matches any domain)
  1b36:0010                vendor:device; "1b36:*" or "1b36:" for any device of a vendor
  bdf=ADDR  id=VEN:DEV  vendor=VEN  device=DEV
  class=CODE               hex prefix of the class code (01, 0108, 010802) or
                           nvme, storage, network, ethernet, display, bridge, accelerator
  driver=NAME              the bound driver; driver=none for unbound functions
  card=ID                  a card's ID (its head's PCI address, short form allowed)
  numa=N                   NUMA node; numa=none for functions without one
  group=N                  IOMMU group; group=none for functions without one
Several selectors may be given, separated by spaces or commas. Selectors of
the same kind are alternatives; selectors of different kinds must all hold:
"class=nvme numa=0,numa=1" picks NVMe functions on node 0 or 1.`

// ErrBadSelector is the error every malformed selector wraps; the
// concrete error is a *SelectorError.
var ErrBadSelector = errors.New("bad selector")

// A SelectorError says which selector is wrong and why.
type SelectorError struct {
	Selector string
	Reason   string
	Err      error // an underlying error, such as a *BDFError; may be nil
}

func (e *SelectorError) Error() string {
	return fmt.Sprintf("bad selector %q: %s", e.Selector, e.Reason)
}

// Unwrap makes errors.Is(err, ErrBadSelector) true, and reaches Err.
func (e *SelectorError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrBadSelector, e.Err}
	}
	return []error{ErrBadSelector}
}

// A Selector picks functions out of a System; the zero Selector picks all.
type Selector struct {
	terms []term
	kinds map[string]bool
}

// term is one parsed selector; key is its kind, match tests a function.
type term struct {
	key   string
	text  string
	match func(s *System, f *Function) bool
}

var selectorKeys = []string{"bdf", "id", "vendor", "device", "class", "driver", "card", "numa", "group"}

// classAliases are the class names a selector accepts, as hex prefixes.
var classAliases = map[string]string{
	"nvme":        "010802",
	"storage":     "01",
	"network":     "02",
	"ethernet":    "0200",
	"display":     "03",
	"bridge":      "06",
	"accelerator": "12",
}

// ParseSelector parses selectors as SelectorHelp describes them. Each
// argument may hold several, separated by commas or spaces. No selectors
// at all gives a Selector that picks every function.
func ParseSelector(args ...string) (*Selector, error) {
	sel := &Selector{kinds: map[string]bool{}}
	for _, arg := range args {
		for _, tok := range strings.FieldsFunc(arg, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
			t, err := parseTerm(tok)
			if err != nil {
				return nil, err
			}
			sel.terms = append(sel.terms, t)
			sel.kinds[t.key] = true
		}
	}
	return sel, nil
}

// Empty reports whether the selector has no terms (it picks everything).
func (sel *Selector) Empty() bool { return sel == nil || len(sel.terms) == 0 }

// String gives the selectors back, normalised, separated by spaces.
func (sel *Selector) String() string {
	if sel == nil {
		return ""
	}
	var parts []string
	for _, t := range sel.terms {
		parts = append(parts, t.text)
	}
	return strings.Join(parts, " ")
}

// Match reports whether f is picked: for each kind of selector given, at
// least one selector of that kind holds. s supplies what a function does
// not carry itself (its card).
func (sel *Selector) Match(s *System, f *Function) bool {
	if sel.Empty() {
		return true
	}
	for kind := range sel.kinds {
		ok := false
		for _, t := range sel.terms {
			if t.key == kind && t.match(s, f) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// Select returns the functions sel picks, in BDF order.
func (s *System) Select(sel *Selector) []*Function {
	var out []*Function
	for _, f := range s.Functions {
		if sel.Match(s, f) {
			out = append(out, f)
		}
	}
	return out
}

func parseTerm(tok string) (term, error) {
	key, val, hasKey := strings.Cut(tok, "=")
	if !hasKey {
		switch {
		case strings.Contains(tok, "."):
			return bdfTerm(tok, tok)
		case strings.Contains(tok, ":"):
			return idTerm(tok, tok)
		}
		return term{}, &SelectorError{Selector: tok, Reason: "not a PCI address, vendor:device or key=value" + keyHint(tok)}
	}
	key = strings.ToLower(key)
	if val == "" {
		return term{}, &SelectorError{Selector: tok, Reason: fmt.Sprintf("no value after %q", key+"=")}
	}
	switch key {
	case "bdf":
		return bdfTerm(tok, val)
	case "id":
		return idTerm(tok, val)
	case "vendor", "device":
		v, any, err := parseIDField(val)
		if err != nil || any {
			return term{}, &SelectorError{Selector: tok, Reason: fmt.Sprintf("%s ID %q is not four hex digits", key, val)}
		}
		t := term{key: key, text: key + "=" + v.String()}
		if key == "vendor" {
			t.match = func(_ *System, f *Function) bool { return f.VendorID == v }
		} else {
			t.match = func(_ *System, f *Function) bool { return f.DeviceID == v }
		}
		return t, nil
	case "class":
		return classTerm(tok, val)
	case "driver":
		for _, r := range val {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
				return term{}, &SelectorError{Selector: tok, Reason: fmt.Sprintf("%q is not a driver name", val)}
			}
		}
		want := val
		if val == "none" {
			want = ""
		}
		return term{key: key, text: "driver=" + val, match: func(_ *System, f *Function) bool { return f.Driver == want }}, nil
	case "card":
		b, hasDomain, err := parseBDF(val)
		if err != nil {
			return term{}, &SelectorError{Selector: tok, Reason: "card IDs are PCI addresses, as `umdprobe tree` shows them", Err: err}
		}
		return term{key: key, text: "card=" + val, match: func(s *System, f *Function) bool {
			c := s.Card(f.Card)
			return c != nil && sameBDF(c.Head, b, hasDomain)
		}}, nil
	case "numa", "group":
		n, err := parseSmallInt(val)
		if err != nil {
			return term{}, &SelectorError{Selector: tok, Reason: fmt.Sprintf("%s wants a number or \"none\", not %q", key, val)}
		}
		text := key + "=" + val
		if key == "numa" {
			return term{key: key, text: text, match: func(_ *System, f *Function) bool { return f.NUMANode == n }}, nil
		}
		return term{key: key, text: text, match: func(_ *System, f *Function) bool { return f.IOMMUGroup == n }}, nil
	}
	return term{}, &SelectorError{Selector: tok, Reason: fmt.Sprintf("unknown key %q%s; keys are %s", key, didYouMean(key), strings.Join(selectorKeys, ", "))}
}

func sameBDF(have, want BDF, hasDomain bool) bool {
	if !hasDomain {
		have.Domain = 0
	}
	return have == want
}

func bdfTerm(tok, val string) (term, error) {
	b, hasDomain, err := parseBDF(val)
	if err != nil {
		var be *BDFError
		reason := err.Error()
		if errors.As(err, &be) {
			reason = be.Reason + " (want dddd:bb:dd.f or bb:dd.f)"
		}
		return term{}, &SelectorError{Selector: tok, Reason: reason, Err: err}
	}
	text := b.String()
	if !hasDomain {
		text = b.Short()
	}
	return term{key: "bdf", text: text, match: func(_ *System, f *Function) bool { return sameBDF(f.BDF, b, hasDomain) }}, nil
}

// idTerm parses "vvvv:dddd", where either side may be "*" and the device
// may be empty ("1b36:"), meaning any.
func idTerm(tok, val string) (term, error) {
	vs, ds, ok := strings.Cut(val, ":")
	if !ok {
		return term{}, &SelectorError{Selector: tok, Reason: "want vendor:device, four hex digits each, such as 1b36:0010"}
	}
	if strings.Contains(ds, ":") {
		// Two colons: a PCI address with its domain, missing the
		// function.
		return term{}, &SelectorError{Selector: tok, Reason: "a PCI address needs the .function (want dddd:bb:dd.f or bb:dd.f); a vendor:device pair has one colon"}
	}
	if ds == "" {
		ds = "*"
	}
	v, anyV, err1 := parseIDField(vs)
	d, anyD, err2 := parseIDField(ds)
	if err1 != nil || err2 != nil || vs == "" {
		return term{}, &SelectorError{Selector: tok, Reason: "want vendor:device, four hex digits each (or *), such as 1b36:0010; a PCI address needs the .function"}
	}
	vText, dText := v.String(), d.String()
	if anyV {
		vText = "*"
	}
	if anyD {
		dText = "*"
	}
	text := vText + ":" + dText
	return term{key: "id", text: text, match: func(_ *System, f *Function) bool {
		return (anyV || f.VendorID == v) && (anyD || f.DeviceID == d)
	}}, nil
}

func parseIDField(s string) (ID, bool, error) {
	if s == "*" {
		return 0, true, nil
	}
	s = strings.TrimPrefix(strings.ToLower(s), "0x")
	if len(s) != 4 || !isHex(s) {
		return 0, false, fmt.Errorf("%q is not four hex digits", s)
	}
	v, _ := strconv.ParseUint(s, 16, 16)
	return ID(v), false, nil
}

func classTerm(tok, val string) (term, error) {
	hex := strings.TrimPrefix(strings.ToLower(val), "0x")
	if a, ok := classAliases[hex]; ok {
		hex = a
	}
	if (len(hex) != 2 && len(hex) != 4 && len(hex) != 6) || !isHex(hex) {
		names := make([]string, 0, len(classAliases))
		for n := range classAliases {
			names = append(names, n)
		}
		sort.Strings(names)
		return term{}, &SelectorError{Selector: tok, Reason: fmt.Sprintf("class wants 2, 4 or 6 hex digits (01, 0108, 010802) or one of %s", strings.Join(names, ", "))}
	}
	v, _ := strconv.ParseUint(hex, 16, 32)
	shift := uint(24 - 4*len(hex))
	return term{key: "class", text: "class=" + hex, match: func(_ *System, f *Function) bool {
		return uint64(f.Class)>>shift == v
	}}, nil
}

func parseSmallInt(s string) (int, error) {
	if s == "none" {
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a non-negative number", s)
	}
	return n, nil
}

// keyHint suggests a fix for a bare word: "class=nvme" for "nvme",
// "numa=..." for "numa".
func keyHint(tok string) string {
	if _, ok := classAliases[strings.ToLower(tok)]; ok {
		return fmt.Sprintf(" (did you mean class=%s?)", strings.ToLower(tok))
	}
	for _, k := range selectorKeys {
		if strings.EqualFold(tok, k) {
			return fmt.Sprintf(" (did you mean %s=...?)", k)
		}
	}
	return ""
}

// didYouMean names the selector key closest to a misspelt one.
func didYouMean(key string) string {
	best, bestDist := "", 3
	for _, k := range selectorKeys {
		if d := editDistance(strings.ToLower(key), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
