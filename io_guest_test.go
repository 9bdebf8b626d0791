//go:build guest

package umd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/qemu/guest/guestdev"
)

// openWithBlockSizes opens, among the vfio-bound controllers, one that has
// a namespace of each block size the test needs, and returns it with the
// NSID of each.
func openWithBlockSizes(ctx context.Context, t *testing.T, sizes ...int) (*umd.Device, map[int]uint32) {
	t.Helper()
	for _, bdf := range guest.DriverFunctions(t, "vfio-pci") {
		dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 16 << 20})
		if err != nil {
			t.Fatal(err)
		}
		found := map[int]uint32{}
		for _, nsid := range dev.Controller().Namespaces() {
			ns, err := dev.Controller().IdentifyNamespace(ctx, nsid)
			if err != nil {
				dev.Close()
				t.Fatal(err)
			}
			if _, ok := found[ns.LBASize]; !ok {
				found[ns.LBASize] = nsid
			}
		}
		all := true
		for _, s := range sizes {
			_, ok := found[s]
			all = all && ok
		}
		if all {
			return dev, found
		}
		dev.Close()
	}
	t.Fatalf("no controller of topology %s has namespaces of %v-byte blocks", guest.Topology(), sizes)
	return nil, nil
}

// TestTransferSizes writes and reads back transfers from one block to
// 2 MiB, from page-aligned and unaligned buffers, on namespaces of 512-byte
// and 4 KiB blocks. Past the controller's MDTS (QEMU's is 7: 512 KiB) the
// engine splits them.
func TestTransferSizes(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sizes := []int{512, 4096}
	if guest.Topology() != "cards" {
		sizes = []int{512} // only cards has 4 KiB namespaces
	}
	dev, nsids := openWithBlockSizes(ctx, t, sizes...)
	defer dev.Close()
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	max := dev.Controller().MaxTransfer()
	const largest = 2 << 20
	src, err := dev.Alloc(largest + 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(src)
	dst, err := dev.Alloc(largest + 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(dst)
	for lba, nsid := range nsids {
		for _, n := range []int{lba, 4096, 8192 + lba, 64 << 10, 256 << 10, max, max + lba, 1 << 20, largest} {
			for _, off := range []int{0, 512, 4096 - 8} {
				if n%lba != 0 || n > largest {
					continue
				}
				t.Run(fmt.Sprintf("lba%d/%dB/offset%d", lba, n, off), func(t *testing.T) {
					data := src.Slice(off, n)
					for i := range data.Bytes {
						data.Bytes[i] = byte(i*31+off) ^ byte(n>>9) ^ byte(i>>8)
					}
					blocks := uint32(n / lba)
					w := nvmelike.WriteCommand(nsid, 64, blocks, data)
					if _, err := q.Exec(ctx, &w); err != nil {
						t.Fatalf("write: %v", err)
					}
					back := dst.Slice(off, n)
					clear(back.Bytes)
					r := nvmelike.ReadCommand(nsid, 64, blocks, back)
					if _, err := q.Exec(ctx, &r); err != nil {
						t.Fatalf("read: %v", err)
					}
					if !bytes.Equal(back.Bytes, data.Bytes) {
						t.Fatal("read back differs from what was written")
					}
				})
			}
		}
		// A command the engine cannot split (not an LBA command) past
		// the largest transfer is refused before the device sees it.
		big := nvmelike.DeallocateCommand(nsid, 1, src.Slice(0, max+4096))
		if _, err := q.Exec(ctx, &big); !errors.Is(err, nvmelike.ErrTransferTooLarge) {
			t.Errorf("a %d-byte dataset management with a %d-byte limit: %v, want ErrTransferTooLarge", max+4096, max, err)
		}
	}
}

// TestResetDuringIO resets the controller with writes in flight: writes
// acknowledged before the reset are intact after it, and the in-flight
// ones are retried (ResetRetry) or failed with ErrReset (ResetFail).
func TestResetDuringIO(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dev, nsids := openWithBlockSizes(ctx, t, 512)
	defer dev.Close()
	nsid := nsids[512]
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const blocks, n = 8, 8 * 512
	fill := func(b nvmelike.Buffer, seed int) {
		for i := range b.Bytes {
			b.Bytes[i] = byte(seed*17 + i*3 + i>>9)
		}
	}
	bufs := make([]nvmelike.Buffer, 32)
	for i := range bufs {
		if bufs[i], err = dev.Alloc(n); err != nil {
			t.Fatal(err)
		}
		defer dev.Free(bufs[i])
	}
	// Acknowledged writes: LBAs 0..127.
	for i := 0; i < 16; i++ {
		fill(bufs[i], i)
		w := nvmelike.WriteCommand(nsid, uint64(i*blocks), blocks, bufs[i])
		if _, err := q.Exec(ctx, &w); err != nil {
			t.Fatal(err)
		}
	}
	for _, policy := range []nvmelike.ResetPolicy{nvmelike.ResetRetry, nvmelike.ResetFail} {
		// In-flight writes: LBAs 1024.., rung but not polled.
		var ok, failed int
		done := func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, nvmelike.ErrReset):
				failed++
			default:
				t.Errorf("in-flight write: %v", err)
			}
		}
		cmds := make([]nvmelike.Command, 16)
		for i := range cmds {
			fill(bufs[16+i], 100+i)
			cmds[i] = nvmelike.WriteCommand(nsid, uint64(1024+i*blocks), blocks, bufs[16+i])
			if err := q.Submit(&cmds[i], done); err != nil {
				t.Fatal(err)
			}
		}
		q.Ring()
		if err := dev.Controller().Reset(ctx, policy); err != nil {
			t.Fatalf("reset: %v", err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for q.Outstanding() > 0 && time.Now().Before(deadline) {
			if _, err := q.Poll(0); err != nil {
				t.Fatal(err)
			}
		}
		if q.Outstanding() != 0 {
			t.Fatalf("policy %v: %d commands still outstanding after the reset", policy, q.Outstanding())
		}
		if ok+failed != len(cmds) {
			t.Errorf("policy %v: %d completed and %d failed of %d", policy, ok, failed, len(cmds))
		}
		if policy == nvmelike.ResetFail && ok != 0 && failed == 0 {
			t.Errorf("ResetFail completed all %d writes without failing any", ok)
		}
		if policy == nvmelike.ResetRetry {
			if failed != 0 {
				t.Errorf("ResetRetry failed %d writes", failed)
			}
			// Retried writes landed.
			for i := range cmds {
				got, err := dev.Alloc(n)
				if err != nil {
					t.Fatal(err)
				}
				r := nvmelike.ReadCommand(nsid, uint64(1024+i*blocks), blocks, got)
				if _, err := q.Exec(ctx, &r); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes, bufs[16+i].Bytes) {
					t.Errorf("retried write %d did not land", i)
				}
				dev.Free(got)
			}
		}
		// Every write acknowledged before the reset is intact.
		for i := 0; i < 16; i++ {
			got, err := dev.Alloc(n)
			if err != nil {
				t.Fatal(err)
			}
			r := nvmelike.ReadCommand(nsid, uint64(i*blocks), blocks, got)
			if _, err := q.Exec(ctx, &r); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, n)
			for j := range want {
				want[j] = byte(i*17 + j*3 + j>>9)
			}
			if !bytes.Equal(got.Bytes, want) {
				t.Errorf("policy %v: acknowledged write %d is not intact after the reset", policy, i)
			}
			dev.Free(got)
		}
	}
}

