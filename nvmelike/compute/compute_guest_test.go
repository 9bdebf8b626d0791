//go:build guest

package compute_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/compute"
	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/qemu/guest/guestdev"
)

// TestUnknownOpcodeOnQEMU sends the compute commands to QEMU's nvme, which
// does not know them: each fails with a typed Invalid Opcode status error
// that names the registered command, and the queue pair carries on.
func TestUnknownOpcodeOnQEMU(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg := nvmelike.NewRegistry()
	if err := compute.Register(reg); err != nil {
		t.Fatal(err)
	}
	dev := guestdev.Open(t, &umd.Options{PoolSize: 8 << 20, Controller: nvmelike.Options{Registry: reg}})
	nsid := dev.Controller().Namespaces()[0]
	q := guestdev.QueuePair(t, dev, umd.QueueOptions{Depth: 8})
	buf := guestdev.Alloc(t, dev, 4096)

	check := func(name string, opcode uint8, err error) {
		t.Helper()
		var oe *nvmelike.OpError
		var se *nvmelike.StatusError
		if !errors.Is(err, nvmelike.ErrInvalidOpcode) || !errors.As(err, &oe) || !errors.As(err, &se) {
			t.Fatalf("%s: %v, want an OpError wrapping invalid opcode", name, err)
		}
		if oe.Name != name || oe.Opcode != opcode || se.Opcode != opcode || !se.DNR || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: does not name %s (opcode 0x%02x) or lacks DNR", err, name, opcode)
		}
		t.Logf("%v", err)
	}
	_, err := compute.Checksum.Exec(ctx, q.QueuePair, compute.ChecksumRequest{NSID: nsid, LBA: 0, Blocks: 1})
	check("compute checksum", compute.OpcodeChecksum, err)
	copy(buf.Bytes, "pattern")
	_, err = compute.Search.Exec(ctx, q.QueuePair, compute.SearchRequest{NSID: nsid, LBA: 0, Blocks: 1, Pattern: buf.Slice(0, 7)})
	check("compute search", compute.OpcodeSearch, err)

	// The queue pair is still good.
	ns, err := dev.Controller().IdentifyNamespace(ctx, nsid)
	if err != nil {
		t.Fatal(err)
	}
	data := buf.Slice(0, ns.LBASize)
	copy(data.Bytes, "still working")
	w := nvmelike.WriteCommand(nsid, 0, 1, data)
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}
	back, err := dev.Alloc(ns.LBASize)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(back)
	r := nvmelike.ReadCommand(nsid, 0, 1, back)
	if _, err := q.Exec(ctx, &r); err != nil || !bytes.Equal(back.Bytes, data.Bytes) {
		t.Fatalf("read back after the invalid opcodes: %v", err)
	}
	if q.Outstanding() != 0 {
		t.Errorf("%d commands outstanding", q.Outstanding())
	}
}
