package qemu

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// A hostTool is a program the harness runs on the host and the Debian
// package that provides it.
type hostTool struct {
	path    string // absolute path, or a name looked up in PATH
	pkg     string
	purpose string
}

var hostTools = []hostTool{
	{"qemu-system-x86_64", "qemu-system-x86", "runs the guest"},
	{"/bin/busybox", "busybox-static", "is the guest's userland"},
	{"depmod", "kmod", "indexes the guest's kernel modules"},
	{"xz", "xz-utils", "decompresses 6.12's modules"},
	{"zstd", "zstd", "decompresses zstd-compressed modules"},
	{"dpkg", "dpkg", "unpacks the kernel packages"},
	{"apt-get", "apt", "downloads the kernel packages"},
	{"/usr/include/linux/vfio.h", "linux-libc-dev", "is the kernel ABI the host tests compare internal/vfioabi and dmabuf with"},
	{"/usr/include/stdio.h", "libc6-dev", "lets those tests compile their C programs"},
	{"make", "make", "builds the project's kernel modules (kmod/)"},
	{"gcc", "gcc", "compiles kernel modules (the guest kernels are built with gcc-12)"},
	{"pahole", "dwarves", "adds BTF to modules built for 6.12"},
}

// missingTools returns the packages whose tools are not on this host.
func missingTools() []hostTool {
	var missing []hostTool
	for _, t := range hostTools {
		if strings.HasPrefix(t.path, "/") {
			if _, err := os.Stat(t.path); err == nil {
				continue
			}
		} else if _, err := exec.LookPath(t.path); err == nil {
			continue
		}
		missing = append(missing, t)
	}
	// The busybox binary must be the static one: the guest has no libc.
	if out, err := exec.Command("file", "-L", "/bin/busybox").Output(); err == nil && bytes.Contains(out, []byte("dynamically linked")) {
		missing = append(missing, hostTool{"/bin/busybox", "busybox-static", "is the guest's userland (the installed busybox is dynamically linked)"})
	}
	return missing
}

// CheckHostTools returns an error naming what is missing, and the command
// that installs it, when a tool the harness needs is not on this host.
func CheckHostTools() error {
	missing := missingTools()
	if len(missing) == 0 {
		return nil
	}
	var b strings.Builder
	for _, t := range missing {
		fmt.Fprintf(&b, "  %s (package %s) %s\n", t.path, t.pkg, t.purpose)
	}
	return fmt.Errorf("missing host tools:\n%sinstall them with:\n  %s", b.String(), installCommand(missing))
}

func installCommand(missing []hostTool) string {
	seen := map[string]bool{}
	var pkgs []string
	for _, t := range missing {
		if !seen[t.pkg] {
			seen[t.pkg] = true
			pkgs = append(pkgs, t.pkg)
		}
	}
	return "apt-get update && apt-get install -y --no-install-recommends " + strings.Join(pkgs, " ")
}

// EnsureHostTools installs missing host tools with apt-get when running as
// root; otherwise it returns an error with the exact commands to run.
func EnsureHostTools(log io.Writer) error {
	missing := missingTools()
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w\n(not root, so nothing was installed: run that as root, e.g. with sudo)", CheckHostTools())
	}
	cmdline := installCommand(missing)
	fmt.Fprintf(log, "umdvm: installing host tools: %s\n", cmdline)
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("installing host tools (%s): %w", cmdline, err)
	}
	if len(missingTools()) != 0 {
		return CheckHostTools()
	}
	return nil
}

// ShellJoin quotes each argument for a POSIX shell and joins them.
func ShellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}
