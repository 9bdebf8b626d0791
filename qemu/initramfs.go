package qemu

import (
	"bufio"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed init.sh
var initScript []byte

// GuestModules are the kernel modules every guest carries (with their
// dependencies): VFIO for user-space drivers and the kernel's own NVMe
// driver for runs that ask for it.
var GuestModules = []string{"vfio-pci", "vfio_iommu_type1", "nvme"}

// baseImage returns the cached base initramfs for kernel u: busybox, the
// guest modules (decompressed, with a modules.dep busybox modprobe can
// read) and the init script. It is rebuilt whenever one of those changes.
func baseImage(cache string, u UnpackedKernel, busybox string) (string, error) {
	mods, err := moduleClosure(u.ModulesDir(), GuestModules)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(busybox)
	if err != nil {
		return "", fmt.Errorf("busybox (install busybox-static): %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%d %d\n", u.Release, strings.Join(mods, " "), st.Size(), st.ModTime().UnixNano())
	h.Write(initScript)
	key := hex.EncodeToString(h.Sum(nil))[:16]
	out := filepath.Join(cache, "initramfs", u.Release+"-"+key+".cpio")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}

	// Stage the module tree, so depmod can index it.
	stage, err := os.MkdirTemp(filepath.Dir(out), "stage-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	modRoot := filepath.Join(stage, "lib", "modules", u.Release)
	for _, m := range mods {
		dst := filepath.Join(modRoot, strings.TrimSuffix(strings.TrimSuffix(m, ".xz"), ".zst"))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		if err := decompressModule(filepath.Join(u.ModulesDir(), m), dst); err != nil {
			return "", err
		}
	}
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		if data, err := os.ReadFile(filepath.Join(u.ModulesDir(), f)); err == nil {
			if err := os.WriteFile(filepath.Join(modRoot, f), data, 0o644); err != nil {
				return "", err
			}
		}
	}
	if b, err := exec.Command("depmod", "-b", stage, u.Release).CombinedOutput(); err != nil {
		return "", fmt.Errorf("depmod on the guest modules: %w: %s", err, b)
	}

	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp)
	w := newCPIOWriter(f)
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "root", "mnt", "etc", "usr/bin", "usr/sbin", "sbin"} {
		w.Dir(d)
	}
	w.CopyFile("bin/busybox", busybox)
	applets, err := busyboxApplets(busybox)
	if err != nil {
		f.Close()
		return "", err
	}
	for _, a := range applets {
		if a != "bin/busybox" {
			w.Symlink(a, "/bin/busybox")
		}
	}
	w.File("init", 0o755, initScript)
	w.File("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	w.File("etc/group", 0o644, []byte("root:x:0:\n"))
	w.CopyTree("lib/modules", filepath.Join(stage, "lib", "modules"))
	if err := w.Close(); err != nil {
		f.Close()
		return "", fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return out, os.Rename(tmp, out)
}

// busyboxApplets returns the install paths of every applet, without the
// leading slash ("bin/sh", "sbin/modprobe", …).
func busyboxApplets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full (is it busybox-static?): %w", busybox, err)
	}
	var applets []string
	for _, l := range strings.Fields(string(out)) {
		applets = append(applets, strings.TrimPrefix(l, "/"))
	}
	return applets, nil
}

// moduleClosure returns the modules.dep paths of the named modules and
// everything they depend on, sorted. Module names match with - and _
// treated alike, as modprobe does.
func moduleClosure(modDir string, names []string) ([]string, error) {
	f, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("reading the module index: %w", err)
	}
	defer f.Close()
	return parseModuleClosure(f, names)
}

func parseModuleClosure(r io.Reader, names []string) ([]string, error) {
	deps := map[string][]string{}
	byName := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		byName[moduleName(mod)] = mod
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var visit func(string)
	visit = func(m string) {
		if seen[m] {
			return
		}
		seen[m] = true
		for _, d := range deps[m] {
			visit(d)
		}
	}
	for _, n := range names {
		m, ok := byName[moduleName(n)]
		if !ok {
			return nil, fmt.Errorf("kernel module %s not found in modules.dep", n)
		}
		visit(m)
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out, nil
}

// moduleName turns "kernel/drivers/vfio/pci/vfio-pci.ko.xz" or "vfio-pci"
// into "vfio_pci".
func moduleName(p string) string {
	b := path.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// decompressModule copies a module, decompressing .ko.xz and .ko.zst:
// busybox modprobe loads only plain .ko files.
func decompressModule(src, dst string) error {
	var cmd *exec.Cmd
	switch {
	case strings.HasSuffix(src, ".xz"):
		cmd = exec.Command("xz", "-dc", src)
	case strings.HasSuffix(src, ".zst"):
		cmd = exec.Command("zstd", "-dcq", src)
	default:
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	cmd.Stdout = out
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		out.Close()
		return fmt.Errorf("decompressing %s: %w: %s", src, err, errb.String())
	}
	return out.Close()
}
