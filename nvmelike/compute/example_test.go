package compute_test

import (
	"context"
	"fmt"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/compute"
	"github.com/umdkit/umd/nvmelike/sim"
)

// Example runs the checksum command on a software controller that
// implements it: register the Ops in the registry the controller is
// opened with, then Exec them like any command.
func Example() {
	ctx := context.Background()
	mem := sim.NewMemory()
	dev := sim.New(mem, sim.Config{})
	if err := compute.Install(dev); err != nil { // the device side
		panic(err)
	}
	reg := nvmelike.NewRegistry()
	if err := compute.Register(reg); err != nil { // the host side
		panic(err)
	}
	ctrl, err := nvmelike.Open(ctx, dev, mem, &nvmelike.Options{Registry: reg})
	if err != nil {
		panic(err)
	}
	defer ctrl.Close()
	q, err := ctrl.CreateQueuePair(ctx, nvmelike.QueueOptions{Depth: 8})
	if err != nil {
		panic(err)
	}

	buf, _ := mem.Alloc(512, 4096)
	copy(buf.Bytes, "hello, computational storage")
	w := nvmelike.WriteCommand(1, 0, 1, buf)
	if _, err := q.Exec(ctx, &w); err != nil {
		panic(err)
	}
	sum, err := compute.Checksum.Exec(ctx, q, compute.ChecksumRequest{NSID: 1, LBA: 0, Blocks: 1})
	fmt.Printf("crc32c 0x%08x, %v\n", sum, err)

	copy(buf.Bytes, "storage")
	found, err := compute.Search.Exec(ctx, q, compute.SearchRequest{NSID: 1, LBA: 0, Blocks: 8, Pattern: buf.Slice(0, 7)})
	fmt.Printf("%+v %v\n", found, err)
	// Output:
	// crc32c 0x410e1a5b, <nil>
	// {Found:true LBA:0} <nil>
}
