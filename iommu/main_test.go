package iommu

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/fdleak"
)

// TestMain fails the package when a test leaves a file descriptor open or a
// DMA mapping of a Space in place.
func TestMain(m *testing.M) {
	fdleak.Main(m, func() []string {
		if n := openMappings.Load(); n != 0 {
			return []string{fmt.Sprintf("%d DMA mappings: a Space was not closed", n)}
		}
		return nil
	})
}

// anonMemory returns size bytes of anonymous memory mapped for the test,
// page-aligned like the memory MapPool wants, unmapped at the end.
func anonMemory(t testing.TB, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Munmap(mem); err != nil {
			t.Error(err)
		}
	})
	return mem
}
