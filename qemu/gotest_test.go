package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTestReporter(t *testing.T) {
	var out strings.Builder
	r := &TestReporter{Out: &out, Label: "[guest]"}
	guest := strings.Join([]string{
		"boot noise",
		markerStart + " example.com/a",
		"=== RUN   TestOne",
		"--- PASS: TestOne (0.00s)",
		"=== RUN   TestTwo",
		"    --- SKIP: TestTwo/sub (0.00s)",
		"--- PASS: TestTwo (0.00s)",
		"PASS",
		"",
		markerEnd + " example.com/a 0",
		markerStart + " example.com/b",
		"=== RUN   TestBad",
		"    b_test.go:9: wrong answer",
		"--- FAIL: TestBad (0.01s)",
		"FAIL",
		markerEnd + " example.com/b 1",
		markerStart + " example.com/c",
		"panic: boom",
		markerEnd + " example.com/c 2",
		markerStart + " example.com/d",
		"=== RUN   TestHang",
	}, "\n")
	// Feed it in odd-sized pieces, as a serial line delivers it.
	for len(guest) > 0 {
		n := min(7, len(guest))
		r.Write([]byte(guest[:n]))
		guest = guest[n:]
	}
	r.Flush()
	text := out.String()
	if r.Passed != 2 || r.Skipped != 1 || r.Failed != 3 {
		t.Errorf("passed %d skipped %d failed %d, want 2, 1, 3", r.Passed, r.Skipped, r.Failed)
	}
	if want := []string{"example.com/b", "example.com/c", "example.com/d"}; strings.Join(r.FailedPackages, " ") != strings.Join(want, " ") {
		t.Errorf("failed packages %v, want %v", r.FailedPackages, want)
	}
	for _, want := range []string{"boot noise\n", "ok  \texample.com/a\t", "FAIL\texample.com/b\t", "wrong answer", "panic: boom", "FAIL\texample.com/d\t", "stopped before"} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "TestOne") {
		t.Errorf("a passing package's output is shown without -v:\n%s", text)
	}
}

func TestHasGuestConstraint(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		src  string
		want bool
	}{
		"guest.go":   {"//go:build guest\n\npackage x\n", true},
		"combo.go":   {"// Copyright\n\n//go:build linux && guest\n\npackage x\n", true},
		"other.go":   {"//go:build guestlike\n\npackage x\n", false},
		"none.go":    {"package x\n\n//go:build guest\n", false},
		"negated.go": {"//go:build !windows\n\npackage x\n", false},
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(c.src), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := hasGuestConstraint(p)
		if err != nil || got != c.want {
			t.Errorf("%s: %v, %v; want %v", name, got, err, c.want)
		}
	}
}

func TestGuestTestScript(t *testing.T) {
	pkgs := []TestPackage{
		{ImportPath: "github.com/umdkit/umd/vfio", Tests: []string{"TestA", "TestB"}},
		{ImportPath: "github.com/umdkit/umd/pcie", Tests: []string{"TestC"}},
	}
	s := GuestTestScript(pkgs, "it's")
	for _, want := range []string{
		"cd /umd/src/github.com_umdkit_umd_vfio",
		"/umd/tests/github.com_umdkit_umd_vfio.test -test.v -test.run '^(TestA|TestB)$/it'\\''s'",
		"/umd/tests/github.com_umdkit_umd_pcie.test -test.v -test.run '^(TestC)$/it'\\''s'",
		markerEnd + " github.com/umdkit/umd/pcie $st",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
}

func TestTestFunctionsAndFilter(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x_guest_test.go")
	src := `//go:build guest

package x

import "testing"

func TestMain(m *testing.M) {}
func TestOne(t *testing.T) {}
func TestTwo(t *testing.T) {}
func Testlower(t *testing.T) {}
func helper(t *testing.T) {}
func BenchmarkX(b *testing.B) {}
func (s suite) TestMethod(t *testing.T) {}
`
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	names, err := testFunctions(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, " ") != "TestOne TestTwo" {
		t.Errorf("test functions %v, want [TestOne TestTwo]", names)
	}
	pkgs := []TestPackage{{ImportPath: "a", Tests: []string{"TestOne", "TestTwo"}}, {ImportPath: "b", Tests: []string{"TestThree"}}}
	got, err := FilterTests(pkgs, "Two/sub")
	if err != nil || len(got) != 1 || got[0].ImportPath != "a" || strings.Join(got[0].Tests, " ") != "TestTwo" {
		t.Errorf("FilterTests(Two/sub) = %+v, %v", got, err)
	}
	if _, err := FilterTests(pkgs, "("); err == nil {
		t.Error("a bad -run pattern was accepted")
	}
}
