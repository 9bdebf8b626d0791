package sriov

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/vfio"
)

// Errors of Enable and Disable, wrapped with context; test them with
// errors.Is.
var (
	// ErrNotSRIOV: the function has no SR-IOV capability (no
	// sriov_totalvfs in sysfs), or its controller does not answer the
	// virtualization Identify data (CNS 14h/15h).
	ErrNotSRIOV = errors.New("not an SR-IOV physical function with virtualization management")
	// ErrTooManyVFs: more VFs asked for than the function offers
	// (sriov_totalvfs) or than it has secondary controllers for.
	ErrTooManyVFs = errors.New("more virtual functions than the device offers")
	// ErrNoFlexibleResources: the primary controller has too few free
	// flexible queue or interrupt resources for the VFs asked for, or
	// lets one secondary controller hold fewer than asked.
	ErrNoFlexibleResources = errors.New("not enough flexible resources for the virtual functions")
	// ErrAlreadyEnabled: the function's VFs are enabled already (by this
	// or another process).
	ErrAlreadyEnabled = errors.New("virtual functions already enabled")
	// ErrVFInUse: a VF's VFIO group is still open; Disable would block
	// until it is closed, so it refuses.
	ErrVFInUse = errors.New("a virtual function is still open")
	// ErrDisabled: the PF's VFs were disabled already.
	ErrDisabled = errors.New("virtual functions disabled")
)

// Options configure Enable.
type Options struct {
	// VFs is the number of virtual functions to enable; 0 means 1.
	VFs int
	// IOQueues is the number of I/O queue pairs each VF's controller
	// gets (it gets its admin queue on top); 0 means 1.
	IOQueues int
	// Vectors is the number of MSI-X vectors each VF's controller gets
	// (the admin queue's included); 0 means 1.
	Vectors int
	// Sysfs is the sysfs root; "" means /sys.
	Sysfs string
	// BindTimeout bounds the wait for the VFs to be bound to vfio-pci; 0
	// means 5 s.
	BindTimeout time.Duration
}

// VF is one enabled virtual function, online and bound to vfio-pci.
type VF struct {
	// Index is the VF's index from 0 (its VF number is Index+1).
	Index int
	// BDF is its PCI address, for umd.Open.
	BDF string
	// ControllerID is its secondary controller's ID (SCID), which
	// Namespace Attachment names.
	ControllerID uint16
	// IOMMUGroup is its IOMMU group: the isolation unit, its own when the
	// PF sits behind ports with ACS.
	IOMMUGroup int
	// IOQueues and Vectors are the resources its controller was given.
	IOQueues, Vectors int
}

// PF is an SR-IOV physical function whose VFs are enabled. It borrows the
// PF's umd.Device, which must stay open (its controller enabled) until
// Disable: resetting or closing the PF's controller takes every
// secondary controller offline, and a reset of the PF function removes
// the VFs under the kernel's feet.
type PF struct {
	dev   *umd.Device
	bdf   string
	sys   string
	token vfio.VFToken

	mu       sync.Mutex
	vfs      []VF
	attached []attachment // namespaces attached through this PF, to detach
	disabled bool
}

type attachment struct {
	nsid   uint32
	cntlid uint16
}

// enableSRIOV counts the PFs of this process with VFs enabled, which need
// vfio-pci's enable_sriov parameter on: both enabling and disabling VFs
// through vfio-pci fail with ENOENT without it.
var enableSRIOV struct {
	sync.Mutex
	users int
	was   string // the parameter's value before the first user
}

const sriovParam = "module/vfio_pci/parameters/enable_sriov"

func acquireEnableSRIOV(sys string) error {
	enableSRIOV.Lock()
	defer enableSRIOV.Unlock()
	p := filepath.Join(sys, sriovParam)
	if enableSRIOV.users == 0 {
		raw, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("reading vfio-pci's enable_sriov: %w", err)
		}
		was := strings.TrimSpace(string(raw))
		if was != "Y" {
			if err := writeSysfs(p, "Y"); err != nil {
				return fmt.Errorf("turning on vfio-pci's enable_sriov: %w", err)
			}
		}
		enableSRIOV.was = was
	}
	enableSRIOV.users++
	return nil
}

func releaseEnableSRIOV(sys string) error {
	enableSRIOV.Lock()
	defer enableSRIOV.Unlock()
	enableSRIOV.users--
	if enableSRIOV.users > 0 || enableSRIOV.was == "Y" || enableSRIOV.was == "" {
		return nil
	}
	if err := writeSysfs(filepath.Join(sys, sriovParam), enableSRIOV.was); err != nil {
		return fmt.Errorf("restoring vfio-pci's enable_sriov: %w", err)
	}
	return nil
}

