package dmatrace

import (
	"testing"

	"github.com/cilium/ebpf/rlimit"
	"github.com/umdkit/umd/internal/fdleak"
)

// TestMain fails the package when a test leaves a file descriptor open:
// every Tracer owns a ring buffer, programs, links and maybe /dev/kmsg.
// It runs for the guest tests too, and first does what a program using
// the package does on kernels before 5.11 (see the package comment):
// raise RLIMIT_MEMLOCK for the BPF maps.
func TestMain(m *testing.M) {
	_ = rlimit.RemoveMemlock()
	fdleak.Main(m)
}
