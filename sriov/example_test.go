package sriov_test

import (
	"context"
	"fmt"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/sriov"
)

// The owner of an SR-IOV controller enables two VFs, gives the first one a
// namespace of the subsystem of its own, and opens it as any controller.
// A client in another process would instead get vf.BDF and
// pf.Token().String(), call vfio.UseVFToken and then umd.Open.
func Example() {
	ctx := context.Background()
	dev, err := umd.Open(ctx, "0000:01:00.0", nil) // the PF
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dev.Close() // after Disable: closing the PF takes its VFs offline

	pf, err := sriov.Enable(ctx, dev, sriov.Options{VFs: 2, IOQueues: 1, Vectors: 1})
	if err != nil {
		fmt.Println(err) // errors.Is(err, sriov.ErrNoFlexibleResources), …
		return
	}
	defer pf.Disable(ctx) // after every VF is closed

	vf := pf.VFs()[0]
	if err := pf.AttachNamespace(ctx, 2, vf); err != nil {
		fmt.Println(err)
		return
	}
	v, err := umd.Open(ctx, vf.BDF, nil) // the token is registered for it
	if err != nil {
		fmt.Println(err)
		return
	}
	defer v.Close()
	fmt.Println(vf.BDF, "in IOMMU group", vf.IOMMUGroup, "namespaces", v.Controller().Namespaces())
}
