package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/internal/size"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/pcie"
)

const schemaIdentify = "umd.nvme.identify/v1"

// identifyPool is the DMA pool identify opens each controller with: room
// for the admin queue, an identify buffer and the I/O queue memory the
// engine sets up, in one 2 MiB hugepage or, without hugepages, 4 KiB
// pages.
const identifyPool = 4 << 20

// nvmeClassCode is the class of an NVMe controller (mass storage,
// non-volatile memory, NVMe).
const nvmeClassCode = 0x010802

// opened is a controller identify opened: its engine, a note on its DMA
// pool, and how to let it go.
type opened struct {
	ctrl     *nvmelike.Controller
	pageSize int
	fallback error // why the pool has small pages, when it has
	close    func() error
}

// openController opens a function for identify; tests replace it.
var openController = func(ctx context.Context, bdf string) (*opened, error) {
	d, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: identifyPool, AllowSmallPages: true})
	if err != nil {
		return nil, err
	}
	info := d.PoolInfo()
	return &opened{ctrl: d.Controller(), pageSize: info.PageSize, fallback: info.Fallback, close: d.Close}, nil
}

// identifyDoc is the JSON document of identify.
type identifyDoc struct {
	Schema      string           `json:"schema"`
	Controllers []controllerDoc  `json:"controllers"`
	Errors      []functionErrDoc `json:"errors"`
}

type functionErrDoc struct {
	BDF   string `json:"bdf"`
	Error string `json:"error"`
}

type controllerDoc struct {
	BDF               string `json:"bdf"`
	VendorID          string `json:"vendor_id"`
	SubsystemVendorID string `json:"subsystem_vendor_id"`
	Serial            string `json:"serial"`
	Model             string `json:"model"`
	Firmware          string `json:"firmware"`
	Version           string `json:"version"`
	ControllerID      uint16 `json:"controller_id"`
	// MDTS is the raw field; MaxTransfer is it in bytes (0: no limit),
	// EngineMaxTransfer what the engine uses (capped at 1 MiB).
	MDTS              uint8    `json:"mdts"`
	MaxTransfer       int      `json:"max_transfer"`
	EngineMaxTransfer int      `json:"engine_max_transfer"`
	MaxQueueEntries   int      `json:"max_queue_entries"`
	NN                uint32   `json:"nn"`
	OACS              uint16   `json:"oacs"`
	AdminFeatures     []string `json:"oacs_features"`
	ONCS              uint16   `json:"oncs"`
	NVMFeatures       []string `json:"oncs_features"`
	ShadowDoorbells   bool     `json:"shadow_doorbells"`
	WriteCache        bool     `json:"volatile_write_cache"`
	SubsystemNQN      string   `json:"subnqn"`
	PoolPageSize      int      `json:"pool_page_size"`
	PoolFallback      string   `json:"pool_fallback,omitempty"`
	Namespaces        []nsDoc  `json:"namespaces"`
}

type nsDoc struct {
	NSID     uint32      `json:"nsid"`
	Blocks   uint64      `json:"blocks"`
	Capacity uint64      `json:"capacity_blocks"`
	Bytes    uint64      `json:"bytes"`
	LBASize  int         `json:"lba_size"`
	Format   int         `json:"format"`
	Formats  []formatDoc `json:"formats"`
	// CSI is the command set from the namespace's identification
	// descriptors (0, NVM, when the controller has none), CommandSet its
	// name.
	CSI        uint8  `json:"csi"`
	CommandSet string `json:"command_set"`
	Error      string `json:"error,omitempty"`
}

type formatDoc struct {
	Index    int  `json:"index"`
	LBASize  int  `json:"lba_size"`
	Metadata int  `json:"metadata"`
	RelPerf  int  `json:"relative_performance"`
	InUse    bool `json:"in_use"`
}

// The optional admin and NVM command bits, named after the NVMe base
// specification's Identify Controller OACS and ONCS fields.
var (
	oacsNames = []string{
		"security send/receive", "format NVM", "firmware download/commit",
		"namespace management", "device self-test", "directives",
		"NVMe-MI send/receive", "virtualization management",
		"doorbell buffer config", "get LBA status", "command and feature lockdown",
	}
	oncsNames = []string{
		"compare", "write uncorrectable", "dataset management", "write zeroes",
		"save/select in features", "reservations", "timestamp", "verify", "copy",
	}
)

