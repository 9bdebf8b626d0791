package nvmelike

import "testing"

func TestNeedEvent(t *testing.T) {
	for _, tc := range []struct {
		ei, new, old uint16
		want         bool
	}{
		{0, 1, 0, true},           // the controller saw 0: the move to 1 passes it
		{5, 6, 5, true},           // ei = old
		{4, 6, 5, false},          // ei behind old: already notified past it
		{7, 6, 5, false},          // ei ahead of new: not yet
		{6, 9, 5, true},           // ei inside (old, new]
		{0xffff, 1, 0xfffe, true}, // across the 16-bit wrap
		{0xfffd, 1, 0xfffe, false},
	} {
		if got := needEvent(tc.ei, tc.new, tc.old); got != tc.want {
			t.Errorf("needEvent(ei %d, new %d, old %d) = %v", tc.ei, tc.new, tc.old, got)
		}
	}
}
