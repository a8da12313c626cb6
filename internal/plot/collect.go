// Package plot is `siftr-probe plot`: time series of each flow's state
// (cwnd, ssthresh, bytes in flight, windows, srtt, rto) against seconds
// since the flow's first record, as a PNG or SVG image (gonum.org/v1/plot)
// or one self-contained HTML page (uPlot, embedded).
//
// # Decimation
//
// Points are collected in one pass, in memory bounded per flow: while a
// flow has at most MaxPoints records per direction they are all kept;
// beyond that its time axis is cut into equal buckets (a power of two of
// microseconds wide, doubled as the flow grows so that there are fewer
// than MaxPoints/2 of them) and each bucket keeps, per field and
// direction, the minimum and the maximum with the times of its first and
// last record, so peaks survive: at pixel resolution min/max per column
// draws the same picture. Decimation is reported per flow (Series.BucketUS)
// and said on stderr and in the page; MaxPoints 0 keeps every record.
package plot

import (
	"fmt"
	"math"
	"strings"

	"github.com/siftr-probe/siftr-probe/internal/logset"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
)

// Field is a plottable column.
type Field struct {
	Name  string // as given to --fields
	Label string
	Panel int  // 0 bytes, 1 milliseconds
	col   int  // siftrlog column, or -1 for staleness
	inf   bool // the value InfiniteSsthresh means absent
}

// Panels.
const (
	PanelBytes = 0
	PanelTime  = 1
)

// Fields are the fields --fields accepts, in drawing order.
var Fields = []Field{
	{"cwnd", "cwnd", PanelBytes, siftrlog.FCwnd, false},
	{"ssthresh", "ssthresh", PanelBytes, siftrlog.FSsthresh, true},
	{"inflight", "bytes in flight", PanelBytes, siftrlog.FInflight, false},
	{"snd_wnd", "snd_wnd", PanelBytes, siftrlog.FSndWnd, false},
	{"rcv_wnd", "rcv_wnd", PanelBytes, siftrlog.FRcvWnd, false},
	{"snd_buf_cc", "send buffer fill", PanelBytes, siftrlog.FSndBufCC, false},
	{"rcv_buf_cc", "receive buffer fill", PanelBytes, siftrlog.FRcvBufCC, false},
	{"srtt", "srtt", PanelTime, siftrlog.FSRTT, false},
	{"rto", "rto", PanelTime, siftrlog.FRTO, false},
	{"staleness", "staleness", PanelTime, -1, false},
}

// DefaultFields is what plot draws without --fields.
const DefaultFields = "cwnd,ssthresh,inflight,snd_wnd,rcv_wnd,srtt,rto"

// ParseFields parses a --fields list.
func ParseFields(list string) ([]Field, error) {
	var out []Field
	seen := map[string]bool{}
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" || seen[name] {
			continue
		}
		found := false
		for _, f := range Fields {
			if f.Name == name {
				out, found = append(out, f), true
				seen[name] = true
			}
		}
		if !found {
			var names []string
			for _, f := range Fields {
				names = append(names, f.Name)
			}
			return nil, fmt.Errorf("unknown field %q (known: %s)", name, strings.Join(names, ", "))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no field given")
	}
	return out, nil
}

// value returns a record's value of f in plot units (bytes, or ms), or NaN
// when absent.
func (f *Field) value(rec *siftrlog.Record) float32 {
	if f.col < 0 {
		if rec.Extra.Has&siftrlog.HasStaleness == 0 {
			return float32(math.NaN())
		}
		return float32(float64(rec.Extra.StalenessNS) / 1e6)
	}
	v := rec.Num[f.col]
	if f.inf && v == siftrlog.InfiniteSsthresh {
		return float32(math.NaN())
	}
	if f.Panel == PanelTime {
		return float32(float64(v) / 1e3) // µs to ms
	}
	return float32(v)
}

// Series is one flow's points, per direction (0 in, 1 out).
type Series struct {
	Flow     *logset.Flow
	T0US     int64 // time of the first record: x = (t - T0US) / 1e6 s
	Records  [2]uint64
	BucketUS int64 // bucket width when decimated; 0 = every record kept
	dir      [2]dirPoints
	nfields  int
	limit    int
}

// dirPoints holds one direction's raw points or its buckets.
type dirPoints struct {
	t    []int64   // raw: µs since T0US
	v    []float32 // raw: nfields values per point
	buck []bucket
}

type bucket struct {
	n           uint32
	first, last int64     // µs since T0US
	lo, hi      []float32 // per field; NaN when no value
}

// Point is one drawn point: x in seconds since the flow's first record,
// the values per field (NaN absent).
type Point struct {
	X float64
	V []float32
}

