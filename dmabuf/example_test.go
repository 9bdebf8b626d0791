package dmabuf_test

import (
	"fmt"
	"net"

	"github.com/umdkit/umd/dmabuf"
	"github.com/umdkit/umd/hugepage"
)

// Export a region of a hugepage pool and send it to another process over
// a unix socket; the region cannot be freed until the Buffer is closed.
func ExampleExporter_ExportRegion() {
	var conn *net.UnixConn // connected to the peer
	pool, err := hugepage.New(hugepage.Options{Size: 64 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	r, err := dmabuf.NewRegion(pool, 2<<20, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	e, err := dmabuf.OpenExporter()
	if err != nil {
		fmt.Println(err) // wraps dmabuf.ErrNoModule without the module
		return
	}
	defer e.Close()
	b, err := e.ExportRegion(r, dmabuf.ReadWrite)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := dmabuf.SendFds(conn, []byte("frame 1"), b.Fd()); err != nil {
		fmt.Println(err)
	}
	// … once the peer says it is done with the bytes:
	b.Close()
	if err := r.Free(); err != nil {
		fmt.Println(err)
	}
}

// Map a dma-buf received from another process and read it between
// DMA_BUF_IOCTL_SYNC brackets.
func ExampleImport() {
	var conn *net.UnixConn // connected to the exporter
	_, fds, err := dmabuf.ReceiveFds(conn, 64, 1)
	if err != nil || len(fds) != 1 {
		fmt.Println(err)
		return
	}
	m, err := dmabuf.Import(fds[0])
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	if err := m.Sync(dmabuf.SyncStart | dmabuf.SyncRead); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(m.Bytes()))
	if err := m.Sync(dmabuf.SyncEnd | dmabuf.SyncRead); err != nil {
		fmt.Println(err)
	}
}
