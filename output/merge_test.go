package output

import (
	"math"
	"slices"
	"testing"

	"github.com/siftr-probe/siftr-probe/correlate"
)

// mergeRun drives a merge directly: no goroutines, no clocks.
type mergeRun struct {
	m     *merge
	out   []int64 // times released, in order
	freed int
}

func newMergeRun(delay int64, maxHeld int) *mergeRun {
	return &mergeRun{m: newMerge(delay, maxHeld)}
}

func (r *mergeRun) add(times ...int64) {
	b := &batch{}
	for i, t := range times {
		b.recs = append(b.recs, trec(t, 0, i))
	}
	r.m.add(b)
}

func (r *mergeRun) emit(rec *correlate.Record) { r.out = append(r.out, rec.Pkt.Time) }
func (r *mergeRun) done(*batch)                { r.freed++ }

func (r *mergeRun) release(marks ...int64) []int64 {
	n := len(r.out)
	r.m.release(marks, r.emit, r.done)
	return r.out[n:]
}

func TestMergeWatermarks(t *testing.T) {
	r := newMergeRun(10, 1000)
	none := int64(math.MinInt64)
	r.add(100, 120, 140, 160)
	// A producer that has reported nothing holds back everything.
	if got := r.release(200, none); len(got) != 0 {
		t.Fatalf("released %v before every producer reported a watermark", got)
	}
	if r.m.held != 4 {
		t.Fatalf("held %d, want 4", r.m.held)
	}
	// 140 - Delay = 130 allows 100 and 120.
	if got := r.release(200, 140); !slices.Equal(got, []int64{100, 120}) {
		t.Fatalf("released %v, want [100 120]", got)
	}
	// The lowest watermark rules: 170-10 allows 140 and 160.
	if got := r.release(170, 1000); !slices.Equal(got, []int64{140, 160}) {
		t.Fatalf("released %v, want [140 160]", got)
	}
	if r.freed != 1 || r.m.held != 0 {
		t.Errorf("freed %d batches, held %d; want 1, 0", r.freed, r.m.held)
	}
	// A record below what was released is released anyway, counted late.
	r.add(110)
	if got := r.release(2000, 2000); !slices.Equal(got, []int64{110}) || r.m.late != 1 {
		t.Errorf("released %v, late %d; want [110], 1", got, r.m.late)
	}
}

func TestMergeOrdersAcrossBatches(t *testing.T) {
	r := newMergeRun(0, 1000)
	r.add(30, 10, 20) // unsorted: sorted on add
	r.add(15, 25)
	r.add(20) // same time as the first batch's 20: arrival order breaks the tie
	r.m.drain(r.emit, r.done)
	if want := []int64{10, 15, 20, 20, 25, 30}; !slices.Equal(r.out, want) {
		t.Errorf("drained %v, want %v", r.out, want)
	}
	if r.freed != 3 || r.m.late != 0 || r.m.forced != 0 {
		t.Errorf("freed %d, late %d, forced %d", r.freed, r.m.late, r.m.forced)
	}
}

func TestMergeEqualTimesKeepArrivalOrder(t *testing.T) {
	m := newMerge(0, 1000)
	var got []uint32
	for i := range 5 {
		b := &batch{recs: []correlate.Record{trec(7, 0, i)}}
		m.add(b)
	}
	m.drain(func(r *correlate.Record) { got = append(got, r.Pkt.Seq) }, func(*batch) {})
	if !slices.Equal(got, []uint32{0, 1, 2, 3, 4}) {
		t.Errorf("order %v, want arrival order", got)
	}
}

func TestMergeMaxHeld(t *testing.T) {
	r := newMergeRun(0, 3)
	none := int64(math.MinInt64)
	r.add(50, 40, 30, 20, 10)
	// Nothing is allowed, but only 3 may be held: the two oldest go.
	if got := r.release(none); !slices.Equal(got, []int64{10, 20}) || r.m.forced != 2 || r.m.held != 3 {
		t.Errorf("released %v, forced %d, held %d; want [10 20], 2, 3", got, r.m.forced, r.m.held)
	}
}

func TestMergeLimitOverflow(t *testing.T) {
	m := newMerge(10, 1)
	if l := m.limit([]int64{math.MinInt64 + 5}); l != math.MinInt64 {
		t.Errorf("limit near MinInt64 = %d, want MinInt64 (nothing allowed)", l)
	}
	if l := m.limit([]int64{100, 50}); l != 40 {
		t.Errorf("limit = %d, want 40", l)
	}
}
