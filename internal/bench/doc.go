// Package bench is umdbench's workload engine: it drives I/O queue pairs
// with fio-like workloads (sequential or random, reads, writes or a mix,
// a fixed queue depth per job), times every I/O into a log-linear
// histogram, stamps and checks verify blocks, and summarises a run as a
// table or as fio-compatible JSON.
//
// # What it owns
//
//   - Workload: the parameters of a run (fio's names: rw, bs, iodepth,
//     runtime, size, ramp_time, verify …) and the parsers for fio's sizes
//     ("4k", "1m") and durations ("2", "200ms").
//   - Job: one goroutine's worth of I/O on one queue pair with its own
//     preallocated buffers, random source and statistics. Its per-I/O path
//     (completion callback → record → next command → Submit, one Ring per
//     Poll) does not allocate, lock, use channels or make system calls in
//     poll mode: the callback is a method value made once, the commands
//     are built in preallocated slots, the random source is allocated
//     with the job.
//   - Histogram: HDR-style log-linear latency buckets, fixed and
//     preallocated, exact below 128 ns and within 1/64 above.
//   - The verify block format: every logical block written carries its
//     LBA, a pass number and a CRC-32C; a mismatch becomes a *VerifyError
//     naming device, namespace, LBA, expected and found.
//   - Timeline: completions per interval of each job's measured window, in
//     a fixed array (intervals double when it fills), for IOPS over time.
//   - Results: per job and total, written as a text table, as JSON in
//     fio's --output-format=json layout, or drawn as SVG (WriteSVG: the
//     latency histogram on a log axis and IOPS over time).
//   - A software target: the same jobs against nvmelike/sim in
//     instant-completion mode, with doorbell writes counted, to measure the
//     host's own cost per I/O.
//
// # What it never does
//
// Open devices, parse command lines or print progress: cmd/umdbench does
// that and hands this package queue pairs and DMA buffers. The package
// never logs and never panics on device or caller input.
package bench
