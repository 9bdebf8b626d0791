package vfio

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/umdkit/umd/internal/vfioabi"
)

// Interrupts of a device: VFIO_DEVICE_SET_IRQS.
//
// An IRQ index (INTx, MSI, MSI-X, ERR, REQ) holds Count interrupts,
// "vectors" below. Each vector can be connected to an Interrupt (an
// eventfd) that the kernel signals when the device raises it. The rules
// vfio-pci imposes, which the methods below follow and check:
//
//   - Of INTx, MSI and MSI-X one at a time may be enabled; ERR and REQ are
//     independent of them and of each other.
//   - Connecting the first eventfds of MSI or MSI-X enables the index: the
//     kernel allocates start+count host vectors at that moment. Kernels
//     before 6.5, and later ones whose interrupt domain cannot grow an
//     MSI-X table on the fly, report IRQNoResize for the index: then a
//     vector beyond those allocated can only be had by disabling the whole
//     index and enabling it again with more. ConnectIRQs does that when it
//     must (see there); EnableIRQ allocates vectors up front so it never
//     has to. Without IRQNoResize (MSI-X on 6.5+ with dynamic allocation)
//     the kernel allocates further vectors one by one as they are
//     connected.
//   - Disconnecting a vector keeps its host vector allocated (and the
//     device's table entry masked) until the index is disabled.
//   - Only INTx can be masked through VFIO (IRQMaskable). See MaskIRQs for
//     what to do about MSI and MSI-X.
//
// The Device remembers what it connected. DisableIRQ and Close tear the
// wiring down before the eventfds may be closed: an Interrupt refuses to
// close while a vector is connected to it.

// irqState is what a Device knows about one of its IRQ indexes.
type irqState struct {
	info IRQInfo
	// enabled: for INTx, MSI and MSI-X the kernel has the index on (its
	// irq_type); for ERR and REQ an eventfd is connected.
	enabled bool
	// allocated is the extent of the index as enabled: the kernel
	// allocated this many vectors when it enabled MSI or MSI-X (or last
	// grew it). Without IRQNoResize it counts up to the highest vector
	// connected since; the kernel allocates those one by one.
	allocated int
	// vectors[v] is the Interrupt vector v signals, nil for none.
	vectors []*Interrupt
}

// exclusive reports whether index is one of INTx, MSI and MSI-X, of which
// vfio-pci enables one at a time.
func exclusive(index IRQIndex) bool {
	return index == IRQINTx || index == IRQMSI || index == IRQMSIX
}

// msi reports whether index is MSI or MSI-X, whose vectors are allocated
// when the index is enabled.
func msi(index IRQIndex) bool { return index == IRQMSI || index == IRQMSIX }

// irqStateLocked returns the state of index, asking the kernel for its
// info the first time. d.irqMu must be held.
func (d *Device) irqStateLocked(index IRQIndex) (*irqState, error) {
	if d.irqClosed {
		return nil, ErrClosed
	}
	if s, ok := d.irqs[index]; ok {
		return s, nil
	}
	info, err := d.IRQInfo(index)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			// vfio-pci answers EINVAL for ERR on a conventional PCI
			// function and for indexes past NumIRQs.
			err = fmt.Errorf("%w: %w", ErrNotSupported, hint(err, "the device has no %s interrupts", index))
		}
		return nil, err
	}
	if d.irqs == nil {
		d.irqs = make(map[IRQIndex]*irqState)
	}
	s := &irqState{info: info}
	d.irqs[index] = s
	return s, nil
}

