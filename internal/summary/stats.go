// Package summary is `siftr-probe summary`: per-flow statistics of SIFTR
// logs and the checks of each run's disable line, read in one streaming
// pass (logset) in memory that grows with the number of flows, not lines.
//
// # What is computed
//
// Per flow and section: records per direction, mss, SACK and window
// scales; min, median, p99 and max of cwnd, ssthresh, srtt, rto and bytes
// in flight over the flow's records (quantiles from a sketch.Sketch,
// within 1.6%); the time spent in slow start, congestion avoidance and
// recovery; from JSON lines also retransmissions, staleness and the state
// source. Per section: the disable line's totals and the conservation
// identity (see Identity).
//
// # Time in a state
//
// Each record's state holds until the flow's next record: the time between
// two consecutive records of a flow is attributed to the state of the
// first one, and the last record of a flow in a section adds no time (nor
// does the time between two sections, when nothing was logged). The state
// of a record is recovery when t_flags has TF_FASTRECOVERY or
// TF_CONGRECOVERY (FreeBSD sets them; siftr-probe sets them from Linux's
// ca_state Recovery and CWR); else slow start while ssthresh is still
// infinite (1073725440: no loss yet); else congestion avoidance. So the
// slow start after a retransmission timeout, below a finite ssthresh,
// counts as congestion avoidance, and for a congestion control that does
// not use ssthresh (BBR) the split only tells before and after the first
// loss.
//
// An infinite ssthresh is left out of the ssthresh quantiles and counted
// apart.
package summary

import (
	"github.com/siftr-probe/siftr-probe/internal/logset"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/internal/sketch"
)

// States of a record, the index of FlowStats.TimeUS.
const (
	SlowStart = iota
	CongAvoid
	Recovery
	numStates
)

// t_flags bits that mean recovery (FreeBSD tcp_var.h).
const (
	tfFastRecovery = 0x00100000
	tfCongRecovery = 0x20000000
)

// FlowStats are one flow's statistics over one section (or, merged, over
// several).
type FlowStats struct {
	Flow            *logset.Flow
	FirstUS, LastUS int64
	Records         [2]uint64 // inbound, outbound
	MSSMin, MSSMax  uint64
	SACK            [2]uint64 // records with sack_enabled 0 and 1
	SndScale        [2]uint64 // min, max
	RcvScale        [2]uint64
	Cwnd, SRTT, RTO sketch.Sketch
	Inflight        sketch.Sketch
	Ssthresh        sketch.Sketch // finite values only
	SsthreshInf     uint64        // records with an infinite ssthresh
	TimeUS          [numStates]int64
	// JSON lines only: HasRetrans/HasStaleness say whether any record had them.
	HasRetrans         bool
	RetransFirst       uint64 // total_retrans of the first and the last record
	RetransLast        uint64
	HasStaleness       bool
	Staleness          sketch.Sketch // ns, negative values as 0
	StalenessMin       int64         // exact, may be negative
	StateSourceRecords map[string]uint64

	prevUS    int64
	prevState int
}

func newFlowStats(f *logset.Flow) *FlowStats {
	return &FlowStats{Flow: f, prevState: -1}
}

func stateOf(rec *siftrlog.Record) int {
	switch {
	case rec.Num[siftrlog.FFlags]&(tfFastRecovery|tfCongRecovery) != 0:
		return Recovery
	case rec.Num[siftrlog.FSsthresh] == siftrlog.InfiniteSsthresh:
		return SlowStart
	}
	return CongAvoid
}

