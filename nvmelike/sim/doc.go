// Package sim is an in-process NVMe controller for testing the nvmelike
// engine without root, VFIO or a guest, and for measuring the host side's
// cost per I/O.
//
// A Controller implements nvmelike.Registers; a Memory implements
// nvmelike.DMA with Go memory and made-up IOVAs, and is the controller's
// only way into host memory (Memory.Translate plays the IOMMU). Commands run
// synchronously inside the SQ tail doorbell write that announces them and
// their completions are posted before it returns: "instant" completion, so
// a benchmark measures the host's work and the simulator's, with no device
// latency.
//
// It implements: controller enable/disable/shutdown through CC and CSTS
// (with CAP.TO, CAP.DSTRD, MPS), the admin queue, Identify (controller,
// namespace, active namespace list), Set/Get Features (Number of Queues,
// Volatile Write Cache), Get Log Page (error information, SMART with real
// I/O counters), Abort (counted in Stats, with the command it named),
// Create/Delete I/O SQ and CQ (with interrupt vector
// checks); NVM Read, Write, Flush, Write Zeroes, Compare and Dataset
// Management (deallocate) against in-memory namespaces with PRPs and PRP
// lists, or SGLs on I/O commands when Config.SGLS offers them (Data Block,
// Segment, Last Segment and Bit Bucket descriptors; malformed SGLs fail
// with the NVMe SGL statuses, SGLs on admin commands with Invalid Field, as
// QEMU's nvme does); and two vendor-specific I/O commands defined here
// rather than in nvmelike, to show that vendor commands need nothing from
// the engine but a registry entry: OpcodeCRC32C (a computation over an LBA
// range, result in completion DW0) and OpcodeInlineCRC32C (data carried
// inline in 128-byte SQ entries, with Config.WideEntries: a
// device-specific ring layout). Other packages add vendor I/O commands of
// their own with HandleIO (nvmelike/compute does).
//
// Asynchronous events: Asynchronous Event Requests are held (up to
// Config.AERL+1) until PostAsyncEvent completes the oldest; events with
// no request waiting are kept for the next. Every command that fails is
// logged in the Error Information log page (newest first, 16 entries).
//
// Fault injection: dropped (I/O or admin), duplicated and garbled
// completions, delayed completions (posted from another goroutine),
// arbitrary completions (PostRaw), SGLs rejected with a chosen status
// (FailSGLs), controller fatal status (CSTS.CFS),
// surprise removal (registers read as all ones) and a slow or absent
// CSTS.RDY (Config.ReadyDelay, Config.NeverReady).
//
// It is a test double, not a conformance model: QEMU's nvme device in the
// guest tests is the real test.
package sim
