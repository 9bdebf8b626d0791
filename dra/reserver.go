package dra

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/umdkit/umd/broker"
)

// BrokerReserver is the Reserver of the real driver: it asks umdd, at its
// unix socket, to reserve broker sessions under claim UIDs (broker
// Client.Reserve and Release). The driver's uid must be one of umdd's
// reservers (root, by default).
//
// Each call dials umdd anew, so a restarted umdd is reached without
// ceremony; a restarted umdd has forgotten every reservation (they live
// in its memory), and Preparer.Prepare reserves them again, under new
// grants. The calls are short and do not watch ctx beyond checking it
// before they start.
type BrokerReserver struct {
	// Socket is umdd's socket on the node.
	Socket string
}

// NewBrokerReserver returns a BrokerReserver for umdd at socket.
func NewBrokerReserver(socket string) *BrokerReserver { return &BrokerReserver{Socket: socket} }

// Reserve reserves r.Params on r.BDF under r.ClaimUID. Modes mediated and
// trusted are broker sessions: their grant is umdd's. Modes vf and
// exclusive are not reserved at umdd (a VF is leased by the client's own
// connection, an exclusive device passes to the container whole) and get
// a Grant with no ID.
func (b *BrokerReserver) Reserve(ctx context.Context, r Reservation) (Grant, error) {
	res, ok := BrokerReservation(r)
	if !ok {
		return Grant{}, nil
	}
	if err := ctx.Err(); err != nil {
		return Grant{}, fmt.Errorf("reserving %s for claim %s: %w", r.Device, r.ClaimUID, err)
	}
	c, err := broker.Dial(b.Socket)
	if err != nil {
		return Grant{}, fmt.Errorf("reserving %s for claim %s: %w", r.Device, r.ClaimUID, err)
	}
	defer c.Close()
	g, err := c.Reserve(res)
	if err != nil {
		return Grant{}, fmt.Errorf("reserving %s: %w", r.Device, err)
	}
	return Grant{ID: g.ID}, nil
}

// Release releases everything umdd holds under the claim, ending the
// sessions opened with its grants. A umdd that is not running (no socket,
// or nobody listening on it) holds nothing, so that is success too.
func (b *BrokerReserver) Release(ctx context.Context, claimUID string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("releasing claim %s: %w", claimUID, err)
	}
	c, err := broker.Dial(b.Socket)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("releasing claim %s: %w", claimUID, err)
	}
	defer c.Close()
	return c.Release(claimUID)
}

// BrokerReservation maps a reservation of the driver to umdd's: queue
// pairs, depth, pool size, mode, and completion "poll" as polled queue
// pairs. It reports false for modes that are not broker sessions (vf,
// exclusive).
func BrokerReservation(r Reservation) (broker.Reservation, bool) {
	p := r.Params
	if p.Mode != ModeMediated && p.Mode != ModeTrusted {
		return broker.Reservation{}, false
	}
	return broker.Reservation{
		Claim:     r.ClaimUID,
		Device:    r.BDF.String(),
		Mode:      p.Mode,
		Queues:    p.QueuePairs,
		Depth:     p.QueueDepth,
		PoolBytes: p.PoolBytes,
		Polled:    p.Completion == CompletionPoll,
	}, true
}
