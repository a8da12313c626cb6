// Package hist is a small fixed-size log-linear histogram of int64 values
// (nanoseconds, in this project), in the spirit of HDR histograms.
//
// Values 0..15 have one bucket each; above that, each power of two is split
// into 16 equal sub-buckets, so a bucket's width is at most 1/16 of its lower
// bound and a reported quantile (the bucket's midpoint) is within about 3% of
// the true value. The range is 0 to 2^40-1 (about 18 minutes in nanoseconds);
// larger values fall into the last bucket, negative values count as 0.
//
// # Concurrency
//
// A Histogram is updated with atomics: Record may be called by one goroutine
// (or several) while others call Snapshot, Count or Quantile. A Snapshot is a
// plain value owned by its caller.
package hist

import (
	"math"
	"math/bits"
	"sync/atomic"
)

const (
	subBits    = 4
	subCount   = 1 << subBits // sub-buckets per power of two
	maxExp     = 40           // values >= 1<<maxExp go to the last bucket
	numBuckets = subCount + (maxExp-subBits)*subCount
)

// Buckets is the number of buckets in every histogram.
const Buckets = numBuckets

// bucketOf returns the bucket index of v (v >= 0).
func bucketOf(v int64) int {
	if v < subCount {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	e := bits.Len64(uint64(v)) - 1 // v in [2^e, 2^(e+1)), e >= subBits
	if e >= maxExp {
		return numBuckets - 1
	}
	sub := int(uint64(v)>>(e-subBits)) & (subCount - 1)
	return subCount + (e-subBits)*subCount + sub
}

// BucketBounds returns the smallest and largest value that land in bucket i.
func BucketBounds(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	e := (i-subCount)/subCount + subBits
	sub := int64((i - subCount) % subCount)
	width := int64(1) << (e - subBits)
	lo = int64(1)<<e + sub*width
	hi = lo + width - 1
	if i == numBuckets-1 {
		hi = math.MaxInt64
	}
	return lo, hi
}

// Histogram counts int64 values. The zero value is empty and ready to use.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	count  atomic.Uint64
	sum    atomic.Int64 // saturating is not needed: 2^63 ns is 292 years
	max    atomic.Int64
}

// Record adds one value. It does not allocate.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
	h.count.Add(1) // last: a reader that sees the count sees the bucket
}

// Count returns how many values were recorded.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Quantile returns an estimate of the q-quantile (0 <= q <= 1); 0 if empty.
func (h *Histogram) Quantile(q float64) float64 {
	s := h.Snapshot()
	return s.Quantile(q)
}

// Snapshot returns a copy of the current counts. Concurrent Records may be
// partly included; each bucket is read atomically.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	for i := range h.counts {
		c := h.counts[i].Load()
		s.Counts[i] = c
		s.Total += c
	}
	s.Sum = h.sum.Load()
	s.Max = h.max.Load()
	return s
}

// Merge adds the counts of s to h.
func (h *Histogram) Merge(s *Snapshot) {
	for i, c := range s.Counts {
		if c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.sum.Add(s.Sum)
	for {
		m := h.max.Load()
		if s.Max <= m || h.max.CompareAndSwap(m, s.Max) {
			break
		}
	}
	h.count.Add(s.Total)
}

// Snapshot is a point-in-time copy of a Histogram. It is a plain value.
type Snapshot struct {
	Counts [numBuckets]uint64
	Total  uint64 // sum of Counts
	Sum    int64  // sum of recorded values (negatives counted as 0)
	Max    int64  // largest recorded value
}

// Count returns how many values the snapshot holds.
func (s *Snapshot) Count() uint64 { return s.Total }

// Mean returns the mean of the recorded values; 0 if empty.
func (s *Snapshot) Mean() float64 {
	if s.Total == 0 {
		return 0
	}
	return float64(s.Sum) / float64(s.Total)
}

// Merge adds the counts of o to s.
func (s *Snapshot) Merge(o *Snapshot) {
	for i, c := range o.Counts {
		s.Counts[i] += c
	}
	s.Total += o.Total
	s.Sum += o.Sum
	s.Max = max(s.Max, o.Max)
}

// Sub removes from s the counts of o, an earlier snapshot of the same
// histogram, leaving what was recorded between the two. Counts that would go
// below zero (o is not earlier) stay at zero. Max cannot be taken apart: it
// stays s's, an upper bound of the values in between.
func (s *Snapshot) Sub(o *Snapshot) {
	s.Total = 0
	for i, c := range o.Counts {
		if c > s.Counts[i] {
			c = s.Counts[i]
		}
		s.Counts[i] -= c
		s.Total += s.Counts[i]
	}
	s.Sum = max(s.Sum-o.Sum, 0)
}

// Quantile returns an estimate of the q-quantile (q is clamped to [0, 1]):
// the midpoint of the bucket holding the value of rank ceil(q*Count), never
// more than Max. It returns 0 for an empty snapshot.
func (s *Snapshot) Quantile(q float64) float64 {
	if s.Total == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(s.Total)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range s.Counts {
		seen += c
		if seen >= rank {
			lo, hi := BucketBounds(i)
			if i == numBuckets-1 || hi > s.Max {
				hi = max(s.Max, lo)
			}
			return float64(lo) + float64(hi-lo)/2
		}
	}
	return float64(s.Max)
}
