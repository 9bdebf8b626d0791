package umd_test

import (
	"context"
	"fmt"
	"runtime"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/pcie"
)

// Every NVMe bound to vfio-pci as one set: a queue pair near the caller,
// then one write spread over all the devices.
func ExampleOpenSet() {
	ctx := context.Background()
	sel, err := pcie.ParseSelector("class=nvme driver=vfio-pci")
	if err != nil {
		fmt.Println(err)
		return
	}
	set, err := umd.OpenSet(ctx, sel, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer set.Close()

	// Placement follows the calling thread: keep this goroutine on it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	q, err := set.CreateQueuePair(ctx, umd.QueueOptions{Depth: 64})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer q.Close()
	buf, err := set.Alloc(4096) // from the pool of this thread's node
	if err != nil {
		fmt.Println(err)
		return
	}
	defer set.Free(buf)
	// Eight blocks of the first namespace, assuming 512-byte blocks.
	cmd := nvmelike.ReadCommand(q.Device().Controller().Namespaces()[0], 0, 8, buf)
	if _, err := q.Exec(ctx, &cmd); err != nil {
		fmt.Println(err)
		return
	}

	st, err := set.Striped(ctx, umd.StripeOptions{StripeSize: 128 << 10})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	big, err := set.Alloc(1 << 20)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer set.Free(big)
	// 1 MiB: eight 128 KiB pieces, on every device at once.
	if err := st.Write(ctx, 0, big); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("wrote 1 MiB over %d devices\n", st.Devices())
}
