//go:build guest

package vfio_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/umdkit/umd/qemu/guest"
	"github.com/umdkit/umd/vfio"
)

// Interrupt tests: eventfds connected to the vectors of QEMU NVMe
// controllers, proven by the kernel's software trigger (VFIO_DEVICE_SET_IRQS
// with DATA_NONE or DATA_BOOL and ACTION_TRIGGER), which signals a vector's
// eventfd exactly as the device's interrupt would.

// guard bounds how long a test waits for an eventfd that should already
// have been signalled. It measures nothing.
const guard = 10 * time.Second

// newInterrupts creates n Interrupts for connecting to d. At the end of the
// test it closes d, which disconnects them, and then them: the order the
// package demands.
func newInterrupts(t *testing.T, d *vfio.Device, n int) []*vfio.Interrupt {
	t.Helper()
	irqs := make([]*vfio.Interrupt, n)
	for i := range irqs {
		irq, err := vfio.NewInterrupt()
		if err != nil {
			t.Fatal(err)
		}
		irqs[i] = irq
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
		for _, irq := range irqs {
			if err := irq.Close(); err != nil {
				t.Error(err)
			}
		}
	})
	return irqs
}

// openFirst opens every vfio-pci function (see openAll) and returns the
// first device. Cleanups registered after this run before its teardown.
func openFirst(t *testing.T) (*setup, *vfio.Device) {
	t.Helper()
	s := openAll(t)
	return s, s.devices[0]
}

// fired checks that irq has been signalled exactly once since it was last
// read.
func fired(t *testing.T, irq *vfio.Interrupt, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	n, err := irq.Wait(ctx)
	if err != nil || n != 1 {
		t.Errorf("%s: Wait = %d, %v; want 1 signal", what, n, err)
	}
}

// quiet checks that irq has not been signalled since it was last read.
func quiet(t *testing.T, irq *vfio.Interrupt, what string) {
	t.Helper()
	if n, err := irq.TryRead(); n != 0 || err != nil {
		t.Errorf("%s: TryRead = %d, %v; want no signal", what, n, err)
	}
}

// onlyFired checks that exactly the Interrupts of irqs at the indexes in
// want were signalled, once each.
func onlyFired(t *testing.T, irqs []*vfio.Interrupt, what string, want ...int) {
	t.Helper()
	for i, irq := range irqs {
		if slices.Contains(want, i) {
			fired(t, irq, fmt.Sprintf("%s: eventfd %d", what, i))
		} else {
			quiet(t, irq, fmt.Sprintf("%s: eventfd %d", what, i))
		}
	}
}

