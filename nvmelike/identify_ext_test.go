package nvmelike_test

import (
	"testing"

	"github.com/umdkit/umd/nvmelike"
	"github.com/umdkit/umd/nvmelike/sim"
)

// TestNamespaceIDs reads each namespace's command set from its
// identification descriptors, and an error for a namespace that does not
// exist.
func TestNamespaceIDs(t *testing.T) {
	r := newRig(t, sim.Config{Namespaces: []sim.NamespaceConfig{{Blocks: 64}, {Blocks: 64, CSI: nvmelike.CSIZoned}}}, nil)
	for nsid, want := range map[uint32]uint8{1: nvmelike.CSINVM, 2: nvmelike.CSIZoned} {
		ids, err := r.ctrl.NamespaceIDs(testContext(t), nsid)
		if err != nil {
			t.Fatal(err)
		}
		if !ids.HasCSI || ids.CSI != want || ids.NGUID[15] != byte(nsid) {
			t.Errorf("namespace %d: %+v, want CSI %d", nsid, ids, want)
		}
	}
	if _, err := r.ctrl.NamespaceIDs(testContext(t), 3); err == nil {
		t.Error("namespace 3 of 2: no error")
	}
}
