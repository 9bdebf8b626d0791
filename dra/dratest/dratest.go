// Package dratest has test helpers for code that publishes devices with
// package dra: a fake API server that names objects the way the real one
// does, and a wait for the ResourceSlices a plugin publishes.
package dratest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// FakeAPIServer returns a fake clientset holding objs that, like the API
// server, names a created object from its generateName when it has no
// name (the ResourceSlice controller creates slices that way; the plain
// fake clientset would store them all under the empty name).
func FakeAPIServer(objs ...runtime.Object) *fake.Clientset {
	c := fake.NewClientset(objs...)
	var mu sync.Mutex
	n := 0
	c.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj, ok := a.(k8stesting.CreateAction).GetObject().(metav1.Object)
		if ok && obj.GetName() == "" && obj.GetGenerateName() != "" {
			mu.Lock()
			n++
			obj.SetName(fmt.Sprintf("%s%d", obj.GetGenerateName(), n))
			mu.Unlock()
		}
		return false, nil, nil // let the fake's tracker store it
	})
	return c
}

// WaitForSlices polls c every 20 ms until it holds at least one
// ResourceSlice and returns them; it fails the test when ctx ends first.
func WaitForSlices(t testing.TB, ctx context.Context, c kubernetes.Interface) []resourceapi.ResourceSlice {
	t.Helper()
	for {
		l, err := c.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		if err == nil && len(l.Items) > 0 {
			return l.Items
		}
		if ctx.Err() != nil {
			t.Fatalf("waiting for a ResourceSlice: %v (last list: %v)", ctx.Err(), err)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}
