package nvmelike_test

import (
	"reflect"
	"testing"

	"github.com/umdkit/umd/nvmelike"
)

// TestQueueStatsAdd sets every counter to a distinct value, so a field
// added to QueueStats and forgotten in Add fails here.
func TestQueueStatsAdd(t *testing.T) {
	var a, b nvmelike.QueueStats
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(&b).Elem()
	for i := range va.NumField() {
		va.Field(i).SetUint(uint64(i + 1))
		vb.Field(i).SetUint(uint64(100 * (i + 1)))
	}
	a.Add(b)
	for i := range va.NumField() {
		if got, want := va.Field(i).Uint(), uint64(101*(i+1)); got != want {
			t.Errorf("%s = %d after Add, want %d", va.Type().Field(i).Name, got, want)
		}
	}
}