// bitNames names the set bits of v, and any unnamed ones as bitN.
func bitNames(v uint16, names []string) []string {
	out := []string{}
	for i := range 16 {
		if v&(1<<i) == 0 {
			continue
		}
		if i < len(names) {
			out = append(out, names[i])
		} else {
			out = append(out, fmt.Sprintf("bit%d", i))
		}
	}
	return out
}

// errIdentifyFailed makes identify exit 1 after reporting every function.
var errIdentifyFailed = errors.New("identify failed")

func runIdentify(w, errw io.Writer, picked []*pcie.Function, selected bool, opt options) error {
	var fns []*pcie.Function
	var errs []functionErrDoc
	for _, f := range picked {
		isNVMe := f.Class == nvmeClassCode
		switch {
		case !selected && (!isNVMe || f.Driver != "vfio-pci"):
			// With no selector: the NVMe controllers umd can open.
		case f.Bridge || f.Role == pcie.RoleHostBridge:
			// card=... also picks the switch ports.
		case !isNVMe:
			errs = append(errs, functionErrDoc{f.BDF.String(), fmt.Sprintf("%s is not an NVMe controller (class %s, %s)", f.BDF, f.Class, orDash(f.ClassName))})
		case f.Driver != "vfio-pci":
			errs = append(errs, functionErrDoc{f.BDF.String(), fmt.Sprintf("%s is bound to %s, not vfio-pci: run `umdprobe bind %s` first", f.BDF, orNone(f.Driver), f.BDF)})
		default:
			fns = append(fns, f)
		}
	}
	switch {
	case !selected && len(fns) == 0:
		return noMatchError("no NVMe controller is bound to vfio-pci (see `umdprobe class=nvme`, and `umdprobe bind` to hand one over)")
	case len(fns) == 0 && len(errs) == 0:
		return noMatchError("the selected functions are bridges and ports, not NVMe controllers")
	}
	doc := identifyDoc{Schema: schemaIdentify, Controllers: []controllerDoc{}, Errors: errs}
	for _, f := range fns {
		c, err := identifyOne(f.BDF.String())
		if err != nil {
			doc.Errors = append(doc.Errors, functionErrDoc{f.BDF.String(), err.Error()})
			continue
		}
		doc.Controllers = append(doc.Controllers, *c)
	}
	if opt.output == "json" {
		if doc.Errors == nil {
			doc.Errors = []functionErrDoc{}
		}
		if err := writeJSON(w, doc); err != nil {
			return err
		}
	} else {
		var b strings.Builder
		for i, c := range doc.Controllers {
			if i > 0 {
				b.WriteString("\n")
			}
			writeController(&b, &c)
		}
		if _, err := io.WriteString(w, b.String()); err != nil {
			return fmt.Errorf("writing identify data: %w", err)
		}
	}
	if len(doc.Errors) > 0 {
		for _, e := range doc.Errors {
			fmt.Fprintf(errw, "umdprobe: %s\n", e.Error)
		}
		return reportedError{errIdentifyFailed}
	}
	return nil
}

// noMatchError is a match failure worded for its command (exit status 3).
type noMatchError string

func (e noMatchError) Error() string        { return string(e) }
func (e noMatchError) Is(target error) bool { return target == errNoMatch }

// reportedError was already written to stderr: run only sets the exit
// status.
type reportedError struct{ err error }

func (e reportedError) Error() string { return e.err.Error() }
func (e reportedError) Unwrap() error { return e.err }