// msiIRQs returns how many MSI or MSI-X vectors the kernel has allocated
// for the function, from /sys/bus/pci/devices/<bdf>/msi_irqs (absent when
// none are).
func msiIRQs(t *testing.T, bdf string) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("/sys/bus/pci/devices", bdf, "msi_irqs"))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// vfioHandlers returns the names of the interrupt handlers vfio-pci has
// registered for the function, from /proc/interrupts: "vfio-msix[3]",
// "vfio-intx" and the like.
func vfioHandlers(t *testing.T, bdf string) []string {
	t.Helper()
	f, err := os.Open("/proc/interrupts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for _, field := range strings.Fields(sc.Text()) {
			if name, ok := strings.CutSuffix(field, "("+bdf+")"); ok && strings.HasPrefix(name, "vfio-") {
				names = append(names, name)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

func msixHandlers(vectors ...int) []string {
	var names []string
	for _, v := range vectors {
		names = append(names, fmt.Sprintf("vfio-msix[%d]", v))
	}
	slices.Sort(names)
	return names
}

func TestGuestIRQInfo(t *testing.T) {
	guest.Require(t)
	_, d := openFirst(t)
	for index := vfio.IRQIndex(0); index < vfio.NumPCIIRQs; index++ {
		info, err := d.IRQInfo(index)
		t.Logf("%s: %+v, %v", index, info, err)
	}

	msix, err := d.IRQInfo(vfio.IRQMSIX)
	if err != nil {
		t.Fatal(err)
	}
	if msix.Count < 2 || msix.Flags&vfio.IRQEventfd == 0 || msix.Flags&vfio.IRQMaskable != 0 {
		t.Errorf("MSI-X: %+v; want several vectors signalling eventfds, not maskable", msix)
	}
	// NORESIZE: always on 6.1; 6.5 and later leave it off for MSI-X when
	// the interrupt domain can allocate vectors dynamically, which the
	// remapped x86 domain can.
	switch k := guest.Kernel(); {
	case k == "6.1" && msix.Flags&vfio.IRQNoResize == 0:
		t.Errorf("6.1 reports MSI-X without IRQNoResize (%+v)", msix)
	case k == "6.12" && msix.Flags&vfio.IRQNoResize != 0:
		t.Errorf("6.12 reports MSI-X with IRQNoResize (%+v): no dynamic MSI-X allocation", msix)
	}
	if intx, err := d.IRQInfo(vfio.IRQINTx); err != nil || intx.Count != 1 || intx.Flags&(vfio.IRQMaskable|vfio.IRQAutomasked) != vfio.IRQMaskable|vfio.IRQAutomasked {
		t.Errorf("INTx: %+v, %v; want one maskable, automasked interrupt", intx, err)
	}
	if req, err := d.IRQInfo(vfio.IRQReq); err != nil || req.Count != 1 || req.Flags&vfio.IRQEventfd == 0 {
		t.Errorf("REQ: %+v, %v; want one interrupt signalling an eventfd", req, err)
	}
}

func TestGuestMSIXSoftwareTrigger(t *testing.T) {
	guest.Require(t)
	_, d := openFirst(t)
	info, err := d.IRQInfo(vfio.IRQMSIX)
	if err != nil {
		t.Fatal(err)
	}
	n := min(info.Count, 4)
	irqs := newInterrupts(t, d, n)
	if err := d.ConnectIRQs(vfio.IRQMSIX, 0, irqs...); err != nil {
		t.Fatal(err)
	}
	all := make([]int, n)
	for v := range all {
		all[v] = v
	}
	if got, want := vfioHandlers(t, d.BDF()), msixHandlers(all...); !slices.Equal(got, want) {
		t.Errorf("/proc/interrupts lists %v for %s, want %v", got, d.BDF(), want)
	}
	if got := msiIRQs(t, d.BDF()); got != n {
		t.Errorf("the kernel allocated %d MSI-X vectors, want %d", got, n)
	}

	// Each vector signals its own eventfd and no other.
	for v := range n {
		if err := d.TriggerIRQs(vfio.IRQMSIX, v, 1); err != nil {
			t.Fatal(err)
		}
		onlyFired(t, irqs, fmt.Sprintf("after triggering vector %d", v), v)
	}
	which := make([]bool, n)
	for v := range which {
		which[v] = v%2 == 0
	}
	if err := d.TriggerSelectedIRQs(vfio.IRQMSIX, 0, which); err != nil {
		t.Fatal(err)
	}
	var even []int
	for v := 0; v < n; v += 2 {
		even = append(even, v)
	}
	onlyFired(t, irqs, "after triggering the even vectors with DATA_BOOL", even...)
	if err := d.TriggerIRQs(vfio.IRQMSIX, 0, n); err != nil {
		t.Fatal(err)
	}
	onlyFired(t, irqs, "after triggering every vector", all...)

	if err := d.TriggerIRQs(vfio.IRQMSIX, 0, 0); err == nil || !strings.Contains(err.Error(), "at least 1") {
		t.Errorf("triggering 0 vectors (which the kernel would take as disable): got %v", err)
	}
	if err := d.TriggerIRQs(vfio.IRQMSIX, info.Count, 1); err == nil || !strings.Contains(err.Error(), "MSI-X interrupts") {
		t.Errorf("triggering vector %d of %d: got %v", info.Count, info.Count, err)
	}

	// The same eventfd may serve several vectors.
	if err := d.ConnectIRQs(vfio.IRQMSIX, 0, irqs[0], irqs[0]); err != nil {
		t.Fatal(err)
	}
	if err := d.TriggerIRQs(vfio.IRQMSIX, 0, 2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if got, err := irqs[0].Wait(ctx); got != 2 || err != nil {
		t.Errorf("one eventfd on vectors 0 and 1, both triggered: Wait = %d, %v; want 2", got, err)
	}
	onlyFired(t, irqs, "after triggering vectors 0 and 1 sharing eventfd 0")

	if err := d.DisableIRQ(vfio.IRQMSIX); err != nil {
		t.Fatal(err)
	}
	if got := vfioHandlers(t, d.BDF()); len(got) != 0 {
		t.Errorf("after DisableIRQ /proc/interrupts still lists %v", got)
	}
	if got := msiIRQs(t, d.BDF()); got != 0 {
		t.Errorf("after DisableIRQ the kernel still has %d MSI-X vectors", got)
	}
	if err := d.TriggerIRQs(vfio.IRQMSIX, 0, 1); err == nil || !strings.Contains(err.Error(), "the index is off") {
		t.Errorf("triggering a disabled index: got %v", err)
	}
	if err := d.DisableIRQ(vfio.IRQMSIX); err != nil {
		t.Errorf("disabling twice: %v", err)
	}
}

// TestGuestMSIXSingleVectors connects and disconnects vectors one at a
// time. Growing the index past the vectors allocated when it was enabled
// takes a disable and re-enable on 6.1 (IRQNoResize) and a dynamic
// allocation on 6.12; either way every vector connected before keeps
// working.
func TestGuestMSIXSingleVectors(t *testing.T) {
	guest.Require(t)
	_, d := openFirst(t)
	info, err := d.IRQInfo(vfio.IRQMSIX)
	if err != nil {
		t.Fatal(err)
	}
	if info.Count < 4 {
		t.Fatalf("MSI-X has %d vectors; this test needs 4", info.Count)
	}
	dynamic := info.Flags&vfio.IRQNoResize == 0
	irqs := newInterrupts(t, d, 4)
	a, b := irqs[0], irqs[3]

	if err := d.ConnectIRQ(vfio.IRQMSIX, 0, a); err != nil {
		t.Fatal(err)
	}
	if got := msiIRQs(t, d.BDF()); got != 1 {
		t.Errorf("connecting vector 0 allocated %d vectors, want 1", got)
	}
	if err := d.ConnectIRQ(vfio.IRQMSIX, 3, b); err != nil {
		t.Fatal(err)
	}
	// 6.1 re-enabled the index with vectors 0-3; 6.12 allocated vector 3
	// alone.
	wantAllocated := 4
	if dynamic {
		wantAllocated = 2
	}
	if got := msiIRQs(t, d.BDF()); got != wantAllocated {
		t.Errorf("after connecting vector 3 the kernel has %d vectors, want %d (dynamic allocation: %v)", got, wantAllocated, dynamic)
	}
	if got, want := vfioHandlers(t, d.BDF()), msixHandlers(0, 3); !slices.Equal(got, want) {
		t.Errorf("/proc/interrupts lists %v, want %v", got, want)
	}
	st, err := d.IRQStatus(vfio.IRQMSIX)
	if err != nil || !st.Enabled || !slices.Equal(st.Connected, []int{0, 3}) {
		t.Errorf("IRQStatus = %+v, %v; want enabled with vectors 0 and 3 connected", st, err)
	}
	if err := d.TriggerIRQs(vfio.IRQMSIX, 0, 4); err != nil {
		t.Fatal(err)
	}
	onlyFired(t, irqs, "vectors 0 and 3 connected, 0-3 triggered", 0, 3)

	// Disconnect vector 0: it stops signalling, vector 3 does not.
	if err := d.DisconnectIRQ(vfio.IRQMSIX, 0); err != nil {
		t.Fatal(err)
	}
	if got, want := vfioHandlers(t, d.BDF()), msixHandlers(3); !slices.Equal(got, want) {
		t.Errorf("after disconnecting vector 0 /proc/interrupts lists %v, want %v", got, want)
	}
	if got := msiIRQs(t, d.BDF()); got != wantAllocated {
		t.Errorf("disconnecting a vector changed the allocated vectors from %d to %d", wantAllocated, got)
	}
	if err := d.TriggerIRQs(vfio.IRQMSIX, 0, 4); err != nil {
		t.Fatal(err)
	}
	onlyFired(t, irqs, "vector 0 disconnected, 0-3 triggered", 3)
	if err := d.DisconnectIRQ(vfio.IRQMSIX, 0); err != nil {
		t.Errorf("disconnecting a disconnected vector: %v", err)
	}
	// a is no longer connected, so it could be closed; b is.
	if err := b.Close(); !errors.Is(err, vfio.ErrInUse) {
		t.Errorf("closing the eventfd of a connected vector: got %v, want ErrInUse", err)
	}

	// Reconnect vector 0, to another eventfd.
	if err := d.ConnectIRQ(vfio.IRQMSIX, 0, irqs[1]); err != nil {
		t.Fatal(err)
	}
	if err := d.TriggerIRQs(vfio.IRQMSIX, 0, 4); err != nil {
		t.Fatal(err)
	}
	onlyFired(t, irqs, "vector 0 reconnected to eventfd 1, 0-3 triggered", 1, 3)

	if err := d.DisableIRQ(vfio.IRQMSIX); err != nil {
		t.Fatal(err)
	}
	if st, err := d.IRQStatus(vfio.IRQMSIX); err != nil || st.Enabled || len(st.Connected) != 0 {
		t.Errorf("IRQStatus after DisableIRQ = %+v, %v", st, err)
	}
}

// TestGuestMSIXEnableUpFront allocates vectors with EnableIRQ, so that
// connecting them later never resizes the index.
func TestGuestMSIXEnableUpFront(t *testing.T) {
	guest.Require(t)
	_, d := openFirst(t)
	info, err := d.IRQInfo(vfio.IRQMSIX)
	if err != nil {
		t.Fatal(err)
	}
	n := min(info.Count, 8)
	if err := d.EnableIRQ(vfio.IRQMSIX, n); err != nil {
		t.Fatal(err)
	}
	if got := msiIRQs(t, d.BDF()); got != n {
		t.Errorf("EnableIRQ(%d) allocated %d vectors", n, got)
	}
	if got := vfioHandlers(t, d.BDF()); len(got) != 0 {
		t.Errorf("EnableIRQ connected %v", got)
	}
	irqs := newInterrupts(t, d, 2)
	if err := d.ConnectIRQ(vfio.IRQMSIX, n-1, irqs[1]); err != nil {
		t.Fatal(err)
	}
	if err := d.ConnectIRQ(vfio.IRQMSIX, 0, irqs[0]); err != nil {
		t.Fatal(err)
	}
	if got := msiIRQs(t, d.BDF()); got != n {
		t.Errorf("connecting within the enabled vectors changed them from %d to %d", n, got)
	}
	if err := d.TriggerIRQs(vfio.IRQMSIX, 0, n); err != nil {
		t.Fatal(err)
	}
	onlyFired(t, irqs, "vectors 0 and last connected, all triggered", 0, 1)
	// Enabling fewer is a no-op; the device's Close disables the rest.
	if err := d.EnableIRQ(vfio.IRQMSIX, 1); err != nil {
		t.Error(err)
	}
	if err := d.EnableIRQ(vfio.IRQMSIX, info.Count+1); err == nil {
		t.Errorf("enabling %d of %d vectors: got no error", info.Count+1, info.Count)
	}
}

func TestGuestMasking(t *testing.T) {
	guest.Require(t)
	_, d := openFirst(t)
	irqs := newInterrupts(t, d, 2)

	// vfio-pci cannot mask MSI-X.
	if err := d.ConnectIRQ(vfio.IRQMSIX, 0, irqs[0]); err != nil {
		t.Fatal(err)
	}
	err := d.MaskIRQs(vfio.IRQMSIX, 0, 1)
	if !errors.Is(err, vfio.ErrNotSupported) || !strings.Contains(err.Error(), "DisconnectIRQ") {
		t.Errorf("masking an MSI-X vector: got %v, want ErrNotSupported pointing at DisconnectIRQ", err)
	}
	if err := d.UnmaskIRQs(vfio.IRQMSIX, 0, 1); !errors.Is(err, vfio.ErrNotSupported) {
		t.Errorf("unmasking an MSI-X vector: got %v, want ErrNotSupported", err)
	}

	// One of INTx, MSI and MSI-X at a time.
	err = d.ConnectIRQ(vfio.IRQINTx, 0, irqs[1])
	if err == nil || !strings.Contains(err.Error(), "MSI-X interrupts are enabled") {
		t.Errorf("connecting INTx with MSI-X on: got %v", err)
	}
	if err := d.DisableIRQ(vfio.IRQMSIX); err != nil {
		t.Fatal(err)
	}

	// INTx: maskable.
	if err := d.ConnectIRQ(vfio.IRQINTx, 0, irqs[1]); err != nil {
		t.Fatal(err)
	}
	if got, want := vfioHandlers(t, d.BDF()), []string{"vfio-intx"}; !slices.Equal(got, want) {
		t.Errorf("/proc/interrupts lists %v, want %v", got, want)
	}
	if err := d.TriggerIRQs(vfio.IRQINTx, 0, 1); err != nil {
		t.Fatal(err)
	}
	onlyFired(t, irqs, "INTx triggered", 1)
	if err := d.MaskIRQs(vfio.IRQINTx, 0, 1); err != nil {
		t.Error(err)
	}
	if err := d.UnmaskIRQs(vfio.IRQINTx, 0, 1); err != nil {
		t.Error(err)
	}
	if err := d.MaskIRQs(vfio.IRQINTx, 0, 2); err == nil {
		t.Error("masking INTx vectors 0-1: got no error")
	}
	err = d.ConnectIRQ(vfio.IRQMSIX, 0, irqs[0])
	if err == nil || !strings.Contains(err.Error(), "INTx interrupts are enabled") {
		t.Errorf("connecting MSI-X with INTx on: got %v", err)
	}
	if err := d.DisableIRQ(vfio.IRQINTx); err != nil {
		t.Fatal(err)
	}
	if err := d.MaskIRQs(vfio.IRQINTx, 0, 1); err == nil || !strings.Contains(err.Error(), "the index is off") {
		t.Errorf("masking INTx while off: got %v", err)
	}
}

// TestGuestMSI: QEMU's NVMe has no MSI capability, only MSI-X; the package
// says so before asking the kernel.
func TestGuestMSI(t *testing.T) {
	guest.Require(t)
	_, d := openFirst(t)
	info, err := d.IRQInfo(vfio.IRQMSI)
	if err != nil {
		t.Fatal(err)
	}
	irqs := newInterrupts(t, d, 1)
	err = d.ConnectIRQ(vfio.IRQMSI, 0, irqs[0])
	if info.Count == 0 {
		if !errors.Is(err, vfio.ErrNotSupported) || !strings.Contains(err.Error(), "no MSI interrupts") {
			t.Errorf("connecting MSI on a device without MSI: got %v, want ErrNotSupported", err)
		}
		return
	}
	// A device with MSI: it works like MSI-X.
	if err != nil {
		t.Fatal(err)
	}
	if err := d.TriggerIRQs(vfio.IRQMSI, 0, 1); err != nil {
		t.Fatal(err)
	}
	onlyFired(t, irqs, "MSI triggered", 0)
}

func TestGuestErrAndReq(t *testing.T) {
	guest.Require(t)
	_, d := openFirst(t)
	irqs := newInterrupts(t, d, 3) // ERR, REQ, MSI-X vector 0
	errIRQ, reqIRQ := irqs[0], irqs[1]

	hasErr := true
	if info, err := d.IRQInfo(vfio.IRQErr); err != nil || info.Count == 0 {
		// vfio-pci has ERR for PCI Express functions only.
		t.Logf("ERR: %+v, %v", info, err)
		hasErr = false
		if err := d.ConnectIRQ(vfio.IRQErr, 0, errIRQ); !errors.Is(err, vfio.ErrNotSupported) {
			t.Errorf("connecting ERR on a function without it: got %v, want ErrNotSupported", err)
		}
	} else if err := d.ConnectIRQ(vfio.IRQErr, 0, errIRQ); err != nil {
		t.Fatal(err)
	}
	if err := d.ConnectIRQ(vfio.IRQReq, 0, reqIRQ); err != nil {
		t.Fatal(err)
	}
	// ERR and REQ live beside MSI-X.
	if err := d.ConnectIRQ(vfio.IRQMSIX, 0, irqs[2]); err != nil {
		t.Fatal(err)
	}

	if err := d.TriggerIRQs(vfio.IRQReq, 0, 1); err != nil {
		t.Fatal(err)
	}
	onlyFired(t, irqs, "REQ triggered", 1)
	if hasErr {
		if err := d.TriggerSelectedIRQs(vfio.IRQErr, 0, []bool{true}); err != nil {
			t.Fatal(err)
		}
		onlyFired(t, irqs, "ERR triggered", 0)
	}
	if err := d.TriggerIRQs(vfio.IRQMSIX, 0, 1); err != nil {
		t.Fatal(err)
	}
	onlyFired(t, irqs, "MSI-X vector 0 triggered", 2)

	// Disconnecting REQ's one vector turns the index off.
	if err := d.DisconnectIRQ(vfio.IRQReq, 0); err != nil {
		t.Fatal(err)
	}
	if st, err := d.IRQStatus(vfio.IRQReq); err != nil || st.Enabled {
		t.Errorf("REQ after disconnecting: %+v, %v; want off", st, err)
	}
	if err := d.TriggerIRQs(vfio.IRQReq, 0, 1); err == nil || !strings.Contains(err.Error(), "the index is off") {
		t.Errorf("triggering REQ after disconnecting: got %v", err)
	}
	if err := reqIRQ.Close(); err != nil {
		t.Errorf("closing REQ's eventfd after disconnecting it: %v", err)
	}
	// ERR and MSI-X are left for the device's Close to tear down.
}

// TestGuestWaitContext: a Wait on a connected vector honours its context.
func TestGuestWaitContext(t *testing.T) {
	guest.Require(t)
	_, d := openFirst(t)
	irqs := newInterrupts(t, d, 1)
	if err := d.ConnectIRQ(vfio.IRQMSIX, 0, irqs[0]); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	n, err := irqs[0].Wait(ctx)
	if n != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait past its deadline = %d, %v; want context.DeadlineExceeded", n, err)
	}
	t.Logf("Wait with a 50ms deadline returned after %v", time.Since(start))

	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if n, err := irqs[0].Wait(cancelled); n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a cancelled context = %d, %v; want context.Canceled", n, err)
	}

	// Cancel a Wait in progress, then trigger: the next Wait gets it.
	ctx3, cancel3 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := irqs[0].Wait(ctx3)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel3()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Wait: %v", err)
		}
	case <-time.After(guard):
		t.Fatal("a cancelled Wait did not return")
	}
	if err := d.TriggerIRQs(vfio.IRQMSIX, 0, 1); err != nil {
		t.Fatal(err)
	}
	fired(t, irqs[0], "triggered after a cancelled Wait")
}

