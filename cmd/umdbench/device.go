package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/internal/bench"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/pcie"
)

// errNoMatch: the selectors picked no function (exit status 3).
var errNoMatch = errors.New("no PCI function matches")

// selectDevices returns the PCI addresses of the NVMe functions the
// selectors pick. Every one must be bound to vfio-pci.
func selectDevices(sysfs string, args []string) ([]string, error) {
	sel, err := pcie.ParseSelector(args...)
	if err != nil {
		return nil, usageError{err}
	}
	if sel.Empty() {
		return nil, usageError{errors.New("name the devices to measure, such as 0000:03:00.0 or \"class=nvme driver=vfio-pci\" (see umdprobe), or use --sim for the software controller")}
	}
	sys, err := pcie.Scan(pcie.Options{SysfsRoot: sysfs, IDs: &pcie.IDs{Source: "none"}})
	if err != nil {
		return nil, err
	}
	picked := sys.Select(sel)
	if len(picked) == 0 {
		return nil, fmt.Errorf("%w %q (umdprobe lists the functions of this machine)", errNoMatch, sel.String())
	}
	var bdfs, others []string
	for _, f := range picked {
		switch {
		case f.Class == pcie.ClassNVMe || (f.Driver == "vfio-pci" && f.Role.IsEndpoint()):
		case len(picked) == 1 || f.Role.IsEndpoint():
			others = append(others, fmt.Sprintf("%s (class %s)", f.BDF, f.Class))
			continue
		default:
			continue // switch ports of a card=… selector
		}
		if f.Driver != "vfio-pci" {
			drv := f.Driver
			if drv == "" {
				drv = "no driver"
			}
			return nil, fmt.Errorf("%s is bound to %s, not vfio-pci: hand it to umd with `sudo umdprobe bind %s` (umdprobe unbind gives it back)", f.BDF, drv, f.BDF)
		}
		bdfs = append(bdfs, f.BDF.String())
	}
	if len(bdfs) == 0 {
		return nil, fmt.Errorf("%w %q that is an NVMe controller; it picked %s", errNoMatch, sel.String(), strings.Join(others, ", "))
	}
	return bdfs, nil
}

// device is one opened controller and what the run made on it.
type device struct {
	dev     *umd.Device
	targets []bench.Target // one per namespace measured, in --nsid's order
	queues  []*umd.QueuePair
	bufs    []nvmelike.Buffer
}

// openDevice opens bdf with a DMA pool and I/O queues enough for numjobs
// jobs of w on each namespace nsids names, and checks the namespaces.
// With shadow, the I/O queues use shadow doorbells, and a controller that
// does not offer them is an error. --nsid all learns the namespaces from
// the controller, so a device with more than one is opened twice: the
// pool and the queue count are fixed when it is opened.
func openDevice(ctx context.Context, bdf string, nsids nsidFlag, w bench.Workload, numjobs int, shadow bool) (*device, error) {
	ids := nsids.ids
	d, err := openFor(ctx, bdf, max(len(ids), 1), w, numjobs, shadow)
	if err != nil {
		return nil, err
	}
	if nsids.all {
		if ids = d.dev.Controller().Namespaces(); len(ids) == 0 {
			d.dev.Close()
			return nil, fmt.Errorf("%s has no active namespace", bdf)
		}
		if len(ids) > 1 {
			if err := d.dev.Close(); err != nil {
				return nil, err
			}
			if d, err = openFor(ctx, bdf, len(ids), w, numjobs, shadow); err != nil {
				return nil, err
			}
		}
	}
	if err := d.addTargets(ctx, bdf, ids, w, numjobs); err != nil {
		d.dev.Close()
		return nil, err
	}
	return d, nil
}

