//go:build guest

package sriov_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd"
	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/qemu"
	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/sriov"
	"github.com/umdkit/umd/vfio"
)

// openPF finds the vfio-bound function with an SR-IOV capability, opens it
// and checks that it is the topology's SR-IOV controller.
func openPF(ctx context.Context, t *testing.T) (*umd.Device, qemu.Controller) {
	t.Helper()
	c := guest.SRIOVController(t)
	for _, bdf := range guest.DriverFunctions(t, "vfio-pci") {
		if _, err := os.Stat(filepath.Join("/sys/bus/pci/devices", bdf, "sriov_totalvfs")); err != nil {
			continue
		}
		pf, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := pf.Close(); err != nil {
				t.Errorf("closing the PF: %v", err)
			}
		})
		if got := pf.Controller().IdentifyController().SN; got != c.Serial {
			t.Fatalf("SR-IOV function %s has serial %q, the topology says %q", bdf, got, c.Serial)
		}
		return pf, c
	}
	t.Fatalf("no vfio-bound function has sriov_totalvfs, yet topology %s has SR-IOV controller %s", guest.Topology(), c.Serial)
	return nil, c
}

func readSysfs(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(raw))
}

// enable enables VFs and registers a cleanup that disables them, then
// checks that the guest is as found: no VFs, enable_sriov as it was.
func enable(ctx context.Context, t *testing.T, pf *umd.Device, o sriov.Options) *sriov.PF {
	t.Helper()
	param := "/sys/module/vfio_pci/parameters/enable_sriov"
	was := readSysfs(t, param)
	p, err := sriov.Enable(ctx, pf, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Disable(context.Background()); err != nil && !errors.Is(err, sriov.ErrDisabled) {
			t.Errorf("disabling: %v", err)
		}
		if n := readSysfs(t, filepath.Join("/sys/bus/pci/devices", pf.BDF(), "sriov_numvfs")); n != "0" {
			t.Errorf("after Disable sriov_numvfs is %s", n)
		}
		for _, vf := range p.VFs() {
			if _, err := os.Stat(filepath.Join("/sys/bus/pci/devices", vf.BDF)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after Disable VF %s still exists (%v)", vf.BDF, err)
			}
		}
		if now := readSysfs(t, param); now != was {
			t.Errorf("enable_sriov is %s after Disable, was %s", now, was)
		}
	})
	return p
}

// TestVFsHaveOwnIOMMUGroups enables every VF and checks each is bound to
// vfio-pci alone in an IOMMU group of its own.
func TestVFsHaveOwnIOMMUGroups(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pf, c := openPF(ctx, t)
	pfGroup, err := vfio.GroupOf(pf.BDF())
	if err != nil {
		t.Fatal(err)
	}
	p := enable(ctx, t, pf, sriov.Options{VFs: c.SRIOV.MaxVFs})
	vfs := p.VFs()
	if len(vfs) != c.SRIOV.MaxVFs {
		t.Fatalf("%d VFs, want %d", len(vfs), c.SRIOV.MaxVFs)
	}
	if n := readSysfs(t, filepath.Join("/sys/bus/pci/devices", pf.BDF(), "sriov_numvfs")); n != strconv.Itoa(len(vfs)) {
		t.Errorf("sriov_numvfs %s, want %d", n, len(vfs))
	}
	groups := map[int]string{pfGroup: pf.BDF()}
	ids := map[uint16]bool{pf.Controller().IdentifyController().CNTLID: true}
	for _, vf := range vfs {
		if other, dup := groups[vf.IOMMUGroup]; dup {
			t.Errorf("VF %s shares IOMMU group %d with %s", vf.BDF, vf.IOMMUGroup, other)
		}
		groups[vf.IOMMUGroup] = vf.BDF
		members, err := os.ReadDir(fmt.Sprintf("/sys/kernel/iommu_groups/%d/devices", vf.IOMMUGroup))
		if err != nil {
			t.Fatal(err)
		}
		if len(members) != 1 || members[0].Name() != vf.BDF {
			t.Errorf("IOMMU group %d of VF %s holds %v", vf.IOMMUGroup, vf.BDF, members)
		}
		if drv := guest.DriverFunctions(t, "vfio-pci"); !slices.Contains(drv, vf.BDF) {
			t.Errorf("VF %s is not bound to vfio-pci (bound: %v)", vf.BDF, drv)
		}
		if ids[vf.ControllerID] {
			t.Errorf("VF %s: controller ID %d seen twice", vf.BDF, vf.ControllerID)
		}
		ids[vf.ControllerID] = true
	}
	_, secs, err := sriov.Capabilities(ctx, pf)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secs {
		if int(s.VFNumber) <= len(vfs) && (!s.Online || s.Queues != 2 || s.Interrupts != 1) {
			t.Errorf("secondary controller %+v: want online with 2 queues and 1 vector", s)
		}
	}
	if err := p.Disable(ctx); err != nil {
		t.Fatal(err)
	}
	if _, secs, err = sriov.Capabilities(ctx, pf); err != nil {
		t.Fatal(err)
	}
	for _, s := range secs {
		if s.Online || s.Queues != 0 || s.Interrupts != 0 {
			t.Errorf("after Disable, secondary controller %+v is not offline and empty", s)
		}
	}
}

