package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/internal/bench"
	"github.com/umdkit/umd/nvmelike"
)

// brokerDevice is one device used through a broker (umdd): a trusted
// session whose queue pairs the jobs drive themselves, exactly as they
// drive a device opened here.
type brokerDevice struct {
	c       *broker.Client
	s       *broker.Session
	targets []bench.Target // one per namespace measured, in --nsid's order
	numjobs int            // queue pairs per namespace
	bufs    []nvmelike.Buffer
}

// brokerDevices picks the devices to measure among those the broker at
// path serves: the PCI addresses given, or with none every device this
// user may use.
func brokerDevices(path string, args []string) ([]string, error) {
	c, err := broker.Dial(path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	devs, err := c.Devices()
	if err != nil {
		return nil, err
	}
	var allowed []string
	for _, d := range devs {
		if d.Allowed {
			allowed = append(allowed, d.BDF)
		}
	}
	if len(args) == 0 {
		if len(allowed) == 0 {
			return nil, fmt.Errorf("%w: the broker at %s serves %d devices, none to this user", errNoMatch, path, len(devs))
		}
		return allowed, nil
	}
	for _, a := range args {
		if !slices.Contains(allowed, a) {
			return nil, fmt.Errorf("%w %q among the broker's devices this user may use (%v); with --broker name devices by PCI address", errNoMatch, a, allowed)
		}
	}
	return args, nil
}

// openBrokerDevice opens a trusted session on bdf with numjobs queue pairs
// of w's depth for each namespace nsids names, and a pool for their
// buffers and PRP lists.
func openBrokerDevice(path, bdf string, nsids nsidFlag, w bench.Workload, numjobs int) (_ *brokerDevice, err error) {
	c, err := broker.Dial(path)
	if err != nil {
		return nil, err
	}
	d := &brokerDevice{c: c, numjobs: numjobs}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	info, err := c.Device(bdf)
	if errors.Is(err, broker.ErrNoDevice) {
		return nil, fmt.Errorf("%w %s at the broker", errNoMatch, bdf)
	}
	if err != nil {
		return nil, err
	}
	all := info.Namespaces
	ids := nsids.ids
	if nsids.all {
		ids = nil
		for _, n := range all {
			ids = append(ids, n.NSID)
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("%s has no namespace at the broker", bdf)
		}
	}
	for _, nsid := range ids {
		j := slices.IndexFunc(all, func(n broker.NamespaceInfo) bool { return n.NSID == nsid })
		if j < 0 {
			return nil, fmt.Errorf("%s has no namespace %d (pick one with --nsid)", bdf, nsid)
		}
		ns := all[j]
		if ns.MetadataSize != 0 {
			return nil, metadataError(bdf, nsid, ns.MetadataSize, ns.LBASize, ns.ExtendedLBA)
		}
		if err := commandSetTakes(bdf, nsid, ns.CSI, w.RW); err != nil {
			return nil, err
		}
		d.targets = append(d.targets, bench.Target{Device: bdf, NSID: nsid, LBASize: ns.LBASize, Blocks: ns.Blocks})
	}
	// Per job: the data buffers (4 KiB-aligned blocks of the allocator's
	// power-of-two sizes) and a PRP list page per tracker.
	perBuf := max(4096, nextPow2(w.BlockSize))
	perJob := w.IODepth*perBuf + (w.IODepth+1)*4096
	jobs := numjobs * len(ids)
	d.s, err = c.OpenSession(bdf, broker.SessionOptions{
		Queues: jobs, Depth: w.IODepth + 1, PoolBytes: int64(jobs*perJob + 2<<20),
		Mode: broker.ModeTrusted, Polled: w.Completion == bench.Poll,
	})
	if errors.Is(err, broker.ErrPermission) {
		return nil, fmt.Errorf("%w (umdbench --broker drives its queue pairs itself: start umdd with --trusted)", err)
	}
	if err != nil {
		return nil, err
	}
	for k := range d.targets {
		d.targets[k].MaxTransfer = d.s.Layout.MaxTransfer
	}
	return d, nil
}

func nextPow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

// newJobs makes a job per queue pair of the session: the first numjobs
// on the first namespace, and so on.
func (d *brokerDevice) newJobs(w bench.Workload, several bool) ([]*bench.Job, error) {
	var jobs []*bench.Job
	for k, q := range d.s.QueuePairs() {
		t, i := d.targets[k/d.numjobs], k%d.numjobs
		j, err := newJob(w, t, i, several, q, d.s.Alloc, &d.bufs)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// close frees the buffers and ends the session; the broker deletes the
// queue pairs and releases the pool.
func (d *brokerDevice) close() error {
	var errs []error
	for _, b := range d.bufs {
		errs = append(errs, d.s.Free(b))
	}
	errs = append(errs, d.c.Close())
	return errors.Join(errs...)
}

// runBroker opens the devices through the broker and runs the jobs. The
// run stops early when the broker goes away (stopped says so): the
// controller may well go on serving the queue pairs, but nobody manages
// it any more, and a broker started again cannot open the device until
// this process closes it.
func runBroker(ctx context.Context, o *options, sels []string, w *bench.Workload, tick *ticker) (_ *bench.Result, devices int, stopped, err error) {
	if o.traceFault {
		return nil, 0, nil, usageError{errors.New("--trace_faults needs the device in this process; with --broker, trace on the broker's machine with umdprobe trace")}
	}
	if o.shadowDB.on {
		return nil, 0, nil, usageError{errors.New("--shadow_doorbells on: a broker's trusted queue pairs use plain doorbells (the shadow buffer is the broker's)")}
	}
	bdfs, err := brokerDevices(o.broker, sels)
	if err != nil {
		return nil, 0, nil, err
	}
	var devs []*brokerDevice
	defer func() {
		for _, d := range devs {
			if cerr := d.close(); err == nil && cerr != nil {
				err = cerr
			}
		}
	}()
	for _, bdf := range bdfs {
		d, err := openBrokerDevice(o.broker, bdf, o.nsid, *w, o.numjobs)
		if err != nil {
			return nil, 0, nil, err
		}
		devs = append(devs, d)
	}
	if w.Size == 0 {
		var targets []bench.Target
		for _, d := range devs {
			targets = append(targets, d.targets...)
		}
		if w.Size, err = defaultSize(targets, *w, o.numjobs); err != nil {
			return nil, 0, nil, err
		}
	}
	var jobs []*bench.Job
	for _, d := range devs {
		js, err := d.newJobs(*w, o.nsid.several())
		if err != nil {
			return nil, 0, nil, err
		}
		jobs = append(jobs, js...)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	hungUp := make([]<-chan struct{}, len(devs))
	for i, d := range devs {
		hungUp[i] = d.c.Done()
	}
	watched := watchFirst(runCtx, hungUp, stopRun)
	result := bench.Execute(runCtx, *w, jobs, bench.ExecOptions{Tick: tick.fn})
	stopRun()
	if <-watched >= 0 {
		stopped = fmt.Errorf("the broker at %s went away: the run stopped there, and the figures above cover it until then", o.broker)
	}
	return result, len(devs), stopped, nil
}
