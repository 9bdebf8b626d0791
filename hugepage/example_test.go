package hugepage_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/umdkit/umd/hugepage"
)

// A pool of 2 MiB hugepages on NUMA node 0, carved into 4 KiB buffers.
func ExampleNew() {
	pool, err := hugepage.New(hugepage.Options{
		Size:          64 << 20,
		NUMANode:      0,
		AllowFallback: true, // rather 4 KiB pages than nothing
	})
	if errors.Is(err, hugepage.ErrMemlock) {
		log.Fatal(err) // the message says how to raise RLIMIT_MEMLOCK
	}
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if warn := pool.Info().Fallback; warn != nil {
		// Not an error, but slower DMA: tell the operator how to fix it.
		log.Printf("using %d-byte pages: %v", pool.PageSize(), warn)
	}

	buf, err := pool.Alloc(4096, 4096)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Free(buf)
	copy(buf.Bytes(), "data for the device")
	// The device sees the buffer at the pool's IOVA + buf.Offset().
	fmt.Println(buf.Offset()%4096 == 0)
}

// The receiving side of a pool shared over a unix socket: the descriptor
// arrives in an SCM_RIGHTS message and is mapped with OpenPool.
func ExampleOpenPool() {
	var fd int // from unix.ParseUnixRights on the received message
	pool, err := hugepage.OpenPool(fd)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if !pool.Info().Sealed {
		log.Print("the sender can shrink this pool under us")
	}
	_ = pool.Bytes()
}
