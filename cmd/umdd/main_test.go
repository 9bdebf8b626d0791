package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/broker/brokertest"
)

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"--socket", "/run/u.sock", "--mode", "0600", "--allow-uid", "1000,1001", "--allow-gid", "50", "class=nvme", "--max-pool", "8M", "numa=0"})
	if err != nil {
		t.Fatal(err)
	}
	if o.socket != "/run/u.sock" || o.mode != 0o600 || len(o.uids) != 2 || o.uids[1] != 1001 || len(o.gids) != 1 || o.maxPool != 8<<20 {
		t.Fatalf("%+v", o)
	}
	if strings.Join(o.selectors, " ") != "class=nvme numa=0" {
		t.Fatalf("selectors %q", o.selectors)
	}
	o, err = parseArgs([]string{"status", "--socket", "s", "-o", "json"})
	if err != nil || o.command != "status" || o.output != "json" {
		t.Fatalf("status: %+v, %v", o, err)
	}
	for _, bad := range [][]string{
		{},
		{"--socket", "s", "--mode", "0999"},
		{"--socket", "s", "--mode", "7777"},
		{"--socket", "s", "--allow-uid", "root"},
		{"--socket", "s", "--max-queues", "0"},
		{"--socket", "s", "--max-pool", "-1"},
		{"--socket", "s", "--bogus"},
		{"status", "--socket", "s", "-o", "yaml"},
		{"status", "--socket", "s", "class=nvme"},
		{"status", "--socket", "s", "--mode", "0600"},
	} {
		var ue usageError
		if _, err := parseArgs(bad); !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "8K": 8 << 10, "8kb": 8 << 10, "64M": 64 << 20, "2GiB": 2 << 30, "1g": 1 << 30, "1023G": 1023 << 30} {
		if got, err := parseBytes(in); got != want || err != nil {
			t.Errorf("%q: %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1M", "1T", "1024G", "M", "99999999G"} {
		if _, err := parseBytes(in); err == nil || !strings.Contains(err.Error(), "want a positive number of bytes below 1 TiB") {
			t.Errorf("%q: %v, want the error saying what a size is", in, err)
		}
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"umdd --socket PATH", "umdd status", "SO_PEERCRED", "--allow-gid", "Selectors pick"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// TestStatus asks a broker without devices (which needs no hardware) for
// its status, as JSON and as a table.
func TestStatus(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "u.sock")
	s, err := broker.NewServer(broker.Config{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Serve(t, s)
	var out bytes.Buffer
	if err := run([]string{"status", "--socket", sock, "-o", "json"}, &out, os.Stderr); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Devices []broker.DeviceInfo   `json:"devices"`
		Clients []broker.ClientStatus `json:"clients"`
	}
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("%v in %s", err, out.String())
	}
	// The status command is itself the one client.
	if len(st.Clients) != 1 || int(st.Clients[0].PID) != os.Getpid() {
		t.Fatalf("clients %+v", st.Clients)
	}
	out.Reset()
	if err := run([]string{"status", "--socket", sock}, &out, os.Stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "CLIENT") || !strings.Contains(out.String(), "DEVICE") {
		t.Fatalf("table:\n%s", out.String())
	}
	if err := run([]string{"status", "--socket", filepath.Join(t.TempDir(), "none")}, &out, &out); err == nil {
		t.Fatal("status of a missing broker succeeded")
	}
}

func TestWriteStatusTable(t *testing.T) {
	var out bytes.Buffer
	err := writeStatus(&out, false,
		[]broker.DeviceInfo{{BDF: "0000:00:03.0", Serial: "s", Model: "m", MaxQueues: 8, FreeQueues: 6, Namespaces: []broker.NamespaceInfo{{NSID: 1, LBASize: 512, Blocks: 100}}},
			{BDF: "0000:00:04.0", MaxQueues: 8, Lent: "uid-2"}, {BDF: "0000:00:05.0", MaxQueues: 8, Failed: "opening it again after claim uid-3: busy"}},
		[]broker.ClientStatus{{ID: 3, PID: 42, UID: 1000, GID: 1000, Device: "0000:00:03.0", PoolBytes: 4 << 20, PoolIOVA: 0x200000, Queues: []broker.QueueInfo{{ID: 1, Depth: 32, Vector: 1}, {ID: 2, Depth: 32, Vector: 2}}, Commands: 7, Claim: "uid-1"}},
		[]broker.ReservationStatus{{Claim: "uid-1", Device: "0000:00:03.0", Mode: "mediated", Queues: 2, Depth: 32, PoolBytes: 4 << 20, Polled: true, InUse: true, Client: 3},
			{Claim: "uid-1", Device: "0000:00:03.0", Name: "nvme-0000-00-03-0-q1", Mode: "mediated", Queues: 1, Depth: 32, PoolBytes: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"0000:00:03.0", "6/8", "1:100x512", "0x200000", "1(x32,v1) 2(x32,v2)", "4194304", "(claim uid-1)", "CLAIM", "NAME", "nvme-0000-00-03-0-q1", "mediated,polled", "client 3",
		"STATE", "served", "lent to claim uid-2 (exclusive)", "failed: opening it again after claim uid-3: busy"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
