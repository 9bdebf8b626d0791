package cluster

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitHealthy: waitHealthy returns once the endpoint answers ok, and
// otherwise fails after its timeout with an error that names the
// endpoint and the component's log file and quotes the log.
func TestWaitHealthy(t *testing.T) {
	p, err := startProcess("sleeper", t.TempDir(), "/bin/sh", []string{"-c", "echo sleeper log line; exec sleep 60"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	var healthy atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			http.Error(w, "[-]ping failed", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	url := srv.URL + "/healthz"
	ctx := context.Background()

	err = waitHealthy(ctx, p, "the sleeper", url, 600*time.Millisecond)
	if err == nil {
		t.Fatal("waitHealthy returned nil while the endpoint answers 500")
	}
	for _, want := range []string{url, p.logPath, "sleeper log line", "500"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}

	go func() {
		time.Sleep(300 * time.Millisecond)
		healthy.Store(true)
	}()
	if err := waitHealthy(ctx, p, "the sleeper", url, 5*time.Second); err != nil {
		t.Fatalf("the endpoint turned ok: %v", err)
	}
}

// TestWaitHealthyExited: a component that exits ends the wait at once,
// with its exit status.
func TestWaitHealthyExited(t *testing.T) {
	p, err := startProcess("quitter", t.TempDir(), "/bin/sh", []string{"-c", "echo bad flag; exit 3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	start := time.Now()
	err = waitHealthy(context.Background(), p, "the quitter", "http://127.0.0.1:1/healthz", time.Minute)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "bad flag") {
		t.Fatalf("got %v, want the exit status and the log", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("waited %v for a process that had exited", d)
	}
}