// TestGuestCloseTearsDownIRQs: Device.Close disables what the device set
// up, the eventfds may then be closed, and the device opens and wires up
// again.
func TestGuestCloseTearsDownIRQs(t *testing.T) {
	guest.Require(t)
	s, d := openFirst(t)
	bdf, g := d.BDF(), d.Group()
	info, err := d.IRQInfo(vfio.IRQMSIX)
	if err != nil {
		t.Fatal(err)
	}
	n := min(info.Count, 3)
	irqs := make([]*vfio.Interrupt, n+1)
	for i := range irqs {
		if irqs[i], err = vfio.NewInterrupt(); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.ConnectIRQs(vfio.IRQMSIX, 0, irqs[:n]...); err != nil {
		t.Fatal(err)
	}
	if err := d.ConnectIRQ(vfio.IRQReq, 0, irqs[n]); err != nil {
		t.Fatal(err)
	}
	for _, irq := range irqs {
		if err := irq.Close(); !errors.Is(err, vfio.ErrInUse) {
			t.Fatalf("closing a connected eventfd: got %v, want ErrInUse", err)
		}
	}

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := vfioHandlers(t, bdf); len(got) != 0 {
		t.Errorf("after Close /proc/interrupts still lists %v", got)
	}
	if got := msiIRQs(t, bdf); got != 0 {
		t.Errorf("after Close the kernel still has %d MSI-X vectors", got)
	}
	for _, irq := range irqs {
		if err := irq.Close(); err != nil {
			t.Errorf("closing an eventfd after the device: %v", err)
		}
	}
	if err := d.ConnectIRQ(vfio.IRQMSIX, 0, irqs[0]); !errors.Is(err, vfio.ErrClosed) {
		t.Errorf("ConnectIRQ on a closed device: got %v, want ErrClosed", err)
	}

	// Open it again and wire it up again.
	d2, err := g.Device(bdf)
	if err != nil {
		t.Fatal(err)
	}
	s.devices[0] = d2 // for openAll's teardown
	again := newInterrupts(t, d2, n)
	if err := d2.ConnectIRQs(vfio.IRQMSIX, 0, again...); err != nil {
		t.Fatal(err)
	}
	for v := range n {
		if err := d2.TriggerIRQs(vfio.IRQMSIX, v, 1); err != nil {
			t.Fatal(err)
		}
		onlyFired(t, again, fmt.Sprintf("reopened device, vector %d triggered", v), v)
	}
}
