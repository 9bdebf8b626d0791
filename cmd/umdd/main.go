// Command umdd is umd's device broker: it owns NVMe-like devices bound to
// vfio-pci and hands each client connection its own queue pairs, DMA pool
// and interrupt eventfds over a unix socket, releasing them when the
// connection ends.
//
//	umdd --socket PATH [--mode 0660] [--allow-uid N,…] [--allow-gid N,…] [--trusted] [--vfs N] [SELECTOR…]
//	umdd --socket PATH --simulate SYSFS|SNAPSHOT [--simulate-blocks N] [SELECTOR…]
//	umdd status --socket PATH [-o json]
//	umdd restore --socket PATH BDF
//
// Run `umdd --help` for the details.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/internal/size"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/pcie"
	"github.com/umdkit/umd/sriov"
)

const usageText = `umdd — the umd device broker

Usage:
  umdd --socket PATH [options] [SELECTOR…]   serve devices to clients
  umdd --socket PATH --simulate TREE [options] [SELECTOR…]
                                             serve software controllers instead
  umdd status --socket PATH [-o json]        ask a running broker what it holds
  umdd restore --socket PATH BDF             serve a device umdd gave back again

umdd opens every selected PCI function (which must be bound to vfio-pci;
see "umdprobe bind"), brings its controller up, and listens on a unix socket.
With no selector it serves every NVMe-class function bound to vfio-pci.

Each client connection may open one session on one device: umdd makes it a
hugepage pool, maps the pool into the device's IOMMU domain in an IOVA window
recorded under the client's pid, creates its I/O queue pairs with an MSI-X
vector and eventfd each, and sends it the pool's fd and the eventfds over the
socket (SCM_RIGHTS). When the connection closes — the client exits, crashes or
is killed — umdd deletes its queues, unmaps its window and frees its pool.

A session is mediated or trusted:

  mediated (always allowed)  the client asks umdd for each command: either
      read/write/flush by pool offset, or a command it encoded itself, PRPs
      included. umdd checks every field (opcode allow-list, namespace, LBA
      range, every PRP entry inside the client's IOVA window) before the
      device sees it. Data moves by DMA straight to and from the client's
      pool; each command is a round trip over the socket.
  trusted (only with --trusted)  umdd also places the queue rings in memory
      shared with the client and sends it the device's VFIO descriptor: the
      client maps BAR0 and drives its queue pairs itself, at the speed of a
      local queue pair, with umdd off the I/O path. The client can then do
      anything with the device (reset it, reach every IOVA of the domain):
      allow it only to users you would give the device to.

With --vfs N, umdd also enables N SR-IOV virtual functions on each served
device that has them (vfio-pci's enable_sriov is turned on for it), gives each
VF's controller its queues and vectors, brings it online, and leases whole
VFs to clients: a leased VF is a controller of the client's own in an IOMMU
group of its own (hardware isolation), opened by the client in its own
container with the VF token umdd sends. When the client's connection ends,
umdd takes the VF's controller offline and online again, which stops its
DMA, before leasing it to anyone else.

Reservations: a reserver (root, or a uid in --reservers; the Kubernetes DRA
driver umd-dra is one) may reserve a session's resources on a device under a
claim before the claim's client exists: queue pairs, pool size, mode and
polling are held (others cannot take them) and umdd answers with a grant, a
random 128-bit ID. Whoever presents the grant may open exactly that session,
one at a time, as often as it reconnects, whatever its uid: the grant is the
capability. Releasing the claim ends its live sessions as a disconnect would
and frees what it held. Reservations live in umdd's memory: a restarted umdd
has none (the DRA driver reserves again and rewrites its CDI spec).

An exclusive reservation lends a whole device to the claim: allowed only while
the device has no session and no other claim's reservation (and its VFs are
not served), it makes umdd stop serving the device and close everything of it
(queues, interrupts, BAR mappings, VFIO descriptors), so the claim's process
can open it itself. Status shows it "lent to claim C". Releasing the claim
opens it again with the options umdd started with and serves it; if that
fails (something still holds it), status shows it failed with the reason, and
an exclusive reservation and release of it tries again. On simulated devices
it is the same bookkeeping; the software controller stays as it is.

Unbinding a served device from vfio-pci (or removing it) makes the kernel ask
umdd for it back: umdd hangs up the clients holding a session on it or a VF
of it, disables those VFs, closes the device so the unbind completes, and
goes on serving the other devices. Status shows it failed with the reason.
Once it is bound to vfio-pci again, "umdd restore" (as root) has umdd open it
anew, with the options it started with, and serve it; VFs of it are not
enabled again. umdd never takes it back by itself: whoever bound it to
vfio-pci may want it for something else (a virtual machine, say).

umdd reads every served controller's status once a second. One that was
reset from outside (a reset through sysfs, say), went fatal or is gone has
lost every client's queues: umdd hangs up its clients as above and, unless
the device is gone, opens it again at once (which resets the controller) and
serves it, trying for ten seconds while a trusted client still holds it.

With --simulate, umdd opens no device: it serves one software controller
(nvmelike/sim, its namespace kept in memory) under the address of every
NVMe-class function bound to vfio-pci in the sysfs tree TREE (a directory, or
a snapshot file as "umdprobe snapshot" writes, restored into a temporary
directory), so a DRA driver scanning the same tree publishes what umdd
serves. Only mediated sessions work on them (there is no VFIO device to hand
a trusted client), and client pools are ordinary shared memory, not hugepages.

Clients are identified by the kernel (SO_PEERCRED). A client may open a
session only if its uid is in --allow-uid or its primary gid in --allow-gid,
or it is root (unless --deny-root). The socket's mode is a first gate:
a client must be able to connect at all.

Options:
  --socket PATH          unix socket to listen on (required)
  --mode MODE            the socket's permissions, octal (default 0660)
  --allow-uid N,…        uids allowed to open sessions
  --allow-gid N,…        primary gids allowed to open sessions
  --deny-root            refuse root too unless listed
  --trusted              allow trusted sessions (clients drive the device)
  --vfs N                enable N SR-IOV VFs per device that has them and lease them whole
  --vf-queues N          I/O queue pairs of each VF's controller (default 2)
  --vf-namespaces N,…    attach namespace N[i] of the subsystem to VF i (namespaces the
                         PF holds detached, for the VFs alone)
  --max-queues N         queue pairs one client may hold (default 4)
  --max-pool BYTES       pool bytes one client may have, with K/M/G suffix (default 64M)
  --max-clients N        connections served at once (default 64)
  --device-pool BYTES    DMA pool umdd keeps per device for queue rings (default 16M)
  --sysfs DIR            sysfs root (default /sys)
  --reservers N,…        uids that may reserve and release under claims (default: root only)
  --max-reserved BYTES   pool bytes all reservations together may hold (default 1G)
  --simulate TREE        serve software controllers for the NVMe functions on vfio-pci
                         in TREE (a sysfs directory or a snapshot file); no VFIO needed
  --simulate-blocks N    512-byte blocks of each simulated namespace (default 131072: 64 MiB)

Status options:
  --socket PATH          the broker to ask
  -o json                JSON instead of a table

Examples:
  umdd --socket /run/umdd.sock --allow-gid 1001
  umdd --socket /run/umdd.sock class=nvme numa=0
  umdd --socket /tmp/umdd.sock --simulate pcie/testdata/snapshots/qemu-cards.txt
  umdd status --socket /run/umdd.sock -o json
  umdd restore --socket /run/umdd.sock 0000:03:00.0

Exit status: 0 after a clean shutdown (SIGINT or SIGTERM); 1 on an error;
2 on a usage error.

`