// Enable enables o.VFs virtual functions on pf (an SR-IOV NVMe controller
// opened with umd.Open, bound to vfio-pci): it checks the primary
// controller's flexible resources, sets a fresh VF token on the PF,
// writes sriov_numvfs, waits for the VFs to be bound to vfio-pci, assigns
// each VF's secondary controller its queues and vectors and sets it
// online (Virtualization Management), and registers the token for each
// VF with vfio.UseVFToken, so that umd.Open(ctx, vf.BDF, …) opens it.
//
// On error nothing is left behind: VFs already enabled are disabled again.
func Enable(ctx context.Context, pf *umd.Device, o Options) (_ *PF, err error) {
	if o.VFs <= 0 {
		o.VFs = 1
	}
	if o.IOQueues <= 0 {
		o.IOQueues = 1
	}
	if o.Vectors <= 0 {
		o.Vectors = 1
	}
	if o.BindTimeout <= 0 {
		o.BindTimeout = 5 * time.Second
	}
	sys := o.Sysfs
	if sys == "" {
		sys = "/sys"
	}
	p := &PF{dev: pf, bdf: pf.BDF(), sys: sys}
	what := fmt.Sprintf("enabling %d VFs on %s", o.VFs, p.bdf)
	fail := func(err error) error { return fmt.Errorf("%s: %w", what, err) }

	total, err := p.readInt("sriov_totalvfs")
	if errors.Is(err, os.ErrNotExist) {
		return nil, fail(fmt.Errorf("%w: no SR-IOV capability (no sriov_totalvfs)", ErrNotSRIOV))
	} else if err != nil {
		return nil, fail(err)
	}
	if o.VFs > total {
		return nil, fail(fmt.Errorf("%w: it offers %d", ErrTooManyVFs, total))
	}
	if n, err := p.readInt("sriov_numvfs"); err != nil {
		return nil, fail(err)
	} else if n != 0 {
		return nil, fail(fmt.Errorf("%w: sriov_numvfs is %d", ErrAlreadyEnabled, n))
	}

	caps, secs, err := Capabilities(ctx, pf)
	if err != nil {
		return nil, fail(err)
	}
	byVF := make([]nvmelike.SecondaryController, o.VFs)
	for i := range byVF {
		j := slices.IndexFunc(secs, func(s nvmelike.SecondaryController) bool { return int(s.VFNumber) == i+1 })
		if j < 0 {
			return nil, fail(fmt.Errorf("%w: no secondary controller for VF %d", ErrTooManyVFs, i+1))
		}
		byVF[i] = secs[j]
	}
	if err := checkResources("queue", caps.VQ, byVF, o.IOQueues+1, func(s nvmelike.SecondaryController) uint16 { return s.Queues }, o.VFs); err != nil {
		return nil, fail(err)
	}
	if err := checkResources("interrupt", caps.VI, byVF, o.Vectors, func(s nvmelike.SecondaryController) uint16 { return s.Interrupts }, o.VFs); err != nil {
		return nil, fail(err)
	}

	if p.token, err = vfio.NewVFToken(); err != nil {
		return nil, fail(err)
	}
	if err := p.setToken(); err != nil {
		return nil, fail(err)
	}
	if err := acquireEnableSRIOV(sys); err != nil {
		return nil, fail(err)
	}
	enabled := false
	defer func() {
		if err == nil {
			return
		}
		// Undo in the reverse order; the first error is the one reported.
		for _, vf := range p.vfs {
			p.offline(ctx, vf.ControllerID)
			vfio.ForgetVFToken(vf.BDF)
		}
		if enabled {
			writeSysfs(p.path("sriov_numvfs"), "0")
		}
		releaseEnableSRIOV(sys)
	}()
	if err := writeSysfs(p.path("sriov_numvfs"), strconv.Itoa(o.VFs)); err != nil {
		return nil, fail(fmt.Errorf("writing sriov_numvfs: %w", err))
	}
	enabled = true

	for i, sc := range byVF {
		vf, err := p.waitVF(i, o.BindTimeout)
		if err != nil {
			return nil, fail(err)
		}
		vf.ControllerID = sc.ID
		vf.IOQueues, vf.Vectors = o.IOQueues, o.Vectors
		p.vfs = append(p.vfs, vf)
		if err := p.online(ctx, sc, o.IOQueues+1, o.Vectors); err != nil {
			return nil, fail(fmt.Errorf("VF %s (controller %d): %w", vf.BDF, sc.ID, err))
		}
		if err := vfio.UseVFToken(vf.BDF, p.token); err != nil {
			return nil, fail(err)
		}
	}
	return p, nil
}