// openFor opens bdf for numjobs jobs of w on each of nns namespaces.
func openFor(ctx context.Context, bdf string, nns int, w bench.Workload, numjobs int, shadow bool) (*device, error) {
	// Per job: IODepth data buffers (each 4 KiB-aligned), the two rings
	// and a PRP list page per tracker; plus the admin queue's share.
	perBuf := (w.BlockSize + 4095) &^ 4095
	depth := w.IODepth + 1
	perJob := w.IODepth*perBuf + depth*(64+16) + 2*4096 + (depth-1)*4096
	jobs := numjobs * nns
	dev, err := umd.Open(ctx, bdf, &umd.Options{
		PoolSize:   jobs*perJob + 4<<20,
		Controller: nvmelike.Options{IOQueues: max(jobs, 1), ShadowDoorbells: shadow},
	})
	if err != nil {
		return nil, err
	}
	if id := dev.Controller().IdentifyController(); shadow && !id.DoorbellBufferConfig() {
		dev.Close()
		return nil, fmt.Errorf("--shadow_doorbells on: %s does not offer shadow doorbells (Doorbell Buffer Config)", bdf)
	}
	return &device{dev: dev}, nil
}

// addTargets checks namespaces ids of d for w and makes a target of each.
func (d *device) addTargets(ctx context.Context, bdf string, ids []uint32, w bench.Workload, numjobs int) error {
	ctrl := d.dev.Controller()
	for _, nsid := range ids {
		if !slices.Contains(ctrl.Namespaces(), nsid) {
			return fmt.Errorf("%s has no active namespace %d (it has %v): pick from those with --nsid", bdf, nsid, ctrl.Namespaces())
		}
		ns, err := ctrl.IdentifyNamespace(ctx, nsid)
		if err != nil {
			return fmt.Errorf("%s: %w", bdf, err)
		}
		if err := dataOnly(bdf, ns); err != nil {
			return err
		}
		nids, err := ctrl.NamespaceIDs(ctx, nsid)
		if err != nil {
			return fmt.Errorf("%s: %w", bdf, err)
		}
		if err := commandSetTakes(bdf, nsid, nids.CSI, w.RW); err != nil {
			return err
		}
		d.targets = append(d.targets, bench.Target{Device: bdf, NSID: nsid, LBASize: ns.LBASize, Blocks: ns.NSZE, MaxTransfer: ctrl.MaxTransfer()})
	}
	if jobs := numjobs * len(ids); jobs > ctrl.MaxIOQueues() {
		if len(ids) > 1 {
			return fmt.Errorf("--numjobs %d on %d namespaces: %s grants %d I/O queue pairs, not %d", numjobs, len(ids), bdf, ctrl.MaxIOQueues(), jobs)
		}
		return fmt.Errorf("--numjobs %d: %s grants %d I/O queue pairs", numjobs, bdf, ctrl.MaxIOQueues())
	}
	return nil
}

// dataOnly refuses a namespace formatted with metadata: umdbench's
// commands carry data only, so the controller would move the metadata to
// or from a pointer nobody set (IOVA 0, which the IOMMU faults: QEMU's
// controller reads on, with the faults in the kernel log).
func dataOnly(bdf string, ns *nvmelike.IdentifyNamespace) error {
	ms := ns.MetadataSize()
	if ms == 0 {
		return nil
	}
	return metadataError(bdf, ns.NSID, ms, ns.LBASize, ns.ExtendedLBA())
}

// commandSetTakes refuses a workload rw the namespace's command set (csi)
// does not take: a zoned namespace reads anywhere but takes writes only
// at each zone's write pointer (QEMU answers the first stray one with Zone
// Invalid Write), so only a sequential write may work there; command sets
// other than these two have no block reads or writes at all.
func commandSetTakes(bdf string, nsid uint32, csi uint8, rw bench.RW) error {
	switch {
	case csi == nvmelike.CSINVM:
		return nil
	case csi == nvmelike.CSIZoned && (!rw.Writes() || rw == bench.SeqWrite):
		return nil
	case csi == nvmelike.CSIZoned:
		return fmt.Errorf("--rw %s: %s namespace %d is zoned (ZNS): it takes writes only at each zone's write pointer, and umdbench's %s writes land anywhere in the region; read it (--rw read or randread), or write it in order (--rw write --iodepth 1) from the start of empty zones", rw, bdf, nsid, rw)
	}
	return fmt.Errorf("%s namespace %d speaks the %s command set, which has no block reads or writes", bdf, nsid, nvmelike.CSIName(csi))
}

