package qemu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// A Kernel is one guest kernel: a Debian linux-image package.
type Kernel struct {
	// Name is what users type: KERNEL=6.1 or KERNEL=6.12.
	Name string
	// Suite is the Debian suite whose current linux-image-amd64 is
	// used when the pinned release is no longer published.
	Suite string
	// Release is the pinned kernel release (`uname -r`), which is also
	// the suffix of the linux-image-RELEASE package.
	Release string
}

// Kernels are the guest kernels, pinned in this one place. The Debian
// mirror keeps only each suite's current package, so a pin can vanish
// after a security update: the harness then falls back to the suite's
// current linux-image-amd64 and says so. Update the pin when that happens.
var Kernels = []Kernel{
	{Name: "6.1", Suite: "bookworm", Release: "6.1.0-56-amd64"},
	{Name: "6.12", Suite: "bookworm-backports", Release: "6.12.95+deb12-amd64"},
}

// DefaultKernel is the kernel used when none is named.
const DefaultKernel = "6.12"

// LookupKernel returns the kernel called name.
func LookupKernel(name string) (Kernel, error) {
	var names []string
	for _, k := range Kernels {
		if k.Name == name {
			return k, nil
		}
		names = append(names, k.Name)
	}
	return Kernel{}, fmt.Errorf("unknown kernel %q (known: %s)", name, strings.Join(names, ", "))
}

// CacheDir is where the harness keeps what it downloads and builds:
// $UMD_CACHE, else $XDG_CACHE_HOME/umd, else ~/.cache/umd.
func CacheDir() (string, error) {
	if d := os.Getenv("UMD_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding a cache directory (set UMD_CACHE): %w", err)
	}
	return filepath.Join(d, "umd"), nil
}

// An UnpackedKernel is a linux-image package unpacked in the cache.
type UnpackedKernel struct {
	Kernel
	// Release is the release actually used (it differs from the pin
	// after a fallback).
	Release string
	// Root is the unpacked package: Root/boot/vmlinuz-RELEASE and
	// Root/lib/modules/RELEASE.
	Root string
}

// Vmlinuz returns the path of the compressed kernel image.
func (u UnpackedKernel) Vmlinuz() string {
	return filepath.Join(u.Root, "boot", "vmlinuz-"+u.Release)
}

// ModulesDir returns the module tree of the kernel.
func (u UnpackedKernel) ModulesDir() string {
	return filepath.Join(u.Root, "lib", "modules", u.Release)
}

// Fetcher fetches guest kernels into the cache with a private apt
// configuration, so the host's own apt state is never changed.
type Fetcher struct {
	Cache string
	// Log receives one line per step that takes time (downloads).
	Log io.Writer
	// Mirrors overrides the Debian archive and security URIs; by default
	// they are taken from the host's apt sources.
	Mirror, SecurityMirror string
}

func (f *Fetcher) logf(format string, args ...any) {
	if f.Log != nil {
		fmt.Fprintf(f.Log, format+"\n", args...)
	}
}

// Unpacked returns the kernel k from the cache, fetching and unpacking it
// first when needed.
func (f *Fetcher) Unpacked(k Kernel) (UnpackedKernel, error) {
	if u, ok := f.cached(k, k.Release); ok {
		return u, nil
	}
	release := k.Release
	err := f.fetch(k, release)
	if errors.Is(err, errNotPublished) {
		// The pin vanished (a security update replaced it): take the
		// suite's current kernel.
		current, cerr := f.currentRelease(k)
		if cerr != nil {
			return UnpackedKernel{}, fmt.Errorf("pinned kernel %s is no longer published and the current one of %s is unknown: %w", k.Release, k.Suite, cerr)
		}
		f.logf("umdvm: WARNING: kernel %s (pinned in qemu/kernels.go) is no longer published; using %s, the current kernel of %s. Update the pin.", k.Release, current, k.Suite)
		if u, ok := f.cached(k, current); ok {
			return u, nil
		}
		release = current
		err = f.fetch(k, release)
	}
	if err != nil {
		// Offline or mirror trouble: any cached kernel of that series
		// is better than nothing.
		if u, ok := f.anyCached(k); ok {
			f.logf("umdvm: WARNING: %v; using cached kernel %s instead", err, u.Release)
			return u, nil
		}
		return UnpackedKernel{}, err
	}
	u, ok := f.cached(k, release)
	if !ok {
		return UnpackedKernel{}, fmt.Errorf("kernel %s was unpacked but is incomplete in %s", release, f.kernelDir(release))
	}
	return u, nil
}

var errNotPublished = errors.New("package not published")

func (f *Fetcher) kernelDir(release string) string {
	return filepath.Join(f.Cache, "kernels", release)
}

func (f *Fetcher) cached(k Kernel, release string) (UnpackedKernel, bool) {
	dir := f.kernelDir(release)
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		return UnpackedKernel{}, false
	}
	return UnpackedKernel{Kernel: k, Release: release, Root: dir}, true
}