type usageError struct{ error }

func main() {
	log.SetFlags(0)
	log.SetPrefix("umdd: ")
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "umdd: %v\n(umdd --help explains the options)\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "umdd: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	socket     string
	mode       os.FileMode
	uids, gids []uint32
	denyRoot   bool
	trusted    bool
	vfs        int
	vfQueues   int
	vfNS       []uint32
	maxQueues  int
	maxPool    int64
	maxClients int
	devicePool int64
	sysfs      string
	reservers  []uint32
	maxReserve int64
	simulate   string
	simBlocks  uint64
	output     string
	command    string // "status" or "restore"; "" serves
	help       bool
	selectors  []string
}

func parseArgs(args []string) (*options, error) {
	o := &options{mode: 0o660, maxQueues: 4, maxPool: 64 << 20, maxClients: 64, devicePool: 16 << 20, vfQueues: 2, maxReserve: 1 << 30, simBlocks: 64 << 20 / 512}
	if len(args) > 0 && (args[0] == "status" || args[0] == "restore") {
		o.command, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("umdd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.socket, "socket", "", "")
	fs.BoolVar(&o.help, "help", false, "")
	fs.BoolVar(&o.help, "h", false, "")
	switch o.command {
	case "status":
		fs.StringVar(&o.output, "o", "", "")
	case "restore":
	default:
		fs.Func("mode", "", func(s string) error {
			v, err := strconv.ParseUint(s, 8, 32)
			if err != nil || v > 0o777 {
				return fmt.Errorf("mode %q: want octal permissions such as 0660", s)
			}
			o.mode = os.FileMode(v)
			return nil
		})
		fs.Func("allow-uid", "", func(s string) error { return parseIDs(s, &o.uids) })
		fs.Func("allow-gid", "", func(s string) error { return parseIDs(s, &o.gids) })
		fs.BoolVar(&o.denyRoot, "deny-root", false, "")
		fs.BoolVar(&o.trusted, "trusted", false, "")
		fs.IntVar(&o.vfs, "vfs", 0, "")
		fs.IntVar(&o.vfQueues, "vf-queues", o.vfQueues, "")
		fs.Func("vf-namespaces", "", func(s string) error { return parseIDs(s, &o.vfNS) })
		fs.IntVar(&o.maxQueues, "max-queues", o.maxQueues, "")
		fs.IntVar(&o.maxClients, "max-clients", o.maxClients, "")
		fs.Func("max-pool", "", func(s string) (err error) { o.maxPool, err = parseBytes(s); return })
		fs.Func("device-pool", "", func(s string) (err error) { o.devicePool, err = parseBytes(s); return })
		fs.StringVar(&o.sysfs, "sysfs", "", "")
		fs.Func("reservers", "", func(s string) error { return parseIDs(s, &o.reservers) })
		fs.Func("max-reserved", "", func(s string) (err error) { o.maxReserve, err = parseBytes(s); return })
		fs.StringVar(&o.simulate, "simulate", "", "")
		fs.Uint64Var(&o.simBlocks, "simulate-blocks", o.simBlocks, "")
	}
	// Flags may follow selectors: parse in rounds.
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		o.selectors = append(o.selectors, args[0])
		args = args[1:]
	}
	if o.help {
		return o, nil
	}
	switch {
	case o.socket == "":
		return nil, usageError{errors.New("--socket PATH is required")}
	case o.command == "restore" && len(o.selectors) != 1:
		return nil, usageError{fmt.Errorf("restore takes one PCI address, got %q", o.selectors)}
	case o.command == "status" && len(o.selectors) > 0:
		return nil, usageError{fmt.Errorf("status takes no selectors, got %q", o.selectors)}
	case o.command == "status" && o.output != "" && o.output != "json":
		return nil, usageError{fmt.Errorf("-o %q: only json is known", o.output)}
	case o.maxQueues < 1 || o.maxQueues > 64:
		return nil, usageError{fmt.Errorf("--max-queues %d: want 1 to 64", o.maxQueues)}
	case o.maxClients < 1:
		return nil, usageError{fmt.Errorf("--max-clients %d: want at least 1", o.maxClients)}
	case o.vfs < 0 || o.vfs > 256:
		return nil, usageError{fmt.Errorf("--vfs %d: want 0 to 256", o.vfs)}
	case o.vfQueues < 1 || o.vfQueues > 64:
		return nil, usageError{fmt.Errorf("--vf-queues %d: want 1 to 64", o.vfQueues)}
	case len(o.vfNS) > 0 && len(o.vfNS) > o.vfs:
		return nil, usageError{fmt.Errorf("--vf-namespaces names %d namespaces for %d VFs", len(o.vfNS), o.vfs)}
	case o.maxPool < 4096 && o.command == "":
		return nil, usageError{fmt.Errorf("--max-pool %d: too small", o.maxPool)}
	case o.simulate != "" && o.sysfs != "":
		return nil, usageError{errors.New("--simulate names the sysfs tree to simulate; --sysfs is not used with it")}
	case o.simulate != "" && o.vfs > 0:
		return nil, usageError{errors.New("--vfs needs real devices; simulated ones have no SR-IOV")}
	case o.simBlocks < 1 || o.simBlocks > (16<<30)/512:
		return nil, usageError{fmt.Errorf("--simulate-blocks %d: want 1 to %d (16 GiB, kept in memory)", o.simBlocks, (16<<30)/512)}
	}
	return o, nil
}

func parseIDs(s string, into *[]uint32) error {
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return fmt.Errorf("id %q: not a number", f)
		}
		*into = append(*into, uint32(v))
	}
	return nil
}

