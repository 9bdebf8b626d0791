// Package nvmelike is umd's protocol engine for NVMe and NVMe-like
// controllers: it drives a controller through its registers and through
// submission/completion queues in DMA memory.
//
// # What it owns
//
//   - Register access (CAP, VS, CC, CSTS, AQA, ASQ, ACQ, doorbells) through
//     the Registers interface.
//   - Bring-up: disable, admin queue set-up, enable with CAP.TO honoured,
//     doorbell stride (CAP.DSTRD), memory page size (CAP.MPSMIN), fatal
//     status (CSTS.CFS), surprise removal (all-ones reads) and a reset from
//     outside (CSTS.RDY 0 on a controller the engine enabled: ErrNotReady),
//     each noticed by admin commands before they are sent, by Exec while it
//     waits and by Controller.Check or QueuePair.Check on demand; clean
//     shutdown (CC.SHN) on Close.
//   - Identify (controller, namespace, active namespace list), Set Features
//     (Number of Queues), Create/Delete I/O SQ and CQ (optionally with an
//     MSI-X vector), Get Log Page (SMART; Error Information parsed into
//     ErrorLogEntry by ErrorLog), Get/Set Features, Abort, Asynchronous
//     Event Requests (EnableAsyncEvents keeps N outstanding and delivers
//     typed AsyncEvents on a channel as the admin queue is polled).
//   - NVM commands: Read, Write, Flush, Write Zeroes, Compare, Dataset
//     Management (deallocate), with the data length of LBA commands checked
//     against the namespace's LBA size so the device never moves more than
//     the buffer holds. LBA commands larger than the transfer limit (MDTS)
//     are split into several, submitted together and completed as one,
//     with a tracker per part and no allocation.
//   - Recovery: Reset (disable, re-enable, re-create the I/O queue pairs in
//     place) failing or retrying outstanding commands; commands given up
//     on keep their tracker and memory until their completion or a reset,
//     so a late completion or DMA never lands in reused memory.
//   - Timeouts of asynchronous commands (QueueOptions.Timeout,
//     SubmitTimeout): checked by Poll against one clock read per call,
//     failed with ErrTimeout, and aborted (Abort, sent on the admin queue
//     without blocking the queue pair's goroutine); their trackers stay
//     held until the late completion, a reset or the queue's deletion.
//   - The queue engine (QueuePair): SQ/CQ rings with phase tags, SQ head
//     tracked from completions, one tail doorbell per batch and one head
//     doorbell per poll (or shadow doorbells with event indexes, when the
//     controller offers Doorbell Buffer Config), per-queue preallocated trackers with CID =
//     generation + tracker index, PRP and PRP list building with list pages
//     preallocated per tracker.
//   - Data pointers (DataPointer): PRPs by default; SGLs when the
//     controller offers them (Identify SGLS) and Options.DataPointer or
//     QueuePair.SetDataPointer asks: a contiguous buffer at any byte
//     offset is one Data Block in the entry, and a command's several
//     Buffers (scatter/gather) are Data Blocks in the tracker's list
//     pages behind a Last Segment, chained with Segments past a page.
//     With PRPs, several Buffers must meet at page boundaries. Admin
//     commands always use PRPs.
//   - Execution: Exec (synchronous, with a context), Submit + Ring + Poll
//     (asynchronous, with callbacks), SubmitBatch, SubmitWait, and
//     SubmitIO (reads and writes from their fields and a tag, completing
//     through the queue's IOCallback: the shortest path); a full
//     queue is ErrQueueFull, or, after SetBacklog, a software backlog that
//     Poll drains into the SQ in order; typed NVMe
//     status errors (*StatusError and sentinels such as
//     ErrAbortedSQDeletion); invalid, stale and duplicate completions are
//     detected (CID generations) and dropped, never misrouted.
//   - DMA faults: Controller.ReportDMAFault (safe from any goroutine, for
//     a tracer such as package dmatrace) hands a faulting IOVA to the
//     queue pairs; each, at its next Poll, fails the commands that
//     reference the faulting page (QueuePair.InFlight, FailInFlight) with
//     the tracer's error, keeping their memory held until the device
//     completes them. Poll pays one atomic load for it.
//   - Remote queues: CreateRemoteQueue creates I/O queues over rings
//     another process owns; that process drives them with a QueuePair
//     from AttachQueuePair (the broker's trusted mode).
//   - The opcode registry: NVM Read/Write/Flush and vendor or computational
//     opcodes are all Commands and take the same path. Op[Req, Resp] is a
//     typed command (encoder, decoder, registry entry) that a package
//     outside this one defines and runs through a QueuePair (Exec, or
//     Command + Submit + Result) without allocating; nvmelike/compute is
//     an example. The entry layout itself is a Format, so a device with
//     its own ring layout is a new Format, not a fork.
//
// # What it never does
//
// VFIO ioctls, IOMMU programming or hugepage management: it talks to small
// interfaces (Registers, DMA, and later Interrupts) that the vfio, iommu and
// hugepage packages satisfy (internal/mmio.Region over a mapped BAR0 is a
// Registers as it is), and that nvmelike/sim implements in memory.
// Library code here never logs and never panics on device or caller input.
//
// # The data path of one I/O
//
//	buf := <DMA memory from the caller's pool>             // already mapped
//	cmd := nvmelike.ReadCommand(nsid, lba, blocks, buf)    // a plain value
//	q.Submit(&cmd, done)  // tracker popped, PRPs (or SGL) built, entry written in the SQ slot
//	q.Ring()              // one MMIO write for the batch
//	q.Poll(0)             // CQE with our phase → tracker by CID → done(...)
//
// or, for reads and writes, the shorter way umdbench takes:
//
//	q.SetIOCallback(done)                                   // once
//	q.SubmitIO(nvmelike.CmdRead, nsid, lba, blocks, buf, tag) // entry written from the fields
//	q.Ring()
//	q.Poll(0)             // CQE → tracker by CID → done(tag, ...), inline
//
// No allocation, lock, channel or syscall happens on either path. A
// QueuePair belongs to one goroutine; the Controller's own methods (admin
// commands) are safe for concurrent use.
//
// # Memory ordering
//
// Go has no volatile. Register reads and writes go through the Registers
// interface, whose implementation over mapped BAR0 must use non-inlined or
// assembly loads and stores of exactly the width asked (see Registers).
// Doorbell writes come after the SQ entry stores in program order, and the
// Registers implementation supplies any store barrier the architecture
// needs. Completion entries are read phase word first with an acquire load
// (AcquireLoad32), then the rest. umd supports little-endian hosts.
package nvmelike