// setIRQs issues VFIO_DEVICE_SET_IRQS. d.irqMu must be held.
func (d *Device) setIRQs(flags uint32, index IRQIndex, start, count int, data []byte) error {
	if start < 0 || count < 0 || start > math.MaxUint32 || count > math.MaxUint32 {
		return fmt.Errorf("interrupts %d+%d out of range", start, count)
	}
	set := vfioabi.IRQSet{Flags: flags, Index: uint32(index), Start: uint32(start), Count: uint32(count)}
	var r int
	err := d.file.control(func(fd int) error {
		var err error
		r, err = vfioabi.DeviceSetIRQs(fd, set, data)
		return err
	})
	switch {
	case errors.Is(err, unix.ENOTTY):
		return fmt.Errorf("%w: %w", ErrNotSupported, err)
	case err != nil:
		return err
	case r > 0:
		// vfio-pci's answer when the PCI core grants fewer MSI or MSI-X
		// vectors than asked: it enabled nothing.
		return fmt.Errorf("%w: the kernel could allocate only %d of the %d vectors asked for", unix.ENOSPC, r, start+count)
	}
	return nil
}

// checkRange checks that the count vectors from start exist in s.
func checkRange(s *irqState, start, count int) error {
	switch {
	case s.info.Count == 0:
		return fmt.Errorf("%w: the device has no %s interrupts", ErrNotSupported, s.info.Index)
	case start < 0 || count < 0 || start > s.info.Count || count > s.info.Count-start:
		return fmt.Errorf("the device has %d %s interrupts (0 to %d), not %d from %d", s.info.Count, s.info.Index, s.info.Count-1, count, start)
	}
	return nil
}

// otherEnabledLocked returns the index among INTx, MSI and MSI-X other
// than index that is enabled, if any. d.irqMu must be held.
func (d *Device) otherEnabledLocked(index IRQIndex) (IRQIndex, bool) {
	for other, s := range d.irqs {
		if other != index && exclusive(other) && s.enabled {
			return other, true
		}
	}
	return 0, false
}

