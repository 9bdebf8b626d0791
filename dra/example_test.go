package dra_test

import (
	"fmt"

	"github.com/umdkit/umd/dra"
	"github.com/umdkit/umd/pcie"
)

// The class's configuration comes first, the claim's second; the claim
// overrides only what it sets, and a wrong value is named with its range.
func ExampleParseParameters() {
	class := []byte(`{"apiVersion":"umd.umdkit.io/v1alpha1","kind":"UmdClaimParameters","mode":"trusted","queuePairs":4}`)
	claim := []byte(`{"apiVersion":"umd.umdkit.io/v1alpha1","kind":"UmdClaimParameters","queuePairs":2,"completion":"poll"}`)
	p, err := dra.ParseParameters(class, claim)
	fmt.Printf("%+v %v\n", p, err)

	_, err = dra.ParseParameters([]byte(`{"apiVersion":"umd.umdkit.io/v1alpha1","kind":"UmdClaimParameters","queueDepth":8192}`))
	fmt.Println(err)
	// Output:
	// {QueuePairs:2 QueueDepth:64 PoolBytes:4194304 Completion:poll Mode:trusted} <nil>
	// queueDepth: 8192 is not allowed, must be 2 to 4096
}

// Publishing the node's devices: scan sysfs, add what umdd's Identify
// says, and cut the inventory into ResourceSlices for this node.
func ExamplePublish() {
	sys, err := pcie.Scan(pcie.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	inv, err := dra.Publish(sys, dra.Identities{}) // or dra.BrokerIdentities(client.Devices())
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range inv.Slices("node-1", 1) {
		fmt.Println(s.Name, len(s.Spec.Devices))
	}
}
