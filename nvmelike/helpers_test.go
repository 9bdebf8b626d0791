package nvmelike_test

import (
	"context"
	"testing"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// rig is a host controller brought up on a software controller.
type rig struct {
	dev  *sim.Controller
	mem  *sim.Memory
	ctrl *nvmelike.Controller
}

func newRig(t testing.TB, cfg sim.Config, o *nvmelike.Options) *rig {
	t.Helper()
	mem := sim.NewMemory()
	dev := sim.New(mem, cfg)
	if o == nil {
		o = &nvmelike.Options{}
	}
	if o.Registry == nil {
		o.Registry = nvmelike.NewRegistry()
		if err := sim.RegisterOpcodes(o.Registry); err != nil {
			t.Fatal(err)
		}
	}
	ctrl, err := nvmelike.Open(testContext(t), dev, mem, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = ctrl.Close() })
	return &rig{dev: dev, mem: mem, ctrl: ctrl}
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (r *rig) queue(t testing.TB, depth int) *nvmelike.QueuePair {
	t.Helper()
	q, err := r.ctrl.CreateQueuePair(testContext(t), nvmelike.QueueOptions{Depth: depth})
	if err != nil {
		t.Fatalf("CreateQueuePair: %v", err)
	}
	return q
}

func (r *rig) alloc(t testing.TB, n int) nvmelike.Buffer {
	t.Helper()
	b, err := r.mem.Alloc(n, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fill writes a pattern that differs per byte and per seed.
func fill(b []byte, seed byte) {
	for i := range b {
		b[i] = byte(i*7+i>>8) ^ seed
	}
}
