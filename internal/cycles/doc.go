// Package cycles reads the CPU's time-stamp counter, for measuring short
// stretches of code (a doorbell write into the software controller) with
// less overhead than the clock: on amd64 one RDTSC, about 10-40 cycles and
// no call into the runtime. Elsewhere it falls back to the monotonic
// clock in nanoseconds.
//
// The counter ticks at a constant rate on every x86 CPU of the last
// decade (constant_tsc), the nominal frequency, whatever the core's
// actual clock: Hz calibrates that rate against the monotonic clock, so
// ticks convert to time. "Cycles" reported from it are reference cycles
// at that rate.
//
// RDTSC is not serializing: the CPU may start it a few instructions early
// or late. That is noise of tens of cycles per reading, fine for spans of
// hundreds.
package cycles
