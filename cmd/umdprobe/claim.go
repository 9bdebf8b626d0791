package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/umdkit/umd/broker"
	"github.com/umdkit/umd/internal/bench"
	"github.com/umdkit/umd/internal/size"
)

// environ is the environment claim reads (tests replace it).
var environ = os.Environ

const schemaClaim = "umd.claim/v1"

// errClaimFailed: a device of the claim could not be opened or verified
// (each failure is in the output).
var errClaimFailed = errors.New("the claim failed")

// claimReport is what claim found, as -o json writes it.
type claimReport struct {
	Schema  string        `json:"schema"`
	Claim   string        `json:"claim"`
	Mode    string        `json:"mode"`
	Socket  string        `json:"socket,omitempty"`
	Devices []claimDevice `json:"devices"`
}

type claimDevice struct {
	BDF        string                 `json:"bdf"`
	Var        string                 `json:"var"`
	Mode       string                 `json:"mode,omitempty"`
	Queues     int                    `json:"queues,omitempty"`
	Depth      int                    `json:"depth,omitempty"`
	Polled     bool                   `json:"polled,omitempty"`
	PoolBytes  int64                  `json:"pool_bytes,omitempty"`
	PoolIOVA   string                 `json:"pool_iova,omitempty"`
	Namespaces []broker.NamespaceInfo `json:"namespaces,omitempty"`
	// Verified is the number of blocks written and read back intact.
	Verified int    `json:"verified_blocks,omitempty"`
	Error    string `json:"error,omitempty"`
}

// runClaim opens each device of the claim in the environment (a container
// prepared by the umd DRA driver) by its grant and says what it got; with
// verify > 0 it also writes verify blocks from LBA 0 of namespace 1 and
// reads them back.
func runClaim(stdout io.Writer, verify int, opt options) error {
	env, err := broker.ClaimFromEnv(environ())
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	rep := claimReport{Schema: schemaClaim, Claim: env.Claim, Mode: env.Mode, Socket: env.Socket}
	failed := false
	for _, d := range env.Devices {
		cd := claimDevice{BDF: d.BDF, Var: d.Var}
		if err := claimOne(&cd, env, d, verify); err != nil {
			cd.Error = err.Error()
			failed = true
		}
		rep.Devices = append(rep.Devices, cd)
	}
	if opt.output == "json" {
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	} else if err := writeClaim(stdout, rep, verify); err != nil {
		return err
	}
	if failed {
		return reportedError{errClaimFailed}
	}
	return nil
}

// claimOne opens one device's grant on its own connection and, with
// verify, checks I/O through it.
func claimOne(cd *claimDevice, env broker.ClaimEnv, d broker.ClaimDevice, verify int) error {
	if d.Grant == "" {
		return fmt.Errorf("mode %s is not a broker session: nothing to open by grant", env.Mode)
	}
	c, err := broker.Dial(env.Socket)
	if err != nil {
		return err
	}
	defer c.Close()
	sess, err := c.OpenGrant(d.BDF, d.Grant)
	if err != nil {
		return err
	}
	l := sess.Layout
	cd.Mode, cd.Queues, cd.Polled, cd.PoolBytes, cd.Namespaces = l.Mode, len(l.Queues), l.Polled, l.PoolBytes, l.Namespaces
	cd.Depth = l.Queues[0].Depth
	cd.PoolIOVA = fmt.Sprintf("0x%x", l.PoolIOVA)
	if verify == 0 {
		return nil
	}
	if l.Mode != broker.ModeMediated {
		return fmt.Errorf("--verify: the session is %s; umdprobe verifies through mediated sessions only", l.Mode)
	}
	n, err := verifyBlocks(sess, verify, uint32(time.Now().UnixNano()))
	cd.Verified = n
	return err
}

