package qemu

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// cpioWriter writes the "newc" cpio format that the kernel unpacks as an
// initramfs (see Documentation/driver-api/early-userspace/buffer-format.rst).
// Several archives may be concatenated into one initrd; later entries
// overwrite earlier ones, which is how a run's files are laid over the
// cached base image.
type cpioWriter struct {
	w     *bufio.Writer
	n     int64 // bytes written, for padding
	ino   uint32
	dirs  map[string]bool
	err   error
	close bool
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), ino: 1000, dirs: map[string]bool{".": true, "/": true, "": true}}
}

const (
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
)

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	var n int
	n, c.err = c.w.Write(b)
	c.n += int64(n)
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) header(name string, mode uint32, size int64) {
	c.ino++
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad()
}

// mkdirAll adds directory entries for dir and its parents that this
// archive has not written yet.
func (c *cpioWriter) mkdirAll(dir string) {
	dir = strings.TrimPrefix(path.Clean(dir), "/")
	if c.dirs[dir] {
		return
	}
	c.mkdirAll(path.Dir(dir))
	c.dirs[dir] = true
	c.header(dir, modeDir|0o755, 0)
}

// File adds a regular file with the given contents and permission bits.
func (c *cpioWriter) File(name string, perm uint32, data []byte) {
	name = strings.TrimPrefix(path.Clean(name), "/")
	c.mkdirAll(path.Dir(name))
	c.header(name, modeRegular|perm, int64(len(data)))
	c.write(data)
	c.pad()
}

// CopyFile adds the host file src as name, keeping its permission bits.
func (c *cpioWriter) CopyFile(name, src string) {
	if c.err != nil {
		return
	}
	f, err := os.Open(src)
	if err != nil {
		c.err = err
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		c.err = err
		return
	}
	name = strings.TrimPrefix(path.Clean(name), "/")
	c.mkdirAll(path.Dir(name))
	c.header(name, modeRegular|uint32(st.Mode().Perm()), st.Size())
	if c.err != nil {
		return
	}
	n, err := io.Copy(c.w, f)
	c.n += n
	if err != nil {
		c.err = fmt.Errorf("copying %s: %w", src, err)
		return
	}
	if n != st.Size() {
		c.err = fmt.Errorf("copying %s: file changed size while being read", src)
		return
	}
	c.pad()
}

// CopyTree adds every regular file and symlink under the host directory
// src below the archive directory dst.
func (c *cpioWriter) CopyTree(dst, src string) {
	if c.err != nil {
		return
	}
	var paths []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		c.err = err
		return
	}
	sort.Strings(paths)
	for _, p := range paths {
		rel, _ := filepath.Rel(src, p)
		name := path.Join(dst, filepath.ToSlash(rel))
		st, err := os.Lstat(p)
		if err != nil {
			c.err = err
			return
		}
		switch {
		case st.IsDir():
			c.mkdirAll(name)
		case st.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				c.err = err
				return
			}
			c.Symlink(name, target)
		case st.Mode().IsRegular():
			c.CopyFile(name, p)
		}
	}
}

// Symlink adds a symbolic link name pointing at target.
func (c *cpioWriter) Symlink(name, target string) {
	name = strings.TrimPrefix(path.Clean(name), "/")
	c.mkdirAll(path.Dir(name))
	c.header(name, modeSymlink|0o777, int64(len(target)))
	c.write([]byte(target))
	c.pad()
}

// Dir adds an (empty) directory.
func (c *cpioWriter) Dir(name string) { c.mkdirAll(name) }

// Close writes the trailer and flushes. It returns the first error met.
func (c *cpioWriter) Close() error {
	if c.close {
		return c.err
	}
	c.close = true
	c.header("TRAILER!!!", 0, 0)
	if c.err == nil {
		c.err = c.w.Flush()
	}
	return c.err
}