// metadataError says why umdbench does not run on a namespace with ms
// bytes of metadata per block, after each block's data when extended,
// else in a buffer of their own.
func metadataError(bdf string, nsid uint32, ms, lbaSize int, extended bool) error {
	where := ", in a separate buffer"
	if extended {
		where = ", after each block's data (extended LBAs)"
	}
	return fmt.Errorf("%s namespace %d is formatted with %d bytes of metadata per %d-byte block%s; umdbench moves data only: pick a namespace formatted without metadata (umdprobe identify lists each namespace's formats)", bdf, nsid, ms, lbaSize, where)
}

// newJobs creates numjobs jobs on each of d's namespaces, each with its
// own queue pair (with an interrupt unless polling) and buffers.
func (d *device) newJobs(ctx context.Context, w bench.Workload, numjobs int, several bool) ([]*bench.Job, error) {
	var jobs []*bench.Job
	for _, t := range d.targets {
		for i := range numjobs {
			// ShareVector: a device with fewer MSI-X vectors than jobs
			// (an SR-IOV VF, say) gives several jobs one vector.
			q, err := d.dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: w.IODepth + 1, Interrupt: w.Completion != bench.Poll, ShareVector: true})
			if err != nil {
				return nil, err
			}
			d.queues = append(d.queues, q)
			j, err := newJob(w, t, i, several, q, d.dev.Alloc, &d.bufs)
			if err != nil {
				return nil, err
			}
			jobs = append(jobs, j)
		}
	}
	return jobs, nil
}

// newJob makes job i of w on queue pair q of target, with IODepth buffers
// from alloc, each also appended to *bufs for the caller to free. Its name
// is BDF/i, or BDF/nsN/i when the run may cover several namespaces of a
// device.
func newJob(w bench.Workload, target bench.Target, i int, several bool, q *umd.QueuePair, alloc func(int) (nvmelike.Buffer, error), bufs *[]nvmelike.Buffer) (*bench.Job, error) {
	mine := make([]nvmelike.Buffer, w.IODepth)
	for k := range mine {
		var err error
		if mine[k], err = alloc(w.BlockSize); err != nil {
			return nil, fmt.Errorf("allocating %d buffers of %s for %s: %w", w.IODepth, bench.FormatSize(int64(w.BlockSize)), target.Device, err)
		}
		*bufs = append(*bufs, mine[k])
	}
	name := fmt.Sprintf("%s/%d", target.Device, i)
	if several {
		name = fmt.Sprintf("%s/ns%d/%d", target.Device, target.NSID, i)
	}
	c := bench.JobConfig{Name: name, Target: target, Index: i, Queue: q.QueuePair, Buffers: mine}
	if q.Interrupt() != nil {
		c.Wait = waitOn(q)
	}
	return bench.NewJob(w, c)
}

// waitOn returns a job's interrupt wait: q.WaitThread, which blocks the
// job's own thread in one raw epoll_wait(2), so the job keeps its P while
// it sleeps (through the runtime's poller or a system call it knows of,
// the P was handed to another thread on every wait: at queue depth 1 in
// the TCG guest those hand-offs took 3.3 s of CPU per 5 s run;
// interrupt-driven 4 KiB reads at depth 1 ran 1.3-2.5 K IOPS, against
// 1.8-3.1 K with a raw wait, 2.5-3.9 K once the eventfd also left the
// runtime's poller). The wait ends every 100 ms, or at one of the
// runtime's signals, to look at ctx. The wait is the queue pair's own
// (a vfio.Waiter), so jobs whose queue pairs share a vector each wake at
// its interrupts.
func waitOn(q *umd.QueuePair) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if _, err := q.WaitThread(100 * time.Millisecond); err != nil {
			return err
		}
		return ctx.Err()
	}
}

// close deletes the queue pairs, frees the buffers and closes the device.
func (d *device) close() error {
	var errs []error
	for _, q := range d.queues {
		errs = append(errs, q.Close())
	}
	for _, b := range d.bufs {
		errs = append(errs, d.dev.Free(b))
	}
	errs = append(errs, d.dev.Close())
	return errors.Join(errs...)
}
