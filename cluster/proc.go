package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopGrace is how long a component gets between SIGTERM and SIGKILL.
const stopGrace = 10 * time.Second

// logTailBytes is how much of a component's log an error quotes.
const logTailBytes = 3000

// process is one component of the cluster, running in its own process
// group (so that stopping it stops whatever it started, such as
// containerd's shims' children), its output in one log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{} // closed when the process has exited
	err     error         // its exit status, once done is closed
}

// startProcess starts bin with args, stdout and stderr in logDir/name.log,
// in a new process group. The pid is also written to logDir/name.pid so
// that `umdcluster down` can stop components another process started.
func startProcess(name, logDir, bin string, args []string, env []string) (*process, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	fmt.Fprintf(f, "+ %s %s\n", bin, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, logFile: f, done: make(chan struct{})}
	pidFile := filepath.Join(logDir, name+".pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		p.stop()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process group: SIGTERM, then SIGKILL after stopGrace.
// The pid file goes with it.
func (p *process) stop() error {
	defer os.Remove(strings.TrimSuffix(p.logPath, ".log") + ".pid")
	if p.exited() {
		return nil
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, pgid)
		}
	}
	// Whatever is left in the group (a child that ignored SIGTERM).
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}

// failure is an error about p that quotes the end of its log.
func (p *process) failure(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if p.exited() {
		msg += fmt.Sprintf(" (%s exited: %v)", p.name, p.err)
	}
	return fmt.Errorf("%s: %s\n--- last lines of %s ---\n%s", p.name, msg, p.logPath, logTail(p.logPath))
}

// logTail returns the last logTailBytes of the file at path, from a line
// start.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	off := st.Size() - logTailBytes
	if off < 0 {
		off = 0
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// waitFor polls ready every interval until it returns nil, p exits, or
// timeout passes; the error then says what was awaited and quotes p's log.
func waitFor(ctx context.Context, p *process, what string, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = ready(ctx); last == nil {
			return nil
		}
		if p != nil && p.exited() {
			return p.failure("waiting for %s: %v", what, last)
		}
		select {
		case <-ctx.Done():
			if p == nil {
				return fmt.Errorf("waiting %v for %s: %v", timeout, what, last)
			}
			return p.failure("waiting %v for %s: %v", timeout, what, last)
		case <-tick.C:
		}
	}
}

// waitHealthy waits until url (a component's healthz endpoint) answers
// 200 "ok", for up to timeout; what names the component in the error,
// which quotes p's log.
func waitHealthy(ctx context.Context, p *process, what, url string, timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	return waitFor(ctx, p, what+" to answer on "+url, timeout, func(context.Context) error {
		return httpOK(hc, url, "ok")
	})
}

// freePorts returns n distinct TCP ports free on 127.0.0.1 now. Another
// process may take one before the component binds it; the component then
// fails to start and says so in its log.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// dialable reports whether something listens on the unix socket path.
func dialable(path string) error {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// stopPidFiles stops the process groups whose leaders' pids are in
// dir/*.pid (left by a cluster another process started): SIGTERM to all,
// SIGKILL to those still there after stopGrace; the files go.
func stopPidFiles(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.pid"))
	if err != nil {
		return err
	}
	var errs []error
	var groups []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			errs = append(errs, fmt.Errorf("%s: not a pid: %q", f, b))
			continue
		}
		if err := syscall.Kill(-pid, syscall.SIGTERM); err == nil {
			groups = append(groups, pid)
		} else if !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("stopping %s: %w", f, err))
		}
		os.Remove(f)
	}
	deadline := time.Now().Add(stopGrace)
	for _, pid := range groups {
		for time.Now().Before(deadline) && syscall.Kill(-pid, 0) == nil {
			time.Sleep(100 * time.Millisecond)
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	return errors.Join(errs...)
}
