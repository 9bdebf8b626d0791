//go:build guest

package broker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu/guest"
)

// exclusiveLBA is where the exclusive child writes its pattern.
const exclusiveLBA = 256

// exclusiveChild opens the device itself (umd.Open, as a container given
// an exclusive claim does), writes a pattern of 8 blocks at exclusiveLBA
// and reads it back, says "ok", then holds the device until a "close"
// line, closes it and says "closed".
func exclusiveChild(bdf string, seed byte, say func(string, ...any)) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 4 << 20})
	if err != nil {
		say("err open: %v", err)
		return 1
	}
	closed := false
	defer func() {
		if !closed {
			dev.Close()
		}
	}()
	if err := exclusiveIO(ctx, dev, seed); err != nil {
		say("err %v", err)
		return 1
	}
	say("ok")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "close" {
			closed = true
			if err := dev.Close(); err != nil {
				say("err close: %v", err)
				return 1
			}
			say("closed")
			return 0
		}
	}
	return 0
}

func exclusiveIO(ctx context.Context, dev *umd.Device, seed byte) error {
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 8})
	if err != nil {
		return err
	}
	defer q.Close()
	lbaSize := 512
	if ns, err := dev.Controller().IdentifyNamespace(ctx, 1); err == nil {
		lbaSize = ns.LBASize
	}
	n := 8 * lbaSize
	out, err := dev.Alloc(n)
	if err != nil {
		return err
	}
	defer dev.Free(out)
	back, err := dev.Alloc(n)
	if err != nil {
		return err
	}
	defer dev.Free(back)
	for i := range n {
		out.Bytes[i] = pattern(seed, i)
	}
	w := nvmelike.WriteCommand(1, exclusiveLBA, 8, out)
	if _, err := q.Exec(ctx, &w); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	r := nvmelike.ReadCommand(1, exclusiveLBA, 8, back)
	if _, err := q.Exec(ctx, &r); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(back.Bytes, out.Bytes) {
		return errors.New("read back differs")
	}
	return nil
}

// reopenableServer serves the first vfio-bound device, added so that it
// can be lent (AddReopenable), as umdd serves it.
func reopenableServer(t *testing.T) (*Server, string) {
	t.Helper()
	bdfs := guest.DriverFunctions(t, "vfio-pci")
	if len(bdfs) == 0 {
		t.Fatalf("topology %s: no function bound to vfio-pci", guest.Topology())
	}
	bdf := bdfs[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := &umd.Options{PoolSize: 8 << 20}
	dev, err := umd.Open(ctx, bdf, opts)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, err := NewServer(Config{Socket: filepath.Join(dir, "umdd.sock"), MaxQueuePairs: 4, MaxPoolBytes: 8 << 20})
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	if err := s.AddReopenable(ctx, dev, opts, Access{}); err != nil {
		dev.Close()
		t.Fatal(err)
	}
	serveInTest(t, s)
	return s, bdf
}

// TestGuestExclusive hands a device umdd serves to another process and
// back: while umdd serves it, a child cannot open it; reserved exclusive,
// umdd closes it and the child opens it with umd.Open and does I/O;
// released while the child still holds it, umdd cannot open it again and
// shows it failed; once the child closed it, an exclusive reservation and
// release of it open it again, and a client session does I/O on it and
// reads what the child wrote.
func TestGuestExclusive(t *testing.T) {
	guest.Require(t)
	s, bdf := reopenableServer(t)
	admin := dial(t, s.cfg.Socket)

	busy := startChild(t, "exclusive", s.cfg.Socket, bdf, 0x6c, 0, 0, nil)
	if l := busy.line(t); !strings.HasPrefix(l, "err open") {
		t.Fatalf("a child opened the device umdd serves: %s", l)
	}

	if _, err := admin.Reserve(Reservation{Claim: "claim-x", Device: bdf, Mode: ModeExclusive}); err != nil {
		t.Fatal(err)
	}
	if d := deviceInfo(t, admin, bdf); d.Lent != "claim-x" || d.FreeQueues != 0 {
		t.Fatalf("a lent device listed as %+v", d)
	}
	c := startChild(t, "exclusive", s.cfg.Socket, bdf, 0x6c, 0, 0, nil)
	if l := c.line(t); l != "ok" {
		t.Fatalf("the child on the lent device: %s", l)
	}

	start := time.Now()
	err := admin.Release("claim-x")
	if !errors.Is(err, ErrDevice) {
		t.Fatalf("releasing while the child holds the device: %v, want ErrDevice (it cannot be opened again)", err)
	}
	t.Logf("release with the device held: %v (after %v)", err, time.Since(start))
	if d := deviceInfo(t, admin, bdf); d.Lent != "" || d.Failed == "" {
		t.Fatalf("a device that did not open again listed as %+v", d)
	}
	if _, err := dial(t, s.cfg.Socket).OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 2 << 20}); !errors.Is(err, ErrState) {
		t.Fatalf("a session on the failed device: %v, want ErrState", err)
	}

	if _, err := io.WriteString(c.stdin, "close\n"); err != nil {
		t.Fatal(err)
	}
	if l := c.line(t); l != "closed" {
		t.Fatalf("the child closing the device: %s", l)
	}
	c.cmd.Wait()
	if _, err := admin.Reserve(Reservation{Claim: "claim-y", Device: bdf, Mode: ModeExclusive}); err != nil {
		t.Fatalf("an exclusive reservation of the failed device: %v", err)
	}
	start = time.Now()
	if err := admin.Release("claim-y"); err != nil {
		t.Fatalf("releasing once the child closed the device: %v", err)
	}
	t.Logf("the device opened again in %v", time.Since(start))
	if d := deviceInfo(t, admin, bdf); d.Lent != "" || d.Failed != "" || d.FreeQueues != d.MaxQueues {
		t.Fatalf("the device given back listed as %+v", d)
	}

	// Served again: a client session reads what the child wrote, and a
	// child's session does I/O through every queue pair.
	sess, err := dial(t, s.cfg.Socket).OpenSession(bdf, SessionOptions{Queues: 1, PoolBytes: 2 << 20})
	if err != nil {
		t.Fatalf("a session after the hand-back: %v", err)
	}
	lbaSize := sess.Layout.Namespaces[0].LBASize
	if err := sess.Read(0, 1, exclusiveLBA, 8, 0); err != nil {
		t.Fatal(err)
	}
	for i, b := range sess.Pool.Bytes()[:8*lbaSize] {
		if b != pattern(0x6c, i) {
			t.Fatalf("byte %d at LBA %d is 0x%02x: not what the exclusive child wrote", i, exclusiveLBA, b)
		}
	}
	sc := startChild(t, "session", s.cfg.Socket, bdf, 0x21, 512, 2, nil)
	if ci := sc.info(t); len(ci.Queues) != 2 {
		t.Fatalf("the session child: %+v", ci)
	}
	sc.io(t)
	io.WriteString(sc.stdin, "exit\n")
	sc.cmd.Wait()
}
