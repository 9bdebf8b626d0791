// Command umdbench measures NVMe and NVMe-like controllers driven from
// user space by umd, the way fio and spdk_nvme_perf do, with fio's option
// names: IOPS, bandwidth, latency percentiles, CPU time, doorbell writes
// per I/O, and a verify mode whose blocks carry their LBA, a pass number
// and a checksum. `umdbench --sim` runs the same workloads on the
// in-process software controller to measure the host's own cost per I/O.
//
// The workload engine is internal/bench; this command parses flags,
// selects and opens devices (pcie selectors, as umdprobe takes them),
// draws the progress line and writes the results (a table, or JSON in
// fio's layout, and with --plot an SVG of the latency histogram and IOPS
// over time). `umdbench --help` explains every flag with examples.
//
// Exit status: 0 success; 1 the run failed (I/O error, verify mismatch,
// device that could not be opened); 2 usage error; 3 the selectors
// matched no NVMe function.
package main
