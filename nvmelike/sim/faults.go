package sim

import (
	"time"

	"github.com/umdkit/umd/nvmelike"
)

// faults are the injected misbehaviours. Completion faults apply to I/O
// queues only, so that bring-up and queue management still work, except
// DropAdminCompletions.
type faults struct {
	drop      int
	dropAdmin int
	dup       int
	garble    int
	garbleXOR uint16
	delay     time.Duration
	fatal     bool
	sgl       int    // SGL transfers to fail
	sglStatus uint16 // with this status field
}

// FailSGLs makes the next n I/O commands whose data pointer is an SGL fail
// with status (a status field, e.g. built with nvmelike.StatusField) before
// any data moves, as a controller rejecting their SGL would.
func (c *Controller) FailSGLs(n int, status uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults.sgl = n
	c.faults.sglStatus = status
}

// DropCompletions makes the next n I/O completions vanish: the commands
// run, their completions are never posted.
func (c *Controller) DropCompletions(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults.drop = n
}

// DropAdminCompletions makes the next n admin completions vanish.
func (c *Controller) DropAdminCompletions(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults.dropAdmin = n
}

// DuplicateCompletions posts each of the next n I/O completions twice.
func (c *Controller) DuplicateCompletions(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults.dup = n
}

// GarbleCIDs XORs the CID of the next n I/O completions with x.
func (c *Controller) GarbleCIDs(n int, x uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults.garble = n
	c.faults.garbleXOR = x
}

// DelayCompletions posts I/O completions d after the command ran, from
// another goroutine; 0 goes back to instant completion.
func (c *Controller) DelayCompletions(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults.delay = d
}

// SetFatal sets CSTS.CFS: the controller stops processing commands until a
// reset (CC.EN 1 → 0).
func (c *Controller) SetFatal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults.fatal = true
	c.csts |= nvmelike.NVME_CSTS_CFS
}

// FunctionReset simulates a reset the host did not ask for, such as a
// Function Level Reset through sysfs or another agent clearing CC.EN: the
// controller registers go back to their reset values (CC, AQA, ASQ, ACQ
// 0, CSTS.RDY 0) and every queue is gone, commands in flight with it.
func (c *Controller) FunctionReset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reset()
	c.cc, c.aqa, c.asq, c.acq = 0, 0, 0, 0
	c.target, c.ready = 0, 0
}

// Remove simulates surprise removal: from now on every register reads as
// all ones, writes are lost and no command runs.
func (c *Controller) Remove() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed = true
}

// PostRaw writes a completion entry straight into I/O CQ qid at its tail,
// with the current phase, bypassing everything: for tests that feed the
// host arbitrary completions. It reports false if the queue does not exist
// or is full.
func (c *Controller) PostRaw(qid uint16, cpl nvmelike.Completion) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(qid) >= len(c.cqs) || c.cqs[qid] == nil || c.cqs[qid].full() {
		return false
	}
	c.write(c.cqs[qid], cpl)
	return true
}
