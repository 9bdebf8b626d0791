package nvmelike_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// vendorLog is a made-up vendor admin command: read a vendor log page
// of n dwords into a buffer; the software controller does not know it.
type vendorLogRequest struct {
	Buf nvmelike.Buffer
}

var vendorLog = &nvmelike.Op[vendorLogRequest, []byte]{
	Name: "vendor log", Opcode: 0xc2, Admin: true, Dir: nvmelike.DirFromDevice,
	Encode: func(r vendorLogRequest) nvmelike.Command {
		return nvmelike.Command{CDW10: uint32(r.Buf.Len() / 4), Data: r.Buf}
	},
	Decode: func(cmd nvmelike.Command, _ nvmelike.Completion) ([]byte, error) { return cmd.Data.Bytes, nil },
}

func TestOpAdmin(t *testing.T) {
	reg := nvmelike.NewRegistry()
	if err := vendorLog.Register(reg); err != nil {
		t.Fatal(err)
	}
	if info := reg.Admin(0xc2); info.Name != "vendor log" || info.Dir != nvmelike.DirFromDevice {
		t.Errorf("registry: %+v", info)
	}
	r := newRig(t, sim.Config{}, &nvmelike.Options{Registry: reg})
	q := r.queue(t, 4)
	ctx := testContext(t)
	buf := r.alloc(t, 4096)
	_, err := vendorLog.ExecAdmin(ctx, r.ctrl, vendorLogRequest{Buf: buf})
	var oe *nvmelike.OpError
	if !errors.Is(err, nvmelike.ErrInvalidOpcode) || !errors.As(err, &oe) || !oe.Admin || !strings.Contains(err.Error(), "vendor log (admin opcode 0xc2)") {
		t.Errorf("an admin opcode the controller does not know: %v", err)
	}
	if _, err := vendorLog.Exec(ctx, q, vendorLogRequest{Buf: buf}); err == nil || q.Stats().Submitted != 0 {
		t.Errorf("an admin Op on an I/O queue: %v, %d submitted", err, q.Stats().Submitted)
	}
	io := &nvmelike.Op[int, int]{Name: "io", Opcode: 0x84, Encode: func(int) nvmelike.Command { return nvmelike.Command{} }}
	if _, err := io.ExecAdmin(ctx, r.ctrl, 0); err == nil {
		t.Error("an I/O Op on the admin queue succeeded")
	}
	if err := (&nvmelike.Op[int, int]{Name: "no encoder", Opcode: 0x85}).Register(reg); err == nil {
		t.Error("an Op without an encoder registered")
	}
}
