package dra

import (
	"errors"
	"strings"
	"testing"
)

const hdr = `"apiVersion":"umd.umdkit.io/v1alpha1","kind":"UmdClaimParameters"`

func TestParseParametersDefaults(t *testing.T) {
	for _, configs := range [][][]byte{nil, {[]byte(`{` + hdr + `}`)}} {
		p, err := ParseParameters(configs...)
		if err != nil {
			t.Fatal(err)
		}
		if p != DefaultParameters() {
			t.Errorf("%q: got %+v, want the defaults", configs, p)
		}
	}
	if err := DefaultParameters().Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestParseParametersMerge(t *testing.T) {
	class := []byte(`{` + hdr + `,"mode":"exclusive","queuePairs":4}`)
	claim := []byte(`{` + hdr + `,"queuePairs":2,"completion":"poll","poolBytes":8388608}`)
	p, err := ParseParameters(class, claim)
	if err != nil {
		t.Fatal(err)
	}
	want := Parameters{QueuePairs: 2, QueueDepth: DefaultQueueDepth, PoolBytes: 8 << 20, Completion: CompletionPoll, Mode: ModeExclusive}
	if p != want {
		t.Errorf("got %+v, want %+v", p, want)
	}
}

func TestParseParametersErrors(t *testing.T) {
	for _, tc := range []struct {
		json string
		want []string // every substring must appear
	}{
		{`{` + hdr + `,"queuePairs":0}`, []string{"queuePairs: 0", "1 to 64"}},
		{`{` + hdr + `,"queuePairs":65}`, []string{"queuePairs: 65", "1 to 64"}},
		{`{` + hdr + `,"queueDepth":1}`, []string{"queueDepth: 1", "2 to 4096"}},
		{`{` + hdr + `,"queueDepth":5000}`, []string{"queueDepth: 5000", "2 to 4096"}},
		{`{` + hdr + `,"poolBytes":0}`, []string{"poolBytes: 0", "4096 to 1099511627776"}},
		{`{` + hdr + `,"poolBytes":5000}`, []string{"poolBytes: 5000", "multiple of 4096"}},
		{`{` + hdr + `,"completion":"busy"}`, []string{`completion: "busy"`, `"poll", "irq"`}},
		{`{` + hdr + `,"mode":"shared"}`, []string{`mode: "shared"`, `"mediated", "trusted", "vf", "exclusive"`}},
		{`{` + hdr + `,"queuePairs":0,"mode":"x"}`, []string{"queuePairs: 0", `mode: "x"`}},
		{`{` + hdr + `,"queues":2}`, []string{"configuration 0", `unknown field "queues"`}},
		{`{` + hdr + `,"queuePairs":"two"}`, []string{"configuration 0", "queuePairs"}},
		{`{"apiVersion":"v1","kind":"UmdClaimParameters"}`, []string{"apiVersion/kind", `"umd.umdkit.io/v1alpha1"/"UmdClaimParameters"`}},
		{`{` + hdr + `} {}`, []string{"data after the object"}},
		{`[]`, []string{"configuration 0"}},
	} {
		_, err := ParseParameters([]byte(tc.json))
		if err == nil {
			t.Errorf("%s: accepted", tc.json)
			continue
		}
		if !errors.Is(err, ErrInvalidParameters) {
			t.Errorf("%s: %v does not match ErrInvalidParameters", tc.json, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.json, err, w)
			}
		}
	}
	// The second configuration is named when it is the wrong one.
	_, err := ParseParameters([]byte(`{`+hdr+`}`), []byte(`{`+hdr+`,"bogus":1}`))
	if err == nil || !strings.Contains(err.Error(), "configuration 1") {
		t.Errorf("error %v does not name configuration 1", err)
	}
	var fe *FieldError
	if _, err := ParseParameters([]byte(`{` + hdr + `,"queueDepth":1}`)); !errors.As(err, &fe) || fe.Field != "queueDepth" {
		t.Errorf("error %v is not a *FieldError for queueDepth", err)
	}
}
