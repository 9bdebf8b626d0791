package qemu

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// HostPrograms are dynamically linked host programs a run can carry into
// the guest on request (umdvm run -with NAME): the guest has no C library
// of its own, so the program travels with its shared-library closure and
// the dynamic loader. Each maps to the Debian package that provides it,
// which `umdvm deps -with NAME` installs, or to "" for a program Debian
// does not package, which the user builds and puts on PATH.
var HostPrograms = map[string]string{
	"fio": "fio",
	// SPDK's perf tool (build/bin/spdk_nvme_perf since SPDK 24.x,
	// build/examples/perf in 23.x), for bench-compare.
	"spdk_nvme_perf": "",
}

// notInstalled is the error for host program name missing from PATH.
func notInstalled(name, pkg string, err error) error {
	if pkg == "" {
		return fmt.Errorf("%s is not on the host's PATH, and Debian does not package it: build it (for spdk_nvme_perf: SPDK's build/bin/spdk_nvme_perf, see docs/performance.md) and put it on PATH, with its shared libraries where ldd finds them (ld.so.conf or LD_LIBRARY_PATH): %w", name, err)
	}
	return fmt.Errorf("%s is not installed on the host (apt-get install %s, or umdvm deps -with %s): %w", name, pkg, name, err)
}

// HostProgramFiles returns the guest files that run the host program name
// in the guest: the binary at umd/NAME/NAME, its libraries (as ldd
// resolves them on the host) flat in umd/NAME/lib, the dynamic loader at
// umd/NAME/ld.so, and a wrapper script written into binDir (which the
// caller places at umd/bin, the guest's PATH) that starts the binary
// through the loader with that library path. The result maps guest paths
// to host paths, for Config.Files.
func HostProgramFiles(name, binDir string) (map[string]string, error) {
	pkg, ok := HostPrograms[name]
	if !ok {
		return nil, fmt.Errorf("-with %s: the guest can carry %s", name, strings.Join(hostProgramNames(), ", "))
	}
	bin, err := exec.LookPath(name)
	if err != nil {
		return nil, notInstalled(name, pkg, err)
	}
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	libs, loader, err := parseLDD(strings.NewReader(string(out)))
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	if loader == "" {
		return nil, fmt.Errorf("ldd %s: no dynamic loader (is it a static binary? then copy it as it is)", bin)
	}
	dir := "umd/" + name
	files := map[string]string{
		dir + "/" + name: bin,
		dir + "/ld.so":   loader,
	}
	for _, l := range libs {
		files[dir+"/lib/"+path.Base(l)] = l
	}
	wrapper := fmt.Sprintf("#!/bin/sh\n# %s from the host, with its libraries (umdvm -with %s).\nexec /%s/ld.so --library-path /%s/lib /%s/%s \"$@\"\n",
		name, name, dir, dir, dir, name)
	if err := os.WriteFile(filepath.Join(binDir, name), []byte(wrapper), 0o755); err != nil {
		return nil, err
	}
	return files, nil
}

func hostProgramNames() []string {
	var names []string
	for n := range HostPrograms {
		names = append(names, n)
	}
	return names
}

// parseLDD reads ldd's output: the libraries' resolved paths, in order,
// and the dynamic loader. A library ldd could not find is an error.
func parseLDD(r io.Reader) (libs []string, loader string, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		name, target, arrow := strings.Cut(l, " => ")
		switch {
		case arrow && strings.HasPrefix(target, "not found"):
			return nil, "", fmt.Errorf("%s not found", name)
		case arrow:
			if p, _, _ := strings.Cut(target, " ("); strings.HasPrefix(p, "/") {
				libs = append(libs, p)
			}
		case strings.HasPrefix(l, "/"):
			loader, _, _ = strings.Cut(l, " (")
		}
		// The rest (linux-vdso.so.1) is the kernel's, not a file.
	}
	return libs, loader, sc.Err()
}

// EnsureHostProgram installs the Debian package of host program name
// (one of HostPrograms) with apt-get when it is missing and this process
// runs as root; otherwise a missing program is an error with the command
// that installs it.
func EnsureHostProgram(log io.Writer, name string) error {
	pkg, ok := HostPrograms[name]
	if !ok {
		return fmt.Errorf("-with %s: the guest can carry %s", name, strings.Join(hostProgramNames(), ", "))
	}
	if _, err := exec.LookPath(name); err == nil {
		return nil
	} else if pkg == "" {
		return notInstalled(name, pkg, err)
	}
	cmdline := installCommand([]hostTool{{name, pkg, ""}})
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s is not installed on the host; install it with:\n  %s\n(not root, so nothing was installed)", name, cmdline)
	}
	fmt.Fprintf(log, "umdvm: installing %s: %s\n", name, cmdline)
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("installing %s (%s): %w", name, cmdline, err)
	}
	if _, err := exec.LookPath(name); err != nil {
		return fmt.Errorf("%s still missing after %s: %w", name, cmdline, err)
	}
	return nil
}
