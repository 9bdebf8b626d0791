package broker_test

import (
	"fmt"

	"github.com/umdkit/umd/broker"
)

// A client opens a session on a device served by umdd, fills its pool,
// writes it to the device and reads it back, all with the data moving by
// DMA between the device and the pool.
func Example() {
	c, err := broker.Dial("/run/umdd.sock")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close() // the broker releases the session's queues, window and pool
	s, err := c.OpenSession("0000:03:00.0", broker.SessionOptions{Queues: 2, Depth: 64, PoolBytes: 4 << 20})
	if err != nil {
		fmt.Println(err) // errors.Is(err, broker.ErrPermission), ErrQuota, …
		return
	}
	ns := s.Layout.Namespaces[0]
	copy(s.Pool.Bytes(), "hello, device")
	if err := s.Write(0, ns.NSID, 0, 1, 0); err != nil {
		fmt.Println(err)
		return
	}
	if err := s.Read(1, ns.NSID, 0, 1, int64(ns.LBASize)); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s\n", s.Pool.Bytes()[ns.LBASize:ns.LBASize+13])
}