// checkResources checks that n secondary controllers can each get want
// resources of one type.
func checkResources(kind string, f nvmelike.FlexibleResources, secs []nvmelike.SecondaryController, want int, held func(nvmelike.SecondaryController) uint16, n int) error {
	if f.Total == 0 {
		return fmt.Errorf("%w: the controller has no flexible %s resources", ErrNoFlexibleResources, kind)
	}
	if want > int(f.MaxPerSecondary) {
		return fmt.Errorf("%w: %d %s resources asked for per VF, a secondary controller may hold %d", ErrNoFlexibleResources, want, kind, f.MaxPerSecondary)
	}
	free := f.Free()
	for _, s := range secs {
		free += int(held(s)) // given back first
	}
	if n*want > free {
		return fmt.Errorf("%w: %d VFs × %d %s resources, %d free", ErrNoFlexibleResources, n, want, kind, free)
	}
	return nil
}

// Capabilities reads the primary controller's flexible resources
// (Identify CNS 14h) and its secondary controllers (CNS 15h) through pf's
// admin queue. A controller without them gives an error wrapping
// ErrNotSRIOV.
func Capabilities(ctx context.Context, pf *umd.Device) (*nvmelike.PrimaryControllerCaps, []nvmelike.SecondaryController, error) {
	buf, err := pf.Alloc(nvmelike.IdentifyDataSize)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the virtualization capabilities of %s: %w", pf.BDF(), err)
	}
	defer pf.Free(buf)
	ctrl := pf.Controller()
	notSRIOV := func(what string, err error) error {
		var st *nvmelike.StatusError
		if errors.As(err, &st) {
			return fmt.Errorf("reading the %s of %s: %w: %w", what, pf.BDF(), ErrNotSRIOV, err)
		}
		return fmt.Errorf("reading the %s of %s: %w", what, pf.BDF(), err)
	}
	cmd := nvmelike.PrimaryControllerCapsCommand(buf)
	if _, err := ctrl.Admin(ctx, &cmd); err != nil {
		return nil, nil, notSRIOV("primary controller capabilities", err)
	}
	caps, err := nvmelike.ParsePrimaryControllerCaps(buf.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", pf.BDF(), err)
	}
	clear(buf.Bytes)
	cmd = nvmelike.SecondaryControllerListCommand(0, buf)
	if _, err := ctrl.Admin(ctx, &cmd); err != nil {
		return nil, nil, notSRIOV("secondary controller list", err)
	}
	secs, err := nvmelike.ParseSecondaryControllerList(buf.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", pf.BDF(), err)
	}
	if !caps.Queues || !caps.Interrupts || len(secs) == 0 {
		return nil, nil, fmt.Errorf("%s: %w: no flexible queue and interrupt resources or no secondary controllers", pf.BDF(), ErrNotSRIOV)
	}
	return caps, secs, nil
}

// setToken sets the PF's VF token through a duplicate of its VFIO device
// descriptor.
func (p *PF) setToken() error { return p.dev.SetVFToken(p.token) }

// online gives secondary controller sc its resources and sets it online;
// one left online before (by an earlier user) is taken offline first,
// since resources are assigned only to offline controllers.
func (p *PF) online(ctx context.Context, sc nvmelike.SecondaryController, queues, vectors int) error {
	ctrl := p.dev.Controller()
	if sc.Online {
		if err := p.offline(ctx, sc.ID); err != nil {
			return err
		}
	}
	for _, a := range []struct {
		rt nvmelike.VirtResource
		n  int
	}{{nvmelike.VirtQueues, queues}, {nvmelike.VirtInterrupts, vectors}} {
		cmd := nvmelike.VirtualizationManagementCommand(nvmelike.VirtSecondaryAssign, a.rt, sc.ID, uint16(a.n))
		c, err := ctrl.Admin(ctx, &cmd)
		if err != nil {
			return fmt.Errorf("assigning %d %s resources: %w", a.n, a.rt, err)
		}
		if int(c.DW0) != a.n {
			return fmt.Errorf("assigning %d %s resources: the controller assigned %d: %w", a.n, a.rt, c.DW0, ErrNoFlexibleResources)
		}
	}
	cmd := nvmelike.VirtualizationManagementCommand(nvmelike.VirtSecondaryOnline, 0, sc.ID, 0)
	if _, err := ctrl.Admin(ctx, &cmd); err != nil {
		return fmt.Errorf("setting it online: %w", err)
	}
	return nil
}

