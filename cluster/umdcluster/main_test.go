package main

import (
	"errors"
	"flag"
	"testing"
)

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"up", "--dir", "/tmp/x", "--node", "node-a=snap.txt", "--node", "node-b"})
	if err != nil {
		t.Fatal(err)
	}
	if o.cmd != "up" || o.dir != "/tmp/x" || len(o.nodes) != 2 ||
		o.nodes[0].Name != "node-a" || o.nodes[0].Devices != "snap.txt" ||
		o.nodes[1].Name != "node-b" || o.nodes[1].Devices != "" {
		t.Fatalf("parsed %+v", o)
	}
	o, err = parseArgs([]string{"up"})
	if err != nil || len(o.nodes) != 1 || o.nodes[0].Name != "node-a" {
		t.Fatalf("default nodes: %+v, %v", o, err)
	}
	if _, err := parseArgs([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, bad := range [][]string{nil, {"sideways"}, {"up", "--node", "=x"}, {"down", "--node", "a"}, {"down", "extra"}} {
		var ue usageError
		if _, err := parseArgs(bad); !errors.As(err, &ue) {
			t.Errorf("%q: want a usage error, got %v", bad, err)
		}
	}
}