// add records one record of the flow.
func (fs *FlowStats) add(rec *siftrlog.Record) {
	t := rec.TimeUS
	n := &rec.Num
	if fs.Records[0]+fs.Records[1] == 0 {
		fs.FirstUS, fs.LastUS = t, t
		fs.MSSMin, fs.MSSMax = n[siftrlog.FMSS], n[siftrlog.FMSS]
		fs.SndScale = [2]uint64{n[siftrlog.FSndScale], n[siftrlog.FSndScale]}
		fs.RcvScale = [2]uint64{n[siftrlog.FRcvScale], n[siftrlog.FRcvScale]}
	} else {
		fs.FirstUS, fs.LastUS = min(fs.FirstUS, t), max(fs.LastUS, t)
		fs.MSSMin, fs.MSSMax = min(fs.MSSMin, n[siftrlog.FMSS]), max(fs.MSSMax, n[siftrlog.FMSS])
		fs.SndScale = [2]uint64{min(fs.SndScale[0], n[siftrlog.FSndScale]), max(fs.SndScale[1], n[siftrlog.FSndScale])}
		fs.RcvScale = [2]uint64{min(fs.RcvScale[0], n[siftrlog.FRcvScale]), max(fs.RcvScale[1], n[siftrlog.FRcvScale])}
	}
	if rec.Dir == 'o' {
		fs.Records[1]++
	} else {
		fs.Records[0]++
	}
	fs.SACK[min(n[siftrlog.FSACK], 1)]++
	fs.Cwnd.Add(n[siftrlog.FCwnd])
	fs.SRTT.Add(n[siftrlog.FSRTT])
	fs.RTO.Add(n[siftrlog.FRTO])
	fs.Inflight.Add(n[siftrlog.FInflight])
	if n[siftrlog.FSsthresh] == siftrlog.InfiniteSsthresh {
		fs.SsthreshInf++
	} else {
		fs.Ssthresh.Add(n[siftrlog.FSsthresh])
	}
	if fs.prevState >= 0 && t > fs.prevUS {
		fs.TimeUS[fs.prevState] += t - fs.prevUS
	}
	fs.prevUS, fs.prevState = t, stateOf(rec)

	if x := &rec.Extra; x.Has != 0 {
		if x.Has&siftrlog.HasRetrans != 0 {
			if !fs.HasRetrans {
				fs.HasRetrans, fs.RetransFirst = true, x.TotalRetrans
			}
			fs.RetransLast = x.TotalRetrans
		}
		if x.Has&siftrlog.HasStaleness != 0 {
			if !fs.HasStaleness || x.StalenessNS < fs.StalenessMin {
				fs.StalenessMin = x.StalenessNS
			}
			fs.HasStaleness = true
			fs.Staleness.Add(uint64(max(x.StalenessNS, 0)))
		}
		if x.Has&siftrlog.HasStateSource != 0 {
			if fs.StateSourceRecords == nil {
				fs.StateSourceRecords = map[string]uint64{}
			}
			fs.StateSourceRecords[x.StateSource]++
		}
	}
}

// merge adds o, the same flow's statistics of a later section.
func (fs *FlowStats) merge(o *FlowStats) {
	if o.Records[0]+o.Records[1] == 0 {
		return
	}
	if fs.Records[0]+fs.Records[1] == 0 {
		fs.FirstUS, fs.LastUS, fs.MSSMin, fs.MSSMax = o.FirstUS, o.LastUS, o.MSSMin, o.MSSMax
		fs.SndScale, fs.RcvScale = o.SndScale, o.RcvScale
	} else {
		fs.FirstUS, fs.LastUS = min(fs.FirstUS, o.FirstUS), max(fs.LastUS, o.LastUS)
		fs.MSSMin, fs.MSSMax = min(fs.MSSMin, o.MSSMin), max(fs.MSSMax, o.MSSMax)
		fs.SndScale = [2]uint64{min(fs.SndScale[0], o.SndScale[0]), max(fs.SndScale[1], o.SndScale[1])}
		fs.RcvScale = [2]uint64{min(fs.RcvScale[0], o.RcvScale[0]), max(fs.RcvScale[1], o.RcvScale[1])}
	}
	for i := range 2 {
		fs.Records[i] += o.Records[i]
		fs.SACK[i] += o.SACK[i]
	}
	fs.Cwnd.Merge(&o.Cwnd)
	fs.SRTT.Merge(&o.SRTT)
	fs.RTO.Merge(&o.RTO)
	fs.Inflight.Merge(&o.Inflight)
	fs.Ssthresh.Merge(&o.Ssthresh)
	fs.SsthreshInf += o.SsthreshInf
	for i := range fs.TimeUS {
		fs.TimeUS[i] += o.TimeUS[i]
	}
	if o.HasRetrans {
		if !fs.HasRetrans {
			fs.RetransFirst = o.RetransFirst
		}
		fs.HasRetrans, fs.RetransLast = true, o.RetransLast
	}
	if o.HasStaleness {
		if !fs.HasStaleness || o.StalenessMin < fs.StalenessMin {
			fs.StalenessMin = o.StalenessMin
		}
		fs.HasStaleness = true
		fs.Staleness.Merge(&o.Staleness)
	}
	for k, v := range o.StateSourceRecords {
		if fs.StateSourceRecords == nil {
			fs.StateSourceRecords = map[string]uint64{}
		}
		fs.StateSourceRecords[k] += v
	}
}

// aggregator is the logset.Handler that fills the statistics.
type aggregator struct {
	sections []*sectionStats
	cur      *sectionStats
}

type sectionStats struct {
	sec   *logset.Section
	flows []*FlowStats // by Flow.Index; nil for flows without records here
}

func (a *aggregator) SectionStart(s *logset.Section) {
	a.cur = &sectionStats{sec: s}
	a.sections = append(a.sections, a.cur)
}

func (a *aggregator) Record(s *logset.Section, f *logset.Flow, rec *siftrlog.Record) {
	ss := a.cur
	for len(ss.flows) <= f.Index {
		ss.flows = append(ss.flows, nil)
	}
	fs := ss.flows[f.Index]
	if fs == nil {
		fs = newFlowStats(f)
		ss.flows[f.Index] = fs
	}
	fs.add(rec)
}

func (a *aggregator) SectionEnd(*logset.Section) { a.cur = nil }
