package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config describes one guest run.
type Config struct {
	Kernel   UnpackedKernel
	Topology Topology
	// Driver is the driver NVMe functions are bound to: "vfio-pci"
	// (default) or "nvme".
	Driver string
	// Script is the shell script the guest runs as root; its exit status
	// is the run's.
	Script string
	// Files are extra host files to place in the guest: guest path →
	// host path. Directories are copied whole.
	Files map[string]string
	// MemoryMiB is the guest's memory (default 2048); CPUs its vCPUs
	// (default 2); Hugepages the 2 MiB pages reserved at boot (default
	// 128).
	MemoryMiB, CPUs, Hugepages int
	// Timeout bounds the whole run, boot included (default 10 minutes).
	Timeout time.Duration
	// Stdout receives the command's output (stdout and stderr) as it
	// comes. Console, when set, receives the kernel console as it comes.
	Stdout, Console io.Writer
	// Busybox is the static busybox to use (default /bin/busybox).
	Busybox string
	// Cache is the cache directory (default CacheDir()).
	Cache string
	// QEMU is the emulator binary (default qemu-system-x86_64).
	QEMU string
	// DiskAIO is how QEMU does the emulated disks' host I/O (-drive
	// aio=): AIOThreads or AIOIOURing; empty means DefaultAIO().
	DiskAIO string
	// Trace, when set, enables its QEMU trace events for the run and
	// counts them; "mark TEXT" lines the guest writes to its status port
	// (ttyS2) are stamped into it.
	Trace *TraceCounter
	// ExtraArgs are appended to QEMU's command line after the topology's
	// devices: a device the topologies lack (a zoned namespace, a
	// controller with one interrupt vector, ...), with any backing file
	// it needs made by the caller.
	ExtraArgs []string
}

// Result is the outcome of a run that booted.
type Result struct {
	// ExitCode is the guest command's exit status.
	ExitCode int
	// Boot is the time from starting QEMU until the guest began running
	// the command.
	Boot time.Duration
	// Total is the time from starting QEMU until it exited.
	Total time.Duration
}

// GuestError is returned when the guest did not run the command to
// completion: it failed to boot or set up, panicked, hung, or timed out.
// Console holds the tail of the kernel console; ConsoleLog the path of the
// whole log, which is kept for inspection.
type GuestError struct {
	Reason     string
	Console    string
	ConsoleLog string
}

func (e *GuestError) Error() string {
	return fmt.Sprintf("guest %s; console log kept at %s, last lines:\n%s", e.Reason, e.ConsoleLog, e.Console)
}