// parseBytes parses a pool size: size.Parse's spellings, positive and
// below 1 TiB.
func parseBytes(s string) (int64, error) {
	v, err := size.Parse(s)
	if err != nil || v <= 0 || v >= 1<<40 {
		return 0, fmt.Errorf("size %q: want a positive number of bytes below 1 TiB, with K, M or G", s)
	}
	return v, nil
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseArgs(args)
	if err != nil {
		return err
	}
	if o.help {
		_, err := io.WriteString(stdout, usageText+pcie.SelectorHelp+"\n")
		return err
	}
	switch o.command {
	case "status":
		return runStatus(stdout, o)
	case "restore":
		return runRestore(stdout, o)
	}
	return serve(stderr, o)
}

// runRestore asks the broker to serve a device it retired again.
func runRestore(stdout io.Writer, o *options) error {
	bdf, err := pcie.ParseBDF(o.selectors[0])
	if err != nil {
		return usageError{fmt.Errorf("restore: %w", err)}
	}
	c, err := broker.Dial(o.socket)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Restore(bdf.String()); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "umdd serves %s again\n", bdf)
	return err
}

func runStatus(stdout io.Writer, o *options) error {
	c, err := broker.Dial(o.socket)
	if err != nil {
		return err
	}
	defer c.Close()
	devs, err := c.Devices()
	if err != nil {
		return err
	}
	clients, err := c.Status()
	if err != nil {
		return err
	}
	res, err := c.Reservations()
	if err != nil {
		return err
	}
	return writeStatus(stdout, o.output == "json", devs, clients, res)
}