// offline sets secondary controller id offline and gives its resources
// back to the primary's pool.
func (p *PF) offline(ctx context.Context, id uint16) error {
	ctrl := p.dev.Controller()
	cmd := nvmelike.VirtualizationManagementCommand(nvmelike.VirtSecondaryOffline, 0, id, 0)
	if _, err := ctrl.Admin(ctx, &cmd); err != nil {
		return fmt.Errorf("setting controller %d offline: %w", id, err)
	}
	for _, rt := range []nvmelike.VirtResource{nvmelike.VirtQueues, nvmelike.VirtInterrupts} {
		cmd := nvmelike.VirtualizationManagementCommand(nvmelike.VirtSecondaryAssign, rt, id, 0)
		if _, err := ctrl.Admin(ctx, &cmd); err != nil {
			return fmt.Errorf("taking the %s resources of controller %d back: %w", rt, id, err)
		}
	}
	return nil
}

// waitVF waits until VF i exists and is bound to vfio-pci with its group
// node in place, and describes it.
func (p *PF) waitVF(i int, timeout time.Duration) (VF, error) {
	link := p.path(fmt.Sprintf("virtfn%d", i))
	deadline := time.Now().Add(timeout)
	var last error
	for {
		vf, err := p.readVF(i, link)
		if err == nil {
			return vf, nil
		}
		last = err
		if time.Now().After(deadline) {
			return VF{}, fmt.Errorf("VF %d not ready after %v: %w", i+1, timeout, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *PF) readVF(i int, link string) (VF, error) {
	target, err := os.Readlink(link)
	if err != nil {
		return VF{}, err
	}
	bdf := filepath.Base(target)
	drv, err := os.Readlink(p.devicePath(bdf, "driver"))
	if err != nil {
		return VF{}, fmt.Errorf("%s has no driver: %w", bdf, err)
	}
	if d := filepath.Base(drv); d != "vfio-pci" {
		return VF{}, fmt.Errorf("%s is bound to %s, not vfio-pci", bdf, d)
	}
	group, err := vfio.Root{Sys: p.sys}.GroupOf(bdf)
	if err != nil {
		return VF{}, err
	}
	return VF{Index: i, BDF: bdf, IOMMUGroup: group}, nil
}

// Recycle takes vf's controller offline and back online with the
// resources Enable gave it: its queues, outstanding commands and
// configuration are gone, and the device stops every DMA it did for its
// last user. A process still holding the VF finds a controller that is
// no longer ready. A broker recycles a VF between two clients. The VF's
// namespace attachments stay.
func (p *PF) Recycle(ctx context.Context, vf VF) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.disabled {
		return fmt.Errorf("recycling VF %s: %w", vf.BDF, ErrDisabled)
	}
	if err := p.offline(ctx, vf.ControllerID); err != nil {
		return fmt.Errorf("recycling VF %s: %w", vf.BDF, err)
	}
	if err := p.online(ctx, nvmelike.SecondaryController{ID: vf.ControllerID}, vf.IOQueues+1, vf.Vectors); err != nil {
		return fmt.Errorf("recycling VF %s: %w", vf.BDF, err)
	}
	return nil
}

// BDF returns the PF's PCI address.
func (p *PF) BDF() string { return p.bdf }

// Token returns the VF token set on the PF: a process other than this one
// needs it (vfio.UseVFToken) to open a VF.
func (p *PF) Token() vfio.VFToken { return p.token }

// VFs returns the enabled VFs, by index.
func (p *PF) VFs() []VF {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.vfs)
}

// AttachNamespace attaches namespace nsid of the PF's NVM subsystem to
// vf's controller (Namespace Attachment), typically one the subsystem
// holds detached, so that the VF, and only it, sees it. Disable detaches
// it again. The VF's controller must be (re)opened to see it: umd.Open
// reads the active namespaces once.
func (p *PF) AttachNamespace(ctx context.Context, nsid uint32, vf VF) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.disabled {
		return fmt.Errorf("attaching namespace %d to %s: %w", nsid, vf.BDF, ErrDisabled)
	}
	if err := p.attachment(ctx, nsid, vf.ControllerID, false); err != nil {
		return fmt.Errorf("attaching namespace %d to %s (controller %d): %w", nsid, vf.BDF, vf.ControllerID, err)
	}
	p.attached = append(p.attached, attachment{nsid, vf.ControllerID})
	return nil
}

