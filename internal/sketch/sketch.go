// Package sketch estimates quantiles of a stream of unsigned integers in
// memory bounded by the range of the values, not their number.
//
// A Sketch is a log-linear histogram like internal/hist's, with 32
// sub-buckets per power of two (hist has 16): a bucket is at most 1/32 of
// its lower bound wide and a quantile, the midpoint of its bucket, is
// within 1/64 (1.6%) of a value of that rank. Values below 64 are exact.
// Unlike hist.Histogram (fixed 4.7 KB, atomic, for concurrent recording),
// a Sketch is plain memory for one goroutine and holds only the buckets
// between the smallest and largest value seen: a flow's cwnd spanning
// 14 KB to 10 MB takes about 300 buckets (1.2 KB). Min and max are exact.
package sketch

import (
	"math"
	"math/bits"
)

const (
	subBits  = 5
	subCount = 1 << subBits
)

// bucketOf returns the bucket index of v.
func bucketOf(v uint64) int {
	if v < 2*subCount {
		return int(v)
	}
	e := bits.Len64(v) - 1 // v in [2^e, 2^(e+1)), e > subBits
	sub := int(v>>(e-subBits)) & (subCount - 1)
	return 2*subCount + (e-subBits-1)*subCount + sub
}

// bounds returns the smallest and largest value of bucket i.
func bounds(i int) (lo, hi uint64) {
	if i < 2*subCount {
		return uint64(i), uint64(i)
	}
	e := (i-2*subCount)/subCount + subBits + 1
	sub := uint64((i - 2*subCount) % subCount)
	width := uint64(1) << (e - subBits)
	lo = uint64(1)<<e + sub*width
	return lo, lo + width - 1
}

// Sketch counts values. The zero value is empty and ready to use.
type Sketch struct {
	base   int      // bucket index of counts[0]
	counts []uint32 // saturate at 2^32-1 per bucket
	n      uint64
	min    uint64
	max    uint64
	sum    float64
}

// Add records v. It allocates only when v falls outside the buckets held.
func (s *Sketch) Add(v uint64) {
	i := bucketOf(v)
	if s.n == 0 {
		s.min, s.max = v, v
		s.base = i
		if s.counts == nil {
			s.counts = make([]uint32, 1, 16)
		} else {
			s.counts = s.counts[:1]
			s.counts[0] = 0
		}
	} else {
		s.min, s.max = min(s.min, v), max(s.max, v)
	}
	j := i - s.base
	if j < 0 || j >= len(s.counts) {
		s.grow(i)
		j = i - s.base
	}
	if s.counts[j] != math.MaxUint32 {
		s.counts[j]++
	}
	s.n++
	s.sum += float64(v)
}

// grow extends the held buckets to include bucket i.
func (s *Sketch) grow(i int) {
	if i < s.base {
		add := s.base - i
		c := make([]uint32, len(s.counts)+add, (len(s.counts)+add)*5/4+8)
		copy(c[add:], s.counts)
		s.counts, s.base = c, i
		return
	}
	need := i - s.base + 1
	if need <= cap(s.counts) {
		s.counts = s.counts[:need]
		return
	}
	c := make([]uint32, need, need*5/4+8)
	copy(c, s.counts)
	s.counts = c
}

// Merge adds the values of o to s.
func (s *Sketch) Merge(o *Sketch) {
	if o.n == 0 {
		return
	}
	if s.n == 0 {
		s.base = o.base
		s.counts = append(s.counts[:0], o.counts...)
		s.n, s.min, s.max, s.sum = o.n, o.min, o.max, o.sum
		return
	}
	s.grow(o.base)
	s.grow(o.base + len(o.counts) - 1)
	for j, c := range o.counts {
		k := o.base + j - s.base
		s.counts[k] = uint32(min(uint64(s.counts[k])+uint64(c), math.MaxUint32))
	}
	s.n += o.n
	s.min, s.max = min(s.min, o.min), max(s.max, o.max)
	s.sum += o.sum
}

// Count returns how many values were added.
func (s *Sketch) Count() uint64 { return s.n }

// Min returns the smallest value (0 if empty).
func (s *Sketch) Min() uint64 { return s.min }

// Max returns the largest value (0 if empty).
func (s *Sketch) Max() uint64 { return s.max }

// Mean returns the mean (0 if empty).
func (s *Sketch) Mean() float64 {
	if s.n == 0 {
		return 0
	}
	return s.sum / float64(s.n)
}

// Quantile returns an estimate of the q-quantile (q clamped to [0, 1]):
// the midpoint of the bucket holding the value of rank ceil(q*Count),
// clamped to [Min, Max], so Quantile(0) is Min and Quantile(1) is Max.
// It returns 0 for an empty sketch.
func (s *Sketch) Quantile(q float64) float64 {
	if s.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	if q == 0 {
		return float64(s.min)
	}
	if q == 1 {
		return float64(s.max)
	}
	rank := uint64(math.Ceil(q * float64(s.n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for j, c := range s.counts {
		seen += uint64(c)
		if seen >= rank {
			lo, hi := bounds(s.base + j)
			lo, hi = max(lo, s.min), min(hi, s.max)
			return float64(lo) + float64(hi-lo)/2
		}
	}
	return float64(s.max) // only when counts saturated
}

// Buckets returns how many buckets the sketch holds (its memory is 4 bytes each).
func (s *Sketch) Buckets() int { return len(s.counts) }
