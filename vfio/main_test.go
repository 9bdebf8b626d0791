package vfio

import (
	"testing"

	"github.com/umdkit/umd/internal/fdleak"
)

// TestMain fails the test binary when its tests leave file descriptors
// open: every handle of this package owns one, and a leaked fd is a leaked
// device, group, container or eventfd. It runs for the guest tests too.
func TestMain(m *testing.M) { fdleak.Main(m) }