// DetachNamespace detaches namespace nsid from vf's controller.
func (p *PF) DetachNamespace(ctx context.Context, nsid uint32, vf VF) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.attachment(ctx, nsid, vf.ControllerID, true); err != nil {
		return fmt.Errorf("detaching namespace %d from %s (controller %d): %w", nsid, vf.BDF, vf.ControllerID, err)
	}
	p.attached = slices.DeleteFunc(p.attached, func(a attachment) bool { return a == attachment{nsid, vf.ControllerID} })
	return nil
}

func (p *PF) attachment(ctx context.Context, nsid uint32, cntlid uint16, detach bool) error {
	buf, err := p.dev.Alloc(nvmelike.IdentifyDataSize)
	if err != nil {
		return err
	}
	defer p.dev.Free(buf)
	if err := nvmelike.PutControllerList(buf.Bytes, []uint16{cntlid}); err != nil {
		return err
	}
	cmd := nvmelike.NamespaceAttachmentCommand(nsid, detach, buf)
	_, err = p.dev.Controller().Admin(ctx, &cmd)
	return err
}

// Disable undoes Enable: it detaches the namespaces AttachNamespace
// attached, sets every VF's controller offline with its resources given
// back, disables the VFs (sriov_numvfs = 0) and forgets their tokens. Every
// VF must be closed first, in every process: a VF whose VFIO group is
// still open makes it fail with ErrVFInUse and change nothing (the
// kernel would otherwise block until the group is closed). VFs the
// kernel has disabled itself (vfio-pci does before it lets the PF go)
// count as closed. The PF's umd.Device stays open; close it after.
// Disabling twice returns ErrDisabled.
func (p *PF) Disable(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	what := fmt.Sprintf("disabling the VFs of %s", p.bdf)
	if p.disabled {
		return fmt.Errorf("%s: %w", what, ErrDisabled)
	}
	for _, vf := range p.vfs {
		if err := checkGroupFree(vf.IOMMUGroup); err != nil {
			return fmt.Errorf("%s: %s: %w", what, vf.BDF, err)
		}
	}
	p.disabled = true
	var errs []error
	for _, a := range p.attached {
		if err := p.attachment(ctx, a.nsid, a.cntlid, true); err != nil {
			errs = append(errs, fmt.Errorf("detaching namespace %d from controller %d: %w", a.nsid, a.cntlid, err))
		}
	}
	p.attached = nil
	for _, vf := range p.vfs {
		vfio.ForgetVFToken(vf.BDF)
		if err := p.offline(ctx, vf.ControllerID); err != nil {
			errs = append(errs, err)
		}
	}
	// When the PF is being unbound from vfio-pci, the kernel has removed
	// the VFs already and holds the PF's device lock until umd closes
	// it, which a write of sriov_numvfs (or a read: both take the lock)
	// would wait for forever. The VFs' sysfs entries say so lock-free.
	if p.anyVFPresent() {
		if err := writeSysfs(p.path("sriov_numvfs"), "0"); err != nil {
			errs = append(errs, fmt.Errorf("writing sriov_numvfs: %w", err))
		}
	}
	if err := releaseEnableSRIOV(p.sys); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// anyVFPresent reports whether a VF of p is still a PCI device.
func (p *PF) anyVFPresent() bool {
	return slices.ContainsFunc(p.vfs, func(vf VF) bool {
		_, err := os.Lstat(p.devicePath(vf.BDF))
		return !errors.Is(err, fs.ErrNotExist)
	})
}

// checkGroupFree tells whether VFIO group n is open somewhere: the legacy
// group interface lets one file open a group at a time (EBUSY). A group
// that is gone (the kernel removed the VF, as vfio-pci does before it
// gives up the PF) is free.
func checkGroupFree(n int) error {
	fd, err := unix.Open("/dev/vfio/"+strconv.Itoa(n), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%w: its VFIO group %d is open", ErrVFInUse, n)
	}
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking VFIO group %d: %w", n, err)
	}
	unix.Close(fd)
	return nil
}

func (p *PF) path(name string) string {
	return p.devicePath(p.bdf, name)
}

// devicePath is the sysfs directory of the PCI function bdf, or a file in
// it.
func (p *PF) devicePath(bdf string, elem ...string) string {
	return filepath.Join(append([]string{p.sys, "bus", "pci", "devices", bdf}, elem...)...)
}

func (p *PF) readInt(name string) (int, error) {
	raw, err := os.ReadFile(p.path(name))
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0, fmt.Errorf("%s of %s: %w", name, p.bdf, err)
	}
	return n, nil
}

// writeSysfs writes value to a sysfs attribute in one write, as the
// kernel wants.
func writeSysfs(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte(value))
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	return cerr
}
