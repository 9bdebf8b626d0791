package dmatrace

import (
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/umdkit/umd/iommu"
)

// The BPF programs are written with cilium/ebpf's asm package and built
// when a Tracer opens, with the kernel's structure offsets (read from its
// BTF) and the caller's filters as constants: no C compiler, at build time
// or at run time.
//
// Every program builds one 72-byte record (see decode) on its stack, at
// fp-72, and copies it to the ring buffer with bpf_ringbuf_output.

const (
	fpRecord = -recordSize // the record, fp-72..fp-1

	// Scratch below the record, for the DMAR program.
	fpReg  = fpRecord - 8  // struct intel_iommu.reg: the register base
	fpCap  = fpRecord - 16 // struct intel_iommu.cap: the capability register
	fpSeg  = fpRecord - 24 // struct intel_iommu.segment
	fpFSTS = fpRecord - 32 // the fault status register
	fpFRCD = fpRecord - 48 // one fault recording register, 16 bytes

	// Scratch below the record, for the io_page_fault program.
	fpDevPtr = fpRecord - 8 // dev->kobj.name

	// x86-64 struct pt_regs: the second argument (rsi) of a probed
	// function.
	ptRegsSI = 13 * 8

	// VT-d registers and capability fields.
	regFSTS   = 0x34   // fault status register
	fstsPPF   = 1 << 1 // primary pending fault
	frcdSize  = 16     // one fault recording register
	frcdBit   = 63     // F, in the upper quadword of a fault record
	maxFaults = 8      // fault recording registers read per interrupt
	capFRO    = 24     // cap bits 33:24 (mask capFROM): fault recording offset / 16
	capFROM   = 0x3ff
	capNFR    = 40 // cap bits 47:40 (mask capNFRM): number of fault recording registers - 1
	capNFRM   = 0xff

	// bpf_ringbuf_output flags: 0 wakes the reader for every record
	// (faults are rare; map and unmap come in bursts, but only on the
	// control path).
	ringFlags = int32(0)
)

// zeroStack clears n bytes of stack from fp+off (off negative, n a multiple
// of 8): the verifier wants every byte handed to a helper initialised. It
// clobbers R0.
func zeroStack(off int16, n int) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Imm(asm.R0, 0)}
	for i := 0; i < n; i += 8 {
		insns = append(insns, asm.StoreMem(asm.RFP, off+int16(i), asm.R0, asm.DWord))
	}
	return insns
}

// output copies the record at fp-72 to the ring buffer with fd ring.
func output(ring int) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, ring),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpRecord),
		asm.Mov.Imm(asm.R3, recordSize),
		asm.Mov.Imm(asm.R4, ringFlags),
		asm.FnRingbufOutput.Call(),
	}
}

// probeRead calls bpf_probe_read_kernel(fp+dst, size, src+off) and jumps
// to fail when it fails. It clobbers R0-R5.
func probeRead(dst int16, size int32, src asm.Register, off int32, fail string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, int32(dst)),
		asm.Mov.Imm(asm.R2, size),
		asm.Mov.Reg(asm.R3, src),
		asm.Add.Imm(asm.R3, off),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, fail),
	}
}

// exit is the common end of every program.
func exit() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

