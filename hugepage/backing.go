package hugepage

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/mountinfo"
)

// A Backing is where a pool's memory comes from.
type Backing int

const (
	// BackingAuto, in Options, picks a memfd, and a file on a hugetlbfs
	// mount when the kernel cannot make hugetlb memfds.
	BackingAuto Backing = iota
	// BackingMemfd is an anonymous file from memfd_create(2): hugetlb
	// for hugepages, shmem for 4 KiB pages. It needs no mount and can be
	// sealed.
	BackingMemfd
	// BackingHugetlbfs is a file created on a mounted hugetlbfs and
	// unlinked at once, so only its descriptor keeps it alive.
	BackingHugetlbfs
	// BackingTmpfs is a tmpfs file that is not a memfd (/dev/shm, say).
	// Only OpenPool reports it, for a descriptor another process sent.
	BackingTmpfs
)

func (b Backing) String() string {
	switch b {
	case BackingAuto:
		return "auto"
	case BackingMemfd:
		return "memfd"
	case BackingHugetlbfs:
		return "hugetlbfs"
	case BackingTmpfs:
		return "tmpfs"
	}
	return "Backing(" + strconv.Itoa(int(b)) + ")"
}

// defaultName is the memfd name, and the prefix of hugetlbfs file names:
// /proc/PID/maps shows it, which is how tests find leaked mappings.
const defaultName = "umd-hugepage"

// memfdPageFlag maps a hugepage size to memfd_create's MFD_HUGE_* flag.
func memfdPageFlag(pageSize int) (int, bool) {
	switch pageSize {
	case Page2M:
		return unix.MFD_HUGE_2MB, true
	case Page1G:
		return unix.MFD_HUGE_1GB, true
	}
	return 0, false
}

// openMemfd creates a memfd for pages of pageSize (Page4K: ordinary shmem
// pages) that can be sealed unless noSeal. sealable reports whether it
// can: hugetlb memfds only accept MFD_ALLOW_SEALING since Linux 4.16.
func openMemfd(name string, pageSize int, noSeal bool) (fd int, sealable bool, err error) {
	flags := unix.MFD_CLOEXEC
	if pageSize != Page4K {
		huge, ok := memfdPageFlag(pageSize)
		if !ok {
			return -1, false, fmt.Errorf("no memfd flag for %s pages", formatSize(pageSize))
		}
		flags |= unix.MFD_HUGETLB | huge
	}
	if !noSeal {
		fd, err = unix.MemfdCreate(name, flags|unix.MFD_ALLOW_SEALING)
		if err == nil {
			return fd, true, nil
		}
		if err != unix.EINVAL {
			return -1, false, err
		}
	}
	fd, err = unix.MemfdCreate(name, flags)
	return fd, false, err
}

// openHugetlbfs creates a file for pages of pageSize in dir (or, when dir
// is empty, in the first hugetlbfs mount with that page size in
// /proc/mounts) and unlinks it, so that closing its descriptor frees its
// pages as a memfd's would. It returns the directory used.
func openHugetlbfs(proc, dir, name string, pageSize int) (int, string, error) {
	if dir == "" {
		var err error
		if dir, err = findHugetlbfs(proc, pageSize); err != nil {
			return -1, "", err
		}
	} else {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return -1, "", fmt.Errorf("checking %s: %w", dir, err)
		}
		if uint32(st.Type) != uint32(unix.HUGETLBFS_MAGIC) || int(st.Bsize) != pageSize {
			return -1, "", fmt.Errorf("%s is not on a hugetlbfs mount with %s pages", dir, formatSize(pageSize))
		}
	}
	// A random name, created exclusively: several processes may make
	// pools in the same mount at once.
	var rnd [8]byte
	if _, err := io.ReadFull(rand.Reader, rnd[:]); err != nil {
		return -1, "", err
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%d-%s", name, os.Getpid(), hex.EncodeToString(rnd[:])))
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, "", fmt.Errorf("creating %s: %w", path, err)
	}
	if err := unix.Unlink(path); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("unlinking %s: %w", path, err)
	}
	return fd, dir, nil
}

// findHugetlbfs returns the first mount point of a hugetlbfs with pages
// of pageSize in proc/mounts. The page size comes from statfs, which
// reports it as the block size, rather than from the mount options, whose
// pagesize= is absent when the mount uses the default size.
func findHugetlbfs(proc string, pageSize int) (string, error) {
	mounts, err := hugetlbfsMounts(filepath.Join(proc, "mounts"))
	if err != nil {
		return "", err
	}
	for _, m := range mounts {
		var st unix.Statfs_t
		if unix.Statfs(m, &st) == nil && int(st.Bsize) == pageSize {
			return m, nil
		}
	}
	return "", fmt.Errorf("%w: no hugetlbfs with %s pages is mounted (%d hugetlbfs mounts in /proc/mounts); mount one with `mount -t hugetlbfs -o pagesize=%s none /dev/hugepages`",
		ErrNoHugepages, formatSize(pageSize), len(mounts), kernelSizeName(pageSize))
}

// hugetlbfsMounts lists the mount points of the hugetlbfs mounts in a
// mounts file (/proc/mounts format).
func hugetlbfsMounts(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 3 && fields[2] == "hugetlbfs" {
			mounts = append(mounts, mountinfo.Unescape(fields[1]))
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return mounts, nil
}

// hugepageSizeSupported reports whether the kernel offers pages of
// pageSize: it has a sysfs directory for every size it supports, whether
// or not any are reserved.
func hugepageSizeSupported(sys string, pageSize int) bool {
	_, err := os.Stat(hugepageSysDir(sys, pageSize, AnyNode))
	return err == nil
}

// fsKind tells what an open descriptor is backed by, and the page size
// of that file system (hugetlbfs reports its page size as the block
// size; for tmpfs, memfds included, it is the base page size).
func fsKind(fd int) (Backing, int, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return 0, 0, fmt.Errorf("fstatfs: %w", err)
	}
	switch uint32(st.Type) {
	case uint32(unix.HUGETLBFS_MAGIC):
		if isMemfd(fd) {
			return BackingMemfd, int(st.Bsize), nil
		}
		return BackingHugetlbfs, int(st.Bsize), nil
	case uint32(unix.TMPFS_MAGIC):
		if isMemfd(fd) {
			return BackingMemfd, os.Getpagesize(), nil
		}
		return BackingTmpfs, os.Getpagesize(), nil
	}
	return 0, 0, errors.New("not a memfd, hugetlbfs or tmpfs file: other files are not fit for DMA memory (page cache, writeback)")
}

// isMemfd reports whether fd is a memfd, whose /proc/self/fd link reads
// "/memfd:NAME (deleted)".
func isMemfd(fd int) bool {
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	return err == nil && strings.HasPrefix(target, "/memfd:")
}
