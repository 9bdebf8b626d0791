package iommu

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func rec(iova, size uint64, name string) Record {
	return Record{IOVA: iova, Size: size, Owner: Owner{Name: name, ID: iova}, Perm: PermReadWrite, Mapped: time.Unix(1, 0)}
}

func TestLedgerLookup(t *testing.T) {
	l := newLedger(4)
	for _, r := range []Record{rec(0x200000, 0x200000, "b"), rec(0x1000, 0x1000, "a"), rec(0x10000000, 0x10000, "c")} {
		if err := l.add(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		iova uint64
		want string
	}{
		{0x0, ""}, {0xfff, ""}, {0x1000, "a"}, {0x1fff, "a"}, {0x2000, ""},
		{0x1fffff, ""}, {0x200000, "b"}, {0x300000, "b"}, {0x3fffff, "b"}, {0x400000, ""},
		{0x10000000, "c"}, {0x1000ffff, "c"}, {0x10010000, ""}, {^uint64(0), ""},
	} {
		r, ok := l.Lookup(tc.iova)
		if ok != (tc.want != "") || r.Owner.Name != tc.want {
			t.Errorf("Lookup(%#x) = %v, %v; want %q", tc.iova, r, ok, tc.want)
		}
		if ok && !r.Live() {
			t.Errorf("Lookup(%#x) = %v, not live", tc.iova, r)
		}
	}
	if got := l.Live(); len(got) != 3 || got[0].Owner.Name != "a" || got[1].Owner.Name != "b" || got[2].Owner.Name != "c" {
		t.Errorf("Live() = %v, want a, b, c in IOVA order", got)
	}
	if l.Len() != 3 {
		t.Errorf("Len() = %d", l.Len())
	}

	// Overlaps are refused and change nothing.
	for _, r := range []Record{rec(0x1000, 0x1000, "x"), rec(0x0, 0x2000, "x"), rec(0x1fff00, 0x200, "x"), rec(0x3ff000, 0x2000, "x"), rec(0x100000, 0x10000000, "x")} {
		if err := l.add(r); !errors.Is(err, ErrOverlap) {
			t.Errorf("adding %v: got %v, want ErrOverlap", r, err)
		}
	}
	if l.Len() != 3 {
		t.Errorf("refused adds changed the ledger: %v", l.Live())
	}
	if _, err := l.remove(0x1001, time.Now()); !errors.Is(err, ErrNotMapped) {
		t.Errorf("removing at an IOVA inside but not at the start: got %v", err)
	}
}

func TestLedgerRecent(t *testing.T) {
	l := newLedger(3)
	at := func(n int) time.Time { return time.Unix(100+int64(n), 0) }
	// Map and unmap the same IOVA five times, each time under a new owner:
	// the ring keeps the last three.
	for i := range 5 {
		if err := l.add(rec(0x4000, 0x2000, fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if r, ok := l.Lookup(0x5fff); !ok || !r.Live() || r.Owner.Name != fmt.Sprint(i) {
			t.Errorf("round %d: Lookup = %v, %v; want the live one", i, r, ok)
		}
		r, err := l.remove(0x4000, at(i))
		if err != nil || r.Owner.Name != fmt.Sprint(i) || !r.Unmapped.Equal(at(i)) {
			t.Fatalf("round %d: remove = %v, %v", i, r, err)
		}
		if r, ok := l.Lookup(0x4000); !ok || r.Live() || r.Owner.Name != fmt.Sprint(i) {
			t.Errorf("round %d: after unmapping, Lookup = %v, %v; want the newest unmapped record", i, r, ok)
		}
	}
	recent := l.Recent()
	if len(recent) != 3 {
		t.Fatalf("the ring holds %d records, want 3", len(recent))
	}
	for k, r := range recent {
		if want := fmt.Sprint(4 - k); r.Owner.Name != want || !r.Unmapped.Equal(at(4-k)) || r.Live() {
			t.Errorf("Recent()[%d] = %v, want owner %s unmapped at %v", k, r, want, at(4-k))
		}
	}

	// A live mapping takes precedence over unmapped ones at the same IOVA,
	// and LookupAll shows the history.
	if err := l.add(rec(0x5000, 0x1000, "live")); err != nil {
		t.Fatal(err)
	}
	if r, ok := l.Lookup(0x5000); !ok || r.Owner.Name != "live" {
		t.Errorf("Lookup with a live and unmapped records: %v, %v", r, ok)
	}
	if r, ok := l.Lookup(0x4000); !ok || r.Owner.Name != "4" {
		t.Errorf("Lookup beside the live mapping: %v, %v", r, ok)
	}
	var names []string
	for _, r := range l.LookupAll(0x5000) {
		names = append(names, r.Owner.Name)
	}
	if !slices.Equal(names, []string{"live", "4", "3", "2"}) {
		t.Errorf("LookupAll = %v", names)
	}
	if _, ok := l.Lookup(0x8000); ok {
		t.Error("Lookup of an IOVA never mapped found something")
	}

	// A ledger without a ring forgets at once.
	none := newLedger(0)
	none.add(rec(0x1000, 0x1000, "a"))
	none.remove(0x1000, time.Now())
	if r, ok := none.Lookup(0x1000); ok || len(none.Recent()) != 0 {
		t.Errorf("a ledger without a ring found %v", r)
	}
}

// ledgerModel checks a ledger against a plain list: live records are found
// by any IOVA inside them, and the ring holds exactly the last unmapped
// ones.
type ledgerModel struct {
	l        *Ledger
	ring     int
	live     []Record
	unmapped []Record // all, oldest first
	clock    int
}

func (m *ledgerModel) add(t testing.TB, page, pages uint64) {
	m.clock++
	r := rec((1+page)*0x1000, (1+pages)*0x1000, fmt.Sprint(m.clock))
	overlaps := slices.ContainsFunc(m.live, func(e Record) bool {
		return r.IOVA <= e.IOVA+e.Size-1 && e.IOVA <= r.IOVA+r.Size-1
	})
	err := m.l.add(r)
	if overlaps != (err != nil) {
		t.Fatalf("adding %v to %v: %v", r, m.live, err)
	}
	if err == nil {
		m.live = append(m.live, r)
	}
}

func (m *ledgerModel) remove(t testing.TB, i int) {
	m.clock++
	if len(m.live) == 0 {
		if _, err := m.l.remove(uint64(i)*0x1000, time.Now()); !errors.Is(err, ErrNotMapped) {
			t.Fatalf("removing from an empty ledger: %v", err)
		}
		return
	}
	i %= len(m.live)
	r, err := m.l.remove(m.live[i].IOVA, time.Unix(int64(m.clock), 0))
	if err != nil || r.Owner != m.live[i].Owner || r.Live() {
		t.Fatalf("removing %v: %v, %v", m.live[i], r, err)
	}
	m.live = slices.Delete(m.live, i, i+1)
	m.unmapped = append(m.unmapped, r)
}

func (m *ledgerModel) check(t testing.TB, iova uint64) {
	want, wantOK := Record{}, false
	if i := slices.IndexFunc(m.live, func(e Record) bool { return e.Contains(iova) }); i >= 0 {
		want, wantOK = m.live[i], true
	} else {
		for k := len(m.unmapped) - 1; k >= max(0, len(m.unmapped)-m.ring); k-- {
			if m.unmapped[k].Contains(iova) {
				want, wantOK = m.unmapped[k], true
				break
			}
		}
	}
	if got, ok := m.l.Lookup(iova); ok != wantOK || got != want {
		t.Fatalf("Lookup(%#x) = %v, %v; want %v, %v", iova, got, ok, want, wantOK)
	}
	if n := len(m.l.Recent()); n != min(len(m.unmapped), m.ring) {
		t.Fatalf("the ring holds %d records after %d unmaps", n, len(m.unmapped))
	}
	if m.l.Len() != len(m.live) {
		t.Fatalf("%d live records, want %d", m.l.Len(), len(m.live))
	}
}

func TestLedgerRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := &ledgerModel{l: newLedger(8), ring: 8}
	for range 5000 {
		if len(m.live) == 0 || rng.IntN(2) == 0 {
			m.add(t, uint64(rng.IntN(64)), uint64(rng.IntN(4)))
		} else {
			m.remove(t, rng.IntN(1<<20))
		}
		m.check(t, uint64(rng.IntN(70*0x1000)))
	}
}

// FuzzLedger runs the adds, removes and lookups the input spells against a
// ledger with a small ring.
func FuzzLedger(f *testing.F) {
	f.Add(uint8(3), []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add(uint8(1), []byte{0x10, 0x22, 0x31, 0x05, 0x43, 0x07, 0x11, 0x32})
	f.Fuzz(func(t *testing.T, ring uint8, data []byte) {
		m := &ledgerModel{l: newLedger(int(ring % 16)), ring: int(ring % 16)}
		for len(data) >= 2 {
			op, arg := data[0], data[1]
			data = data[2:]
			if op&1 == 0 {
				m.add(t, uint64(arg%64), uint64(op>>1&3))
			} else {
				m.remove(t, int(arg))
			}
			m.check(t, uint64(op)<<4^uint64(arg)<<12)
		}
	})
}

// TestLedgerConcurrent looks up while another goroutine adds and removes;
// run it with -race.
func TestLedgerConcurrent(t *testing.T) {
	l := newLedger(16)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for iova := uint64(0); iova < 0x40000; iova += 0x800 {
					if r, ok := l.Lookup(iova); ok && !r.Contains(iova) {
						t.Errorf("Lookup(%#x) = %v", iova, r)
					}
				}
			}
		})
	}
	for i := range 2000 {
		iova := uint64(1+i%32) * 0x2000
		if err := l.add(rec(iova, 0x2000, "x")); err != nil {
			t.Error(err)
		}
		if _, err := l.remove(iova, time.Now()); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

func BenchmarkLedgerLookup(b *testing.B) {
	l := newLedger(DefaultRecent)
	for i := range 1024 {
		l.add(rec(uint64(1+i)*4*miB, 2*miB, "pool"))
	}
	b.ReportAllocs()
	var iova uint64
	for b.Loop() {
		iova = (iova + 3*miB + 0x1234) % (1030 * 4 * miB)
		l.Lookup(iova)
	}
}
