package pcie

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// SnapshotHeader is the first line of a snapshot.
const SnapshotHeader = "# umd PCI sysfs snapshot v1"

// snapshotAttrs are the files of a function's directory that Scan reads
// (config is written apart, in hex).
var snapshotAttrs = []string{
	"vendor", "device", "subsystem_vendor", "subsystem_device", "class", "revision",
	"numa_node", "driver_override", "resource", "irq",
	"current_link_speed", "current_link_width", "max_link_speed", "max_link_width",
	"sriov_totalvfs", "sriov_numvfs", "secondary_bus_number", "subordinate_bus_number",
}

// WriteSnapshot writes the parts of a sysfs tree that Scan reads as text,
// one entry a line, so a machine's PCI layout can travel in a bug report
// or become a test fixture (RestoreSnapshot turns it back into a tree):
//
//	l PATH TARGET        a symbolic link
//	f PATH "CONTENT"     a file, Go-quoted
//	x PATH SIZE HEX      a binary file (config space) of SIZE bytes, given
//	                     in hex up to its last non-zero byte
//
// Paths are relative to root. Files that cannot be read are left out.
func WriteSnapshot(root string, w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, SnapshotHeader)
	link := func(rel string) {
		if t, err := os.Readlink(filepath.Join(root, rel)); err == nil {
			fmt.Fprintf(bw, "l %s %s\n", rel, t)
		}
	}

	devDir := "bus/pci/devices"
	entries, err := os.ReadDir(filepath.Join(root, devDir))
	if err != nil {
		return fmt.Errorf("writing a snapshot: %w", err)
	}
	for _, e := range entries {
		rel := path.Join(devDir, e.Name())
		t, err := os.Readlink(filepath.Join(root, rel))
		if err != nil {
			continue
		}
		fmt.Fprintf(bw, "l %s %s\n", rel, t)
		dir := path.Clean(path.Join(devDir, t))
		for _, a := range snapshotAttrs {
			if b, err := os.ReadFile(filepath.Join(root, dir, a)); err == nil {
				fmt.Fprintf(bw, "f %s %q\n", path.Join(dir, a), b)
			}
		}
		if b, err := os.ReadFile(filepath.Join(root, dir, "config")); err == nil {
			n := len(b)
			for n > 0 && b[n-1] == 0 {
				n--
			}
			fmt.Fprintf(bw, "x %s %d %s\n", path.Join(dir, "config"), len(b), hex.EncodeToString(b[:n]))
		}
		link(path.Join(dir, "driver"))
		link(path.Join(dir, "iommu_group"))
		link(path.Join(dir, "physfn"))
		if ents, err := os.ReadDir(filepath.Join(root, dir)); err == nil {
			for _, v := range ents {
				if strings.HasPrefix(v.Name(), "virtfn") {
					link(path.Join(dir, v.Name()))
				}
			}
		}
	}

	if slots, err := os.ReadDir(filepath.Join(root, "bus/pci/slots")); err == nil {
		for _, s := range slots {
			rel := path.Join("bus/pci/slots", s.Name(), "address")
			if b, err := os.ReadFile(filepath.Join(root, rel)); err == nil {
				fmt.Fprintf(bw, "f %s %q\n", rel, b)
			}
		}
	}
	groups, err := os.ReadDir(filepath.Join(root, "kernel/iommu_groups"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("writing a snapshot: %w", err)
	}
	sort.Slice(groups, func(i, j int) bool {
		a, _ := strconv.Atoi(groups[i].Name())
		b, _ := strconv.Atoi(groups[j].Name())
		return a < b
	})
	for _, g := range groups {
		members, _ := os.ReadDir(filepath.Join(root, "kernel/iommu_groups", g.Name(), "devices"))
		for _, m := range members {
			link(path.Join("kernel/iommu_groups", g.Name(), "devices", m.Name()))
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing a snapshot: %w", err)
	}
	return nil
}

// snapshotEntry is one line of a snapshot.
type snapshotEntry struct {
	Kind    byte   // 'l' link, 'f' file
	Path    string // relative to the root, never escaping it
	Target  string // of a link
	Content []byte // of a file
}

// readSnapshot parses what WriteSnapshot wrote. It rejects paths that are
// absolute or climb out of the root.
func readSnapshot(r io.Reader) ([]snapshotEntry, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var out []snapshotEntry
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("reading a snapshot: line %d: %s", line, fmt.Sprintf(format, args...))
		}
		kind, rest, _ := strings.Cut(text, " ")
		p, val, ok := strings.Cut(rest, " ")
		if !ok || len(kind) != 1 {
			return nil, bad("want KIND PATH VALUE")
		}
		if clean := path.Clean(p); clean != p || path.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") {
			return nil, bad("path %q is not a clean relative path", p)
		}
		e := snapshotEntry{Kind: kind[0], Path: p}
		switch kind {
		case "l":
			e.Target = val
		case "f":
			s, err := strconv.Unquote(val)
			if err != nil {
				return nil, bad("content is not a quoted string")
			}
			e.Content = []byte(s)
		case "x":
			sizeText, hexText, _ := strings.Cut(val, " ")
			size, err := strconv.Atoi(sizeText)
			if err != nil || size < 0 || size > 1<<20 {
				return nil, bad("size %q", sizeText)
			}
			b, err := hex.DecodeString(hexText)
			if err != nil || len(b) > size {
				return nil, bad("hex content does not fit %d bytes", size)
			}
			e.Kind = 'f'
			e.Content = append(b, make([]byte, size-len(b))...)
		default:
			return nil, bad("unknown kind %q", kind)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading a snapshot: %w", err)
	}
	return out, nil
}

// RestoreSnapshot builds the tree a snapshot describes in dir, which must
// exist (and should be empty): Scan(Options{SysfsRoot: dir}) then reads
// it as it read the original. It never writes outside dir: paths that
// climb out are refused, and so is writing below a symbolic link.
func RestoreSnapshot(r io.Reader, dir string) error {
	entries, err := readSnapshot(r)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := noLinkBelow(dir, path.Dir(e.Path)); err != nil {
			return fmt.Errorf("restoring a snapshot: %w", err)
		}
		full := filepath.Join(dir, filepath.FromSlash(e.Path))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return fmt.Errorf("restoring a snapshot: %w", err)
		}
		switch e.Kind {
		case 'l':
			err = os.Symlink(e.Target, full)
		default:
			err = os.WriteFile(full, e.Content, 0o644)
		}
		if err != nil {
			return fmt.Errorf("restoring a snapshot: %w", err)
		}
	}
	return nil
}

// noLinkBelow fails if any existing component of rel (a directory path
// inside dir) is a symbolic link.
func noLinkBelow(dir, rel string) error {
	p := dir
	for _, c := range strings.Split(rel, "/") {
		if c == "." || c == "" {
			continue
		}
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symbolic link; a snapshot never writes below one", rel)
		}
	}
	return nil
}

// OpenTree returns a sysfs root to scan for path: path itself when it is
// a directory, else a new temporary directory with the snapshot in the
// file path restored into it, which cleanup removes. cleanup is never
// nil when err is nil; for a directory it does nothing.
func OpenTree(path string) (root string, cleanup func(), err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", nil, err
	}
	if fi.IsDir() {
		return path, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	dir, err := os.MkdirTemp("", "umd-sysfs-")
	if err != nil {
		return "", nil, err
	}
	if err := RestoreSnapshot(f, dir); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}