// ConnectIRQs connects vectors start, start+1, … of an IRQ index to the
// eventfds irqs (VFIO_DEVICE_SET_IRQS with DATA_EVENTFD and
// ACTION_TRIGGER): from then on each interrupt of vector start+i signals
// irqs[i]. A nil entry disconnects that vector. Vectors outside the range
// keep what they had. The same Interrupt may serve several vectors.
//
// When the index is off, this enables it. For MSI and MSI-X the kernel
// then allocates start+len(irqs) vectors. When the index is on with fewer
// vectors allocated than the range needs and the kernel cannot resize it
// (IRQNoResize), ConnectIRQs disables the index and enables it again with
// every vector connected so far plus the new ones. Between the two the
// device's MSI or MSI-X is off and an interrupt it raises may be lost;
// allocate vectors up front with EnableIRQ to rule that out.
//
// For ERR and REQ, whose one vector is independent of the others,
// disconnecting it turns the index off.
func (d *Device) ConnectIRQs(index IRQIndex, start int, irqs ...*Interrupt) error {
	what := fmt.Sprintf("connecting %s interrupts %s of device %s", index, span(start, len(irqs)), d.bdf)
	if len(irqs) == 0 {
		return fmt.Errorf("%s: no eventfds given", what)
	}
	d.irqMu.Lock()
	defer d.irqMu.Unlock()
	s, err := d.irqStateLocked(index)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := checkRange(s, start, len(irqs)); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := d.connectLocked(s, start, irqs); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// ConnectIRQ connects one vector of an IRQ index to irq; see ConnectIRQs.
func (d *Device) ConnectIRQ(index IRQIndex, vector int, irq *Interrupt) error {
	if irq == nil {
		return fmt.Errorf("connecting %s interrupt %d of device %s: no eventfd given (DisconnectIRQ disconnects)", index, vector, d.bdf)
	}
	return d.ConnectIRQs(index, vector, irq)
}

// DisconnectIRQ disconnects one vector of an IRQ index from its eventfd:
// the kernel stops signalling it and frees its handler, which masks an MSI
// or MSI-X vector at the device. The host vector stays allocated and the
// rest of the index keeps working.
// Disconnecting a vector that is not connected does nothing.
func (d *Device) DisconnectIRQ(index IRQIndex, vector int) error {
	what := fmt.Sprintf("disconnecting %s interrupt %d of device %s", index, vector, d.bdf)
	d.irqMu.Lock()
	defer d.irqMu.Unlock()
	s, err := d.irqStateLocked(index)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := checkRange(s, vector, 1); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !s.enabled || vector >= len(s.vectors) || s.vectors[vector] == nil {
		return nil
	}
	if err := d.connectLocked(s, vector, []*Interrupt{nil}); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// EnableIRQ turns on INTx, MSI or MSI-X with count vectors and no eventfd
// connected to any: for MSI and MSI-X the kernel allocates the count host
// vectors now, so that connecting any of them later never needs the index
// resized. When the index is already on, it does nothing, unless the
// kernel cannot resize it (IRQNoResize) and fewer than count vectors are
// allocated: then it grows the index as ConnectIRQs does. ERR and REQ are
// turned on by connecting their eventfd.
func (d *Device) EnableIRQ(index IRQIndex, count int) error {
	what := fmt.Sprintf("enabling %d %s interrupts of device %s", count, index, d.bdf)
	if !exclusive(index) {
		return fmt.Errorf("%s: %s interrupts are enabled by connecting an eventfd (ConnectIRQ)", what, index)
	}
	d.irqMu.Lock()
	defer d.irqMu.Unlock()
	s, err := d.irqStateLocked(index)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if count < 1 {
		return fmt.Errorf("%s: the count must be at least 1", what)
	}
	if err := checkRange(s, 0, count); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case !s.enabled:
		err = d.connectLocked(s, 0, make([]*Interrupt, count))
	case msi(index) && s.info.Flags&IRQNoResize != 0 && s.allocated < count:
		err = d.regrowLocked(s, s.allocated, make([]*Interrupt, count-s.allocated))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// acquireAll takes a reference on every non-nil Interrupt of irqs, so
// that none can be closed while the kernel reads its number or signals it.
// It returns the function that drops them again.
func acquireAll(irqs []*Interrupt) (release func(), err error) {
	var acquired []*Interrupt
	release = func() {
		for _, irq := range acquired {
			irq.release()
		}
	}
	for _, irq := range irqs {
		if irq == nil {
			continue
		}
		if err := irq.acquire(); err != nil {
			release()
			return nil, err
		}
		acquired = append(acquired, irq)
	}
	return release, nil
}

// releaseRange drops the references of the vectors of s from start to end
// and clears them.
func releaseRange(s *irqState, start, end int) {
	for v := start; v < end && v < len(s.vectors); v++ {
		if old := s.vectors[v]; old != nil {
			old.release()
			s.vectors[v] = nil
		}
	}
}

// connectLocked makes vectors start… of s signal irqs, enabling or
// growing the index as needed. d.irqMu must be held.
func (d *Device) connectLocked(s *irqState, start int, irqs []*Interrupt) error {
	index := s.info.Index
	end := start + len(irqs)
	if !s.enabled && exclusive(index) {
		if other, ok := d.otherEnabledLocked(index); ok {
			return fmt.Errorf("%s interrupts are enabled: vfio-pci enables one of INTx, MSI and MSI-X at a time (DisableIRQ the other first)", other)
		}
	}
	if s.enabled && msi(index) && s.info.Flags&IRQNoResize != 0 && end > s.allocated {
		return d.regrowLocked(s, start, irqs)
	}

	release, err := acquireAll(irqs)
	if err != nil {
		return err
	}
	if err := d.setEventfdsLocked(index, start, irqs); err != nil {
		release()
		return err
	}
	// The kernel holds the new wiring: drop the references of what the
	// range signalled before, and record the new.
	releaseRange(s, start, end)
	if len(s.vectors) < end {
		s.vectors = append(s.vectors, make([]*Interrupt, end-len(s.vectors))...)
	}
	copy(s.vectors[start:], irqs)
	if exclusive(index) {
		// Enabling MSI or MSI-X allocates end vectors; without
		// IRQNoResize, connecting past them allocates more.
		s.allocated = max(s.allocated, end)
		s.enabled = true
	} else {
		s.enabled = slices.ContainsFunc(s.vectors, func(i *Interrupt) bool { return i != nil })
	}
	return nil
}

// regrowLocked disables an MSI or MSI-X index and enables it again with
// enough vectors for start+len(irqs), every vector connected as before
// except those in the range, which get irqs. If enabling fails it tries to
// restore the old wiring. d.irqMu must be held.
func (d *Device) regrowLocked(s *irqState, start int, irqs []*Interrupt) error {
	index := s.info.Index
	n := max(start+len(irqs), s.allocated)
	old := make([]*Interrupt, s.allocated)
	copy(old, s.vectors)
	want := make([]*Interrupt, n)
	copy(want, old)
	copy(want[start:], irqs)

	release, err := acquireAll(irqs)
	if err != nil {
		return err
	}
	if err := d.setIRQs(vfioabi.VFIO_IRQ_SET_DATA_NONE|vfioabi.VFIO_IRQ_SET_ACTION_TRIGGER, index, 0, 0, nil); err != nil {
		release()
		return fmt.Errorf("disabling the index to grow it from %d to %d vectors: %w", s.allocated, n, err)
	}
	if err := d.setEventfdsLocked(index, 0, want); err != nil {
		release()
		growErr := fmt.Errorf("enabling the index again with %d vectors: %w", n, err)
		// Put back what was there; failing that, the index is off.
		if rerr := d.setEventfdsLocked(index, 0, old); rerr != nil {
			d.forgetLocked(s)
			return fmt.Errorf("%w; restoring the %d vectors it had: %w (the index is now off)", growErr, len(old), rerr)
		}
		return growErr
	}
	releaseRange(s, start, start+len(irqs))
	s.vectors = want
	s.allocated = n
	s.enabled = true
	return nil
}

// setEventfdsLocked issues the DATA_EVENTFD|ACTION_TRIGGER ioctl for irqs
// from start. The caller holds a reference on every non-nil Interrupt, so
// none is closed while the kernel reads the numbers. d.irqMu must be held.
func (d *Device) setEventfdsLocked(index IRQIndex, start int, irqs []*Interrupt) error {
	fds := make([]int, len(irqs))
	for i, irq := range irqs {
		fds[i] = -1
		if irq != nil {
			fds[i] = irq.fd
		}
	}
	data, err := vfioabi.IRQSetEventfds(fds)
	if err != nil {
		return err
	}
	return d.setIRQs(vfioabi.VFIO_IRQ_SET_DATA_EVENTFD|vfioabi.VFIO_IRQ_SET_ACTION_TRIGGER, index, start, len(irqs), data)
}

// forgetLocked records that an index is off: every vector's eventfd is
// released. d.irqMu must be held.
func (d *Device) forgetLocked(s *irqState) {
	for _, irq := range s.vectors {
		if irq != nil {
			irq.release()
		}
	}
	s.vectors = nil
	s.allocated = 0
	s.enabled = false
}

// DisableIRQ turns an IRQ index off (VFIO_DEVICE_SET_IRQS with DATA_NONE,
// ACTION_TRIGGER and count 0): every vector is disconnected and, for MSI
// and MSI-X, the host vectors are freed. The eventfds may be closed after.
// Disabling an index that is off does nothing.
func (d *Device) DisableIRQ(index IRQIndex) error {
	d.irqMu.Lock()
	defer d.irqMu.Unlock()
	if err := d.disableLocked(index); err != nil {
		return fmt.Errorf("disabling %s interrupts of device %s: %w", index, d.bdf, err)
	}
	return nil
}

// disableLocked is DisableIRQ. d.irqMu must be held.
func (d *Device) disableLocked(index IRQIndex) error {
	if d.irqClosed {
		return ErrClosed
	}
	s, ok := d.irqs[index]
	if !ok || !s.enabled {
		return nil
	}
	if err := d.setIRQs(vfioabi.VFIO_IRQ_SET_DATA_NONE|vfioabi.VFIO_IRQ_SET_ACTION_TRIGGER, index, 0, 0, nil); err != nil {
		return err
	}
	d.forgetLocked(s)
	return nil
}

// closeIRQs disables every index the device enabled, for Close. Whatever
// the kernel answers, the eventfds are released: closing the device fd
// makes vfio-pci tear its interrupts down in any case.
func (d *Device) closeIRQs() error {
	d.irqMu.Lock()
	defer d.irqMu.Unlock()
	var errs []error
	for _, index := range []IRQIndex{IRQMSIX, IRQMSI, IRQINTx, IRQErr, IRQReq} {
		if err := d.disableLocked(index); err != nil {
			errs = append(errs, fmt.Errorf("disabling %s interrupts: %w", index, err))
		}
	}
	for _, s := range d.irqs {
		d.forgetLocked(s)
	}
	d.irqClosed = true
	return errors.Join(errs...)
}

// TriggerIRQs makes the kernel signal the eventfds of the count vectors
// from start as if the device had raised them (DATA_NONE with
// ACTION_TRIGGER); vectors with no eventfd are skipped. It is the loopback
// test of the wiring. The index must be on.
func (d *Device) TriggerIRQs(index IRQIndex, start, count int) error {
	what := fmt.Sprintf("triggering %s interrupts %s of device %s", index, span(start, count), d.bdf)
	d.irqMu.Lock()
	defer d.irqMu.Unlock()
	// Count 0 with DATA_NONE would disable the index, not trigger it.
	if count < 1 {
		return fmt.Errorf("%s: the count must be at least 1", what)
	}
	if err := d.checkTriggerLocked(index, start, count); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := d.setIRQs(vfioabi.VFIO_IRQ_SET_DATA_NONE|vfioabi.VFIO_IRQ_SET_ACTION_TRIGGER, index, start, count, nil); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// TriggerSelectedIRQs makes the kernel signal the eventfds of the vectors
// from start whose entry in which is true (DATA_BOOL with ACTION_TRIGGER),
// and no others. The index must be on.
func (d *Device) TriggerSelectedIRQs(index IRQIndex, start int, which []bool) error {
	what := fmt.Sprintf("triggering %s interrupts %s of device %s", index, span(start, len(which)), d.bdf)
	d.irqMu.Lock()
	defer d.irqMu.Unlock()
	if len(which) == 0 {
		return fmt.Errorf("%s: no interrupts selected", what)
	}
	if err := d.checkTriggerLocked(index, start, len(which)); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	data := make([]byte, len(which))
	for i, w := range which {
		if w {
			data[i] = 1
		}
	}
	if err := d.setIRQs(vfioabi.VFIO_IRQ_SET_DATA_BOOL|vfioabi.VFIO_IRQ_SET_ACTION_TRIGGER, index, start, len(which), data); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// checkTriggerLocked checks that a software trigger of count vectors from
// start can reach the kernel's trigger path. d.irqMu must be held.
func (d *Device) checkTriggerLocked(index IRQIndex, start, count int) error {
	s, err := d.irqStateLocked(index)
	if err != nil {
		return err
	}
	if err := checkRange(s, start, count); err != nil {
		return err
	}
	if !s.enabled {
		return fmt.Errorf("the index is off: connect an eventfd first (ConnectIRQ)")
	}
	if msi(index) && s.info.Flags&IRQNoResize != 0 && start+count > s.allocated {
		// Kernels that cannot resize reject a range past the allocated
		// vectors; those that can skip vectors without an eventfd.
		return fmt.Errorf("only %d vectors are allocated", s.allocated)
	}
	return nil
}

// MaskIRQs masks the count vectors from start (VFIO_DEVICE_SET_IRQS with
// DATA_NONE and ACTION_MASK): the device's interrupt is held back at the
// source until UnmaskIRQs. vfio-pci implements it for INTx only, the one
// index it reports IRQMaskable for; INTx is also masked by the kernel
// after every interrupt (IRQAutomasked), and must be unmasked to get the
// next one.
//
// For MSI and MSI-X the error wraps ErrNotSupported: vfio-pci has no
// masking for them. What to do instead:
//
//   - To stop being woken, do nothing: an Interrupt nobody waits on only
//     counts. The package parks no goroutine per vector, so an unwatched
//     vector costs the host one interrupt and one eventfd increment per
//     device interrupt, and the count is there when reading resumes.
//   - To stop the host taking the interrupt, DisconnectIRQ the vector: the
//     kernel frees its handler and masks the vector in the device's MSI-X
//     table. ConnectIRQ unmasks it again. This is two ioctls and a
//     request_irq, not a fast path.
//   - To stop the device raising it, use the device's own controls (for
//     NVMe, a completion queue created without interrupts, or interrupt
//     coalescing): that belongs to the protocol engine.
//
// Setting the per-vector mask bit of the MSI-X table through the BAR is
// deliberately not offered: vfio-pci drops writes to the table through the
// region (it owns the table on the device's behalf), a mapping of it exists
// only where the platform remaps interrupts, and a mask bit set behind the
// kernel's back disagrees with the state the kernel keeps for the vector
// and is overwritten the next time it masks or unmasks it.
func (d *Device) MaskIRQs(index IRQIndex, start, count int) error {
	return d.maskOp(index, start, count, "masking", vfioabi.VFIO_IRQ_SET_ACTION_MASK)
}

// UnmaskIRQs unmasks the count vectors from start (DATA_NONE with
// ACTION_UNMASK); see MaskIRQs. For INTx, whose interrupts the kernel
// masks as they arrive, this is the acknowledgement after handling one.
func (d *Device) UnmaskIRQs(index IRQIndex, start, count int) error {
	return d.maskOp(index, start, count, "unmasking", vfioabi.VFIO_IRQ_SET_ACTION_UNMASK)
}

func (d *Device) maskOp(index IRQIndex, start, count int, verb string, action uint32) error {
	what := fmt.Sprintf("%s %s interrupts %s of device %s", verb, index, span(start, count), d.bdf)
	d.irqMu.Lock()
	defer d.irqMu.Unlock()
	s, err := d.irqStateLocked(index)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if s.info.Flags&IRQMaskable == 0 {
		advice := ""
		if msi(index) {
			advice = "; DisconnectIRQ stops a vector's signals instead"
		}
		return fmt.Errorf("%s: %w: vfio-pci cannot mask %s interrupts (the index is not IRQMaskable)%s", what, ErrNotSupported, index, advice)
	}
	if count < 1 {
		return fmt.Errorf("%s: the count must be at least 1", what)
	}
	if err := checkRange(s, start, count); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !s.enabled {
		return fmt.Errorf("%s: the index is off: connect an eventfd first (ConnectIRQ)", what)
	}
	if err := d.setIRQs(vfioabi.VFIO_IRQ_SET_DATA_NONE|action, index, start, count, nil); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// IRQStatus is what a Device has set up on one IRQ index.
type IRQStatus struct {
	Info IRQInfo
	// Enabled: for INTx, MSI and MSI-X the index is on; for ERR and REQ an
	// eventfd is connected.
	Enabled bool
	// Allocated is the extent of an MSI or MSI-X index: when it was
	// enabled (or last grown) the kernel allocated vectors 0 to
	// Allocated-1. With IRQNoResize those are all that can be connected
	// without re-enabling the index; without, the kernel allocates more
	// as they are connected and Allocated follows the highest. For INTx
	// it is 1 when on.
	Allocated int
	// Connected lists the vectors connected to an eventfd, ascending.
	Connected []int
}

// IRQStatus returns what the Device has set up on an IRQ index.
func (d *Device) IRQStatus(index IRQIndex) (IRQStatus, error) {
	d.irqMu.Lock()
	defer d.irqMu.Unlock()
	s, err := d.irqStateLocked(index)
	if err != nil {
		return IRQStatus{}, fmt.Errorf("getting the %s interrupt status of device %s: %w", index, d.bdf, err)
	}
	st := IRQStatus{Info: s.info, Enabled: s.enabled, Allocated: s.allocated}
	for v, irq := range s.vectors {
		if irq != nil {
			st.Connected = append(st.Connected, v)
		}
	}
	return st, nil
}

// span formats a range of vectors for messages: "3" or "0-7".
func span(start, count int) string {
	if count <= 1 {
		return fmt.Sprint(start)
	}
	return fmt.Sprintf("%d-%d", start, start+count-1)
}
