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
// trusted are broker sessions: their grant is umdd's. Mode exclusive asks
// umdd to lend the whole device to the claim (it stops serving it and
// closes it, so the container can open it; refused with broker.ErrState
// while sessions or other claims use it); a device umdd does not serve is
// free for the container already. Mode vf is not reserved at umdd (the
// client's own connection leases the VF). Neither exclusive nor vf has a
// session to open, so their Grant has no ID.
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
	if res.Mode == broker.ModeExclusive {
		if err != nil && !errors.Is(err, broker.ErrNoDevice) {
			return Grant{}, fmt.Errorf("reserving %s exclusive: %w", r.Device, err)
		}
		return Grant{}, nil
	}
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
// pairs; exclusive as umdd's exclusive reservation, which takes only the
// claim and the device. It reports false for vf, which is not reserved at
// umdd.
//
// A share is reserved on its controller's address under the share's
// device name (broker.Reservation.Name), so that a claim holding two
// shares of one controller gets two reservations, each with its grant; a
// whole device is umdd's unnamed reservation, as before names.
func BrokerReservation(r Reservation) (broker.Reservation, bool) {
	p := r.Params
	switch p.Mode {
	case ModeExclusive:
		return broker.Reservation{Claim: r.ClaimUID, Device: r.BDF.String(), Mode: broker.ModeExclusive}, true
	case ModeMediated, ModeTrusted:
	default:
		return broker.Reservation{}, false
	}
	return broker.Reservation{
		Claim:     r.ClaimUID,
		Device:    r.BDF.String(),
		Name:      reservationName(r),
		Mode:      p.Mode,
		Queues:    p.QueuePairs,
		Depth:     p.QueueDepth,
		PoolBytes: p.PoolBytes,
		Polled:    p.Completion == CompletionPoll,
	}, true
}

// reservationName is the name umdd keeps r's reservation under within the
// claim and the controller: the device's name for a share (whose name is
// not its controller's), none for a whole device.
func reservationName(r Reservation) string {
	if r.Device == DeviceName(r.BDF) {
		return ""
	}
	return r.Device
}