func writeStatus(w io.Writer, asJSON bool, devs []broker.DeviceInfo, clients []broker.ClientStatus, res []broker.ReservationStatus) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Devices      []broker.DeviceInfo        `json:"devices"`
			Clients      []broker.ClientStatus      `json:"clients"`
			Reservations []broker.ReservationStatus `json:"reservations"`
		}{devs, clients, res})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSERIAL\tMODEL\tQUEUES FREE\tVFS FREE\tNAMESPACES\tSTATE")
	for _, d := range devs {
		var ns []string
		for _, n := range d.Namespaces {
			ns = append(ns, fmt.Sprintf("%d:%dx%d", n.NSID, n.Blocks, n.LBASize))
		}
		vfs := "-"
		if d.VFs > 0 {
			vfs = fmt.Sprintf("%d/%d", d.FreeVFs, d.VFs)
		}
		model := d.Model
		if d.Simulated {
			model += " (simulated)"
		}
		state := "served"
		switch {
		case d.Lent != "":
			state = "lent to claim " + d.Lent + " (exclusive)"
		case d.Failed != "":
			state = "failed: " + d.Failed
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", d.BDF, d.Serial, model, d.FreeQueues, d.MaxQueues, vfs, strings.Join(ns, " "), state)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CLIENT\tPID\tUID\tGID\tDEVICE\tMODE\tPOOL\tIOVA\tQUEUES\tCOMMANDS")
	for _, c := range clients {
		var qs []string
		for _, q := range c.Queues {
			qs = append(qs, fmt.Sprintf("%d(x%d,v%d)", q.ID, q.Depth, q.Vector))
		}
		dev, mode, pool, iova := "-", "-", "-", "-"
		switch {
		case c.VF != "":
			dev, mode = c.Device, "vf "+c.VF
		case c.Device != "":
			dev, mode, pool, iova = c.Device, c.Mode, strconv.FormatInt(c.PoolBytes, 10), fmt.Sprintf("0x%x", c.PoolIOVA)
		}
		if c.Claim != "" {
			mode += " (claim " + c.Claim + ")"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d\n", c.ID, c.PID, c.UID, c.GID, dev, mode, pool, iova, strings.Join(qs, " "), c.Commands)
	}
	if len(res) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "CLAIM\tDEVICE\tNAME\tMODE\tQUEUES\tDEPTH\tPOOL\tIN USE")
		for _, r := range res {
			mode, use, name := r.Mode, "no", r.Name
			if name == "" {
				name = "-"
			}
			if r.Polled {
				mode += ",polled"
			}
			if r.InUse {
				use = fmt.Sprintf("client %d", r.Client)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.Claim, r.Device, name, mode, r.Queues, r.Depth, r.PoolBytes, use)
		}
	}
	return tw.Flush()
}