// mapUnmapProgram builds the raw-tracepoint program for iommu:map (kind
// kindMap) or iommu:unmap (kindUnmap). Both take three u64 arguments: map
// (iova, paddr, size), unmap (iova, size, unmapped_size); the record gets
// them as a, b, c. pid, when not 0, keeps only the events of that thread
// group; ranges, when not empty, keep only events that overlap one.
func mapUnmapProgram(ring int, kind uint32, pid uint32, ranges []iommu.Range) asm.Instructions {
	sizeArg := int16(2 * 8) // map: size is the third argument
	if kind == kindUnmap {
		sizeArg = 1 * 8
	}
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	insns = append(insns, zeroStack(fpRecord, recordSize)...)
	insns = append(insns,
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
	)
	if pid != 0 {
		insns = append(insns, asm.JNE.Imm(asm.R0, int32(pid), "out"))
	}
	insns = append(insns,
		asm.StoreMem(asm.RFP, fpRecord+offAux, asm.R0, asm.Word),
		asm.LoadMem(asm.R7, asm.R6, 0, asm.DWord),       // iova
		asm.LoadMem(asm.R8, asm.R6, sizeArg, asm.DWord), // size
	)
	if len(ranges) > 0 {
		// R9 = the last IOVA the event covers; range<i> tests the i-th
		// range and jumps to keep when the event overlaps it.
		insns = append(insns,
			asm.Mov.Reg(asm.R9, asm.R7),
			asm.JEq.Imm(asm.R8, 0, "range0"),
			asm.Add.Reg(asm.R9, asm.R8),
			asm.Sub.Imm(asm.R9, 1),
		)
		for i, r := range ranges {
			next := fmt.Sprintf("range%d", i+1)
			insns = append(insns,
				asm.LoadImm(asm.R1, int64(r.End), asm.DWord).WithSymbol(fmt.Sprintf("range%d", i)),
				asm.JGT.Reg(asm.R7, asm.R1, next), // starts after the range
				asm.LoadImm(asm.R1, int64(r.Start), asm.DWord),
				asm.JLT.Reg(asm.R9, asm.R1, next), // ends before it
				asm.Ja.Label("keep"),
			)
		}
		insns = append(insns, asm.Ja.Label("out").WithSymbol(fmt.Sprintf("range%d", len(ranges))))
	}
	keep := asm.StoreImm(asm.RFP, fpRecord+offKind, int64(kind), asm.Word)
	if len(ranges) > 0 {
		keep = keep.WithSymbol("keep")
	}
	insns = append(insns,
		keep,
		asm.StoreMem(asm.RFP, fpRecord+offA, asm.R7, asm.DWord),
		asm.LoadMem(asm.R1, asm.R6, 8, asm.DWord),
		asm.StoreMem(asm.RFP, fpRecord+offB, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R6, 16, asm.DWord),
		asm.StoreMem(asm.RFP, fpRecord+offC, asm.R1, asm.DWord),
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.RFP, fpRecord+offTime, asm.R0, asm.DWord),
	)
	insns = append(insns, output(ring)...)
	return append(insns, exit()...)
}

// pageFaultProgram builds the raw-tracepoint program for
// iommu:io_page_fault(struct device *dev, unsigned long iova, int flags).
// kobjName is the offset of dev->kobj.name in struct device, from BTF.
func pageFaultProgram(ring int, kobjName int32) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	insns = append(insns, zeroStack(fpDevPtr, recordSize+8)...)
	insns = append(insns,
		asm.StoreImm(asm.RFP, fpRecord+offKind, kindIOPF, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, 16, asm.DWord), // flags
		asm.StoreMem(asm.RFP, fpRecord+offAux, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, 8, asm.DWord), // iova
		asm.StoreMem(asm.RFP, fpRecord+offA, asm.R1, asm.DWord),
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.RFP, fpRecord+offTime, asm.R0, asm.DWord),
		asm.LoadMem(asm.R7, asm.R6, 0, asm.DWord), // dev
		asm.JEq.Imm(asm.R7, 0, "send"),
	)
	insns = append(insns, probeRead(fpDevPtr, 8, asm.R7, kobjName, "send")...)
	insns = append(insns,
		asm.LoadMem(asm.R3, asm.RFP, fpDevPtr, asm.DWord),
		asm.JEq.Imm(asm.R3, 0, "send"),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, fpRecord+offDev),
		asm.Mov.Imm(asm.R2, devNameLen),
		asm.FnProbeReadKernelStr.Call(),
	)
	send := output(ring)
	send[0] = send[0].WithSymbol("send")
	insns = append(insns, send...)
	return append(insns, exit()...)
}

// iommuOffsets are where struct intel_iommu keeps what the DMAR program
// reads, from the kernel's BTF.
type iommuOffsets struct {
	reg     int32 // void __iomem *reg
	cap     int32 // u64 cap
	segment int32 // u16 segment; -1 when the kernel has none
	segSize int32
}