// verifyBlocks writes blocks blocks of namespace 1 from LBA 0, in chunks
// that fit half the pool and the transfer limit, each block stamped in
// umdbench's verify format (bench.StampBlock: its LBA, the pass and a
// checksum), then reads them back into the other half and checks them.
// It returns how many blocks came back intact.
func verifyBlocks(sess *broker.Session, blocks int, pass uint32) (int, error) {
	l := sess.Layout
	if len(l.Namespaces) == 0 {
		return 0, errors.New("the device has no namespace")
	}
	ns := l.Namespaces[0]
	lbs := ns.LBASize
	if uint64(blocks) > ns.Blocks {
		return 0, fmt.Errorf("--verify %d: namespace %d has %d blocks", blocks, ns.NSID, ns.Blocks)
	}
	half := l.PoolBytes / 2
	chunk := min(int(half), l.MaxTransfer) / lbs
	if l.MaxTransfer <= 0 {
		chunk = int(half) / lbs
	}
	if chunk < 1 {
		return 0, fmt.Errorf("--verify: a %d-byte pool cannot hold two %d-byte blocks", l.PoolBytes, lbs)
	}
	chunk = min(chunk, 65536)
	pool := sess.Pool.Bytes()
	for first, i := 0, 0; first < blocks; first, i = first+chunk, i+1 {
		n := min(chunk, blocks-first)
		q := i % len(l.Queues)
		for b := range n {
			bench.StampBlock(pool[b*lbs:(b+1)*lbs], uint64(first+b), pass)
		}
		if err := sess.Write(q, ns.NSID, uint64(first), n, 0); err != nil {
			return first, fmt.Errorf("writing blocks %d-%d: %w", first, first+n-1, err)
		}
		clear(pool[half : half+int64(n*lbs)])
		if err := sess.Read(q, ns.NSID, uint64(first), n, half); err != nil {
			return first, fmt.Errorf("reading blocks %d-%d: %w", first, first+n-1, err)
		}
		for b := range n {
			got := pool[half+int64(b*lbs) : half+int64((b+1)*lbs)]
			if err := checkBlock(got, uint64(first+b), pass); err != nil {
				return first + b, err
			}
		}
	}
	return blocks, nil
}

// checkBlock says how a block read back differs from what was written.
func checkBlock(got []byte, lba uint64, pass uint32) error {
	field, _, found, ok := bench.CheckBlock(got, lba, pass)
	switch {
	case ok:
		return nil
	case field == "magic":
		return fmt.Errorf("block %d reads back without a verify stamp (zeroed, never written or overwritten)", lba)
	case field == "LBA":
		return fmt.Errorf("block %d reads back stamped with LBA %d (misplaced data)", lba, found)
	case field == "pass":
		return fmt.Errorf("block %d reads back from pass %x, not this pass %x (stale data)", lba, found, pass)
	}
	return fmt.Errorf("block %d reads back with a bad checksum (corrupt data)", lba)
}

func writeClaim(w io.Writer, rep claimReport, verify int) error {
	fmt.Fprintf(w, "claim %s: mode %s, socket %s, %d device(s)\n", rep.Claim, rep.Mode, orDash(rep.Socket), len(rep.Devices))
	for _, d := range rep.Devices {
		if d.Queues > 0 {
			polled := "interrupts"
			if d.Polled {
				polled = "polled"
			}
			fmt.Fprintf(w, "claim %s device %s: %s session, %d queue pair(s) of depth %d (%s), %s pool at IOVA %s", rep.Claim, d.BDF, d.Mode, d.Queues, d.Depth, polled, size.Exact(uint64(d.PoolBytes)), d.PoolIOVA)
			for _, ns := range d.Namespaces {
				fmt.Fprintf(w, ", namespace %d: %d blocks of %d bytes", ns.NSID, ns.Blocks, ns.LBASize)
			}
			fmt.Fprintln(w)
		}
		switch {
		case d.Error != "":
			fmt.Fprintf(w, "claim %s device %s: FAILED: %s\n", rep.Claim, d.BDF, d.Error)
		case verify > 0:
			lbs := 512
			if len(d.Namespaces) > 0 {
				lbs = d.Namespaces[0].LBASize
			}
			fmt.Fprintf(w, "claim %s device %s: verified %d blocks (%s) ok\n", rep.Claim, d.BDF, d.Verified, size.Exact(uint64(d.Verified)*uint64(lbs)))
		}
	}
	return nil
}