// pick returns the BDFs to serve, from the sysfs tree at root ("" for
// /sys).
func pick(o *options, root string) ([]string, error) {
	sel, err := pcie.ParseSelector(o.selectors...)
	if err != nil {
		return nil, usageError{err}
	}
	sys, err := pcie.Scan(pcie.Options{SysfsRoot: root})
	if err != nil {
		return nil, err
	}
	var bdfs []string
	for _, f := range sys.Select(sel) {
		if sel.Empty() && (f.Class != pcie.ClassNVMe || f.Driver != "vfio-pci") {
			continue
		}
		if f.Driver != "vfio-pci" {
			return nil, fmt.Errorf("%s is bound to %q, not vfio-pci (umdprobe bind %s)", f.BDF, f.Driver, f.BDF)
		}
		bdfs = append(bdfs, f.BDF.String())
	}
	if len(bdfs) == 0 {
		if sel.Empty() {
			return nil, errors.New("no NVMe-class function is bound to vfio-pci (umdprobe bind class=nvme)")
		}
		return nil, fmt.Errorf("selectors %q match no function", sel.String())
	}
	return bdfs, nil
}

func serve(stderr io.Writer, o *options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serveUntil(ctx, stderr, o, nil)
}

// serveUntil serves until ctx is done (then releases everything) or the
// server fails. ready, if set, is called once the socket listens.
func serveUntil(ctx context.Context, stderr io.Writer, o *options, ready func(*broker.Server)) error {
	logger := log.New(stderr, "umdd: ", 0)
	root := o.sysfs
	if o.simulate != "" {
		var cleanup func()
		var err error
		if root, cleanup, err = pcie.OpenTree(o.simulate); err != nil {
			return fmt.Errorf("--simulate: %w", err)
		}
		defer cleanup()
	}
	bdfs, err := pick(o, root)
	if err != nil {
		return err
	}
	srv, err := broker.NewServer(broker.Config{
		Socket: o.socket, Mode: o.mode, MaxQueuePairs: o.maxQueues, MaxPoolBytes: o.maxPool, MaxClients: o.maxClients,
		Reservers: o.reservers, MaxReservedBytes: o.maxReserve,
	})
	if err != nil {
		return err
	}
	access := broker.Access{UIDs: o.uids, GIDs: o.gids, DenyRoot: o.denyRoot, Trusted: o.trusted}
	openCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if o.simulate != "" {
		for _, bdf := range bdfs {
			if err := srv.AddSimulated(openCtx, bdf, broker.SimOptions{Blocks: o.simBlocks}, access); err != nil {
				return errors.Join(err, srv.Close())
			}
			logger.Printf("simulating %s (software controller, %d blocks of 512 bytes in memory)", bdf, o.simBlocks)
		}
		return listenAndServe(ctx, logger, srv, o, ready)
	}
	for _, bdf := range bdfs {
		opts := &umd.Options{PoolSize: int(o.devicePool)}
		dev, err := umd.Open(openCtx, bdf, opts)
		if err != nil {
			return errors.Join(err, srv.Close())
		}
		// Reopenable: an exclusive claim may have umdd close it and
		// open it again with the same options when the claim ends.
		if err := srv.AddReopenable(openCtx, dev, opts, access); err != nil {
			return errors.Join(err, dev.Close(), srv.Close())
		}
		logger.Printf("serving %s", bdf)
		if o.vfs > 0 {
			if err := serveVFs(openCtx, logger, srv, dev, access, o); err != nil {
				return errors.Join(err, srv.Close())
			}
		}
	}
	return listenAndServe(ctx, logger, srv, o, ready)
}

