// Package dmatrace catches DMA faults as the IOMMU reports them, with eBPF,
// and says whose memory (and which command) each one hit.
//
// When a device DMAs to an IOVA the IOMMU does not map, the kernel logs a
// line and the user-space driver sees, at best, a command that never
// completes. Under QEMU it is worse: its nvme completes such an Identify
// with status 0 although the data went nowhere. Only the fault trace
// reveals it.
//
// # What it owns
//
//   - The BPF programs, written with cilium/ebpf's asm package and built
//     when a Tracer opens: no C compiler at build or run time, no object
//     files. Structure offsets come from the kernel's BTF at open time;
//     filters are baked in as constants.
//   - Tracer: loads and attaches them, reads their ring buffer and
//     delivers typed events (*Fault, *Map, *Unmap) on a channel or through
//     Read(ctx). Close detaches everything.
//   - Attribute: joins a fault to an iommu.Space's ledger (or any Book)
//     and to the protocol engine's commands in flight (InFlight).
//
// # What it never does
//
// It never maps, unmaps or touches a device, never mounts anything and
// never changes kernel settings. It is optional: nothing else in umd needs
// it, and every way it can fail to attach is a typed error
// (*NotSupportedError, matching ErrNotSupported, saying what is missing:
// privileges, a BPF feature, BTF, the probed symbol, a tracepoint, tracefs,
// /dev/kmsg). Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK:
// there the program raises it (cilium/ebpf's rlimit.RemoveMemlock) before
// Open; this package changes no process-wide limit itself.
//
// # Sources and the kernels' probe points
//
// SourceDMAR is a kprobe on dmar_fault, the Intel VT-d fault interrupt
// handler. Both guest kernels (Debian 6.1.0-56 and 6.12.95+deb12) list
// dmar_fault in available_filter_functions and neither lists
// dmar_fault_do_one (inlined: it would have had the decoded fields as
// arguments); iommu_report_device_fault exists in both but carries page
// requests (PRQ), not DMA-remapping faults. So the program takes the
// handler's dev_id (the struct intel_iommu, second argument, rsi), reads
// its reg and cap members (offsets from BTF), reads the fault status
// register and, when a primary fault is pending, every fault recording
// register (up to 8) whose F bit is set, straight from the IOMMU's MMIO
// with bpf_probe_read_kernel. At the handler's entry the records are still
// there; reading them has no side effect, and the handler clears them
// after, as always. Each record (source id, fault reason, read or write,
// page address, PASID) becomes one *Fault; the PCI segment comes from the
// struct intel_iommu. VT-d exists on x86-64 only, and the program reads
// x86-64's struct pt_regs.
//
// SourceFaultTracepoint is iommu:io_page_fault, where the AMD and Arm SMMU
// drivers report faults (through report_iommu_fault). VT-d does not report
// DMA-remapping faults there in 6.1 or 6.12: the guest tests attach it and
// see nothing from it. SourceMapUnmap is iommu:map and iommu:unmap. All
// three are attached as raw tracepoints (BPF_RAW_TRACEPOINT_OPEN), which
// need neither tracefs nor perf events; iommu:map and iommu:unmap have no
// device field, so Options.PID (VFIO maps in the calling process's context)
// and Options.IOVA filter them in the kernel. One VFIO_IOMMU_MAP_DMA makes
// one map event per physically contiguous chunk: 6.1 showed one 4 KiB event
// per page of anonymous memory, 6.12 one event for 64 KiB.
//
// SourceKmsg is NOT eBPF: a fallback that parses the kernel's own fault
// line from /dev/kmsg, for kernels where no probe point works:
//
//	DMAR: [DMA Write NO_PASID] Request device [00:03.0] fault addr 0x900000 [fault reason 0x05] PTE Write access is not set
//
// The kernel rate-limits those lines (10 per 5 s), prints no PCI segment
// (0000 is assumed), and Fault.Time is when the line was read. The guest
// tests check that it agrees with the DMAR probe.
//
// # How events are attributed
//
// Attribute(fault, book, engine) looks the fault's IOVA up in book (an
// *iommu.Space or *iommu.Ledger: Lookup returns the live mapping holding
// the IOVA, else the most recently unmapped one still remembered):
//
//   - Live: the IOVA is mapped now. The device did what the mapping's
//     permission does not allow (a write to memory mapped read-only for
//     the device), or the fault raced with the mapping being made.
//   - Unmapped: the IOVA belonged to a mapping unmapped Since before the
//     fault (fault time from bpf_ktime_get_ns, on Go's monotonic clock):
//     use after unmap. Since is negative when the kernel unmapped the IOVA
//     and the fault came before the Space stamped its record.
//   - NeverMapped: no mapping the book remembers held it. The ledger keeps
//     the last iommu.DefaultRecent unmapped records, so this is "never
//     mapped, or unmapped long ago".
//
// Record.Owner names the pool or buffer; Offset is where in it. Then the
// engine, if given, is asked InFlight(bdf, iova): which command in flight
// on that device pointed at that IOVA (queue, CID, opcode).
//
// umd's protocol engine (package nvmelike) cannot answer InFlight from
// the tracer's goroutine: each queue pair belongs to one goroutine and
// takes no lock on the I/O path. Dispatch(fault, devices) therefore
// attributes the fault to the device's book and hands it to the device's
// engine (nvmelike.Controller.ReportDMAFault, which only takes a small
// lock of its own); each queue pair, at its next Poll (Exec polls while
// it waits), finds the commands whose data buffer, PRP list page or queue
// address lie in the faulting page and fails them with the attribution's
// *DMAFaultError, now naming the command, instead of letting them time
// out or succeed. Their memory stays held until the device completes
// them or the queue is reset or deleted. docs/tracing.md shows it on a
// real fault.
//
// Caught in the guest (6.12; 6.1 prints the same), by
// TestGuestDMAFault and TestGuestDMAReadFault: Identify Controller with
// PRP1 at a buffer unmapped just before, at an IOVA never mapped, at a
// buffer mapped read-only, and an admin SQ at an IOVA never mapped:
//
//	DMA write fault by 0000:03:00.0 at IOVA 0x3000 (reason 0x05 page table entry does not allow writes) [kprobe dmar_fault]: in "identify data" (owner 7, test buffer) at offset 0x0, unmapped 3.2ms ago (use after unmap); command queue 0 CID 2 opcode 0x06
//	DMA write fault by 0000:03:00.0 at IOVA 0x4000000000 (reason 0x05 page table entry does not allow writes) [kprobe dmar_fault]: never mapped; command queue 0 CID 3 opcode 0x06
//	DMA write fault by 0000:03:00.0 at IOVA 0x4000 (reason 0x05 page table entry does not allow writes) [kprobe dmar_fault]: in "read-only buffer" (owner 8) at offset 0x0, mapped read (live)
//	DMA read fault by 0000:03:00.0 at IOVA 0x5000000000 (reason 0x06 page table entry does not allow reads) [kprobe dmar_fault]: never mapped
//
// and the same faults through the fallback:
//
//	DMA write fault by 0000:03:00.0 at IOVA 0x3000 (reason 0x05 page table entry does not allow writes) [kmsg (not eBPF)]
//
// Each of those Identify commands completed with status 0. (The command
// numbers come from the test's stand-in for the engine.)
//
// # What QEMU's intel-iommu shows, and its limits
//
// QEMU 7.2's intel-iommu raised a real fault in every case tried: a write
// to an IOVA never mapped (reason 0x05, not "not present": the second-level
// tables report a missing page as missing permission), to an IOVA just
// unmapped (its IOTLB is flushed on unmap), to a page mapped read-only, and
// a read from an IOVA never mapped (reason 0x06). QEMU's nvme completes a
// faulting Identify with status 0; a faulting submission-queue fetch makes
// it set CSTS.CFS, which a function reset clears. QEMU reports the fault
// address page-aligned, as VT-d does, so Fault.IOVA is the page, not the
// byte. The fault interrupt is delivered within milliseconds under TCG
// (1.5 to 25 ms from the doorbell to the event).
//
// # Lifetimes and concurrency
//
// A Tracer owns its ring buffer, programs, links and /dev/kmsg file; Close
// detaches the links first, is safe to call twice, and closes the Events
// channel once its readers stopped. Events and Read take from the same
// queue; when nobody reads, new events are dropped and counted (Lost).
// Attribute only reads the book (the ledger's read lock) and may run
// concurrently with mapping and unmapping.
package dmatrace