// Points returns the points of direction d in time order: each record, or
// per bucket two points (the minima at its first record's time, the maxima
// at its last's) or one when it holds one record.
func (s *Series) Points(d int) []Point {
	dp := &s.dir[d]
	var out []Point
	if s.BucketUS == 0 {
		for i, t := range dp.t {
			out = append(out, Point{float64(t) / 1e6, dp.v[i*s.nfields : (i+1)*s.nfields]})
		}
		return out
	}
	for i := range dp.buck {
		b := &dp.buck[i]
		if b.n == 0 {
			continue
		}
		out = append(out, Point{float64(b.first) / 1e6, b.lo})
		if b.n > 1 {
			out = append(out, Point{float64(b.last) / 1e6, b.hi})
		}
	}
	return out
}

// NumPoints returns how many points Points returns for both directions.
func (s *Series) NumPoints() int { return len(s.Points(0)) + len(s.Points(1)) }

func (s *Series) add(rec *siftrlog.Record, fields []Field, vals []float32) {
	d := 0
	if rec.Dir == 'o' {
		d = 1
	}
	s.Records[d]++
	t := max(rec.TimeUS-s.T0US, 0)
	for i := range fields {
		vals[i] = fields[i].value(rec)
	}
	dp := &s.dir[d]
	if s.BucketUS == 0 {
		dp.t = append(dp.t, t)
		dp.v = append(dp.v, vals...)
		if s.limit > 0 && len(dp.t) > s.limit {
			s.toBuckets()
		}
		return
	}
	s.bucketAdd(d, t, vals)
}

// toBuckets switches the series from raw points to buckets.
func (s *Series) toBuckets() {
	var span int64
	for d := range s.dir {
		if n := len(s.dir[d].t); n > 0 {
			span = max(span, s.dir[d].t[n-1])
		}
	}
	w := int64(1)
	for span/w >= int64(s.limit/2) {
		w *= 2
	}
	s.BucketUS = w
	for d := range s.dir {
		dp := &s.dir[d]
		t, v := dp.t, dp.v
		dp.t, dp.v = nil, nil
		for i := range t {
			s.bucketAdd(d, t[i], v[i*s.nfields:(i+1)*s.nfields])
		}
	}
}

func (s *Series) bucketAdd(d int, t int64, vals []float32) {
	i := int(t / s.BucketUS)
	for i >= s.limit/2 {
		s.widen()
		i = int(t / s.BucketUS)
	}
	dp := &s.dir[d]
	for len(dp.buck) <= i {
		dp.buck = append(dp.buck, bucket{})
	}
	b := &dp.buck[i]
	if b.n == 0 {
		b.first, b.last = t, t
		b.lo = make([]float32, s.nfields)
		b.hi = make([]float32, s.nfields)
		copy(b.lo, vals)
		copy(b.hi, vals)
	} else {
		b.first, b.last = min(b.first, t), max(b.last, t)
		for k, v := range vals {
			b.lo[k], b.hi[k] = minNaN(b.lo[k], v), maxNaN(b.hi[k], v)
		}
	}
	b.n++
}

// widen doubles the bucket width, merging neighbours.
func (s *Series) widen() {
	s.BucketUS *= 2
	for d := range s.dir {
		dp := &s.dir[d]
		merged := dp.buck[:0:0]
		for i := 0; i < len(dp.buck); i += 2 {
			a := dp.buck[i]
			if i+1 < len(dp.buck) {
				b := dp.buck[i+1]
				switch {
				case a.n == 0:
					a = b
				case b.n > 0:
					a.first, a.last = min(a.first, b.first), max(a.last, b.last)
					for k := range a.lo {
						a.lo[k], a.hi[k] = minNaN(a.lo[k], b.lo[k]), maxNaN(a.hi[k], b.hi[k])
					}
					a.n += b.n
				}
			}
			merged = append(merged, a)
		}
		dp.buck = merged
	}
}

func minNaN(a, b float32) float32 {
	if a != a || b < a {
		return b
	}
	return a
}

func maxNaN(a, b float32) float32 {
	if a != a || b > a {
		return b
	}
	return a
}

// collector is the logset.Handler that builds the series.
type collector struct {
	fields []Field
	limit  int
	series []*Series // by Flow.Index
	vals   []float32
}

func (c *collector) SectionStart(*logset.Section) {}
func (c *collector) SectionEnd(*logset.Section)   {}

func (c *collector) Record(_ *logset.Section, f *logset.Flow, rec *siftrlog.Record) {
	for len(c.series) <= f.Index {
		c.series = append(c.series, nil)
	}
	s := c.series[f.Index]
	if s == nil {
		s = &Series{Flow: f, T0US: rec.TimeUS, nfields: len(c.fields), limit: c.limit}
		c.series[f.Index] = s
	}
	s.add(rec, c.fields, c.vals)
}