func (f *Fetcher) anyCached(k Kernel) (UnpackedKernel, bool) {
	matches, _ := filepath.Glob(filepath.Join(f.Cache, "kernels", "*", ".complete"))
	sort.Sort(sort.Reverse(sort.StringSlice(matches)))
	for _, m := range matches {
		release := filepath.Base(filepath.Dir(m))
		if seriesOf(release) == k.Name {
			return f.cached(k, release)
		}
	}
	return UnpackedKernel{}, false
}

// seriesOf maps a release such as 6.12.95+deb12-amd64 or 6.1.0-56-amd64
// to its series name (6.12, 6.1).
func seriesOf(release string) string {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return ""
	}
	minor := parts[1]
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	return parts[0] + "." + minor
}

// apt runs an apt command against the private configuration.
func (f *Fetcher) apt(dir, tool string, args ...string) ([]byte, error) {
	aptDir := filepath.Join(f.Cache, "apt")
	opts := []string{
		"-o", "Dir::Etc::SourceList=" + filepath.Join(aptDir, "sources.list"),
		"-o", "Dir::Etc::SourceParts=" + filepath.Join(aptDir, "sources.list.d"),
		"-o", "Dir::State::Lists=" + filepath.Join(aptDir, "lists"),
		"-o", "Dir::State::status=" + filepath.Join(aptDir, "status"),
		"-o", "Dir::Cache=" + filepath.Join(aptDir, "cache"),
		"-o", "Debug::NoLocking=1",
	}
	if os.Geteuid() == 0 {
		// Downloads into the cache are done as root, not as _apt, who
		// cannot write to a user's cache directory.
		opts = append(opts, "-o", "APT::Sandbox::User=root")
	}
	cmd := exec.Command(tool, append(opts, args...)...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// prepareApt writes the private sources list (from the host's mirrors)
// and refreshes its package lists.
func (f *Fetcher) prepareApt() error {
	aptDir := filepath.Join(f.Cache, "apt")
	for _, d := range []string{"lists/partial", "cache/archives/partial", "sources.list.d"} {
		if err := os.MkdirAll(filepath.Join(aptDir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(aptDir, "status"), nil, 0o644); err != nil {
		return err
	}
	mirror, security := f.Mirror, f.SecurityMirror
	if mirror == "" || security == "" {
		m, s, err := hostMirrors()
		if err != nil {
			return err
		}
		if mirror == "" {
			mirror = m
		}
		if security == "" {
			security = s
		}
	}
	keyring := ""
	if _, err := os.Stat("/usr/share/keyrings/debian-archive-keyring.gpg"); err == nil {
		keyring = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
	}
	var b strings.Builder
	for _, suite := range []string{"bookworm", "bookworm-updates", "bookworm-backports"} {
		fmt.Fprintf(&b, "deb %s%s %s main\n", keyring, mirror, suite)
	}
	if security != "" {
		fmt.Fprintf(&b, "deb %s%s bookworm-security main\n", keyring, security)
	}
	if err := os.WriteFile(filepath.Join(aptDir, "sources.list"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	f.logf("umdvm: refreshing Debian package lists (bookworm, bookworm-backports) in %s", aptDir)
	if _, err := f.apt(aptDir, "apt-get", "-q", "update"); err != nil {
		return fmt.Errorf("refreshing package lists: %w", err)
	}
	return nil
}

// hostMirrors finds the Debian archive and security URIs in the host's
// apt sources (one-line and deb822 formats).
func hostMirrors() (archive, security string, err error) {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		for _, e := range parseSources(string(data)) {
			for _, s := range e.suites {
				switch {
				case strings.HasSuffix(s, "-security") && security == "":
					security = e.uri
				case !strings.Contains(s, "-") && archive == "" && strings.HasSuffix(strings.TrimSuffix(e.uri, "/"), "/debian"):
					archive = e.uri
				}
			}
		}
	}
	if archive == "" {
		return "", "", errors.New("no Debian archive found in /etc/apt/sources.list or /etc/apt/sources.list.d: " +
			"set UMD_DEBIAN_MIRROR to the URI of a Debian archive (and UMD_DEBIAN_SECURITY_MIRROR to its security archive)")
	}
	return archive, security, nil
}

type sourceEntry struct {
	uri    string
	suites []string
}

// parseSources reads "deb URI SUITE COMPONENT…" lines and deb822 stanzas
// with Types/URIs/Suites fields. Only binary (deb) entries are returned.
func parseSources(text string) []sourceEntry {
	var out []sourceEntry
	stanza := map[string]string{}
	flush := func() {
		if strings.Contains(stanza["types"], "deb") && !strings.Contains(" "+stanza["types"]+" ", " deb-src ") || stanza["types"] == "deb" {
			for _, uri := range strings.Fields(stanza["uris"]) {
				out = append(out, sourceEntry{uri: uri, suites: strings.Fields(stanza["suites"])})
			}
		}
		stanza = map[string]string{}
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			flush()
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if fields[0] == "deb" {
			fields = fields[1:]
			if len(fields) > 0 && strings.HasPrefix(fields[0], "[") {
				for len(fields) > 0 && !strings.HasSuffix(fields[0], "]") {
					fields = fields[1:]
				}
				if len(fields) > 0 {
					fields = fields[1:]
				}
			}
			if len(fields) >= 2 {
				out = append(out, sourceEntry{uri: fields[0], suites: []string{fields[1]}})
			}
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			stanza[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// currentRelease asks the package lists which kernel release the suite's
// linux-image-amd64 currently depends on.
func (f *Fetcher) currentRelease(k Kernel) (string, error) {
	out, err := f.apt(f.Cache, "apt-cache", "show", "linux-image-amd64")
	if err != nil {
		return "", err
	}
	best := latestRelease(string(out), k.Name)
	if best == "" {
		return "", fmt.Errorf("no linux-image-amd64 of series %s in the package lists of %s", k.Name, k.Suite)
	}
	return best, nil
}

// latestRelease reads `apt-cache show linux-image-amd64` output and
// returns the newest kernel release of the series that a version of the
// metapackage depends on.
func latestRelease(show, series string) string {
	best := ""
	for _, st := range strings.Split(show, "\n\n") {
		version, depends := "", ""
		for _, line := range strings.Split(st, "\n") {
			if v, ok := strings.CutPrefix(line, "Version: "); ok {
				version = v
			}
			if v, ok := strings.CutPrefix(line, "Depends: "); ok {
				depends = v
			}
		}
		pkg, _, _ := strings.Cut(depends, " ")
		release, ok := strings.CutPrefix(strings.TrimSuffix(pkg, ","), "linux-image-")
		if !ok || seriesOf(release) != series || seriesOf(version) != series {
			continue
		}
		if best == "" || newerRelease(release, best) {
			best = release
		}
	}
	return best
}

var releaseNumber = regexp.MustCompile(`[0-9]+`)

// newerRelease compares kernel releases such as 6.1.0-56-amd64 and
// 6.1.0-9-amd64 number by number.
func newerRelease(a, b string) bool {
	na, nb := releaseNumber.FindAllString(a, -1), releaseNumber.FindAllString(b, -1)
	for i := 0; i < len(na) && i < len(nb); i++ {
		x, _ := strconv.Atoi(na[i])
		y, _ := strconv.Atoi(nb[i])
		if x != y {
			return x > y
		}
	}
	return len(na) > len(nb)
}

// fetch downloads linux-image-RELEASE and unpacks it into the cache.
func (f *Fetcher) fetch(k Kernel, release string) error {
	if err := f.prepareApt(); err != nil {
		return fmt.Errorf("fetching kernel %s: %w\n%s", release, err, manualFetchHint(k, release))
	}
	pkg := "linux-image-" + release
	dl, err := os.MkdirTemp(f.Cache, "download-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dl)
	f.logf("umdvm: downloading %s (%s) into %s", pkg, k.Suite, f.Cache)
	if _, err := f.apt(dl, "apt-get", "-q", "download", pkg); err != nil {
		if strings.Contains(err.Error(), "Unable to locate package") || strings.Contains(err.Error(), "has no installation candidate") ||
			strings.Contains(err.Error(), "Can't select") {
			return fmt.Errorf("%s: %w", pkg, errNotPublished)
		}
		return fmt.Errorf("downloading %s: %w\n%s", pkg, err, manualFetchHint(k, release))
	}
	debs, _ := filepath.Glob(filepath.Join(dl, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("downloading %s: expected one .deb in %s, found %d", pkg, dl, len(debs))
	}
	dst := f.kernelDir(release)
	tmp := dst + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("dpkg", "-x", debs[0], tmp).CombinedOutput(); err != nil {
		return fmt.Errorf("unpacking %s: %w: %s", debs[0], err, out)
	}
	// The package has no modules.dep (the postinst makes it); make one
	// so the module closure can be computed.
	if out, err := exec.Command("depmod", "-b", tmp, release).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod for %s: %w: %s", release, err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), []byte(filepath.Base(debs[0])+"\n"), 0o644); err != nil {
		return err
	}
	os.RemoveAll(dst)
	return os.Rename(tmp, dst)
}

func manualFetchHint(k Kernel, release string) string {
	return fmt.Sprintf("To fetch it by hand: add `deb <your Debian mirror> %s main` to a sources list, run apt-get update, then\n"+
		"  apt-get download linux-image-%s && dpkg -x linux-image-%s_*.deb %s.tmp && depmod -b %s.tmp %s && touch %s.tmp/.complete && mv %s.tmp %s",
		k.Suite, release, release, "DIR", "DIR", release, "DIR", "DIR", "DIR") +
		"\n  with DIR = $UMD_CACHE/kernels/" + release + " (UMD_CACHE defaults to ~/.cache/umd)"
}
