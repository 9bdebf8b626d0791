package qemu

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The project's own kernel modules live under kmod/, one directory per
// module with a Kbuild file. The harness builds each against every guest
// kernel's headers (Debian's linux-headers packages, built with the same
// gcc-12 as the host's) and puts the result in the guest at
// /lib/modules/RELEASE/extra/, where `modprobe NAME` finds it.

// KernelModuleDirs returns the module source directories under
// moduleRoot/kmod.
func KernelModuleDirs(moduleRoot string) ([]string, error) {
	kbuilds, err := filepath.Glob(filepath.Join(moduleRoot, "kmod", "*", "Kbuild"))
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, k := range kbuilds {
		dirs = append(dirs, filepath.Dir(k))
	}
	return dirs, nil
}

// kmodTools are the host tools BuildKernelModules needs, picked from
// hostTools by name.
var kmodTools = func() []hostTool {
	var tools []hostTool
	for _, t := range hostTools {
		if t.path == "make" || t.path == "gcc" || t.path == "pahole" {
			tools = append(tools, t)
		}
	}
	return tools
}()

// Headers returns the kernel build directory for u
// (.../usr/src/linux-headers-RELEASE), fetching and unpacking the
// linux-headers, linux-headers-common and linux-kbuild packages into the
// cache first when needed.
func (f *Fetcher) Headers(u UnpackedKernel) (string, error) {
	root := filepath.Join(f.Cache, "headers", u.Release)
	build := filepath.Join(root, "usr", "src", "linux-headers-"+u.Release)
	if _, err := os.Stat(filepath.Join(root, ".complete")); err == nil {
		return build, nil
	}
	if err := f.prepareApt(); err != nil {
		return "", fmt.Errorf("fetching headers for %s: %w", u.Release, err)
	}
	pkg := "linux-headers-" + u.Release
	show, err := f.apt(f.Cache, "apt-cache", "show", pkg)
	if err != nil {
		return "", fmt.Errorf("looking up %s: %w", pkg, err)
	}
	pkgs := append([]string{pkg}, headerDependencies(string(show))...)
	dl, err := os.MkdirTemp(f.Cache, "download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dl)
	f.logf("umdvm: downloading %s into %s", strings.Join(pkgs, " "), f.Cache)
	if _, err := f.apt(dl, "apt-get", append([]string{"-q", "download"}, pkgs...)...); err != nil {
		return "", fmt.Errorf("downloading the headers of %s: %w", u.Release, err)
	}
	tmp := root + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	for _, d := range debs {
		if out, err := exec.Command("dpkg", "-x", d, tmp).CombinedOutput(); err != nil {
			return "", fmt.Errorf("unpacking %s: %w: %s", d, err, out)
		}
	}
	// The arch package's Makefile includes the common package's by its
	// absolute installed path (/usr/src/linux-headers-X-common/Makefile);
	// point it into the cache instead.
	mk := filepath.Join(tmp, "usr", "src", "linux-headers-"+u.Release, "Makefile")
	data, err := os.ReadFile(mk)
	if err != nil {
		return "", fmt.Errorf("headers of %s: %w", u.Release, err)
	}
	if err := os.WriteFile(mk, []byte(relocateHeaders(string(data), root)), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), []byte(strings.Join(pkgs, "\n")+"\n"), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		return "", err
	}
	return build, nil
}

// relocateHeaders points the arch headers package's Makefile, which names
// the installed paths (bookworm's: "include /usr/src/linux-headers-X-common/
// Makefile"; Debian's 7.x packages also set "KBUILD_OUTPUT=/usr/src/…"),
// into the copy unpacked under root.
func relocateHeaders(makefile, root string) string {
	src := filepath.Join(root, "usr", "src") + "/"
	return strings.NewReplacer(" /usr/src/", " "+src, "=/usr/src/", "="+src).Replace(makefile)
}

// headerDependencies picks the linux-headers-*-common and linux-kbuild-*
// packages out of `apt-cache show linux-headers-RELEASE`.
func headerDependencies(show string) []string {
	var deps []string
	seen := map[string]bool{}
	for _, line := range strings.Split(show, "\n") {
		rest, ok := strings.CutPrefix(line, "Depends: ")
		if !ok {
			continue
		}
		for _, alt := range strings.Split(rest, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(alt), " ")
			if (strings.HasPrefix(name, "linux-headers-") && strings.HasSuffix(name, "-common")) || strings.HasPrefix(name, "linux-kbuild-") {
				if !seen[name] {
					seen[name] = true
					deps = append(deps, name)
				}
			}
		}
		break // the first stanza is the newest version
	}
	return deps
}

// BuildKernelModules builds every module under moduleRoot/kmod against
// the kernel build directory headers and returns the .ko files. Builds
// happen in a copy under the cache, so the source tree stays clean and
// rebuilds are incremental.
func BuildKernelModules(cache, moduleRoot, release, headers string, log io.Writer) ([]string, error) {
	dirs, err := KernelModuleDirs(moduleRoot)
	if err != nil || len(dirs) == 0 {
		return nil, err
	}
	var missing []hostTool
	for _, t := range kmodTools {
		if _, err := exec.LookPath(t.path); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("building kernel modules needs %s: %s", missing[0].path, installCommand(missing))
	}
	var kos []string
	for _, src := range dirs {
		name := filepath.Base(src)
		build := filepath.Join(cache, "kmod", release, name)
		if err := syncDir(src, build); err != nil {
			return nil, fmt.Errorf("copying kmod/%s: %w", name, err)
		}
		cmd := exec.Command("make", "-C", headers, "M="+build, "modules")
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building kmod/%s for %s: %w\n%s", name, release, err, out.String())
		}
		if log != nil && bytes.Contains(out.Bytes(), []byte("warning:")) {
			fmt.Fprintf(log, "umdvm: warnings building kmod/%s for %s:\n%s", name, release, out.String())
		}
		built, _ := filepath.Glob(filepath.Join(build, "*.ko"))
		if len(built) == 0 {
			return nil, fmt.Errorf("building kmod/%s for %s: no .ko produced", name, release)
		}
		kos = append(kos, built...)
	}
	return kos, nil
}

// syncDir copies the regular files of src (not subdirectories) into dst,
// rewriting only those whose content changed, so make's timestamps stay
// meaningful.
func syncDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		target := filepath.Join(dst, e.Name())
		if old, err := os.ReadFile(target); err == nil && bytes.Equal(old, data) {
			continue
		}
		if err := os.WriteFile(target, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