// vfIO writes a pattern to namespace nsid of dev through a queue pair and
// reads it back.
func vfIO(ctx context.Context, dev *umd.Device, nsid uint32, seed byte, rounds int) error {
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 8})
	if err != nil {
		return err
	}
	defer q.Close()
	const size = 64 << 10
	src, err := dev.Alloc(size)
	if err != nil {
		return err
	}
	defer dev.Free(src)
	dst, err := dev.Alloc(size)
	if err != nil {
		return err
	}
	defer dev.Free(dst)
	for r := range rounds {
		for i := range src.Bytes {
			src.Bytes[i] = seed + byte(i*7+r)
		}
		clear(dst.Bytes)
		slba := uint64(r) * size / 512
		w := nvmelike.WriteCommand(nsid, slba, size/512, src)
		if _, err := q.Exec(ctx, &w); err != nil {
			return fmt.Errorf("write at LBA %d: %w", slba, err)
		}
		rd := nvmelike.ReadCommand(nsid, slba, size/512, dst)
		if _, err := q.Exec(ctx, &rd); err != nil {
			return fmt.Errorf("read at LBA %d: %w", slba, err)
		}
		if !bytes.Equal(src.Bytes, dst.Bytes) {
			return fmt.Errorf("round %d: data read back differs from data written", r)
		}
	}
	return nil
}

// checkRound reads back what vfIO wrote in round r with seed.
func checkRound(ctx context.Context, dev *umd.Device, nsid uint32, seed byte, r int) error {
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 8})
	if err != nil {
		return err
	}
	defer q.Close()
	const size = 64 << 10
	buf, err := dev.Alloc(size)
	if err != nil {
		return err
	}
	defer dev.Free(buf)
	rd := nvmelike.ReadCommand(nsid, uint64(r)*size/512, size/512, buf)
	if _, err := q.Exec(ctx, &rd); err != nil {
		return err
	}
	for i, b := range buf.Bytes {
		if want := seed + byte(i*7+r); b != want {
			return fmt.Errorf("namespace %d, round %d: byte %d is 0x%02x, want 0x%02x", nsid, r, i, b, want)
		}
	}
	return nil
}

