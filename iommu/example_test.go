package iommu_test

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/vfio"
)

// A Space over the identity mapper: map a pool, translate a buffer in it to
// its IOVA, and find the pool again from an IOVA, before and after it is
// unmapped. With a VFIO container, iommu.NewVFIO(container) takes the
// identity mapper's place.
func Example() {
	mapper, err := iommu.NewIdentity(iommu.IdentityOptions{}) // QEMU intel-iommu's ranges
	if err != nil {
		panic(err)
	}
	space, err := iommu.New(mapper, iommu.Options{})
	if err != nil {
		panic(err)
	}
	defer space.Close()

	pool, err := unix.Mmap(-1, 0, 4<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		panic(err)
	}
	defer unix.Munmap(pool)

	m, err := space.MapPool(pool, iommu.Owner{Name: "io-buffers", ID: 1}, iommu.MapOptions{Align: 2 << 20})
	if err != nil {
		panic(err)
	}
	buf := pool[64<<10 : 68<<10] // a 4 KiB buffer carved from the pool
	iova, _ := m.IOVAOf(buf)
	fmt.Printf("pool at iova %#x, buffer at %#x\n", m.IOVA(), iova)

	r, _ := space.Lookup(iova + 100)
	fmt.Printf("iova %#x is in %s, live: %v\n", iova+100, r.Owner.Name, r.Live())

	if err := m.Unmap(); err != nil {
		panic(err)
	}
	r, _ = space.Lookup(iova + 100)
	fmt.Printf("after unmapping: %s, live: %v\n", r.Owner.Name, r.Live())
	// Output:
	// pool at iova 0x200000, buffer at 0x210000
	// iova 0x210064 is in io-buffers, live: true
	// after unmapping: io-buffers, live: false
}

// Mapping a hugepage pool for the devices of a VFIO container. The
// container's groups are set and its IOMMU type is set before NewVFIO,
// which reads the IOVA ranges, page sizes and dma_avail from the kernel.
func ExampleNewVFIO() {
	container, err := vfio.OpenContainer()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer container.Close()
	group, err := vfio.OpenGroup(7) // vfio.GroupOf("0000:00:03.0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer group.Close()
	if err := group.SetContainer(container); err != nil {
		fmt.Println(err)
		return
	}
	if err := container.SetIOMMU(vfio.Type1v2IOMMU); err != nil {
		fmt.Println(err)
		return
	}

	mapper, err := iommu.NewVFIO(container)
	if err != nil {
		fmt.Println(err)
		return
	}
	space, err := iommu.New(mapper, iommu.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer space.Close() // before the group: deferred calls run last-in first-out

	var pool []byte // 2 MiB hugepages from package hugepage
	m, err := space.MapPool(pool, iommu.Owner{Name: "queues"}, iommu.MapOptions{Align: 2 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	sq, _ := m.Translate(0) // the submission queue's IOVA, for the controller
	fmt.Printf("SQ at iova %#x\n", sq)
}
