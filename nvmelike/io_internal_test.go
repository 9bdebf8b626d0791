package nvmelike

import "testing"

// TestIOFastDataPointer: SubmitIO's short path (one-page buffers, PRP1
// alone) stays on with PRPs and with DataPointerAuto, which describes
// such buffers the same way, and is off with SGLs for every command.
func TestIOFastDataPointer(t *testing.T) {
	q := &QueuePair{id: 1, nvme: true, sgls: NVME_CTRL_SGLS_BYTE_ALIGNED}
	q.SetIOCallback(func(uint64, Completion, error) {})
	for _, c := range []struct {
		d    DataPointer
		fast bool
	}{{DataPointerPRP, true}, {DataPointerAuto, true}, {DataPointerSGL, false}, {DataPointerPRP, true}} {
		if err := q.SetDataPointer(c.d); err != nil {
			t.Fatal(err)
		}
		if q.ioFast != c.fast {
			t.Errorf("data pointer %v: short path %v, want %v", c.d, q.ioFast, c.fast)
		}
	}
	q.markClosed()
	if q.ioFast {
		t.Error("short path on a closed queue pair")
	}
}
