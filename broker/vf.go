package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/sriov"
	"github.com/umdkit/umd/vfio"
)

// VF leases give a client a whole SR-IOV virtual function: a controller of
// its own in an IOMMU group of its own, so its DMA is confined by the
// IOMMU, not by the broker's checks. The broker keeps the physical
// function (and with it the VFs' resources and namespace attachments);
// the client opens the VF itself with umd.Open, in its own container.
//
// Lifetime: when the lease's connection ends, the broker takes the VF's
// controller offline and back online (sriov.PF.Recycle), which stops all
// its DMA and drops its queues whatever the client still holds, and
// gives the group's device node back to root.

// vfPool is a PF whose VFs the server leases.
type vfPool struct {
	pf     *sriov.PF
	access Access
	vfs    []sriov.VF
	held   []uint64 // connection id holding each VF; 0 when free
}

// vfLease is the VF a connection holds.
type vfLease struct {
	pool    *vfPool
	index   int
	node    string // /dev/vfio/N
	chowned bool
}

// VFInfo is what a client needs to open its leased VF: its address, the
// VF token of its PF (without which vfio-pci refuses to open a VF whose PF
// is held by vfio-pci) and its IOMMU group.
type VFInfo struct {
	BDF        string `json:"bdf"`
	PF         string `json:"pf"`
	Token      string `json:"token"`
	IOMMUGroup int    `json:"iommu_group"`
}

// AddVFs lets clients lease the enabled VFs of pf (sriov.Enable) one
// each, under access. The server owns pf from now on: Close disables its
// VFs (before closing the PF's device, which the server must also serve,
// or which the caller closes after Close).
func (s *Server) AddVFs(pf *sriov.PF, access Access) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.vfPools[pf.BDF()]; dup {
		return fmt.Errorf("adding the VFs of %s to the broker: already served", pf.BDF())
	}
	vfs := pf.VFs()
	if len(vfs) == 0 {
		return fmt.Errorf("adding the VFs of %s to the broker: it has none enabled", pf.BDF())
	}
	s.vfPools[pf.BDF()] = &vfPool{pf: pf, access: access, vfs: vfs, held: make([]uint64, len(vfs))}
	return nil
}

// leaseVF gives the connection a free VF of the PF named by device.
func (c *conn) leaseVF(device string) (*VFInfo, *Error) {
	c.mu.Lock()
	busy := c.sess != nil || c.vf != nil
	c.mu.Unlock()
	if busy {
		return nil, errorf(CodeState, "vf: this connection already holds a session or a VF")
	}
	s := c.s
	s.mu.Lock()
	p, ok := s.vfPools[device]
	if d := s.devices[device]; !ok && d != nil && d.retired != "" {
		s.mu.Unlock()
		return nil, d.unavailable("vf")
	}
	if !ok {
		s.mu.Unlock()
		return nil, errorf(CodeNoDevice, "vf: the broker leases no VFs of %q", device)
	}
	if !p.access.allows(c.cred.Uid, c.cred.Gid, c.groups...) {
		s.mu.Unlock()
		return nil, errorf(CodePermission, "vf: uid %d gid %d may not use the VFs of %s", c.cred.Uid, c.cred.Gid, device)
	}
	i := -1
	for k, h := range p.held {
		if h == 0 {
			i = k
			break
		}
	}
	if i < 0 {
		s.mu.Unlock()
		return nil, errorf(CodeQuota, "vf: all %d VFs of %s are leased", len(p.vfs), device)
	}
	p.held[i] = c.id
	s.mu.Unlock()

	vf := p.vfs[i]
	l := &vfLease{pool: p, index: i, node: "/dev/vfio/" + strconv.Itoa(vf.IOMMUGroup)}
	// A fresh controller: nothing of an earlier holder survives.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := p.pf.Recycle(ctx, vf)
	cancel()
	if err != nil {
		c.releaseVF(l)
		return nil, errorf(CodeDevice, "vf: %v", err)
	}
	if c.cred.Uid != 0 {
		// The client opens the group itself: let its user do so.
		if err := os.Chown(l.node, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			c.releaseVF(l)
			return nil, errorf(CodeDevice, "vf: giving %s to uid %d: %v", l.node, c.cred.Uid, err)
		}
		l.chowned = true
	}
	c.mu.Lock()
	c.vf = l
	c.mu.Unlock()
	return &VFInfo{BDF: vf.BDF, PF: device, Token: p.pf.Token().String(), IOMMUGroup: vf.IOMMUGroup}, nil
}

// releaseVF ends a lease: the VF's controller is recycled (its DMA for
// the client stops), its group node goes back to root, and it is free.
func (c *conn) releaseVF(l *vfLease) error {
	var errs []error
	vf := l.pool.vfs[l.index]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := l.pool.pf.Recycle(ctx, vf); err != nil {
		errs = append(errs, err)
	}
	cancel()
	if l.chowned {
		if err := os.Chown(l.node, 0, 0); err != nil {
			errs = append(errs, err)
		}
	}
	c.s.mu.Lock()
	if len(errs) == 0 {
		l.pool.held[l.index] = 0
	}
	// A VF that could not be recycled stays held: the next client must
	// not get a controller the last one may still drive.
	c.s.mu.Unlock()
	return errors.Join(errs...)
}

// closeVFs disables the VFs of every pool; the caller holds no lock.
func (s *Server) closeVFs() []error {
	s.mu.Lock()
	pools := make([]*vfPool, 0, len(s.vfPools))
	for _, p := range s.vfPools {
		pools = append(pools, p)
	}
	s.mu.Unlock()
	var errs []error
	for _, p := range pools {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := p.pf.Disable(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	return errs
}

// VFLease is a virtual function the broker leased to this client.
type VFLease struct {
	VFInfo
	// Token is VFInfo.Token parsed.
	VFToken vfio.VFToken
}

// LeaseVF asks for a whole virtual function of the SR-IOV device pf. A
// connection holds at most one lease (or one session); the VF is recycled
// (its controller reset through the PF) when the connection ends. Open it
// with VFLease.Open.
func (c *Client) LeaseVF(pf string) (*VFLease, error) {
	r, _, err := c.call(&Request{Op: OpVF, Device: pf}, 0)
	if err != nil {
		return nil, fmt.Errorf("leasing a VF of %s: %w", pf, err)
	}
	if r.VF == nil {
		return nil, fmt.Errorf("leasing a VF of %s: the broker sent no VF", pf)
	}
	tok, err := vfio.ParseVFToken(r.VF.Token)
	if err != nil {
		return nil, fmt.Errorf("leasing a VF of %s: %w", pf, err)
	}
	return &VFLease{VFInfo: *r.VF, VFToken: tok}, nil
}

// Open registers the lease's VF token for its VF in this process and opens
// the VF with umd.Open, in a container of this process's own.
func (l *VFLease) Open(ctx context.Context, o *umd.Options) (*umd.Device, error) {
	if err := vfio.UseVFToken(l.BDF, l.VFToken); err != nil {
		return nil, err
	}
	return umd.Open(ctx, l.BDF, o)
}
