package umd_test

import (
	"bytes"
	"context"
	"fmt"
	"log"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
)

// Open a controller bound to vfio-pci, write a block of namespace 1 and
// read it back: the whole user-space driver in one screen.
func ExampleOpen() {
	ctx := context.Background()
	dev, err := umd.Open(ctx, "0000:03:00.0", nil) // `umdprobe bind 0000:03:00.0` first
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 32})
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()

	out, _ := dev.Alloc(4096) // DMA memory: the device reaches it at out.IOVA
	in, _ := dev.Alloc(4096)
	copy(out.Bytes, "hello from user space")
	write := nvmelike.WriteCommand(1, 0, 8, out) // NSID 1, LBA 0, 8 blocks of 512 B
	if _, err := q.Exec(ctx, &write); err != nil {
		log.Fatal(err)
	}
	read := nvmelike.ReadCommand(1, 0, 8, in)
	if _, err := q.Exec(ctx, &read); err != nil {
		log.Fatal(err)
	}
	fmt.Println(bytes.Equal(in.Bytes, out.Bytes))
}
