package pcie

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestSelect(t *testing.T) {
	s := scanSample(t, nil)
	for _, tc := range []struct {
		args []string
		want string // short BDFs, space separated
	}{
		{[]string{"0000:03:00.0"}, "03:00.0"},
		{[]string{"03:00.0,04:00.0"}, "03:00.0 04:00.0"},
		{[]string{"03:00.0 09:00.0"}, "03:00.0 09:00.0"},
		{[]string{"bdf=81:00.0"}, "81:00.0"},
		{[]string{"0001:03:00.0"}, ""},
		{[]string{"1b36:0010"}, "03:00.0 04:00.0 07:00.0 08:00.0 09:00.0 81:00.0"},
		{[]string{"8086:"}, "00:00.0 00:1f.0 00:1f.2 00:1f.3 0a:00.0 0a:00.1 0a:02.0 0a:02.1"},
		{[]string{"*:154c"}, "0a:02.0 0a:02.1"},
		{[]string{"id=104c:8232"}, "01:00.0 05:00.0"},
		{[]string{"vendor=104c", "device=8233"}, "02:00.0 02:01.0 06:00.0 06:01.0"},
		{[]string{"class=nvme", "driver=nvme"}, "07:00.0"},
		{[]string{"class=0108", "numa=1"}, "81:00.0"},
		{[]string{"class=02"}, "0a:00.0 0a:00.1 0a:02.0 0a:02.1"},
		{[]string{"class=0x060400,driver=none"}, ""},
		{[]string{"driver=none"}, "00:00.0"},
		{[]string{"driver=vfio-pci", "card=01:00.0"}, "03:00.0 04:00.0"},
		{[]string{"card=0000:0a:00.0", "driver=iavf,driver=vfio-pci"}, "0a:02.0 0a:02.1"},
		{[]string{"group=20"}, "00:1f.0 00:1f.2 00:1f.3"},
		{[]string{"group=5,group=6"}, "03:00.0 04:00.0"},
		{[]string{"numa=none", "class=nvme"}, "03:00.0 04:00.0 07:00.0 08:00.0 09:00.0"},
		{[]string{"CLASS=nvme", "numa=1"}, "81:00.0"},
	} {
		sel, err := ParseSelector(tc.args...)
		if err != nil {
			t.Errorf("ParseSelector(%q): %v", tc.args, err)
			continue
		}
		var got []string
		for _, f := range s.Select(sel) {
			got = append(got, f.BDF.Short())
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("select %q = %q; want %q", tc.args, g, tc.want)
		}
	}
	sel, _ := ParseSelector()
	if !sel.Empty() || len(s.Select(sel)) != len(s.Functions) {
		t.Error("the empty selector does not pick everything")
	}
}

func TestSelectorString(t *testing.T) {
	sel, err := ParseSelector("03:00.0,0000:04:00.0", "1B36:*  class=0x0108", "driver=none")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sel.String(), "03:00.0 0000:04:00.0 1b36:* class=0108 driver=none"; got != want {
		t.Errorf("String = %q; want %q", got, want)
	}
}

func TestSelectorErrors(t *testing.T) {
	for _, tc := range []struct {
		arg, want string
	}{
		{"0000:3:00.0x", `bad selector "0000:3:00.0x": bus "3" is not two hex digits (want dddd:bb:dd.f or bb:dd.f)`},
		{"03:00", `bad selector "03:00": want vendor:device, four hex digits each (or *), such as 1b36:0010; a PCI address needs the .function`},
		{"clas=01", `bad selector "clas=01": unknown key "clas" (did you mean "class"?); keys are bdf, id, vendor, device, class, driver, card, numa, group`},
		{"nvme", `bad selector "nvme": not a PCI address, vendor:device or key=value (did you mean class=nvme?)`},
		{"numa", `bad selector "numa": not a PCI address, vendor:device or key=value (did you mean numa=...?)`},
		{"class=", `bad selector "class=": no value after "class="`},
		{"class=010", `bad selector "class=010": class wants 2, 4 or 6 hex digits (01, 0108, 010802) or one of accelerator, bridge, display, ethernet, network, nvme, storage`},
		{"numa=-2", `bad selector "numa=-2": numa wants a number or "none", not "-2"`},
		{"group=x", `bad selector "group=x": group wants a number or "none", not "x"`},
		{"card=foo", `bad selector "card=foo": card IDs are PCI addresses, as ` + "`umdprobe tree`" + ` shows them`},
		{"driver=a/b", `bad selector "driver=a/b": "a/b" is not a driver name`},
		{"vendor=1b3", `bad selector "vendor=1b3": vendor ID "1b3" is not four hex digits`},
		{"1b36:0010:1", `bad selector "1b36:0010:1": a PCI address needs the .function (want dddd:bb:dd.f or bb:dd.f); a vendor:device pair has one colon`},
		{"0000:00:01", `bad selector "0000:00:01": a PCI address needs the .function (want dddd:bb:dd.f or bb:dd.f); a vendor:device pair has one colon`},
		{"zzzz", `bad selector "zzzz": not a PCI address, vendor:device or key=value`},
	} {
		_, err := ParseSelector("class=nvme", tc.arg)
		if err == nil {
			t.Errorf("ParseSelector(%q) succeeded", tc.arg)
			continue
		}
		if !errors.Is(err, ErrBadSelector) {
			t.Errorf("ParseSelector(%q) error does not wrap ErrBadSelector: %v", tc.arg, err)
		}
		if err.Error() != tc.want {
			t.Errorf("ParseSelector(%q) error\n got: %s\nwant: %s", tc.arg, err, tc.want)
		}
	}
	_, err := ParseSelector("0000:3:00.0")
	if !errors.Is(err, ErrBadBDF) {
		t.Errorf("a bad address selector does not wrap ErrBadBDF: %v", err)
	}
}

func ExampleParseSelector() {
	sel, err := ParseSelector("class=nvme numa=0,numa=1", "driver=vfio-pci")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(sel)
	_, err = ParseSelector("0000:3:00.0")
	fmt.Println(err)
	// Output:
	// class=010802 numa=0 numa=1 driver=vfio-pci
	// bad selector "0000:3:00.0": bus "3" is not two hex digits (want dddd:bb:dd.f or bb:dd.f)
}

// FuzzParseSelector: any argument either parses or gives a
// *SelectorError; neither panics, and what parses prints back to
// something that parses.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"03:00.0,1b36:0010", "class=nvme numa=0", "card=01:00.0", "driver=none", "0000:3:00.0x", "=", ",,", "1b36:", "*:*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			var se *SelectorError
			if !errors.As(err, &se) {
				t.Fatalf("%q: error %v is not a *SelectorError", s, err)
			}
			return
		}
		if _, err := ParseSelector(sel.String()); err != nil {
			t.Fatalf("%q parsed, printed as %q, which fails: %v", s, sel.String(), err)
		}
	})
}
