package nvmelike_test

import (
	"github.com/umdkit/umd/internal/mmio"
	"github.com/umdkit/umd/nvmelike"
)

// The MMIO region type the VFIO path maps BAR0 into is a Registers as it
// is.
var _ nvmelike.Registers = mmio.Region{}