// dmarProgram builds the kprobe program for dmar_fault(int irq, void
// *dev_id), the VT-d fault interrupt handler, whose dev_id is the struct
// intel_iommu that faulted. At the handler's entry the fault recording
// registers still hold the faults: it reads the fault status register and,
// when a primary fault is pending, each recording register whose F bit is
// set, and sends each as a record (kind kindDMAR, a and b the register's
// two quadwords, c its index with the fault status in bits 63:32, aux the
// PCI segment). Reading these registers has no side effect: the handler
// clears them afterwards, as it always does.
func dmarProgram(ring int, o iommuOffsets) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R6, asm.R1, ptRegsSI, asm.DWord), // struct intel_iommu *
		asm.JEq.Imm(asm.R6, 0, "out"),
	}
	insns = append(insns, zeroStack(fpFRCD, -fpFRCD)...)
	insns = append(insns, probeRead(fpReg, 8, asm.R6, o.reg, "out")...)
	insns = append(insns, probeRead(fpCap, 8, asm.R6, o.cap, "out")...)
	if o.segment >= 0 {
		insns = append(insns, probeRead(fpSeg, o.segSize, asm.R6, o.segment, "out")...)
	}
	insns = append(insns, asm.LoadMem(asm.R6, asm.RFP, fpReg, asm.DWord), asm.JEq.Imm(asm.R6, 0, "out"))
	insns = append(insns, probeRead(fpFSTS, 4, asm.R6, regFSTS, "out")...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, fpFSTS, asm.Word),
		asm.JSet.Imm(asm.R1, fstsPPF, "pending"),
		asm.Ja.Label("out"),
		// R8 = the number of fault recording registers, R7 = the address
		// of the first.
		asm.LoadMem(asm.R7, asm.RFP, fpCap, asm.DWord).WithSymbol("pending"),
		asm.Mov.Reg(asm.R8, asm.R7),
		asm.RSh.Imm(asm.R8, capNFR),
		asm.And.Imm(asm.R8, capNFRM),
		asm.Add.Imm(asm.R8, 1),
		asm.RSh.Imm(asm.R7, capFRO),
		asm.And.Imm(asm.R7, capFROM),
		asm.LSh.Imm(asm.R7, 4),
		asm.Add.Reg(asm.R7, asm.R6),
	)
	for i := range maxFaults {
		next := fmt.Sprintf("record%d", i)
		insns = append(insns, asm.JLE.Imm(asm.R8, int32(i), "out"))
		insns = append(insns, probeRead(fpFRCD, frcdSize, asm.R7, int32(i*frcdSize), "out")...)
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, fpFRCD+8, asm.DWord),
			asm.RSh.Imm(asm.R1, frcdBit),
			asm.JEq.Imm(asm.R1, 0, next),
			asm.StoreImm(asm.RFP, fpRecord+offKind, kindDMAR, asm.Word),
			asm.LoadMem(asm.R1, asm.RFP, fpSeg, asm.Word),
			asm.StoreMem(asm.RFP, fpRecord+offAux, asm.R1, asm.Word),
			asm.LoadMem(asm.R1, asm.RFP, fpFRCD, asm.DWord),
			asm.StoreMem(asm.RFP, fpRecord+offA, asm.R1, asm.DWord),
			asm.LoadMem(asm.R1, asm.RFP, fpFRCD+8, asm.DWord),
			asm.StoreMem(asm.RFP, fpRecord+offB, asm.R1, asm.DWord),
			asm.LoadMem(asm.R1, asm.RFP, fpFSTS, asm.Word),
			asm.LSh.Imm(asm.R1, 32),
			asm.Or.Imm(asm.R1, int32(i)),
			asm.StoreMem(asm.RFP, fpRecord+offC, asm.R1, asm.DWord),
			asm.FnKtimeGetNs.Call(),
			asm.StoreMem(asm.RFP, fpRecord+offTime, asm.R0, asm.DWord),
		)
		insns = append(insns, output(ring)...)
		insns = append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol(next))
	}
	return append(insns, exit()...)
}
