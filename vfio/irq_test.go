package vfio

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The IRQ bookkeeping on a fake device whose fd is /dev/null: every ioctl
// fails with ENOTTY, so these tests cover the checks made before the
// kernel is asked and the unwinding after it refuses. The guest tests cover
// what the kernel does.

// fakeIRQDevice returns a fake device that believes it has INTx, 8 MSI-X
// vectors that cannot be resized (as on 6.1), ERR and REQ.
func fakeIRQDevice(t *testing.T) *Device {
	t.Helper()
	c, g, d := fakeHandles(t)
	t.Cleanup(func() {
		d.Close() // fails to disable what the tests pretend is enabled
		if err := g.Close(); err != nil {
			t.Error(err)
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	d.irqs = map[IRQIndex]*irqState{
		IRQINTx: {info: IRQInfo{Index: IRQINTx, Flags: IRQEventfd | IRQMaskable | IRQAutomasked, Count: 1}},
		IRQMSI:  {info: IRQInfo{Index: IRQMSI, Flags: IRQEventfd | IRQNoResize, Count: 0}},
		IRQMSIX: {info: IRQInfo{Index: IRQMSIX, Flags: IRQEventfd | IRQNoResize, Count: 8}},
		IRQErr:  {info: IRQInfo{Index: IRQErr, Flags: IRQEventfd | IRQNoResize, Count: 1}},
		IRQReq:  {info: IRQInfo{Index: IRQReq, Flags: IRQEventfd | IRQNoResize, Count: 1}},
	}
	return d
}

func wantErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: got %v, want an error containing %q", what, err, want)
	}
}

func users(irq *Interrupt) int {
	irq.mu.Lock()
	defer irq.mu.Unlock()
	return irq.users
}

func TestIRQChecks(t *testing.T) {
	d := fakeIRQDevice(t)
	a, b := testInterrupt(t), testInterrupt(t)

	wantErr(t, "no eventfds", d.ConnectIRQs(IRQMSIX, 0), "no eventfds given")
	wantErr(t, "nil eventfd", d.ConnectIRQ(IRQMSIX, 0, nil), "DisconnectIRQ disconnects")
	wantErr(t, "past the last vector", d.ConnectIRQs(IRQMSIX, 7, a, b), "has 8 MSI-X interrupts (0 to 7), not 2 from 7")
	wantErr(t, "negative vector", d.ConnectIRQ(IRQMSIX, -1, a), "not 1 from -1")
	wantErr(t, "INTx vector 1", d.ConnectIRQ(IRQINTx, 1, a), "has 1 INTx interrupts")
	err := d.ConnectIRQ(IRQMSI, 0, a)
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "no MSI interrupts") {
		t.Errorf("MSI on a device without: got %v, want ErrNotSupported", err)
	}
	wantErr(t, "EnableIRQ of REQ", d.EnableIRQ(IRQReq, 1), "enabled by connecting an eventfd")
	wantErr(t, "EnableIRQ of 0", d.EnableIRQ(IRQMSIX, 0), "at least 1")
	wantErr(t, "trigger 0", d.TriggerIRQs(IRQMSIX, 0, 0), "at least 1")
	wantErr(t, "trigger while off", d.TriggerIRQs(IRQMSIX, 0, 1), "the index is off")
	wantErr(t, "trigger none selected", d.TriggerSelectedIRQs(IRQMSIX, 0, nil), "no interrupts selected")
	wantErr(t, "mask INTx while off", d.MaskIRQs(IRQINTx, 0, 1), "the index is off")

	err = d.MaskIRQs(IRQMSIX, 0, 1)
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "DisconnectIRQ") {
		t.Errorf("masking MSI-X: got %v, want ErrNotSupported pointing at DisconnectIRQ", err)
	}
	if err := d.UnmaskIRQs(IRQReq, 0, 1); !errors.Is(err, ErrNotSupported) {
		t.Errorf("unmasking REQ: got %v, want ErrNotSupported", err)
	}

	// Nothing to do: no ioctl, no error.
	if err := d.DisableIRQ(IRQMSIX); err != nil {
		t.Errorf("disabling an index that is off: %v", err)
	}
	if err := d.DisconnectIRQ(IRQMSIX, 3); err != nil {
		t.Errorf("disconnecting a vector of an index that is off: %v", err)
	}
}

func TestIRQKernelRefusal(t *testing.T) {
	d := fakeIRQDevice(t)
	a := testInterrupt(t)

	// The kernel refuses (ENOTTY on /dev/null): no reference stays
	// behind, nothing is recorded.
	err := d.ConnectIRQ(IRQMSIX, 0, a)
	if !errors.Is(err, unix.ENOTTY) || !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "connecting MSI-X interrupts 0 of device 0000:00:03.0") {
		t.Errorf("ConnectIRQ refused by the kernel: got %v", err)
	}
	if n := users(a); n != 0 {
		t.Errorf("after a refused ConnectIRQ the eventfd has %d users", n)
	}
	if st, err := d.IRQStatus(IRQMSIX); err != nil || st.Enabled || len(st.Connected) != 0 {
		t.Errorf("IRQStatus after a refused ConnectIRQ = %+v, %v", st, err)
	}
}