// listenAndServe listens on the socket and serves until ctx is done or
// Serve fails, then closes the server.
func listenAndServe(ctx context.Context, logger *log.Logger, srv *broker.Server, o *options, ready func(*broker.Server)) error {
	if err := srv.Listen(); err != nil {
		return errors.Join(err, srv.Close())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	logger.Printf("listening on %s (mode %04o)", o.socket, o.mode)
	if ready != nil {
		ready(srv)
	}
	for {
		select {
		case <-ctx.Done():
			logger.Printf("stopping: releasing every client, reservation and device")
			err := srv.Close()
			return errors.Join(err, <-done)
		case bdf := <-srv.RemovalRequests():
			// The unbind or removal waits until the device is closed;
			// the sessions on it cannot go on, the others can.
			logger.Printf("the kernel asks for %s back (an unbind from vfio-pci, or its removal): hanging up its clients and closing it; the other devices stay served", bdf)
			if err := srv.Retire(bdf, "the kernel asked for it back (an unbind from vfio-pci, or its removal); \"umdd restore\" serves it again once it is bound to vfio-pci"); err != nil {
				logger.Printf("%v", err)
			} else {
				logger.Printf("%s closed and given back", bdf)
			}
		case f := <-srv.Failures():
			// Its queues are gone with its controller's state: the
			// sessions on it cannot go on. Opening it again resets the
			// controller, which brings back one that was reset from
			// outside or went fatal; a device that is gone stays retired.
			logger.Printf("%s failed (%v): hanging up its clients and closing it; the other devices stay served", f.BDF, f.Err)
			if err := srv.Retire(f.BDF, fmt.Sprintf("its controller failed (%v)", f.Err)); err != nil && !errors.Is(err, f.Err) {
				logger.Printf("%v", err)
			}
			if errors.Is(f.Err, nvmelike.ErrDeviceGone) {
				logger.Printf("%s is gone: retired", f.BDF)
				break
			}
			go restore(ctx, logger, srv, f.BDF)
		case err := <-done:
			return errors.Join(err, srv.Close())
		}
	}
}

// restoreTries bounds how long umdd keeps trying to serve a failed device
// again: a trusted client that was hung up holds a descriptor of the device,
// and with it the VFIO group, until it notices and closes it.
const (
	restoreTries = 20
	restoreEvery = 500 * time.Millisecond
)

// restore serves a device that failed again, trying for a while.
func restore(ctx context.Context, logger *log.Logger, srv *broker.Server, bdf string) {
	for i := 1; ; i++ {
		err := srv.Restore(bdf)
		if err == nil {
			logger.Printf("%s brought up again and served", bdf)
			return
		}
		if i == restoreTries {
			logger.Printf("%v (tried %d times); \"umdd restore\" tries again", err, i)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(restoreEvery):
		}
	}
}

// serveVFs enables o.vfs VFs on dev, attaches the namespaces asked for and
// lets the server lease them. A device without SR-IOV is served without.
func serveVFs(ctx context.Context, logger *log.Logger, srv *broker.Server, dev *umd.Device, access broker.Access, o *options) error {
	pf, err := sriov.Enable(ctx, dev, sriov.Options{VFs: o.vfs, IOQueues: o.vfQueues, Vectors: 2, Sysfs: o.sysfs})
	if errors.Is(err, sriov.ErrNotSRIOV) {
		logger.Printf("%s has no SR-IOV: no VFs to lease", dev.BDF())
		return nil
	}
	if err != nil {
		return err
	}
	vfs := pf.VFs()
	for i, nsid := range o.vfNS {
		if err := pf.AttachNamespace(ctx, nsid, vfs[i]); err != nil {
			return errors.Join(err, pf.Disable(ctx))
		}
	}
	if err := srv.AddVFs(pf, access); err != nil {
		return errors.Join(err, pf.Disable(ctx))
	}
	for i, vf := range vfs {
		ns := "no namespace attached"
		if i < len(o.vfNS) {
			ns = fmt.Sprintf("namespace %d", o.vfNS[i])
		}
		logger.Printf("leasing VF %s of %s (IOMMU group %d, %s)", vf.BDF, dev.BDF(), vf.IOMMUGroup, ns)
	}
	return nil
}
