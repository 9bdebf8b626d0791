package fdleak

import (
	"os"
	"strings"
	"testing"
)

type fakeM func() int

func (f fakeM) Run() int { return f() }

func TestLeakIsReported(t *testing.T) {
	var leaked *os.File
	var out strings.Builder
	code := run(fakeM(func() int {
		var err error
		leaked, err = os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}), &out)
	leaked.Close()
	if code != 1 || !strings.Contains(out.String(), "-> "+os.DevNull) {
		t.Errorf("code %d, output %q: want a failure naming %s", code, out.String(), os.DevNull)
	}
}

func TestCleanRunPasses(t *testing.T) {
	var out strings.Builder
	code := run(fakeM(func() int {
		f, err := os.Open(os.DevNull)
		if err == nil {
			f.Close()
		}
		return 0
	}), &out)
	if code != 0 || out.Len() != 0 {
		t.Errorf("code %d, output %q", code, out.String())
	}
}

func TestChecksAndFailuresPropagate(t *testing.T) {
	var out strings.Builder
	code := run(fakeM(func() int { return 0 }), &out, func() []string { return []string{"2 DMA mappings"} })
	if code != 1 || !strings.Contains(out.String(), "2 DMA mappings") {
		t.Errorf("code %d, output %q", code, out.String())
	}
	out.Reset()
	if code := run(fakeM(func() int { return 3 }), &out); code != 3 {
		t.Errorf("a failing run's code became %d", code)
	}
}
