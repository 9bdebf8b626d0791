package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/mountinfo"
)

// cgroupMount is where the cgroup v1 hierarchies are mounted (these hosts
// are cgroup v1 or hybrid).
const cgroupMount = "/sys/fs/cgroup"

// hierarchies returns the mounted cgroup hierarchies' directories: every
// v1 one and the unified v2 one of a hybrid host (runc makes the
// container's cgroup there too).
func hierarchies() ([]string, error) {
	ms, err := mountinfo.Read("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if (m.FSType == "cgroup" || m.FSType == "cgroup2") && (m.Point == cgroupMount || strings.HasPrefix(m.Point, cgroupMount+"/")) {
			out = append(out, m.Point)
		}
	}
	return out, nil
}

// makeCgroups creates the node's cgroup root in every hierarchy: the
// kubelet wants it to exist, and keeping each node's pods below its own
// root is what lets teardown find them. cpuset children start with no
// CPUs or memory nodes, so the root copies its parent's.
func (n *Node) makeCgroups() error {
	hs, err := hierarchies()
	if err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	if len(hs) == 0 {
		return errors.New("cgroups: no cgroup hierarchy is mounted under " + cgroupMount)
	}
	for _, h := range hs {
		dir := filepath.Join(h, n.state.Cgroup)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("cgroups: %w", err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				continue // not the cpuset hierarchy
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
				return fmt.Errorf("cgroups: %s: %w", f, err)
			}
		}
	}
	return nil
}

