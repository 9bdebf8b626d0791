package dmatrace

import (
	"testing"

	"github.com/umdkit/umd/internal/fdleak"
)

// TestMain fails the package when a test leaves a file descriptor open:
// every Tracer owns a ring buffer, programs, links and maybe /dev/kmsg.
// It runs for the guest tests too.
func TestMain(m *testing.M) { fdleak.Main(m) }
