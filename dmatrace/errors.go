package dmatrace

import (
	"errors"
	"fmt"
	"os"

	"github.com/umdkit/umd/iommu"
	"github.com/umdkit/umd/nvmelike"
)

var (
	// ErrNotSupported means this kernel or process cannot trace what was
	// asked. Errors that wrap it are *NotSupportedError, which says what is
	// missing. The driver works without the tracer.
	ErrNotSupported = errors.New("DMA-fault tracing not supported")

	// ErrMalformed means a record from the kernel could not be decoded.
	ErrMalformed = errors.New("malformed trace record")

	// ErrDMAFault is what a command fails with when the device faulted on
	// one of its DMA addresses. Errors that wrap it are *DMAFaultError.
	// It is nvmelike.ErrDMAFault, so either can be tested for.
	ErrDMAFault = nvmelike.ErrDMAFault

	// ErrInvalid means an option makes no sense. It is iommu.ErrInvalid.
	ErrInvalid = iommu.ErrInvalid

	// ErrClosed is returned by a closed Tracer. It is os.ErrClosed, so
	// either can be tested for.
	ErrClosed = os.ErrClosed
)

// Missing names what a source of events needs and did not find.
type Missing int

// What a source can miss.
const (
	// MissingPrivilege: loading BPF programs needs root, or CAP_BPF with
	// CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8).
	MissingPrivilege Missing = iota + 1
	// MissingBPF: the kernel lacks a BPF feature used here (the ring
	// buffer map, Linux 5.8; raw tracepoints; kprobe programs).
	MissingBPF
	// MissingBTF: the kernel has no BTF (/sys/kernel/btf/vmlinux), or its
	// BTF lacks a type the program reads (struct intel_iommu, struct
	// device).
	MissingBTF
	// MissingSymbol: the kernel function to probe does not exist or
	// cannot be probed (inlined, not in available_filter_functions), or
	// the kernel has no kprobes at all.
	MissingSymbol
	// MissingTracepoint: the kernel has no such tracepoint (no
	// CONFIG_IOMMU_API, or a kernel older than the iommu trace events).
	MissingTracepoint
	// MissingTracefs: a kprobe needs tracefs on a kernel without the
	// kprobe PMU, and tracefs is not mounted.
	MissingTracefs
	// MissingKmsg: /dev/kmsg cannot be read (the kmsg fallback).
	MissingKmsg
)

func (m Missing) String() string {
	switch m {
	case MissingPrivilege:
		return "privileges (root, or CAP_BPF and CAP_PERFMON)"
	case MissingBPF:
		return "BPF feature"
	case MissingBTF:
		return "kernel BTF"
	case MissingSymbol:
		return "probe-able kernel function"
	case MissingTracepoint:
		return "kernel tracepoint"
	case MissingTracefs:
		return "tracefs"
	case MissingKmsg:
		return "/dev/kmsg"
	}
	return fmt.Sprintf("missing(%d)", int(m))
}

// NotSupportedError says why a source of events cannot be attached. It
// matches ErrNotSupported with errors.Is, and unwraps to the cause.
type NotSupportedError struct {
	Source  Source  // the source that could not be attached
	Missing Missing // what it needs and did not find
	Detail  string  // which symbol, tracepoint or type, when it is one
	Err     error   // the cause, from the kernel or cilium/ebpf
}

func (e *NotSupportedError) Error() string {
	s := fmt.Sprintf("%s: %s: missing %s", ErrNotSupported, e.Source, e.Missing)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *NotSupportedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotSupported) true.
func (e *NotSupportedError) Is(target error) bool { return target == ErrNotSupported }

// DMAFaultError is the error a command fails with when its device faulted
// on an IOVA the command referenced. It matches ErrDMAFault with errors.Is.
type DMAFaultError struct {
	Attribution Attribution
}

func (e *DMAFaultError) Error() string { return ErrDMAFault.Error() + ": " + e.Attribution.String() }

// Is makes errors.Is(err, ErrDMAFault) true.
func (e *DMAFaultError) Is(target error) bool { return target == ErrDMAFault }
