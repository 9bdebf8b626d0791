package nvmelike_test

import (
	"bytes"
	"sync"
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// TestQueuePairsInParallel runs one queue pair per goroutine, each on its
// own LBA range, while another goroutine issues admin commands: the
// controller's methods are safe for concurrent use and queue pairs are
// independent (run under -race).
func TestQueuePairsInParallel(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 4096, LBASize: 4096}}}, nil)
	const workers = 4
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for w := range workers {
		q := r.queue(t, 32)
		wbuf := r.alloc(t, 16*4096)
		rbuf := r.alloc(t, 16*4096)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				fill(wbuf.Bytes, byte(w*50+i))
				lba := uint64(w*1024 + i*16)
				c := nvmelike.WriteCommand(1, lba, 16, wbuf)
				if _, err := q.Exec(ctx, &c); err != nil {
					errs <- err
					return
				}
				c = nvmelike.ReadCommand(1, lba, 16, rbuf)
				if _, err := q.Exec(ctx, &c); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(wbuf.Bytes, rbuf.Bytes) {
					t.Errorf("worker %d round %d: data differs", w, i)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 50 {
			if _, err := r.ctrl.IdentifyNamespace(ctx, 1); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