// Run boots a guest, runs cfg.Script in it as root and returns its exit
// status. An error means the command did not run to completion.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Driver == "" {
		cfg.Driver = "vfio-pci"
	}
	if cfg.Driver != "vfio-pci" && cfg.Driver != "nvme" {
		return Result{}, fmt.Errorf("driver %q: the guest binds NVMe functions to vfio-pci or nvme", cfg.Driver)
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 2048
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.DiskAIO == "" {
		cfg.DiskAIO = DefaultAIO()
	}
	if err := checkAIO(cfg.DiskAIO); err != nil {
		return Result{}, err
	}
	if cfg.Hugepages == 0 {
		cfg.Hugepages = 128
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.Busybox == "" {
		cfg.Busybox = "/bin/busybox"
	}
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if cfg.Cache == "" {
		c, err := CacheDir()
		if err != nil {
			return Result{}, err
		}
		cfg.Cache = c
	}

	base, err := baseImage(cfg.Cache, cfg.Kernel, cfg.Busybox)
	if err != nil {
		return Result{}, fmt.Errorf("building the base initramfs: %w", err)
	}
	dir, err := os.MkdirTemp("", "umdvm-")
	if err != nil {
		return Result{}, err
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(dir)
		}
	}()
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := writeInitrd(initrd, base, cfg); err != nil {
		return Result{}, fmt.Errorf("building the run's initramfs: %w", err)
	}
	devArgs, disks := cfg.Topology.qemuArgs(dir, cfg.MemoryMiB, cfg.CPUs, cfg.DiskAIO)
	for _, d := range disks {
		if err := createSparse(d.Path, int64(d.MiB)<<20); err != nil {
			return Result{}, err
		}
	}

	consoleLog := filepath.Join(dir, "console.log")
	console, err := os.Create(consoleLog)
	if err != nil {
		return Result{}, err
	}
	defer console.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return Result{}, err
	}
	defer statusR.Close()

	cmdline := "console=ttyS0 intel_iommu=on iommu=on quiet loglevel=4 panic=-1 clocksource=tsc tsc=reliable " +
		"8250.nr_uarts=4 rdinit=/init init_on_alloc=0 no_timer_check" + fmt.Sprintf(" hugepagesz=2M hugepages=%d", cfg.Hugepages)
	args := []string{
		"-machine", "q35,kernel-irqchip=split",
		// One host thread for all vCPUs: with multi-threaded TCG a vCPU
		// can run a stale translation of kernel text that another vCPU
		// is patching (jump labels, kprobes: text_poke_bp's int3), and
		// the guest dies of "Oops: int3" (seen on 6.12 under load).
		"-accel", "tcg,thread=single",
		"-cpu", "max",
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-smp", strconv.Itoa(cfg.CPUs),
		"-display", "none", "-monitor", "none", "-nodefaults", "-no-reboot",
		"-kernel", cfg.Kernel.Image(),
		"-initrd", initrd,
		"-append", cmdline,
		"-device", "intel-iommu,intremap=on",
		// The console, the command's output and the status lines (see
		// init.sh); a -serial chardev:NAME needs NAME defined first.
		"-chardev", "file,id=console,path=/dev/fd/3",
		"-chardev", "file,id=status,path=/dev/fd/4",
		"-serial", "chardev:console",
		"-serial", "stdio",
		"-serial", "chardev:status",
	}
	args = append(args, devArgs...)
	args = append(args, cfg.ExtraArgs...)
	var traceR, traceW *os.File
	if cfg.Trace != nil {
		events := filepath.Join(dir, "trace-events")
		if err := os.WriteFile(events, []byte(strings.Join(cfg.Trace.Events, "\n")+"\n"), 0o644); err != nil {
			return Result{}, err
		}
		if traceR, traceW, err = os.Pipe(); err != nil {
			return Result{}, err
		}
		defer traceR.Close()
		// The log backend writes trace lines to -D's file: fd 5, the
		// third of ExtraFiles.
		args = append(args, "-trace", "events="+events, "-msg", "timestamp=on", "-D", "/dev/fd/5")
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.QEMU, args...)
	consolePR, consolePW, err := os.Pipe()
	if err != nil {
		statusW.Close()
		if traceW != nil {
			traceW.Close()
		}
		return Result{}, err
	}
	cmd.ExtraFiles = []*os.File{consolePW, statusW}
	if traceW != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, traceW)
	}
	cmd.Stdout = cfg.Stdout
	var qemuErr bytes.Buffer
	cmd.Stderr = &qemuErr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second

	start := time.Now()
	if err := cmd.Start(); err != nil {
		consolePR.Close()
		consolePW.Close()
		statusW.Close()
		if traceW != nil {
			traceW.Close()
		}
		return Result{}, fmt.Errorf("starting %s (install qemu-system-x86): %w", cfg.QEMU, err)
	}
	consolePW.Close()
	statusW.Close()
	traceDone := make(chan struct{})
	if traceW != nil {
		traceW.Close()
		go func() {
			defer close(traceDone)
			cfg.Trace.consume(traceR)
		}()
	} else {
		close(traceDone)
	}

	// Copy the console to its log (and to cfg.Console).
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		var w io.Writer = console
		if cfg.Console != nil {
			w = io.MultiWriter(console, cfg.Console)
		}
		io.Copy(w, consolePR)
		consolePR.Close()
	}()

	// Read status lines.
	var res Result
	exitCode, setupFailed := -1, false
	statusDone := make(chan struct{})
	go func() {
		defer close(statusDone)
		sc := bufio.NewScanner(statusR)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 0 {
				continue
			}
			switch f[0] {
			case "ready":
				res.Boot = time.Since(start)
			case "exit":
				if len(f) > 1 {
					if n, err := strconv.Atoi(f[1]); err == nil {
						exitCode = n
					}
				}
			case "stage":
				if os.Getenv("UMD_STAGES") != "" {
					fmt.Fprintf(os.Stderr, "umdvm: %.2fs %s\n", time.Since(start).Seconds(), sc.Text())
				}
			case "setup-failed":
				setupFailed = true
			case "mark":
				if cfg.Trace != nil {
					_, text, _ := strings.Cut(sc.Text(), " ")
					cfg.Trace.mark(text, time.Now())
				}
			}
		}
	}()

	waitErr := cmd.Wait()
	res.Total = time.Since(start)
	<-statusDone
	<-consoleDone
	<-traceDone
	console.Sync()

	guestErr := func(reason string) error {
		keep = true
		// Disk images are large and useless after the run.
		for _, d := range disks {
			os.Remove(d.Path)
		}
		os.Remove(initrd)
		return &GuestError{Reason: reason, Console: consoleTail(consoleLog, 40), ConsoleLog: consoleLog}
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return res, guestErr(fmt.Sprintf("timed out after %s", cfg.Timeout))
	case ctx.Err() != nil:
		return res, guestErr("run was cancelled")
	case setupFailed:
		return res, guestErr("setup failed (see the command output above)")
	case exitCode < 0 && waitErr != nil:
		return res, guestErr(fmt.Sprintf("QEMU failed: %v: %s", waitErr, strings.TrimSpace(qemuErr.String())))
	case exitCode < 0:
		return res, guestErr("stopped before the command finished (kernel panic or crash?)")
	}
	res.ExitCode = exitCode
	return res, nil
}

