package iommu

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Owner says whose memory a mapping is, for the ledger and for whoever
// later has to explain a DMA fault.
type Owner struct {
	Name string // the pool or buffer, such as "admin-queues" or "client 3 pool"
	ID   uint64 // the owner's id: a client connection, a process, a queue pair
	Tag  string // anything else worth printing next to a fault
}

func (o Owner) String() string {
	name := "unnamed memory"
	if o.Name != "" {
		name = strconv.Quote(o.Name)
	}
	s := name + " (owner " + strconv.FormatUint(o.ID, 10)
	if o.Tag != "" {
		s += ", " + o.Tag
	}
	return s + ")"
}

// Record is one mapping in the ledger: live, or recently unmapped.
type Record struct {
	IOVA     uint64
	Size     uint64 // bytes, a multiple of the IOMMU page size
	Owner    Owner
	Perm     Perm
	Mapped   time.Time // when the mapping was made
	Unmapped time.Time // when it was removed; zero while it is live
}

// Live reports whether the mapping is still in place.
func (r Record) Live() bool { return r.Unmapped.IsZero() }

// Range returns the IOVAs the mapping covers.
func (r Record) Range() Range { return Range{r.IOVA, r.IOVA + r.Size - 1} }

// Contains reports whether iova lies in the mapping.
func (r Record) Contains(iova uint64) bool { return iova >= r.IOVA && iova-r.IOVA < r.Size }

func (r Record) String() string {
	state := "live"
	if !r.Live() {
		state = "unmapped " + r.Unmapped.Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%s %s %s, %s", r.Range(), r.Perm, r.Owner, state)
}

// DefaultRecent is how many unmapped records a ledger keeps when
// Options.RecentUnmaps is 0.
const DefaultRecent = 256

// Ledger is the book of a Space's DMA mappings: every live mapping, sorted
// by IOVA, and a bounded ring of the most recently unmapped ones. It answers
// "what is (or was) at this IOVA", which is what attributing a DMA fault
// needs. Its methods are safe for concurrent use, also while the Space maps
// and unmaps.
type Ledger struct {
	mu     sync.RWMutex
	live   []Record // sorted by IOVA, not overlapping
	recent []Record // ring of unmapped records; len is the capacity
	next   int      // where the next unmapped record goes
	count  int      // unmapped records held, at most len(recent)
}

// newLedger returns an empty ledger that remembers the last recent
// unmapped records (none when recent is 0).
func newLedger(recent int) *Ledger {
	return &Ledger{recent: make([]Record, max(recent, 0))}
}

// Lookup returns the mapping that holds iova: the live one if there is one
// (found by binary search), else the most recently unmapped one the ring
// still holds (a linear scan, newest first, of at most the ring's size).
func (l *Ledger) Lookup(iova uint64) (Record, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i, ok := l.findLive(iova); ok {
		return l.live[i], true
	}
	for k := 1; k <= l.count; k++ {
		r := &l.recent[(l.next-k+len(l.recent))%len(l.recent)]
		if r.Contains(iova) {
			return *r, true
		}
	}
	return Record{}, false
}

// LookupAll returns every record that holds iova, the live one first, then
// the unmapped ones newest first: an IOVA reused since shows its history.
func (l *Ledger) LookupAll(iova uint64) []Record {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out []Record
	if i, ok := l.findLive(iova); ok {
		out = append(out, l.live[i])
	}
	for k := 1; k <= l.count; k++ {
		if r := l.recent[(l.next-k+len(l.recent))%len(l.recent)]; r.Contains(iova) {
			out = append(out, r)
		}
	}
	return out
}

// Live returns the live mappings, sorted by IOVA.
func (l *Ledger) Live() []Record {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return slices.Clone(l.live)
}

// Recent returns the unmapped records the ring holds, newest first.
func (l *Ledger) Recent() []Record {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]Record, l.count)
	for k := range out {
		out[k] = l.recent[(l.next-k-1+len(l.recent))%len(l.recent)]
	}
	return out
}

// Len returns the number of live mappings.
func (l *Ledger) Len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.live)
}

// findLive returns the index of the live record holding iova. l.mu must be
// held.
func (l *Ledger) findLive(iova uint64) (int, bool) {
	// The first record that starts above iova; the one before may hold it.
	i := l.search(func(start uint64) bool { return start > iova })
	if i > 0 && l.live[i-1].Contains(iova) {
		return i - 1, true
	}
	return 0, false
}

// search returns the index of the first live record whose start satisfies
// above, which must be false for a prefix of the records and true for the
// rest. (Records are large; slices.BinarySearchFunc would copy one per
// step.) l.mu must be held.
func (l *Ledger) search(above func(start uint64) bool) int {
	lo, hi := 0, len(l.live)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if above(l.live[mid].IOVA) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// add records a new live mapping. It fails with ErrOverlap, changing
// nothing, when the range overlaps a live one.
func (l *Ledger) add(r Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := l.search(func(start uint64) bool { return start >= r.IOVA })
	last := r.IOVA + r.Size - 1
	if (i > 0 && l.live[i-1].IOVA+l.live[i-1].Size-1 >= r.IOVA) || (i < len(l.live) && l.live[i].IOVA <= last) {
		return fmt.Errorf("recording the mapping at %s: %w", r.Range(), ErrOverlap)
	}
	l.live = slices.Insert(l.live, i, r)
	return nil
}

// remove moves the live mapping that starts at iova to the ring of recently
// unmapped ones, stamped with at, and returns it.
func (l *Ledger) remove(iova uint64, at time.Time) (Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := l.search(func(start uint64) bool { return start >= iova })
	if i == len(l.live) || l.live[i].IOVA != iova {
		return Record{}, fmt.Errorf("removing the mapping at iova 0x%x from the ledger: %w", iova, ErrNotMapped)
	}
	r := l.live[i]
	l.live = slices.Delete(l.live, i, i+1)
	r.Unmapped = at
	if len(l.recent) > 0 {
		l.recent[l.next] = r
		l.next = (l.next + 1) % len(l.recent)
		l.count = min(l.count+1, len(l.recent))
	}
	return r, nil
}
