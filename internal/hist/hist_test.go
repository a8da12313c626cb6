package hist

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

func TestBucketBoundsCoverRange(t *testing.T) {
	var prevHi int64 = -1
	for i := range Buckets {
		lo, hi := BucketBounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d: lo=%d, want %d", i, lo, prevHi+1)
		}
		if hi < lo {
			t.Fatalf("bucket %d: hi %d < lo %d", i, hi, lo)
		}
		if got := bucketOf(lo); got != i {
			t.Fatalf("bucketOf(%d) = %d, want %d", lo, got, i)
		}
		if i < Buckets-1 {
			if got := bucketOf(hi); got != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", hi, got, i)
			}
			if w := hi - lo + 1; lo >= 16 && w*16 > lo {
				t.Fatalf("bucket %d: width %d too wide for lo %d", i, w, lo)
			}
		}
		prevHi = hi
	}
	if prevHi != math.MaxInt64 {
		t.Fatalf("last bucket ends at %d", prevHi)
	}
	if bucketOf(-5) != 0 || bucketOf(math.MaxInt64) != Buckets-1 {
		t.Fatal("out-of-range values not clamped")
	}
}

func TestQuantileAccuracy(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]int64, 100000)
	for i := range vals {
		// log-uniform from 1 µs to 10 s
		v := int64(math.Exp(math.Log(1e3) + r.Float64()*(math.Log(1e10)-math.Log(1e3))))
		vals[i] = v
		h.Record(v)
	}
	slices.Sort(vals)
	if h.Count() != uint64(len(vals)) {
		t.Fatalf("Count = %d", h.Count())
	}
	for _, q := range []float64{0, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1} {
		idx := int(math.Ceil(q*float64(len(vals)))) - 1
		idx = max(idx, 0)
		want := float64(vals[idx])
		got := h.Quantile(q)
		if rel := math.Abs(got-want) / want; rel > 1.0/16 {
			t.Errorf("q=%v: got %v, want %v (rel err %.3f)", q, got, want, rel)
		}
	}
	s := h.Snapshot()
	if s.Max != vals[len(vals)-1] {
		t.Errorf("Max = %d, want %d", s.Max, vals[len(vals)-1])
	}
	if got := s.Quantile(1); got > float64(s.Max) {
		t.Errorf("Quantile(1) = %v above Max %d", got, s.Max)
	}
}

func TestSmallValuesExact(t *testing.T) {
	var h Histogram
	for v := range int64(16) {
		h.Record(v)
	}
	s := h.Snapshot()
	for i := range 16 {
		if s.Counts[i] != 1 {
			t.Fatalf("bucket %d = %d", i, s.Counts[i])
		}
	}
	if got := s.Quantile(0.5); got != 7 {
		t.Errorf("median = %v, want 7", got)
	}
	if got := s.Mean(); got != 7.5 {
		t.Errorf("mean = %v, want 7.5", got)
	}
}

func TestEmpty(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Count() != 0 {
		t.Fatal("empty histogram not zero")
	}
	s := h.Snapshot()
	if s.Mean() != 0 || s.Quantile(0.99) != 0 {
		t.Fatal("empty snapshot not zero")
	}
}

func TestMerge(t *testing.T) {
	var a, b Histogram
	for i := range 1000 {
		a.Record(int64(i))
		b.Record(int64(i) * 1000)
	}
	sb := b.Snapshot()
	a.Merge(&sb)
	if a.Count() != 2000 {
		t.Fatalf("Count = %d", a.Count())
	}
	sa := a.Snapshot()
	if sa.Total != 2000 || sa.Max != 999000 {
		t.Fatalf("merged snapshot: total %d max %d", sa.Total, sa.Max)
	}
	s1, s2 := b.Snapshot(), b.Snapshot()
	s1.Merge(&s2)
	if s1.Total != 2000 || s1.Sum != 2*sb.Sum {
		t.Fatalf("snapshot merge: total %d sum %d", s1.Total, s1.Sum)
	}
}

func TestSub(t *testing.T) {
	var h Histogram
	for range 1000 {
		h.Record(50e6) // 50 ms
	}
	before := h.Snapshot()
	for i := range 100 {
		h.Record(int64(i)) // 0..99 ns
	}
	d := h.Snapshot()
	d.Sub(&before)
	if d.Total != 100 || d.Count() != 100 || d.Sum != 99*100/2 {
		t.Fatalf("interval: total %d sum %d, want 100 and %d", d.Total, d.Sum, 99*100/2)
	}
	if q := d.Quantile(1); q > 100 {
		t.Errorf("interval max quantile %v, want under 100: the earlier values are still counted", q)
	}
	if q := d.Quantile(0.5); q < 40 || q > 60 {
		t.Errorf("interval p50 %v, want about 50", q)
	}
	var sum uint64
	for _, c := range d.Counts {
		sum += c
	}
	if sum != d.Total {
		t.Errorf("counts sum to %d, Total %d", sum, d.Total)
	}
	// The same snapshot twice: nothing in between.
	same := h.Snapshot()
	same.Sub(&same)
	if same.Total != 0 || same.Sum != 0 || same.Quantile(0.5) != 0 {
		t.Errorf("snapshot minus itself: total %d sum %d", same.Total, same.Sum)
	}
	// A later snapshot taken away: no negative (wrapped) counts.
	back := before
	later := h.Snapshot()
	back.Sub(&later)
	if back.Total != 0 || back.Sum != 0 {
		t.Errorf("earlier minus later: total %d sum %d, want 0", back.Total, back.Sum)
	}
}

func TestConcurrentReaders(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := h.Snapshot()
			_ = s.Quantile(0.99)
		}
	}()
	for i := range 100000 {
		h.Record(int64(i))
	}
	close(stop)
	wg.Wait()
	if h.Count() != 100000 {
		t.Fatalf("Count = %d", h.Count())
	}
}

func TestRecordAllocs(t *testing.T) {
	var h Histogram
	if n := testing.AllocsPerRun(1000, func() { h.Record(123456) }); n != 0 {
		t.Fatalf("Record allocates %v", n)
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	v := int64(1)
	for b.Loop() {
		h.Record(v)
		v = v*7 + 13&(1<<36-1)
	}
}