// TestAsyncEventsAndErrorLog: QEMU's nvme completes an Asynchronous Event
// Request with a SMART / health event when the over-temperature threshold
// is set below the controller's temperature; its Error Information log
// page reads and parses.
func TestAsyncEventsAndErrorLog(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev, _ := openWithBlockSizes(ctx, t, 512)
	defer dev.Close()
	ctrl := dev.Controller()
	if _, err := ctrl.ErrorLog(ctx); err != nil {
		t.Fatalf("error log: %v", err)
	}
	events, err := ctrl.EnableAsyncEvents(1)
	if err != nil {
		t.Fatal(err)
	}
	// Asynchronous Event Configuration (FID 0Bh): every SMART critical
	// warning raises an event.
	const featAsyncEventConfig, featTempThreshold = 0x0b, 0x04
	cmd := nvmelike.SetFeaturesCommand(featAsyncEventConfig, 0xff)
	if _, err := ctrl.Admin(ctx, &cmd); err != nil {
		t.Fatalf("set features asynchronous event configuration: %v", err)
	}
	buf, err := dev.Alloc(nvmelike.SMARTLogSize)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(buf)
	cmd = nvmelike.GetLogPageCommand(nvmelike.NVME_LOG_SMART, nvmelike.NVME_NSID_ALL, buf)
	if _, err := ctrl.Admin(ctx, &cmd); err != nil {
		t.Fatal(err)
	}
	smart, err := nvmelike.ParseSMARTLog(buf.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	cmd = nvmelike.GetFeaturesCommand(featTempThreshold)
	old, err := ctrl.Admin(ctx, &cmd)
	if err != nil {
		t.Fatal(err)
	}
	cmd = nvmelike.SetFeaturesCommand(featTempThreshold, uint32(smart.Temperature-10))
	if _, err := ctrl.Admin(ctx, &cmd); err != nil {
		t.Fatalf("set features temperature threshold %d K: %v", smart.Temperature-10, err)
	}
	defer func() {
		cmd := nvmelike.SetFeaturesCommand(featTempThreshold, old.DW0&0xffff)
		_, _ = ctrl.Admin(ctx, &cmd)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.Type != nvmelike.AsyncEventSMART || ev.LogPage != nvmelike.NVME_LOG_SMART {
				t.Errorf("event %v, want a SMART / health event", ev)
			}
			t.Logf("%v", ev)
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no asynchronous event within 10 s")
		}
		if _, err := ctrl.PollAdmin(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGuestAdaptiveWait: with SetPollSpins a queue pair with an interrupt
// completes by polling: Wait returns the completion without reading the
// eventfd, whose count the interrupt left is still there to read. Without
// spins Wait still completes (sleeping when its first poll finds nothing).
func TestGuestAdaptiveWait(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev := guestdev.Open(t, nil)
	q := guestdev.QueuePair(t, dev, umd.QueueOptions{Depth: 8, Interrupt: true})
	nsid := dev.Controller().Namespaces()[0]
	ns, err := dev.Controller().IdentifyNamespace(ctx, nsid)
	if err != nil {
		t.Fatal(err)
	}
	buf := guestdev.Alloc(t, dev, ns.LBASize)
	read := func() {
		t.Helper()
		cmd := nvmelike.ReadCommand(nsid, 0, 1, buf)
		if err := q.Submit(&cmd, nil); err != nil {
			t.Fatal(err)
		}
		q.Ring()
		if n, err := q.Wait(ctx); n != 1 || err != nil {
			t.Fatalf("Wait: %d, %v", n, err)
		}
	}
	q.SetPollSpins(1 << 30)
	read()
	// The MSI-X message may land a moment after the CQ entry.
	var pending uint64
	for start := time.Now(); pending == 0 && time.Since(start) < 2*time.Second; time.Sleep(time.Millisecond) {
		k, err := q.Interrupt().TryRead()
		if err != nil {
			t.Fatal(err)
		}
		pending += k
	}
	if pending == 0 {
		t.Fatal("after a spinning Wait, the interrupt's count was not left for the caller")
	}
	q.SetPollSpins(0)
	read()
}

// TestResetFromOutside resets the function through sysfs while umd holds
// it, as another program or an administrator might: the controller loses
// its queues. The engine sees it on its next look (ErrNotReady), an admin
// command fails with it at once, a Wait for the lost commands within its
// next look, Controller.Reset brings the queue pair
// back with the writes that had not reached the device, and its interrupt
// still wakes it; Close after a second such reset gives everything back,
// so the device opens and works again.
func TestResetFromOutside(t *testing.T) {
	guest.Require(t)
	bdf := guest.DriverFunctions(t, "vfio-pci")[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	free := freeHugepages(t)
	flr := func() {
		t.Helper()
		if err := os.WriteFile("/sys/bus/pci/devices/"+bdf+"/reset", []byte("1"), 0); err != nil {
			t.Fatalf("resetting %s through sysfs: %v", bdf, err)
		}
	}
	dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			dev.Close()
		}
	}()
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 16, Interrupt: true})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := dev.Controller().IdentifyNamespace(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	f := ns.BlockFormat()
	writeRead(ctx, t, dev, q, 1, f, 1)

	// Four writes queued but not rung when the reset comes.
	const n = 4
	bufs := make([]nvmelike.Buffer, n)
	cmds := make([]nvmelike.Command, n)
	var done, failed int
	cb := func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		done++
		if err != nil {
			failed++
			t.Errorf("retried write: %v", err)
		}
	}
	for i := range cmds {
		bufs[i] = guestdev.Alloc(t, dev, f.LBASize)
		for j := range bufs[i].Bytes {
			bufs[i].Bytes[j] = byte(i*31 + j)
		}
		cmds[i] = nvmelike.WriteCommand(1, uint64(200+i), 1, bufs[i])
		if err := q.Submit(&cmds[i], cb); err != nil {
			t.Fatal(err)
		}
	}
	flr()
	q.Ring() // to queues the controller no longer has
	if err := q.Check(); !errors.Is(err, nvmelike.ErrNotReady) {
		t.Fatalf("queue pair Check after the reset: %v, want ErrNotReady", err)
	}
	if _, err := dev.Controller().IdentifyNamespace(ctx, 1); !errors.Is(err, nvmelike.ErrNotReady) {
		t.Fatalf("admin command after the reset: %v, want ErrNotReady", err)
	}
	// Waiting on the interrupt for the lost writes notices too.
	if _, err := q.Wait(ctx); !errors.Is(err, nvmelike.ErrNotReady) {
		t.Fatalf("Wait after the reset: %v, want ErrNotReady", err)
	}

	if err := dev.Controller().Reset(ctx, nvmelike.ResetRetry); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	for done < n {
		if _, err := q.Wait(ctx); err != nil {
			t.Fatalf("waiting for the retried writes (%d of %d done): %v", done, n, err)
		}
	}
	back := guestdev.Alloc(t, dev, f.LBASize)
	for i := range cmds {
		r := nvmelike.ReadCommand(1, uint64(200+i), 1, back)
		if _, err := q.Exec(ctx, &r); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back.Bytes, bufs[i].Bytes) {
			t.Errorf("retried write %d did not land", i)
		}
	}

	flr()
	err = dev.Close()
	closed = true
	if !errors.Is(err, nvmelike.ErrNotReady) {
		t.Errorf("Close after a second reset: %v, want ErrNotReady", err)
	}
	dev, err = umd.Open(ctx, bdf, &umd.Options{PoolSize: 4 << 20})
	if err != nil {
		t.Fatalf("opening again: %v", err)
	}
	q, err = dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 16, Interrupt: true})
	if err != nil {
		t.Fatal(err)
	}
	writeRead(ctx, t, dev, q, 1, f, 2)
	if err := dev.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if got := freeHugepages(t); got != free {
		t.Errorf("free hugepages %d before, %d after", free, got)
	}
}