func TestIRQExclusiveAndGrowth(t *testing.T) {
	d := fakeIRQDevice(t)
	a, b := testInterrupt(t), testInterrupt(t)

	// Pretend the kernel enabled MSI-X with vectors 0-1, vector 0 on a.
	if err := a.acquire(); err != nil {
		t.Fatal(err)
	}
	msix := d.irqs[IRQMSIX]
	msix.enabled, msix.allocated, msix.vectors = true, 2, []*Interrupt{a, nil}

	err := d.ConnectIRQ(IRQINTx, 0, b)
	wantErr(t, "INTx with MSI-X on", err, "MSI-X interrupts are enabled")
	wantErr(t, "EnableIRQ of INTx with MSI-X on", d.EnableIRQ(IRQINTx, 1), "one of INTx, MSI and MSI-X at a time")
	wantErr(t, "trigger past the allocated vectors", d.TriggerIRQs(IRQMSIX, 1, 2), "only 2 vectors are allocated")
	if err := d.EnableIRQ(IRQMSIX, 2); err != nil {
		t.Errorf("EnableIRQ within the allocated vectors: %v", err)
	}

	// Vector 5 needs the index grown, which starts with disabling it: the
	// kernel refuses, and everything stays as it was.
	err = d.ConnectIRQ(IRQMSIX, 5, b)
	wantErr(t, "growing the index", err, "disabling the index to grow it from 2 to 6 vectors")
	if users(a) != 1 || users(b) != 0 || !msix.enabled || msix.allocated != 2 || msix.vectors[0] != a {
		t.Errorf("after a refused growth: a has %d users, b %d, state %+v", users(a), users(b), *msix)
	}
	if err := a.Close(); !errors.Is(err, ErrInUse) {
		t.Errorf("closing a connected eventfd: got %v, want ErrInUse", err)
	}

	// Close cannot disable either (ENOTTY), says so, and still releases
	// the eventfds: the kernel tears everything down with the fd anyway.
	err = d.Close()
	wantErr(t, "Close", err, "disabling MSI-X interrupts")
	if users(a) != 0 {
		t.Errorf("after Close the eventfd has %d users", users(a))
	}
	if err := d.ConnectIRQ(IRQMSIX, 0, a); !errors.Is(err, ErrClosed) {
		t.Errorf("ConnectIRQ after Close: got %v, want ErrClosed", err)
	}
	if _, err := d.IRQStatus(IRQMSIX); !errors.Is(err, ErrClosed) {
		t.Errorf("IRQStatus after Close: got %v, want ErrClosed", err)
	}
}

func TestIRQClosedInterrupt(t *testing.T) {
	d := fakeIRQDevice(t)
	a, b := testInterrupt(t), testInterrupt(t)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	err := d.ConnectIRQs(IRQMSIX, 0, a, b)
	if !errors.Is(err, ErrClosed) {
		t.Errorf("connecting a closed eventfd: got %v, want ErrClosed", err)
	}
	if users(a) != 0 {
		t.Errorf("a refused ConnectIRQs left %d users on the open eventfd", users(a))
	}
}

func TestFeatureChecks(t *testing.T) {
	c, g, d := fakeHandles(t)
	defer c.Close()
	defer g.Close()
	defer d.Close()

	if _, err := d.ProbeFeature(FeatureLowPowerEntry); !errors.Is(err, ErrNotSupported) || !errors.Is(err, unix.ENOTTY) {
		t.Errorf("probing on a fd that knows no ioctl: got %v, want ErrNotSupported wrapping ENOTTY", err)
	}
	if err := d.GetFeature(FeatureMigration, make([]byte, 8)); !errors.Is(err, ErrNotSupported) {
		t.Errorf("GetFeature: got %v, want ErrNotSupported", err)
	}
	if _, err := d.Migration(); !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "getting device feature MIGRATION of 0000:00:03.0") {
		t.Errorf("Migration: got %v", err)
	}
	wantErr(t, "feature past 16 bits", d.SetFeature(Feature(1<<16), nil), "16 bits")
	wantErr(t, "no wakeup eventfd", d.EnterLowPowerWithWakeup(nil), "no wakeup eventfd")
	wake := testInterrupt(t)
	if err := wake.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.EnterLowPowerWithWakeup(wake); !errors.Is(err, ErrClosed) {
		t.Errorf("EnterLowPowerWithWakeup with a closed eventfd: got %v, want ErrClosed", err)
	}
	if got := Feature(1000).String(); got != "1000" {
		t.Errorf("Feature(1000) = %q", got)
	}
	if got := (FeatureGet | FeatureSet).String(); got != "get and set" {
		t.Errorf("FeatureGet|FeatureSet = %q", got)
	}
}
