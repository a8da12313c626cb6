package output

import (
	"math"
	"slices"
	"sort"

	"github.com/siftr-probe/siftr-probe/correlate"
)

// merge is the k-way merge behind a Writer: it holds batches of records,
// each sorted by key (batch.key: the time, or its timeline key once the
// clock stepped back), and releases records in key order as far as the
// producers' watermarks allow. It is pure and single-goroutine: no clocks,
// no locks, no I/O; the Writer's goroutine owns it.
type merge struct {
	delay    int64 // slack under the lowest watermark
	maxHeld  int   // past this many held records the oldest are released
	heap     []*batch
	seq      uint64 // arrival number of the next batch
	held     int    // records held
	lastTime int64  // time of the latest record released in order
	// Counters since the merge was made.
	late, forced uint64
}

func newMerge(delay int64, maxHeld int) *merge {
	return &merge{delay: delay, maxHeld: maxHeld, lastTime: math.MinInt64}
}

// add holds the records of b, which must not be empty; b belongs to the
// merge until release hands it to done.
func (m *merge) add(b *batch) {
	switch {
	case len(b.keys) != 0:
		if !slices.IsSorted(b.keys) {
			sort.Stable(byKey{b})
		}
	case !sortedByTime(b.recs):
		slices.SortStableFunc(b.recs, func(x, y correlate.Record) int {
			switch {
			case x.Pkt.Time < y.Pkt.Time:
				return -1
			case x.Pkt.Time > y.Pkt.Time:
				return 1
			}
			return 0
		})
	}
	b.pos = 0
	b.seq = m.seq
	m.seq++
	m.held += len(b.recs)
	m.push(b)
}

// byKey sorts a batch's records and keys by key.
type byKey struct{ b *batch }

func (s byKey) Len() int           { return len(s.b.keys) }
func (s byKey) Less(i, j int) bool { return s.b.keys[i] < s.b.keys[j] }
func (s byKey) Swap(i, j int) {
	s.b.keys[i], s.b.keys[j] = s.b.keys[j], s.b.keys[i]
	s.b.recs[i], s.b.recs[j] = s.b.recs[j], s.b.recs[i]
}

func sortedByTime(recs []correlate.Record) bool {
	for i := 1; i < len(recs); i++ {
		if recs[i].Pkt.Time < recs[i-1].Pkt.Time {
			return false
		}
	}
	return true
}

// limit is the newest time the watermarks allow to be released: the lowest
// watermark less the delay, or MinInt64 while a producer has reported none.
func (m *merge) limit(marks []int64) int64 {
	low := int64(math.MaxInt64)
	for _, w := range marks {
		low = min(low, w)
	}
	if low == math.MinInt64 {
		return math.MinInt64
	}
	l := low - m.delay
	if l > low { // overflow near MinInt64
		return math.MinInt64
	}
	return l
}

// release passes to emit, in order, every held record the watermarks allow
// (time <= lowest mark - delay; none while a mark is MinInt64), then the
// oldest ones while more than maxHeld are held (counted as forced). A
// finished batch is passed to done. r is valid only during emit.
func (m *merge) release(marks []int64, emit func(r *correlate.Record), done func(*batch)) {
	if l := m.limit(marks); l != math.MinInt64 {
		for len(m.heap) > 0 && m.heap[0].head() <= l {
			m.emitTop(emit, done)
		}
	}
	for m.held > m.maxHeld {
		m.emitTop(emit, done)
		m.forced++
	}
}

// drain releases every held record, in order.
func (m *merge) drain(emit func(r *correlate.Record), done func(*batch)) {
	for len(m.heap) > 0 {
		m.emitTop(emit, done)
	}
}

func (b *batch) head() int64 { return b.key(b.pos) }

// emitTop releases the oldest held record. A record older than one already
// released is counted late.
func (m *merge) emitTop(emit func(*correlate.Record), done func(*batch)) {
	b := m.heap[0]
	r := &b.recs[b.pos]
	if k := b.key(b.pos); k < m.lastTime {
		m.late++
	} else {
		m.lastTime = k
	}
	emit(r)
	m.held--
	b.pos++
	if b.pos == len(b.recs) {
		m.pop()
		done(b)
	} else {
		m.down(0)
	}
}

// The heap orders batches by (time of next record, arrival).

func (m *merge) less(i, j int) bool {
	a, b := m.heap[i], m.heap[j]
	ta, tb := a.head(), b.head()
	return ta < tb || (ta == tb && a.seq < b.seq)
}

func (m *merge) push(b *batch) {
	m.heap = append(m.heap, b)
	i := len(m.heap) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !m.less(i, p) {
			break
		}
		m.heap[i], m.heap[p] = m.heap[p], m.heap[i]
		i = p
	}
}

func (m *merge) pop() {
	n := len(m.heap) - 1
	m.heap[0] = m.heap[n]
	m.heap[n] = nil
	m.heap = m.heap[:n]
	if n > 0 {
		m.down(0)
	}
}

func (m *merge) down(i int) {
	n := len(m.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && m.less(r, l) {
			c = r
		}
		if !m.less(c, i) {
			return
		}
		m.heap[i], m.heap[c] = m.heap[c], m.heap[i]
		i = c
	}
}
