package nvmelike_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

func TestNVMCommands(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 256, LBASize: 512}}}, nil)
	id := r.ctrl.IdentifyController()
	if id.ONCS&(nvmelike.NVME_CTRL_ONCS_COMPARE|nvmelike.NVME_CTRL_ONCS_DSM|nvmelike.NVME_CTRL_ONCS_WRITE_ZEROES) == 0 {
		t.Fatalf("ONCS 0x%x", id.ONCS)
	}
	q := r.queue(t, 16)
	ctx := testContext(t)
	buf := r.alloc(t, 64*512)
	fill(buf.Bytes, 9)
	w := nvmelike.WriteCommand(1, 0, 64, buf)
	if _, err := q.Exec(ctx, &w); err != nil {
		t.Fatal(err)
	}

	// Compare: equal, then different.
	c := nvmelike.CompareCommand(1, 0, 64, buf)
	if _, err := q.Exec(ctx, &c); err != nil {
		t.Fatalf("compare of equal data: %v", err)
	}
	buf.Bytes[700] ^= 1
	if _, err := q.Exec(ctx, &c); !errors.Is(err, nvmelike.ErrCompareFailure) {
		t.Fatalf("compare of different data: %v", err)
	}
	buf.Bytes[700] ^= 1

	// Write Zeroes on blocks 4-7.
	z := nvmelike.WriteZeroesCommand(1, 4, 4)
	if _, err := q.Exec(ctx, &z); err != nil {
		t.Fatal(err)
	}
	// Deallocate blocks 10-11 and 20.
	ranges := r.alloc(t, 4096)
	nvmelike.PutDSMRange(ranges.Bytes, 0, 0, 2, 10)
	nvmelike.PutDSMRange(ranges.Bytes, 1, 0, 1, 20)
	d := nvmelike.DeallocateCommand(1, 2, ranges.Slice(0, 2*nvmelike.DSMRangeSize))
	if _, err := q.Exec(ctx, &d); err != nil {
		t.Fatal(err)
	}
	back := r.alloc(t, 64*512)
	rd := nvmelike.ReadCommand(1, 0, 64, back)
	if _, err := q.Exec(ctx, &rd); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(buf.Bytes)
	clear(want[4*512 : 8*512])
	clear(want[10*512 : 12*512])
	clear(want[20*512 : 21*512])
	if !bytes.Equal(back.Bytes, want) {
		t.Error("data after write zeroes and deallocate differs")
	}

	// SMART counts what happened: one 32 KiB write, one 32 KiB read.
	log := r.alloc(t, nvmelike.SMARTLogSize)
	g := nvmelike.GetLogPageCommand(nvmelike.NVME_LOG_SMART, nvmelike.NVME_NSID_ALL, log)
	if _, err := r.ctrl.Admin(ctx, &g); err != nil {
		t.Fatal(err)
	}
	smart, err := nvmelike.ParseSMARTLog(log.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if smart.HostReads != 1 || smart.HostWrites != 1 || smart.DataUnitsRead != 1 || smart.Temperature != 300 {
		t.Errorf("smart %+v", smart)
	}
	g = nvmelike.GetLogPageCommand(0x7f, nvmelike.NVME_NSID_ALL, log)
	var se *nvmelike.StatusError
	if _, err := r.ctrl.Admin(ctx, &g); !errors.As(err, &se) || se.SCT != nvmelike.SCTCommandSpecific {
		t.Errorf("unknown log page: %v", err)
	}
}

func TestAdminFeaturesAndAbort(t *testing.T) {
	r := newRig(t, sim.Config{VolatileWriteCache: true}, nil)
	ctx := testContext(t)
	s := nvmelike.SetFeaturesCommand(nvmelike.NVME_FEAT_VOLATILE_WC, 1)
	if _, err := r.ctrl.Admin(ctx, &s); err != nil {
		t.Fatal(err)
	}
	g := nvmelike.GetFeaturesCommand(nvmelike.NVME_FEAT_VOLATILE_WC)
	cpl, err := r.ctrl.Admin(ctx, &g)
	if err != nil || cpl.DW0 != 1 {
		t.Fatalf("get features: %d, %v", cpl.DW0, err)
	}
	g = nvmelike.GetFeaturesCommand(nvmelike.NVME_FEAT_NUM_QUEUES)
	if cpl, err := r.ctrl.Admin(ctx, &g); err != nil || int(cpl.DW0&0xffff)+1 != r.ctrl.MaxIOQueues() {
		t.Fatalf("get number of queues: 0x%x, %v", cpl.DW0, err)
	}
	a := nvmelike.AbortCommand(1, 5)
	if cpl, err := r.ctrl.Admin(ctx, &a); err != nil || cpl.DW0&1 != 1 {
		t.Fatalf("abort: %d, %v", cpl.DW0, err)
	}
}
