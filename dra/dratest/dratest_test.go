package dratest

import (
	"context"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Created slices get names from their generateName, distinct ones, and
// WaitForSlices returns what is there.
func TestFakeAPIServerNamesAndWait(t *testing.T) {
	c := FakeAPIServer()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		s := &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{GenerateName: "node-1-umd-"}}
		if _, err := c.ResourceV1().ResourceSlices().Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got := WaitForSlices(t, ctx, c)
	if len(got) != 2 || got[0].Name == got[1].Name || got[0].Name == "" {
		t.Fatalf("slices named %q and %q, want two distinct generated names", got[0].Name, got[len(got)-1].Name)
	}
	for _, s := range got {
		if len(s.Name) <= len("node-1-umd-") || s.Name[:len("node-1-umd-")] != "node-1-umd-" {
			t.Errorf("name %q does not extend its generateName", s.Name)
		}
	}
}