// openVF enables one VF with two I/O queues and the given interrupt
// vectors, attaches the first namespace the topology keeps detached to it
// (checking the PF does not see it), and opens the VF.
func openVF(ctx context.Context, t *testing.T, vectors int) (*sriov.PF, sriov.VF, uint32, *umd.Device) {
	t.Helper()
	pf, c := openPF(ctx, t)
	p := enable(ctx, t, pf, sriov.Options{VFs: 1, IOQueues: 2, Vectors: vectors})
	vf := p.VFs()[0]
	nsid := uint32(len(c.Namespaces) + 1)
	if slices.Contains(pf.Controller().Namespaces(), nsid) {
		t.Fatalf("the PF sees namespace %d, which the topology keeps detached", nsid)
	}
	if err := p.AttachNamespace(ctx, nsid, vf); err != nil {
		t.Fatal(err)
	}
	dev, err := umd.Open(ctx, vf.BDF, &umd.Options{PoolSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return p, vf, nsid, dev
}

// TestVFVerifiedIO gives one VF a namespace of its own and drives it
// with umd.Open: it sees that namespace only, and I/O on it reads back
// what was written.
func TestVFVerifiedIO(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, vf, nsid, dev := openVF(ctx, t, 2)
	defer dev.Close()
	id := dev.Controller().IdentifyController()
	if id.CNTLID != vf.ControllerID {
		t.Errorf("VF controller ID %d, the secondary controller list says %d", id.CNTLID, vf.ControllerID)
	}
	if got := dev.Controller().Namespaces(); !slices.Equal(got, []uint32{nsid}) {
		t.Errorf("VF sees namespaces %v, want only %d", got, nsid)
	}
	if n := dev.Controller().MaxIOQueues(); n != 2 {
		t.Errorf("VF controller offers %d I/O queues, was given 2", n)
	}
	if err := vfIO(ctx, dev, nsid, 0x5a, 4); err != nil {
		t.Fatal(err)
	}
	vfInterrupt(ctx, t, dev, nsid)
	vfSharedVector(ctx, t, dev, nsid, 1)
	// While the VF is open, Disable refuses and changes nothing.
	if err := p.Disable(ctx); !errors.Is(err, sriov.ErrVFInUse) {
		t.Errorf("Disable with the VF open: %v, want ErrVFInUse", err)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Disable(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestVFOneVector gives a VF one interrupt vector (QEMU then gives its
// MSI-X table one entry), which its admin queue has: queue pairs with
// interrupts share vector 0 with the admin queue, as the Linux driver
// does on such a device, and admin commands meanwhile only wake them for
// nothing.
func TestVFOneVector(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, vf, nsid, dev := openVF(ctx, t, 1)
	defer dev.Close()
	if vf.Vectors != 1 {
		t.Fatalf("the VF was given %d vectors, want 1", vf.Vectors)
	}
	vfSharedVector(ctx, t, dev, nsid, 0)

	// Admin commands signal the shared vector too: a queue pair waiting
	// on it wakes, finds nothing, and its own completions still wake it.
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 8, Interrupt: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Vector() != 0 || q.Interrupt() == nil {
		t.Fatalf("queue pair on vector %d (eventfd %v), want vector 0 with an eventfd", q.Vector(), q.Interrupt())
	}
	if _, err := q.Interrupt().TryRead(); err != nil { // what the reads above left
		t.Fatal(err)
	}
	if _, err := dev.Controller().IdentifyNamespace(ctx, nsid); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if n, err := q.Interrupt().Wait(wctx); err != nil || n == 0 {
		t.Errorf("an admin command with the I/O queue on vector 0: %d signals, %v; want its interrupt", n, err)
	}
	buf, err := dev.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(buf)
	var rerr error
	done := false
	rd := nvmelike.ReadCommand(nsid, 0, 8, buf)
	if err := q.Submit(&rd, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) { rerr, done = err, true }); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	for !done {
		if _, err := q.Wait(wctx); err != nil {
			t.Fatalf("a read after the admin command's wake-up: %v", err)
		}
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
	q.Close()
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Disable(ctx); err != nil {
		t.Fatal(err)
	}
}

// vfInterrupt checks that a VF's queue pair with an MSI-X vector of its
// own signals its eventfd when a command completes.
func vfInterrupt(ctx context.Context, t *testing.T, dev *umd.Device, nsid uint32) {
	t.Helper()
	q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 8, Interrupt: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	buf, err := dev.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(buf)
	done := false
	rd := nvmelike.ReadCommand(nsid, 0, 8, buf)
	if err := q.Submit(&rd, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) {
		if err != nil {
			t.Errorf("read with interrupt: %v", err)
		}
		done = true
	}); err != nil {
		t.Fatal(err)
	}
	q.Ring()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if n, err := q.Interrupt().Wait(wctx); err != nil || n == 0 {
		t.Fatalf("the VF's completion interrupt: %d signals, %v", n, err)
	}
	for !done {
		if _, err := q.Poll(0); err != nil {
			t.Fatal(err)
		}
	}
}

// vfSharedVector checks queue pairs sharing the VF's one I/O vector,
// want (ShareVector): a second queue pair with an interrupt is refused
// without it and gets the same vector with it; each wakes at the
// interrupts of its own completions while the other waits too (a wake-up
// taken by the other would leave it asleep until ctx ends); and the vector
// stays wired until the last of them closes.
func vfSharedVector(ctx context.Context, t *testing.T, dev *umd.Device, nsid uint32, want int) {
	t.Helper()
	if n := dev.VectorsInUse(); n != 0 {
		t.Fatalf("%d vectors in use before the test", n)
	}
	a, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 8, Interrupt: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if q, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 8, Interrupt: true}); err == nil {
		q.Close()
		t.Fatalf("a second queue pair with an interrupt got vector %d of a VF with one for I/O", q.Vector())
	} else if !strings.Contains(err.Error(), "ShareVector") {
		t.Errorf("no vector left: %v; want a pointer to ShareVector", err)
	}
	b, err := dev.CreateQueuePair(ctx, umd.QueueOptions{Depth: 8, Interrupt: true, ShareVector: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Vector() != want || b.Vector() != want || a.Interrupt() == nil || a.Interrupt() != b.Interrupt() {
		t.Fatalf("vectors %d and %d, eventfds %v and %v; want both on vector %d", a.Vector(), b.Vector(), a.Interrupt(), b.Interrupt(), want)
	}
	if n := dev.VectorsInUse(); n != 1 {
		t.Errorf("%d vectors in use, want the shared one", n)
	}

	// One read at a time on each, both sleeping between: in Wait, on the
	// runtime poller, which has no timeout to hide a lost wake-up behind;
	// then in WaitThread, each on a thread of its own.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	reads := func(q *umd.QueuePair, thread bool) error {
		if thread {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
		}
		buf, err := dev.Alloc(4096)
		if err != nil {
			return err
		}
		defer dev.Free(buf)
		for i := range 100 {
			var rerr error
			done := false
			rd := nvmelike.ReadCommand(nsid, uint64(i*8), 8, buf)
			if err := q.Submit(&rd, func(_ *nvmelike.Command, _ nvmelike.Completion, err error) { rerr, done = err, true }); err != nil {
				return err
			}
			q.Ring()
			for !done {
				if thread {
					if _, err := q.Poll(0); err != nil {
						return err
					}
					if done {
						break
					}
					if err := wctx.Err(); err != nil {
						return fmt.Errorf("read %d: %w", i, err)
					}
					if _, err := q.WaitThread(time.Second); err != nil {
						return err
					}
				} else if _, err := q.Wait(wctx); err != nil {
					return fmt.Errorf("read %d: %w", i, err)
				}
			}
			if rerr != nil {
				return fmt.Errorf("read %d: %w", i, rerr)
			}
		}
		return nil
	}
	for _, thread := range []bool{false, true} {
		errs := make(chan error, 2)
		go func() { errs <- reads(a, thread) }()
		go func() { errs <- reads(b, thread) }()
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("reads on a shared vector (WaitThread %v): %v", thread, err)
			}
		}
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if n := dev.VectorsInUse(); n != 1 {
		t.Errorf("after the first of two sharers closed: %d vectors in use, want 1", n)
	}
	if err := reads(b, false); err != nil {
		t.Errorf("reads once the other sharer closed: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n := dev.VectorsInUse(); n != 0 {
		t.Errorf("after both sharers closed: %d vectors in use", n)
	}
}

// TestVFTokenRequired checks that vfio-pci refuses to open a VF without
// the PF's token or with another one.
func TestVFTokenRequired(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pf, _ := openPF(ctx, t)
	p := enable(ctx, t, pf, sriov.Options{VFs: 1})
	vf := p.VFs()[0]
	defer vfio.UseVFToken(vf.BDF, p.Token()) // for Disable's sake, as Enable left it
	vfio.ForgetVFToken(vf.BDF)
	if dev, err := umd.Open(ctx, vf.BDF, nil); !errors.Is(err, unix.EACCES) {
		if err == nil {
			dev.Close()
		}
		t.Errorf("opening a VF without the token: %v, want EACCES", err)
	}
	wrong, err := vfio.NewVFToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := vfio.UseVFToken(vf.BDF, wrong); err != nil {
		t.Fatal(err)
	}
	if dev, err := umd.Open(ctx, vf.BDF, nil); !errors.Is(err, unix.EACCES) {
		if err == nil {
			dev.Close()
		}
		t.Errorf("opening a VF with a wrong token: %v, want EACCES", err)
	}
}

// TestTwoVFsTwoContainers drives two VFs, each with a namespace of its
// own and in a container of its own, with verified I/O at the same time.
func TestTwoVFsTwoContainers(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pf, c := openPF(ctx, t)
	if c.SRIOV.MaxVFs < 2 || len(c.SRIOV.VFNamespaces) < 2 {
		t.Fatalf("SR-IOV controller %s: %d VFs and %d VF namespaces, the test needs 2 of each", c.Serial, c.SRIOV.MaxVFs, len(c.SRIOV.VFNamespaces))
	}
	p := enable(ctx, t, pf, sriov.Options{VFs: 2})
	vfs := p.VFs()
	devs := make([]*umd.Device, 2)
	for i, vf := range vfs {
		nsid := uint32(len(c.Namespaces) + 1 + i)
		if err := p.AttachNamespace(ctx, nsid, vf); err != nil {
			t.Fatal(err)
		}
		dev, err := umd.Open(ctx, vf.BDF, &umd.Options{PoolSize: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		devs[i] = dev
		if got := dev.Controller().Namespaces(); !slices.Equal(got, []uint32{nsid}) {
			t.Errorf("VF %s sees namespaces %v, want only %d", vf.BDF, got, nsid)
		}
	}
	if devs[0].Set() == devs[1].Set() || devs[0].Space() == devs[1].Space() {
		t.Fatal("the two VFs share a set or DMA space")
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, dev := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = vfIO(ctx, dev, uint32(len(c.Namespaces)+1+i), byte(0x10*(i+1)), 8)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("VF %s: %v", vfs[i].BDF, err)
		}
	}
	// Each VF's controller refuses the other's namespace, which is
	// inactive there (Invalid Field in Command, as the NVMe base
	// specification has it for an inactive NSID), and the other's data
	// stays as its owner wrote it.
	for i, dev := range devs {
		other := uint32(len(c.Namespaces) + 2 - i)
		if err := vfIO(ctx, dev, other, 0, 1); !errors.Is(err, nvmelike.ErrInvalidField) {
			t.Errorf("VF %s writing namespace %d of the other VF: %v, want ErrInvalidField", vfs[i].BDF, other, err)
		}
	}
	for i, dev := range devs {
		if err := checkRound(ctx, dev, uint32(len(c.Namespaces)+1+i), byte(0x10*(i+1)), 0); err != nil {
			t.Errorf("VF %s: %v", vfs[i].BDF, err)
		}
	}
}

// TestEnableErrors checks the typed errors of Enable, and that a refused
// Enable leaves no VF behind.
func TestEnableErrors(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pf, c := openPF(ctx, t)
	numvfs := filepath.Join("/sys/bus/pci/devices", pf.BDF(), "sriov_numvfs")
	for _, tc := range []struct {
		name string
		o    sriov.Options
		want error
	}{
		{"too many VFs", sriov.Options{VFs: c.SRIOV.MaxVFs + 1}, sriov.ErrTooManyVFs},
		{"too many queues per VF", sriov.Options{IOQueues: c.SRIOV.MaxQueuesPerVF}, sriov.ErrNoFlexibleResources},
		{"too many vectors per VF", sriov.Options{Vectors: c.SRIOV.MaxVectorsPerVF + 1}, sriov.ErrNoFlexibleResources},
		{"flexible queues exhausted", sriov.Options{VFs: 2, IOQueues: c.SRIOV.MaxQueuesPerVF - 1}, sriov.ErrNoFlexibleResources},
		{"no SR-IOV capability", sriov.Options{Sysfs: t.TempDir()}, sriov.ErrNotSRIOV},
	} {
		p, err := sriov.Enable(ctx, pf, tc.o)
		if !errors.Is(err, tc.want) {
			if err == nil {
				p.Disable(ctx)
			}
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if n := readSysfs(t, numvfs); n != "0" {
			t.Errorf("%s: sriov_numvfs %s after a refused Enable", tc.name, n)
		}
	}
	p := enable(ctx, t, pf, sriov.Options{})
	if _, err := sriov.Enable(ctx, pf, sriov.Options{}); !errors.Is(err, sriov.ErrAlreadyEnabled) {
		t.Errorf("enabling twice: %v, want ErrAlreadyEnabled", err)
	}
	if err := p.Disable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Disable(ctx); !errors.Is(err, sriov.ErrDisabled) {
		t.Errorf("disabling twice: %v, want ErrDisabled", err)
	}
}

// The environment of a VF client process (vfChild): the VF to open, its
// token and namespace. With envChildBDF set, the test binary runs vfChild
// instead of its tests.
const (
	envChildBDF   = "UMD_SRIOV_CHILD_BDF"
	envChildToken = "UMD_SRIOV_CHILD_TOKEN"
	envChildNSID  = "UMD_SRIOV_CHILD_NSID"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChildBDF) != "" {
		if err := vfChild(); err != nil {
			fmt.Fprintln(os.Stderr, "vf child:", err)
			os.Exit(1)
		}
		fmt.Println("vf child ok")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// vfChild is the client side of TestTwoVFsTwoProcesses, in a child
// process: given a VF's address and its PF's token (as a broker would
// hand them to a client), it opens the VF and does verified I/O.
func vfChild() error {
	bdf := os.Getenv(envChildBDF)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tok, err := vfio.ParseVFToken(os.Getenv(envChildToken))
	if err != nil {
		return err
	}
	nsid, err := strconv.ParseUint(os.Getenv(envChildNSID), 10, 32)
	if err != nil {
		return err
	}
	if err := vfio.UseVFToken(bdf, tok); err != nil {
		return err
	}
	dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 8 << 20})
	if err != nil {
		return err
	}
	defer dev.Close()
	if got := dev.Controller().Namespaces(); !slices.Equal(got, []uint32{uint32(nsid)}) {
		return fmt.Errorf("VF %s sees namespaces %v, want only %d", bdf, got, nsid)
	}
	return vfIO(ctx, dev, uint32(nsid), byte(nsid), 8)
}

// TestTwoVFsTwoProcesses hands each of two VFs to a process of its own,
// which opens it with the PF's token alone and drives it, both at once,
// while this process keeps the PF.
func TestTwoVFsTwoProcesses(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pf, c := openPF(ctx, t)
	p := enable(ctx, t, pf, sriov.Options{VFs: 2})
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i, vf := range p.VFs() {
		nsid := len(c.Namespaces) + 1 + i
		if err := p.AttachNamespace(ctx, uint32(nsid), vf); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, os.Args[0])
		cmd.Env = append(os.Environ(), envChildBDF+"="+vf.BDF, envChildToken+"="+p.Token().String(), envChildNSID+"="+strconv.Itoa(nsid))
		out := new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("client of VF %d: %v\n%s", i, err, outs[i])
		} else if !strings.Contains(outs[i].String(), "vf child ok") {
			t.Errorf("client of VF %d did not run:\n%s", i, outs[i])
		}
	}
}

// TestEnableWithoutSRIOV checks that a controller without an SR-IOV
// capability (those of every topology but `sriov`) is refused with
// ErrNotSRIOV.
func TestEnableWithoutSRIOV(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, bdf := range guest.DriverFunctions(t, "vfio-pci") {
		if _, err := os.Stat(filepath.Join("/sys/bus/pci/devices", bdf, "sriov_totalvfs")); err == nil {
			continue
		}
		dev, err := umd.Open(ctx, bdf, &umd.Options{PoolSize: 4 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		if p, err := sriov.Enable(ctx, dev, sriov.Options{}); !errors.Is(err, sriov.ErrNotSRIOV) {
			if err == nil {
				p.Disable(ctx)
			}
			t.Errorf("enabling VFs on %s: %v, want ErrNotSRIOV", bdf, err)
		}
		return
	}
	t.Skipf("every controller of topology %s has SR-IOV", guest.Topology())
}

// TestOfflineVFFails checks what a VF whose secondary controller is
// offline does: QEMU reads its registers as zero (CSTS aside, which has
// CFS set), so umd.Open fails to bring its controller up; Disable copes
// with it.
func TestOfflineVFFails(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pf, _ := openPF(ctx, t)
	p := enable(ctx, t, pf, sriov.Options{VFs: 1})
	vf := p.VFs()[0]
	cmd := nvmelike.VirtualizationManagementCommand(nvmelike.VirtSecondaryOffline, 0, vf.ControllerID, 0)
	if _, err := pf.Controller().Admin(ctx, &cmd); err != nil {
		t.Fatal(err)
	}
	// VFIO opens it; its controller cannot be brought up.
	dev, err := umd.Open(ctx, vf.BDF, &umd.Options{PoolSize: 4 << 20})
	if err == nil {
		dev.Close()
		t.Fatal("a VF whose controller is offline was opened")
	}
	if !strings.Contains(err.Error(), "bringing up the controller") {
		t.Errorf("opening a VF whose controller is offline: %v, want a controller bring-up error", err)
	}
	t.Logf("offline VF: %v", err)
}

// TestEnableDisableCycles enables and disables VFs several times, opening
// them each time, and checks the PF's flexible resources all come back.
func TestEnableDisableCycles(t *testing.T) {
	guest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pf, c := openPF(ctx, t)
	before, _, err := sriov.Capabilities(ctx, pf)
	if err != nil {
		t.Fatal(err)
	}
	for cycle := range 3 {
		p, err := sriov.Enable(ctx, pf, sriov.Options{VFs: c.SRIOV.MaxVFs})
		if err != nil {
			t.Fatalf("cycle %d: %v", cycle, err)
		}
		for _, vf := range p.VFs() {
			dev, err := umd.Open(ctx, vf.BDF, &umd.Options{PoolSize: 4 << 20})
			if err != nil {
				t.Fatalf("cycle %d: %v", cycle, err)
			}
			if err := dev.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Disable(ctx); err != nil {
			t.Fatalf("cycle %d: %v", cycle, err)
		}
		after, _, err := sriov.Capabilities(ctx, pf)
		if err != nil {
			t.Fatal(err)
		}
		if *after != *before {
			t.Errorf("cycle %d: primary controller capabilities %+v, were %+v", cycle, *after, *before)
		}
		if n := readSysfs(t, filepath.Join("/sys/bus/pci/devices", pf.BDF(), "sriov_numvfs")); n != "0" {
			t.Errorf("cycle %d: sriov_numvfs %s", cycle, n)
		}
	}
}
