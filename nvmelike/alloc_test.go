package nvmelike_test

import (
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// TestNoAllocationsOnIOPath fails if a submit + ring + poll round trip, or
// a synchronous Exec, allocates (the software controller included).
func TestNoAllocationsOnIOPath(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counting is skipped in -short mode")
	}
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 1024, LBASize: 4096}}}, nil)
	q := r.queue(t, 64)
	buf := r.alloc(t, 64<<10)
	ctx := testContext(t)
	completed := 0
	cb := nvmelike.Callback(func(*nvmelike.Command, nvmelike.Completion, error) { completed++ })

	for _, tc := range []struct {
		name string
		buf  nvmelike.Buffer
	}{
		{"4KiB", buf.Slice(0, 4096)},
		{"8KiB unaligned", buf.Slice(512, 8192)},
		{"64KiB PRP list", buf.Slice(0, 64<<10)},
	} {
		nlb := uint32(tc.buf.Len() / 4096)
		if nlb == 0 {
			nlb = 1
		}
		read := nvmelike.ReadCommand(1, 0, nlb, tc.buf)
		write := nvmelike.WriteCommand(1, 0, nlb, tc.buf)
		if tc.buf.Len()%4096 != 0 {
			continue
		}
		allocs := testing.AllocsPerRun(1000, func() {
			if err := q.Submit(&write, cb); err != nil {
				t.Fatal(err)
			}
			if err := q.Submit(&read, cb); err != nil {
				t.Fatal(err)
			}
			q.Ring()
			if n, err := q.Poll(0); n != 2 || err != nil {
				t.Fatalf("poll %d, %v", n, err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: submit+ring+poll: %v allocations per run", tc.name, allocs)
		}
		allocs = testing.AllocsPerRun(1000, func() {
			if _, err := q.Exec(ctx, &read); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: Exec: %v allocations per run", tc.name, allocs)
		}
	}
	if completed == 0 {
		t.Fatal("no callbacks ran")
	}
}
