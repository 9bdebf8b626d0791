package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/umdkit/umd/qemu"
)

// cmdTest compiles the guest tests of the given packages, runs them all in
// one boot of the guest and reports like go test.
func cmdTest(ctx context.Context, args []string) (int, error) {
	started := time.Now()
	o := parseOptions("test")
	if o.fs.Lookup("topology").Value.String() == "single" && os.Getenv("TOPOLOGY") == "" {
		// Guest tests default to the richest topology.
		o.fs.Set("topology", "cards")
	}
	var run string
	o.fs.StringVar(&run, "run", "", "run only the tests matching this regexp (as go test -run)")
	if err := o.fs.Parse(args); err != nil {
		return 2, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return 125, err
	}
	pkgs, err := qemu.FindGuestTests(root, o.fs.Args())
	if err != nil {
		return 125, err
	}
	if pkgs, err = qemu.FilterTests(pkgs, run); err != nil {
		return 2, err
	}
	if len(pkgs) == 0 {
		return 1, fmt.Errorf("no guest tests (files with //go:build %s) in %v matching -run %q", qemu.GuestBuildTag, o.fs.Args(), run)
	}
	cfg, bin, err := o.prepare()
	if bin != "" {
		defer os.RemoveAll(bin)
	}
	if err != nil {
		return 125, err
	}
	testDir := filepath.Join(bin, "tests")
	if err := qemu.CompileGuestTests(root, testDir, pkgs); err != nil {
		return 125, err
	}
	for k, v := range qemu.GuestTestFiles(pkgs) {
		cfg.Files[k] = v
	}
	// Top-level names were filtered above; a subtest pattern goes to
	// the binaries.
	_, sub, _ := strings.Cut(run, "/")
	cfg.Script = qemu.GuestTestScript(pkgs, sub)
	rep := &qemu.TestReporter{Out: os.Stdout, Verbose: o.verbose,
		Label: fmt.Sprintf("[guest %s %s %s]", cfg.Kernel.Release, o.topology, o.driver)}
	cfg.Stdout = rep
	prep := time.Since(started)
	res, err := qemu.Run(ctx, cfg)
	rep.Flush()
	if err != nil {
		fmt.Printf("guest-%s: %d passed, %d failed, %d skipped\n", o.kernel, rep.Passed, rep.Failed+1, rep.Skipped)
		return 1, err
	}
	fmt.Fprintf(os.Stderr, "umdvm: guest %s ready in %.1fs (%.1fs after umdvm started, building included); tests done after %.1fs\n",
		cfg.Kernel.Release, res.Boot.Seconds(), (prep + res.Boot).Seconds(), res.Total.Seconds())
	fmt.Printf("guest-%s: %d passed, %d failed, %d skipped\n", o.kernel, rep.Passed, rep.Failed, rep.Skipped)
	if res.ExitCode != 0 || rep.Failed > 0 {
		return 1, nil
	}
	return 0, nil
}
