package umd

import (
	"testing"

	"github.com/umdkit/umd/internal/fdleak"
)

// TestMain fails the run when a test leaves an fd open: a device, group,
// container, eventfd or pool.
func TestMain(m *testing.M) { fdleak.Main(m) }