// identifyOne opens bdf, reads Identify Controller and each active
// namespace, and closes it.
func identifyOne(bdf string) (_ *controllerDoc, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o, err := openController(ctx, bdf)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := o.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	ctrl := o.ctrl
	id := ctrl.IdentifyController()
	c := &controllerDoc{
		BDF:               bdf,
		VendorID:          fmt.Sprintf("%04x", id.VID),
		SubsystemVendorID: fmt.Sprintf("%04x", id.SSVID),
		Serial:            id.SN,
		Model:             id.MN,
		Firmware:          id.FR,
		Version:           id.VER.String(),
		ControllerID:      id.CNTLID,
		MDTS:              id.MDTS,
		MaxTransfer:       id.MaxTransfer(ctrl.CAP().MPSMIN()),
		EngineMaxTransfer: ctrl.MaxTransfer(),
		MaxQueueEntries:   ctrl.CAP().MQES(),
		NN:                id.NN,
		OACS:              id.OACS,
		AdminFeatures:     bitNames(id.OACS, oacsNames),
		ONCS:              id.ONCS,
		NVMFeatures:       bitNames(id.ONCS, oncsNames),
		ShadowDoorbells:   id.DoorbellBufferConfig(),
		WriteCache:        id.VolatileWriteCache(),
		SubsystemNQN:      id.SUBNQN,
		PoolPageSize:      o.pageSize,
		Namespaces:        []nsDoc{},
	}
	if id.VER == 0 {
		c.Version = ctrl.Version().String()
	}
	if o.fallback != nil {
		c.PoolFallback = o.fallback.Error()
	}
	for _, nsid := range ctrl.Namespaces() {
		ns, err := ctrl.IdentifyNamespace(ctx, nsid)
		if err != nil {
			c.Namespaces = append(c.Namespaces, nsDoc{NSID: nsid, Error: err.Error()})
			continue
		}
		d := nsDoc{NSID: nsid, Blocks: ns.NSZE, Capacity: ns.NCAP, Bytes: ns.NSZE * uint64(ns.LBASize), LBASize: ns.LBASize, Format: ns.Format()}
		ids, err := ctrl.NamespaceIDs(ctx, nsid)
		if err != nil {
			c.Namespaces = append(c.Namespaces, nsDoc{NSID: nsid, Error: err.Error()})
			continue
		}
		d.CSI, d.CommandSet = ids.CSI, nvmelike.CSIName(ids.CSI)
		for i, f := range ns.LBAF {
			d.Formats = append(d.Formats, formatDoc{Index: i, LBASize: 1 << f.LBADS, Metadata: int(f.MS), RelPerf: int(f.RP), InUse: i == d.Format})
		}
		c.Namespaces = append(c.Namespaces, d)
	}
	return c, nil
}

func writeController(w io.Writer, c *controllerDoc) {
	fmt.Fprintf(w, "%s  %s\n", c.BDF, c.Model)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
	}
	row("vendor", "%s (subsystem vendor %s)", c.VendorID, c.SubsystemVendorID)
	row("serial", "%s", c.Serial)
	row("model", "%s", c.Model)
	row("firmware", "%s", c.Firmware)
	row("version", "NVMe %s, controller ID %d", c.Version, c.ControllerID)
	mt := "no limit"
	if c.MaxTransfer != 0 {
		mt = size.Exact(uint64(c.MaxTransfer))
	}
	row("max transfer", "%s (MDTS %d); the engine uses %s", mt, c.MDTS, size.Exact(uint64(c.EngineMaxTransfer)))
	row("queue entries", "up to %d per queue (CAP.MQES)", c.MaxQueueEntries)
	row("namespaces", "%d active of %d (NN)", len(c.Namespaces), c.NN)
	row("admin commands", "%s (OACS 0x%04x)", wordsOrNone(c.AdminFeatures), c.OACS)
	row("NVM commands", "%s (ONCS 0x%04x)", wordsOrNone(c.NVMFeatures), c.ONCS)
	row("shadow doorbells", "%s", yesNo(c.ShadowDoorbells, "supported (doorbell buffer config)", "not supported"))
	row("write cache", "%s", yesNo(c.WriteCache, "volatile write cache present", "none"))
	if c.SubsystemNQN != "" {
		row("subsystem NQN", "%s", c.SubsystemNQN)
	}
	pool := size.Exact(uint64(c.PoolPageSize)) + " pages"
	if c.PoolFallback != "" {
		pool += " (no hugepages: fell back to small pages)"
	}
	row("DMA pool", "%s", pool)
	for _, ns := range c.Namespaces {
		if ns.Error != "" {
			row(fmt.Sprintf("namespace %d", ns.NSID), "unreadable: %s", ns.Error)
			continue
		}
		amount := size.Exact(ns.Bytes)
		if !strings.HasSuffix(amount, " bytes") {
			amount += fmt.Sprintf(" (%d bytes)", ns.Bytes)
		}
		row(fmt.Sprintf("namespace %d", ns.NSID), "%d blocks of %d bytes = %s", ns.Blocks, ns.LBASize, amount)
		if ns.CSI != nvmelike.CSINVM {
			row("  command set", "%s", ns.CommandSet)
		}
		var fs []string
		for _, f := range ns.Formats {
			s := fmt.Sprintf("#%d %d B", f.Index, f.LBASize)
			if f.Metadata != 0 {
				s += fmt.Sprintf(" + %d B metadata", f.Metadata)
			}
			if f.InUse {
				s += " (in use)"
			}
			fs = append(fs, s)
		}
		row("  formats", "%s", strings.Join(fs, ", "))
	}
	tw.Flush()
}

func wordsOrNone(ws []string) string {
	if len(ws) == 0 {
		return "none"
	}
	return strings.Join(ws, ", ")
}

func yesNo(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}
