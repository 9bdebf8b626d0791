package nvmelike_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// Example brings up a controller (here the software one; with VFIO the
// Registers are the mapped BAR0 and the DMA a hugepage pool mapped in the
// IOMMU), writes a buffer and reads it back.
func Example() {
	ctx := context.Background()
	mem := sim.NewMemory()
	dev := sim.New(mem, sim.Config{})

	ctrl, err := nvmelike.Open(ctx, dev, mem, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ctrl.Close()
	id := ctrl.IdentifyController()
	ns, err := ctrl.IdentifyNamespace(ctx, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	q, err := ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: 64})
	if err != nil {
		fmt.Println(err)
		return
	}

	buf, _ := mem.Alloc(8192, 4096)
	copy(buf.Bytes, "hello, flash")
	w := nvmelike.WriteCommand(1, 0, uint32(buf.Len()/ns.LBASize), buf)
	if _, err := q.Exec(ctx, &w); err != nil {
		fmt.Println(err)
		return
	}
	back, _ := mem.Alloc(8192, 4096)
	r := nvmelike.ReadCommand(1, 0, uint32(back.Len()/ns.LBASize), back)
	if _, err := q.Exec(ctx, &r); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s, %d-byte blocks: %s\n", id.MN, ns.LBASize, back.Bytes[:bytes.IndexByte(back.Bytes, 0)])
	// Output: umd software controller, 512-byte blocks: hello, flash
}

// ExampleQueuePair_Submit keeps a batch in flight with callbacks: one
// doorbell for the batch, one for the completions.
func ExampleQueuePair_Submit() {
	ctx := context.Background()
	mem := sim.NewMemory()
	ctrl, err := nvmelike.Open(ctx, sim.New(mem, sim.Config{}), mem, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ctrl.Close()
	q, err := ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: 16})
	if err != nil {
		fmt.Println(err)
		return
	}
	buf, _ := mem.Alloc(8*4096, 4096)
	done := 0
	cb := func(cmd *nvmelike.Command, c nvmelike.Completion, err error) {
		if err != nil {
			fmt.Printf("read %d: %v\n", cmd.Tag, err)
		}
		done++
	}
	for i := range 8 {
		c := nvmelike.ReadCommand(1, uint64(8*i), 8, buf.Slice(4096*i, 4096))
		c.Tag = uint64(i)
		if err := q.Submit(&c, cb); err != nil {
			fmt.Println(err)
			return
		}
	}
	q.Ring()
	for done < 8 {
		if _, err := q.Poll(0); err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Println(done, "reads,", q.Stats().SQDoorbells, "SQ doorbell")
	// Output: 8 reads, 1 SQ doorbell
}

// ExampleController_EnableAsyncEvents keeps an Asynchronous Event Request
// outstanding and takes the controller's events from a channel.
func ExampleController_EnableAsyncEvents() {
	ctx := context.Background()
	mem := sim.NewMemory()
	dev := sim.New(mem, sim.Config{})
	ctrl, err := nvmelike.Open(ctx, dev, mem, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ctrl.Close()
	events, err := ctrl.EnableAsyncEvents(1)
	if err != nil {
		fmt.Println(err)
		return
	}
	dev.PostAsyncEvent(nvmelike.AsyncEventSMART, 0x01, nvmelike.NVME_LOG_SMART) // temperature threshold
	for {
		select {
		case ev := <-events:
			fmt.Println(ev)
			return
		default:
		}
		if _, err := ctrl.PollAdmin(); err != nil { // or wait for the admin queue's interrupt
			fmt.Println(err)
			return
		}
	}
	// Output: smart/health event, info 0x01, log page 0x02
}

// ExampleQueuePair_SubmitTimeout gives an asynchronous command a deadline
// that Poll enforces: past it the command fails with ErrTimeout and the
// controller is sent an Abort for it.
func ExampleQueuePair_SubmitTimeout() {
	ctx := context.Background()
	mem := sim.NewMemory()
	dev := sim.New(mem, sim.Config{})
	ctrl, err := nvmelike.Open(ctx, dev, mem, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ctrl.Close()
	q, err := ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: 16})
	if err != nil {
		fmt.Println(err)
		return
	}
	dev.DropCompletions(1) // the command runs; its completion never comes
	done := false
	c := nvmelike.FlushCommand(1)
	if err := q.SubmitTimeout(&c, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		fmt.Println(errors.Is(err, nvmelike.ErrTimeout), "after at least 10ms")
		done = true
	}, 10*time.Millisecond); err != nil {
		fmt.Println(err)
		return
	}
	q.Ring()
	for !done {
		if _, err := q.Poll(0); err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Println(dev.Stats().Aborts, "abort sent;", q.Outstanding(), "tracker held for the late completion")
	// Output:
	// true after at least 10ms
	// 1 abort sent; 1 tracker held for the late completion
}
