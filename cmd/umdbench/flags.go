package main

import (
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/umdkit/umd/internal/bench"
	"github.com/umdkit/umd/internal/size"
)

// sizeFlag is a byte count written as fio writes them (4k, 1m, 2g).
type sizeFlag struct {
	v   int64
	set bool
}

func (f *sizeFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.FormatInt(f.v, 10)
}

func (f *sizeFlag) Set(s string) error {
	v, err := size.Parse(s)
	if err != nil {
		return err
	}
	f.v, f.set = v, true
	return nil
}

// durationFlag is a time written as fio writes them: seconds, or with a
// unit (200ms, 5s, 2m).
type durationFlag struct {
	v   time.Duration
	set bool
}

func (f *durationFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return f.v.String()
}

func (f *durationFlag) Set(s string) error {
	v, err := bench.ParseDuration(s)
	if err != nil {
		return err
	}
	f.v, f.set = v, true
	return nil
}

// nsidFlag is --nsid: namespace IDs (1, or 1,2), or all for every active
// namespace of each device.
type nsidFlag struct {
	ids []uint32
	all bool
}

func (f *nsidFlag) String() string {
	if f == nil {
		return ""
	}
	if f.all {
		return "all"
	}
	s := make([]string, len(f.ids))
	for i, id := range f.ids {
		s[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(s, ",")
}

func (f *nsidFlag) Set(s string) error {
	if s == "all" {
		f.ids, f.all = nil, true
		return nil
	}
	var ids []uint32
	for _, part := range strings.Split(s, ",") {
		id, err := strconv.ParseUint(strings.TrimSpace(part), 10, 32)
		if err != nil || id == 0 || id > 0xfffffffe {
			return fmt.Errorf("%q: want namespace IDs from 1 to 4294967294, comma-separated, or all", s)
		}
		if slices.Contains(ids, uint32(id)) {
			return fmt.Errorf("%q: namespace %d twice", s, id)
		}
		ids = append(ids, uint32(id))
	}
	f.ids, f.all = ids, false
	return nil
}

// several reports whether the run may cover more than one namespace of a
// device: job names then carry the namespace.
func (f *nsidFlag) several() bool { return f.all || len(f.ids) > 1 }

// verifyFlag is fio's --verify: alone it means on; it also takes
// crc32c (the only checksum umdbench uses), 1/0, true/false and none.
type verifyFlag struct{ on bool }

func (f *verifyFlag) String() string {
	if f != nil && f.on {
		return "crc32c"
	}
	return "none"
}

func (f *verifyFlag) Set(s string) error {
	switch strings.ToLower(s) {
	case "", "1", "true", "crc32c", "crc32c-intel", "on":
		f.on = true
	case "0", "false", "none", "off":
		f.on = false
	default:
		return fmt.Errorf("--verify=%s: umdbench checks crc32c only (or none)", s)
	}
	return nil
}

func (f *verifyFlag) IsBoolFlag() bool { return true }

// onOffFlag is a switch written on or off (also 1/0, true/false).
type onOffFlag struct{ on bool }

func (f *onOffFlag) String() string {
	if f != nil && f.on {
		return "on"
	}
	return "off"
}

func (f *onOffFlag) Set(s string) error {
	switch strings.ToLower(s) {
	case "on", "1", "true":
		f.on = true
	case "off", "0", "false":
		f.on = false
	default:
		return fmt.Errorf("%q: want on or off", s)
	}
	return nil
}

// options are the parsed command line.
type options struct {
	rw         string
	rwmixread  int
	rwmixwrite int
	bs         sizeFlag
	iodepth    int
	numjobs    int
	runtime    durationFlag
	timeBased  bool
	size       sizeFlag
	offset     sizeFlag
	numberIOs  uint64
	rampTime   durationFlag
	verify     verifyFlag
	verifyPass uint
	completion string
	pollSpins  int
	shadowDB   onOffFlag
	dataPtr    string
	clock      string
	nsid       nsidFlag
	disableLat bool
	traceFault bool
	seed       uint64
	format     string
	outFile    string
	plot       string
	sysfs      string

	broker string

	sim     bool
	simSize sizeFlag
	simLBA  int

	help bool
	// given records the flags set on the command line, for JSON's
	// "global options".
	given map[string]string
}

// usageError is an error in how umdbench was called: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("umdbench", flag.ContinueOnError)
	fs.StringVar(&o.rw, "rw", "read", "")
	fs.StringVar(&o.rw, "readwrite", "read", "")
	fs.IntVar(&o.rwmixread, "rwmixread", 50, "")
	fs.IntVar(&o.rwmixwrite, "rwmixwrite", -1, "")
	o.bs = sizeFlag{v: 4096}
	fs.Var(&o.bs, "bs", "")
	fs.Var(&o.bs, "blocksize", "")
	fs.IntVar(&o.iodepth, "iodepth", 1, "")
	fs.IntVar(&o.numjobs, "numjobs", 1, "")
	fs.Var(&o.runtime, "runtime", "")
	fs.BoolVar(&o.timeBased, "time_based", false, "")
	fs.Var(&o.size, "size", "")
	fs.Var(&o.offset, "offset", "")
	fs.Uint64Var(&o.numberIOs, "number_ios", 0, "")
	fs.Var(&o.rampTime, "ramp_time", "")
	fs.Var(&o.verify, "verify", "")
	fs.UintVar(&o.verifyPass, "verify_pass", 1, "")
	fs.StringVar(&o.completion, "completion", "poll", "")
	fs.IntVar(&o.pollSpins, "poll_spins", 1000, "")
	fs.Var(&o.shadowDB, "shadow_doorbells", "")
	fs.StringVar(&o.dataPtr, "data_pointer", "auto", "")
	fs.StringVar(&o.clock, "clocksource", "", "")
	o.nsid.ids = []uint32{1}
	fs.Var(&o.nsid, "nsid", "")
	fs.BoolVar(&o.disableLat, "disable_lat", false, "")
	fs.BoolVar(&o.traceFault, "trace_faults", false, "")
	fs.Uint64Var(&o.seed, "randseed", 0x5eed, "")
	fs.StringVar(&o.format, "o", "text", "")
	fs.StringVar(&o.format, "output-format", "text", "")
	fs.StringVar(&o.outFile, "output", "", "")
	fs.StringVar(&o.plot, "plot", "", "")
	fs.StringVar(&o.sysfs, "sysfs", "", "")
	fs.BoolVar(&o.sim, "sim", false, "")
	fs.StringVar(&o.broker, "broker", "", "")
	fs.Var(&o.simSize, "sim_size", "")
	fs.IntVar(&o.simLBA, "sim_lba", 512, "")
	fs.BoolVar(&o.help, "h", false, "")
	fs.BoolVar(&o.help, "help", false, "")
	fs.SetOutput(discard{})
	return fs
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// parseArgs parses flags wherever they are among the arguments (the flag
// package alone stops at the first non-flag) and returns the selectors.
// After "--" everything is a selector.
func parseArgs(args []string) (*options, []string, error) {
	o := &options{}
	fs := newFlagSet(o)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, nil, usageError{err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	o.given = map[string]string{}
	fs.Visit(func(f *flag.Flag) { o.given[f.Name] = f.Value.String() })
	return o, pos, nil
}

// workload turns the options into a workload; Size is left for the caller
// to default from the namespace when --size was not given.
func (o *options) workload() (bench.Workload, error) {
	var w bench.Workload
	var err error
	if w.RW, err = bench.ParseRW(o.rw); err != nil {
		return w, usageError{err}
	}
	if w.Completion, err = bench.ParseCompletion(o.completion); err != nil {
		return w, usageError{err}
	}
	if w.DataPointer, err = bench.ParseDataPointer(o.dataPtr); err != nil {
		return w, usageError{err}
	}
	if w.Clock, err = clockSource(o.clock); err != nil {
		return w, usageError{err}
	}
	w.RWMixRead = o.rwmixread
	if o.rwmixwrite >= 0 {
		if _, both := o.given["rwmixread"]; both && o.rwmixread+o.rwmixwrite != 100 {
			return w, usageError{fmt.Errorf("--rwmixread %d and --rwmixwrite %d do not add up to 100", o.rwmixread, o.rwmixwrite)}
		}
		w.RWMixRead = 100 - o.rwmixwrite
	}
	if o.bs.v > 1<<30 {
		return w, usageError{fmt.Errorf("--bs %s: too large", bench.FormatSize(o.bs.v))}
	}
	w.BlockSize = int(o.bs.v)
	w.IODepth = o.iodepth
	w.Runtime = o.runtime.v
	w.TimeBased = o.timeBased
	w.RampTime = o.rampTime.v
	w.Size = o.size.v
	w.Offset = o.offset.v
	w.NumberIOs = o.numberIOs
	w.Verify = o.verify.on
	w.VerifyPass = uint32(o.verifyPass)
	w.PollSpins = o.pollSpins
	w.NoLatency = o.disableLat
	w.Seed = o.seed
	switch {
	case !o.runtime.set && !o.size.set && o.numberIOs == 0:
		// Neither a time nor an amount: ten seconds over the whole
		// namespace, as a first look.
		w.Runtime, w.TimeBased = 10*time.Second, true
	case o.runtime.set && !o.size.set && o.numberIOs == 0:
		// A time and no amount: that long, going round the namespace
		// (fio would stop after one pass, which on a small namespace
		// comes long before the time asked for).
		w.TimeBased = true
	}
	switch {
	case o.runtime.set && o.runtime.v <= 0 && w.TimeBased:
		return w, usageError{fmt.Errorf("--runtime %v: a time-based run (--runtime alone, or --time_based) needs a time above zero; for an amount of I/O give --size or --number_ios", o.runtime.v)}
	case o.numjobs < 1 || o.numjobs > 1024:
		return w, usageError{fmt.Errorf("--numjobs %d: want 1 to 1024", o.numjobs)}
	case o.verifyPass > 0xffffffff:
		return w, usageError{fmt.Errorf("--verify_pass %d: want 0 to 4294967295", o.verifyPass)}
	case o.pollSpins < 1:
		return w, usageError{fmt.Errorf("--poll_spins %d: want at least 1", o.pollSpins)}
	case o.format != "text" && o.format != "json" && o.format != "normal":
		return w, usageError{fmt.Errorf("--output-format %q: want text or json", o.format)}
	}
	if err := checkPlotName(o.plot); err != nil {
		return w, usageError{err}
	}
	// Size 0 is defaulted from the namespace; check the rest.
	check := w
	if check.Size == 0 {
		check.Size = int64(w.BlockSize)
	}
	if err := check.Check(); err != nil {
		return w, usageError{err}
	}
	return w, nil
}

// clockSource parses --clocksource; "" (not given) is fio's default: the
// CPU's counter where the kernel keeps time with it.
func clockSource(s string) (bench.ClockSource, error) {
	if s == "" {
		return bench.DefaultClockSource(), nil
	}
	c, err := bench.ParseClockSource(s)
	if err != nil {
		return c, err
	}
	if c == bench.ClockCPU {
		if err := bench.TSCReliable(); err != nil {
			return c, fmt.Errorf("--clocksource cpu: %w; use clock_gettime", err)
		}
	}
	return c, nil
}

// checkPlotName accepts an empty --plot (no plot) or a name ending in
// .svg or .png.
func checkPlotName(name string) error {
	switch ext := strings.ToLower(filepath.Ext(name)); {
	case name == "" || ext == ".svg" || ext == ".png":
		return nil
	default:
		return fmt.Errorf("--plot %s: unknown plot format %q; name the file .svg or .png", name, ext)
	}
}
