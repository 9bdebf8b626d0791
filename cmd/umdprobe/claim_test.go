package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/broker/brokertest"
	"github.com/umdkit/umd/internal/bench"
)

// With runAsUmdprobe set, the test binary is umdprobe, with the arguments
// in umdprobeArgs (separated by newlines).
const (
	runAsUmdprobe = "UMDPROBE_TEST_MAIN"
	umdprobeArgs  = "UMDPROBE_TEST_ARGS"
)

func TestMain(m *testing.M) {
	if os.Getenv(runAsUmdprobe) == "1" {
		os.Exit(run(strings.Split(os.Getenv(umdprobeArgs), "\n"), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestClaimProcess runs "umdprobe claim --verify" as a process of its own
// with the claim's variables in its real environment, as in a pod: it
// exits 0 with the verified line, and 1 once the claim is released.
func TestClaimProcess(t *testing.T) {
	sock, c := simBroker(t, "0000:07:00.0")
	env := reserveClaim(t, c, "pod-uid", 1<<20, "0000:07:00.0")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	umdprobe := func() (int, string) {
		cmd := exec.Command(exe)
		cmd.Env = append(append(os.Environ(), env...), "UMD_SOCKET="+sock, runAsUmdprobe+"=1", umdprobeArgs+"=claim\n--verify\n2048")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	code, out := umdprobe()
	if code != 0 || !strings.Contains(out, "claim pod-uid device 0000:07:00.0: verified 2048 blocks (1 MiB) ok") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if err := c.Release("pod-uid"); err != nil {
		t.Fatal(err)
	}
	if code, out := umdprobe(); code != 1 || !strings.Contains(out, "FAILED") {
		t.Fatalf("after the release: exit %d:\n%s", code, out)
	}
}

// simBroker runs a broker with simulated devices in this process and
// returns its socket and a client of it (a reserver: tests run as root or
// as the uid they allow).
func simBroker(t *testing.T, bdfs ...string) (string, *broker.Client) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "umdd.sock")
	s, err := broker.NewServer(broker.Config{Socket: sock, Reservers: []uint32{0, uint32(os.Getuid())}})
	if err != nil {
		t.Fatal(err)
	}
	for _, bdf := range bdfs {
		if err := s.AddSimulated(context.Background(), bdf, broker.SimOptions{Blocks: 2048}, broker.Access{UIDs: []uint32{uint32(os.Getuid())}}); err != nil {
			t.Fatal(err)
		}
	}
	brokertest.Serve(t, s)
	c, err := broker.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return sock, c
}

func withEnv(t *testing.T, env []string) {
	t.Helper()
	old := environ
	environ = func() []string { return env }
	t.Cleanup(func() { environ = old })
}

func reserveClaim(t *testing.T, c *broker.Client, claim string, poolBytes int64, bdfs ...string) []string {
	t.Helper()
	env := []string{"UMD_CLAIM=" + claim, "UMD_MODE=mediated"}
	for _, bdf := range bdfs {
		g, err := c.Reserve(broker.Reservation{Claim: claim, Device: bdf, Queues: 2, Depth: 16, PoolBytes: poolBytes})
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, "UMD_DEVICE_NVME_"+strings.NewReplacer(":", "_", ".", "_").Replace(bdf)+"="+bdf+","+g.ID)
	}
	return env
}

// TestClaimVerify: in an environment as the DRA driver's CDI spec makes
// it, claim opens each device's grant and verifies I/O through it.
func TestClaimVerify(t *testing.T) {
	sock, c := simBroker(t, "0000:03:00.0", "0000:04:00.0")
	env := reserveClaim(t, c, "3b1f-claim", 16<<10, "0000:03:00.0", "0000:04:00.0")
	withEnv(t, append(env, "UMD_SOCKET="+sock))
	var out, errOut bytes.Buffer
	// 64 blocks through an 16 KiB pool: 8 KiB (16 blocks) a command, both queue pairs.
	if code := run([]string{"claim", "--verify", "64"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{
		"claim 3b1f-claim device 0000:03:00.0: verified 64 blocks (32 KiB) ok",
		"claim 3b1f-claim device 0000:04:00.0: verified 64 blocks (32 KiB) ok",
		"claim 3b1f-claim device 0000:03:00.0: mediated session, 2 queue pair(s) of depth 16 (interrupts), 16 KiB pool",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// The blocks are on the device: a second client reads them back as written.
	probe, err := broker.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	sess, err := probe.OpenSession("0000:04:00.0", broker.SessionOptions{PoolBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Read(0, 1, 63, 1, 0); err != nil {
		t.Fatal(err)
	}
	// (stamped with a pass this test does not know: all but the pass must match)
	if field, want, found, ok := bench.CheckBlock(sess.Pool.Bytes()[:512], 63, 0); !ok && field != "pass" {
		t.Fatalf("LBA 63 reads back with %s %d, want %d", field, found, want)
	}

	out.Reset()
	if code := run([]string{"claim", "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
	}
	var rep claimReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Schema != schemaClaim || rep.Claim != "3b1f-claim" || len(rep.Devices) != 2 || rep.Devices[1].Queues != 2 || rep.Devices[1].PoolBytes != 16<<10 || rep.Devices[1].Error != "" {
		t.Fatalf("report %+v", rep)
	}
}

// TestClaimFailures: a released grant, a verify larger than the namespace
// and a missing environment each exit 1 saying what failed.
func TestClaimFailures(t *testing.T) {
	sock, c := simBroker(t, "0000:03:00.0", "0000:04:00.0")
	env := reserveClaim(t, c, "gone", 8192, "0000:03:00.0")
	env = append(env, reserveClaim(t, c, "gone", 8192, "0000:04:00.0")[2:]...)
	if err := c.Release("gone"); err != nil {
		t.Fatal(err)
	}
	withEnv(t, append(env, "UMD_SOCKET="+sock))
	var out, errOut bytes.Buffer
	if code := run([]string{"claim"}, &out, &errOut); code != 1 || !strings.Contains(out.String(), "claim gone device 0000:03:00.0: FAILED") || !strings.Contains(out.String(), "no such grant") {
		t.Fatalf("a released claim: exit %d\n%s%s", code, out.String(), errOut.String())
	}

	env = reserveClaim(t, c, "small", 8192, "0000:03:00.0")
	withEnv(t, append(env, "UMD_SOCKET="+sock))
	out.Reset()
	if code := run([]string{"claim", "--verify", "4096"}, &out, &errOut); code != 1 || !strings.Contains(out.String(), "namespace 1 has 2048 blocks") {
		t.Fatalf("--verify past the namespace: exit %d\n%s%s", code, out.String(), errOut.String())
	}

	withEnv(t, []string{"PATH=/bin"})
	out.Reset()
	errOut.Reset()
	if code := run([]string{"claim"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "UMD_CLAIM is not set") {
		t.Fatalf("no claim environment: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	for _, args := range [][]string{{"list", "--verify", "8"}, {"claim", "03:00.0"}, {"claim", "--verify", "-1"}} {
		if code := run(args, &out, &errOut); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// TestCheckBlock: a block read back is told apart when misplaced, stale,
// corrupt, or zeroed (never written).
func TestCheckBlock(t *testing.T) {
	want := make([]byte, 512)
	bench.StampBlock(want, 7, 42)
	if err := checkBlock(bytes.Clone(want), 7, 42); err != nil {
		t.Fatalf("an intact block: %v", err)
	}
	other := make([]byte, 512)
	for name, tc := range map[string]struct {
		got  func() []byte
		want string
	}{
		"misplaced": {func() []byte { bench.StampBlock(other, 8, 42); return other }, "block 7 reads back stamped with LBA 8 (misplaced data)"},
		"stale":     {func() []byte { bench.StampBlock(other, 7, 41); return other }, "block 7 reads back from pass 29, not this pass 2a (stale data)"},
		"corrupt":   {func() []byte { b := bytes.Clone(want); b[100] ^= 1; return b }, "block 7 reads back with a bad checksum (corrupt data)"},
		"zeroes":    {func() []byte { return make([]byte, 512) }, "block 7 reads back without a verify stamp (zeroed, never written or overwritten)"},
	} {
		err := checkBlock(tc.got(), 7, 42)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}
