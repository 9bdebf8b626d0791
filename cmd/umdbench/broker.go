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
	c      *broker.Client
	s      *broker.Session
	target bench.Target
	bufs   []nvmelike.Buffer
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
// of w's depth and a pool for their buffers and PRP lists.
func openBrokerDevice(path, bdf string, nsid uint32, w bench.Workload, numjobs int) (_ *brokerDevice, err error) {
	c, err := broker.Dial(path)
	if err != nil {
		return nil, err
	}
	d := &brokerDevice{c: c}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	devs, err := c.Devices()
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(devs, func(d broker.DeviceInfo) bool { return d.BDF == bdf })
	if i < 0 {
		return nil, fmt.Errorf("%w %s at the broker", errNoMatch, bdf)
	}
	j := slices.IndexFunc(devs[i].Namespaces, func(n broker.NamespaceInfo) bool { return n.NSID == nsid })
	if j < 0 {
		return nil, fmt.Errorf("%s has no namespace %d (pick one with --nsid)", bdf, nsid)
	}
	ns := devs[i].Namespaces[j]
	if ns.MetadataSize != 0 {
		return nil, metadataError(bdf, nsid, ns.MetadataSize, ns.LBASize, "")
	}
	// Per job: the data buffers (4 KiB-aligned blocks of the allocator's
	// power-of-two sizes) and a PRP list page per tracker.
	perBuf := max(4096, nextPow2(w.BlockSize))
	perJob := w.IODepth*perBuf + (w.IODepth+1)*4096
	pool := int64(numjobs*perJob + 2<<20)
	d.s, err = c.OpenSession(bdf, broker.SessionOptions{
		Queues: numjobs, Depth: w.IODepth + 1, PoolBytes: pool,
		Mode: broker.ModeTrusted, Polled: w.Completion == bench.Poll,
	})
	if errors.Is(err, broker.ErrPermission) {
		return nil, fmt.Errorf("%w (umdbench --broker drives its queue pairs itself: start umdd with --trusted)", err)
	}
	if err != nil {
		return nil, err
	}
	d.target = bench.Target{Device: bdf, NSID: nsid, LBASize: ns.LBASize, Blocks: ns.Blocks, MaxTransfer: d.s.Layout.MaxTransfer}
	return d, nil
}

func nextPow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

// newJobs makes a job per queue pair of the session.
func (d *brokerDevice) newJobs(w bench.Workload) ([]*bench.Job, error) {
	var jobs []*bench.Job
	for i, q := range d.s.QueuePairs() {
		j, err := newJob(w, d.target, i, q, d.s.Alloc, &d.bufs)
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

// runBroker opens the devices through the broker and runs the jobs.
func runBroker(ctx context.Context, o *options, sels []string, w *bench.Workload, tick *ticker) (_ *bench.Result, devices int, err error) {
	if o.traceFault {
		return nil, 0, usageError{errors.New("--trace_faults needs the device in this process; with --broker, trace on the broker's machine with umdprobe trace")}
	}
	if o.shadowDB.on {
		return nil, 0, usageError{errors.New("--shadow_doorbells on: a broker's trusted queue pairs use plain doorbells (the shadow buffer is the broker's)")}
	}
	bdfs, err := brokerDevices(o.broker, sels)
	if err != nil {
		return nil, 0, err
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
		d, err := openBrokerDevice(o.broker, bdf, uint32(o.nsid), *w, o.numjobs)
		if err != nil {
			return nil, 0, err
		}
		devs = append(devs, d)
	}
	if w.Size == 0 {
		targets := make([]bench.Target, len(devs))
		for i, d := range devs {
			targets[i] = d.target
		}
		if w.Size, err = defaultSize(targets, *w, o.numjobs); err != nil {
			return nil, 0, err
		}
	}
	var jobs []*bench.Job
	for _, d := range devs {
		js, err := d.newJobs(*w)
		if err != nil {
			return nil, 0, err
		}
		jobs = append(jobs, js...)
	}
	return bench.Execute(ctx, *w, jobs, bench.ExecOptions{Tick: tick.fn}), len(devs), nil
}