// cgroupPids lists the processes in the cgroup tree named name at the
// top of each of the hierarchies hs.
func cgroupPids(hs []string, name string) ([]int, error) {
	seen := map[int]bool{}
	var pids []int
	for _, h := range hs {
		root := filepath.Join(h, name)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil // removed meanwhile
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return pids, nil
}

// killCgroup SIGKILLs every process in the cgroup tree name until none is
// left (containers and their pause processes), for up to stopGrace. It
// reads the mount table once, not on every poll.
func killCgroup(name string) error {
	hs, err := hierarchies()
	if err != nil {
		return fmt.Errorf("killing the pods of cgroup %s: %w", name, err)
	}
	return killCgroupIn(hs, name)
}

// killCgroupIn is killCgroup in the hierarchies hs.
func killCgroupIn(hs []string, name string) error {
	deadline := time.Now().Add(stopGrace)
	for {
		pids, err := cgroupPids(hs, name)
		if err != nil {
			return fmt.Errorf("killing the pods of cgroup %s: %w", name, err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("killing the pods of cgroup %s: pids %v are still there", name, pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroups removes the cgroup tree name in every hierarchy, deepest
// first.
func removeCgroups(name string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, name), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := rmdirRetry(dirs[i]); err != nil {
				errs = append(errs, fmt.Errorf("removing cgroup: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// rmdirRetry removes an empty cgroup, retrying while the kernel still
// counts a dying process in it.
func rmdirRetry(dir string) error {
	var err error
	for range 50 {
		if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("rmdir %s: %w", dir, err)
}

// killMentioning SIGKILLs every process whose command line mentions dir:
// containerd's shims (started with -address <node dir>/…, in process
// groups of their own so they outlive containerd) and anything else the
// node's components left behind. A killed shim leaves its socket in
// containerd's fixed socket dir; those go too.
func killMentioning(dir string) error {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	self := os.Getpid()
	var sockets []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), dir+"/") {
			continue
		}
		sockets = append(sockets, shimSockets(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"))...)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, s := range sockets {
		os.Remove(s)
	}
	return nil
}

// shimSocketDir is where containerd's runc shims listen, whatever
// containerd's own state dir.
const shimSocketDir = "/run/containerd/s"

// shimSockets returns the sockets a containerd shim with command line
// args listens on: named by the SHA-256 of address/namespace/id (and of
// that plus /debug), as containerd's shim package names them.
func shimSockets(args []string) []string {
	if len(args) == 0 || !strings.HasSuffix(args[0], "containerd-shim-runc-v2") {
		return nil
	}
	var ns, id, addr string
	for i := 1; i+1 < len(args); i++ {
		switch args[i] {
		case "-namespace":
			ns = args[i+1]
		case "-id":
			id = args[i+1]
		case "-address":
			addr = args[i+1]
		}
	}
	if ns == "" || id == "" || addr == "" {
		return nil
	}
	var out []string
	for _, p := range []string{filepath.Join(addr, ns, id), filepath.Join(addr, ns, id, "debug")} {
		sum := sha256.Sum256([]byte(p))
		out = append(out, filepath.Join(shimSocketDir, hex.EncodeToString(sum[:])))
	}
	return out
}

// mountsBelow lists the mount points at or below dir, deepest first.
func mountsBelow(dir string) ([]string, error) {
	ms, err := mountinfo.Read("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
			out = append(out, m.Point)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// unmountBelow detaches every mount at or below dir (pods' volumes,
// container root filesystems, network namespaces), deepest first.
func unmountBelow(dir string) error {
	var errs []error
	for range 3 { // a detach can uncover another mount on the same point
		mps, err := mountsBelow(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		errs = nil
		for _, mp := range mps {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", mp, err))
			}
		}
	}
	if mps, _ := mountsBelow(dir); len(mps) > 0 {
		errs = append(errs, fmt.Errorf("still mounted below %s: %v", dir, mps))
	}
	return errors.Join(errs...)
}

// containerLogLinks is where the kubelet links every container's log, a
// path it does not let one configure.
const containerLogLinks = "/var/log/containers"

// cniResults is where the CNI library caches each attachment's result.
const cniResults = "/var/lib/cni/results"

// devicePluginSocket is where every kubelet's device manager listens for
// device plugins, whatever its --root-dir: a path compiled into the
// kubelet, so all the nodes of a cluster on one host share it (umd's DRA
// driver does not use it).
const devicePluginSocket = "/var/lib/kubelet/device-plugins/kubelet.sock"

// kubeletSharedDirs are the directories devicePluginSocket needs,
// outermost first (/var/lib/kubelet, then its device-plugins).
var kubeletSharedDirs = []string{filepath.Dir(filepath.Dir(devicePluginSocket)), filepath.Dir(devicePluginSocket)}

// listening reports whether a process accepts connections on the unix
// socket at path.
func listening(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// missing returns those of dirs that do not exist.
func missing(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		if _, err := os.Lstat(d); errors.Is(err, fs.ErrNotExist) {
			out = append(out, d)
		}
	}
	return out
}

// cleanShared removes, once no kubelet of the cluster runs, the device
// manager's socket (devicePluginSocket) if nothing listens on it any more,
// then those of made (the shared directories the cluster's kubelets
// created, outermost first) that are empty, innermost first.
func cleanShared(socket string, made []string) error {
	var errs []error
	if _, err := os.Lstat(socket); err == nil && !listening(socket) {
		if err := os.Remove(socket); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(made) - 1; i >= 0; i-- {
		// Remove refuses a directory that is not empty: whatever else
		// put something there keeps it.
		if err := os.Remove(made[i]); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// clean removes what the node made outside its process tree: leftover
// processes, mounts, cgroups, its bridge, the kubelet's links to its pod
// logs and the CNI result cache of its network. Safe to repeat.
func (s nodeState) clean() error {
	var errs []error
	errs = append(errs, killCgroup(s.Cgroup))
	errs = append(errs, killMentioning(s.Dir))
	errs = append(errs, unmountBelow(s.Dir))
	errs = append(errs, removeCgroups(s.Cgroup))
	if _, err := os.Stat(filepath.Join("/sys/class/net", s.Bridge)); err == nil {
		if out, err := exec.Command("ip", "link", "delete", s.Bridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("deleting bridge %s: %v: %s", s.Bridge, err, out))
		}
	}
	if links, err := os.ReadDir(containerLogLinks); err == nil {
		for _, l := range links {
			p := filepath.Join(containerLogLinks, l.Name())
			if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, s.PodLogsDir+"/") {
				os.Remove(p)
			}
		}
	}
	if res, err := os.ReadDir(cniResults); err == nil {
		sandboxes := s.sandboxIDs()
		for _, r := range res {
			if ownResult(r.Name(), s.CNINetwork, sandboxes) {
				os.Remove(filepath.Join(cniResults, r.Name()))
			}
		}
	}
	return errors.Join(errs...)
}

// sandboxIDs lists the pod sandboxes the node's containerd knows (their
// CRI directories under its root and state).
func (s nodeState) sandboxIDs() []string {
	var ids []string
	for _, d := range []string{"root", "state"} {
		ents, err := os.ReadDir(filepath.Join(s.Dir, "containerd", d, "io.containerd.grpc.v1.cri", "sandboxes"))
		if err != nil {
			continue
		}
		for _, e := range ents {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// ownResult reports whether a CNI result cache file (named
// NETWORK-CONTAINERID-IFNAME) is the node's: of its bridge network, or of
// one of its sandboxes on another network (containerd's loopback).
func ownResult(name, network string, sandboxes []string) bool {
	if strings.HasPrefix(name, network+"-") {
		return true
	}
	for _, id := range sandboxes {
		if id != "" && strings.Contains(name, "-"+id+"-") {
			return true
		}
	}
	return false
}
