//go:build !amd64

package cycles

import "time"

var epoch = time.Now()

// Now returns nanoseconds of the monotonic clock on this architecture.
func Now() uint64 { return uint64(time.Since(epoch)) }

const native = false
