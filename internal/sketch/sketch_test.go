package sketch

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBuckets(t *testing.T) {
	prevHi := uint64(0)
	for i := 1; i < 2000; i++ {
		lo, hi := bounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d, %d]: bucketOf %d, %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if lo >= 64 && float64(hi-lo+1) > float64(lo)/32+0.5 {
			t.Fatalf("bucket %d [%d, %d] wider than 1/32 of its bound", i, lo, hi)
		}
		prevHi = hi
		if hi >= math.MaxUint64/2 {
			break
		}
	}
	if b := bucketOf(math.MaxUint64); b < 0 {
		t.Fatal(b)
	}
}

// TestQuantiles compares with exact quantiles of random data of several shapes.
func TestQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	shapes := map[string]func() uint64{
		"uniform small": func() uint64 { return rng.Uint64N(50) },
		"cwnd":          func() uint64 { return 1448 * (10 + rng.Uint64N(5000)) },
		"lognormal":     func() uint64 { return uint64(math.Exp(rng.NormFloat64()*2 + 10)) },
		"constant":      func() uint64 { return 1073725440 },
	}
	for name, gen := range shapes {
		var s Sketch
		var vals []uint64
		for range 100000 {
			v := gen()
			s.Add(v)
			vals = append(vals, v)
		}
		slices.Sort(vals)
		for _, q := range []float64{0, 0.01, 0.5, 0.9, 0.99, 1} {
			rank := int(math.Ceil(q * float64(len(vals))))
			want := float64(vals[max(rank-1, 0)])
			got := s.Quantile(q)
			if math.Abs(got-want) > want/64+0.5 {
				t.Errorf("%s q%.2f: %.0f, want %.0f ± 1/64", name, q, got, want)
			}
		}
		if s.Min() != vals[0] || s.Max() != vals[len(vals)-1] || s.Count() != 100000 {
			t.Errorf("%s: min %d max %d count %d", name, s.Min(), s.Max(), s.Count())
		}
		if name == "cwnd" && s.Buckets() > 400 {
			t.Errorf("%s: %d buckets", name, s.Buckets())
		}
	}
}

func TestMerge(t *testing.T) {
	var a, b, all Sketch
	for i := range uint64(10000) {
		v := i * i
		all.Add(v)
		if i%2 == 0 {
			a.Add(v)
		} else {
			b.Add(v + 0)
		}
	}
	var m Sketch
	m.Merge(&b)
	m.Merge(&a)
	m.Merge(&Sketch{})
	for _, q := range []float64{0, 0.25, 0.5, 0.99, 1} {
		if m.Quantile(q) != all.Quantile(q) {
			t.Errorf("q%.2f: merged %.0f, direct %.0f", q, m.Quantile(q), all.Quantile(q))
		}
	}
	if m.Count() != all.Count() || m.Mean() != all.Mean() {
		t.Errorf("count %d mean %f, want %d %f", m.Count(), m.Mean(), all.Count(), all.Mean())
	}
	var e Sketch
	if e.Quantile(0.5) != 0 || e.Count() != 0 {
		t.Error("empty sketch")
	}
}

func BenchmarkAdd(b *testing.B) {
	var s Sketch
	b.ReportAllocs()
	v := uint64(14480)
	for b.Loop() {
		s.Add(v)
		v = v*7%10000000 + 14480
	}
}