// writeInitrd writes the run's initrd: the cached base image followed by
// an archive with the run's configuration, script and files.
func writeInitrd(dst, base string, cfg Config) error {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	in, err := os.Open(base)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	in.Close()
	if err != nil {
		return err
	}
	w := newCPIOWriter(out)
	namespaces := 0
	for _, c := range cfg.Topology.Controllers() {
		namespaces += len(c.Namespaces)
	}
	conf := fmt.Sprintf("UMD_TOPOLOGY=%s\nUMD_KERNEL=%s\nUMD_DRIVER=%s\nUMD_HUGEPAGES=%d\nUMD_NAMESPACES=%d\n",
		shellQuote(cfg.Topology.Name), shellQuote(cfg.Kernel.Name), shellQuote(cfg.Driver), cfg.Hugepages, namespaces)
	w.File("umd/config", 0o644, []byte(conf))
	w.File("umd/run.sh", 0o755, []byte(cfg.Script))
	w.Dir("umd/bin")
	w.Dir("umd/work")
	for guestPath, hostPath := range cfg.Files {
		st, err := os.Stat(hostPath)
		if err != nil {
			return err
		}
		if st.IsDir() {
			w.CopyTree(guestPath, hostPath)
		} else {
			w.CopyFile(guestPath, hostPath)
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return out.Close()
}

func createSparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// consoleTail returns the end of a console log worth showing: from the
// first line of the last kernel crash report (an Oops, a BUG or the panic
// itself) when there is one near the end, else the last n lines.
func consoleTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	start := max(len(lines)-n, 0)
	const window, most = 300, 150
	for i := len(lines) - 1; i >= max(len(lines)-window, 0); i-- {
		if l := lines[i]; strings.Contains(l, "Kernel panic") || strings.Contains(l, "Oops:") || strings.Contains(l, "BUG:") {
			start = i
		}
	}
	if len(lines)-start > most {
		lines = append(lines[start:start+most/2:start+most/2], append([]string{"[...]"}, lines[len(lines)-most/2:]...)...)
		return strings.Join(lines, "\n")
	}
	return strings.Join(lines[start:], "\n")
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
