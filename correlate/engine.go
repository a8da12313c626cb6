package correlate

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/siftr-probe/siftr-probe/capture"
	"github.com/siftr-probe/siftr-probe/diag"
	"github.com/siftr-probe/siftr-probe/output"
)

// Lookuper reads the state of sockets; *diag.Client implements it.
// Each worker has its own, so it need not be safe for concurrent use.
type Lookuper interface {
	Lookup(qs []diag.Query, out []diag.Snapshot) error
}

// Sink takes records; *output.Writer implements it. Submit must not block:
// it returns false when it could not take the records.
type Sink interface {
	Submit(worker int, recs []output.Record, watermark int64) bool
	Advance(worker int, watermark int64)
}

// Config tunes an Engine. The zero value is valid.
type Config struct {
	// PPL logs every PPL-th packet of each flow (SIFTR's ppl); 0 means 1.
	PPL uint32
	// MaxFlows bounds the flow table; packets of new flows beyond it are
	// skipped as malloc. 0 means 1<<18.
	MaxFlows int
	// IdleTimeout prunes flows with no packet for this long; 0 means 60s.
	IdleTimeout time.Duration
	// MaxFlowList bounds the flows remembered for the disable line's flow
	// list after they left the table; 0 means 1<<20.
	MaxFlowList int
	// PruneInterval is how often Run prunes the flow table; 0 means 1s.
	PruneInterval time.Duration
}

// Stats are the engine's own counters beyond the SIFTR counts.
type Stats struct {
	ActiveFlows      int64  // flows in the table now
	FlowsCreated     uint64 // flows ever created
	FlowsPruned      uint64 // flows removed (socket gone, idle, or 4-tuple reused)
	FlowTableFull    uint64 // packets of new flows refused because the table was full
	FlowListDropped  uint64 // established flows left out of the flow list (MaxFlowList)
	Lookups          uint64 // sockets looked up
	Batches          uint64 // Lookup calls (one per ring block with sampled packets)
	LookupErrors     uint64 // Lookup calls that failed; their packets count as malloc skips
	SinkRejected     uint64 // records the sink refused (queue full); counted as malloc skips
	CookieReuses     uint64 // a 4-tuple seen with a new socket cookie
	LastLookupErrMsg string // the most recent lookup error, if any
}

// Engine correlates packets with socket state. See the package doc.
type Engine struct {
	cfg     Config
	ppl     uint64
	sink    Sink
	flows   *flowTable
	workers []worker

	lookups, batches, lookupErrs, rejected, reuses atomic.Uint64
	lastErr                                        atomic.Pointer[string]
}

// worker is one capture worker's private state and counters.
type worker struct {
	diag Lookuper
	// counts is published with atomic adds once per block.
	counts [5][2]atomic.Uint64
	// scratch, reused for every block
	local   [5][2]uint64
	slot    map[*flow]int32
	qflows  []*flow
	queries []diag.Query
	snaps   []diag.Snapshot
	pending []pending
	recs    []output.Record
	// last is the flow of the previous packet: consecutive packets of one
	// flow skip the table's locks.
	last *flow
	_    [64]byte
}

type pending struct {
	pkt   int32 // index into the block's packets
	query int32 // index into queries
}

// counter indices
const (
	cPackets = iota
	cSampledOut
	cMalloc
	cTCPCB
	cInPCB
)

// New returns an Engine with one worker per Lookuper.
func New(cfg *Config, sink Sink, lookupers []Lookuper) (*Engine, error) {
	if sink == nil {
		return nil, errors.New("correlate: nil sink")
	}
	if len(lookupers) == 0 {
		return nil, errors.New("correlate: no lookupers")
	}
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	if c.PPL == 0 {
		c.PPL = 1
	}
	if c.MaxFlows <= 0 {
		c.MaxFlows = 1 << 18
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.MaxFlowList <= 0 {
		c.MaxFlowList = 1 << 20
	}
	if c.PruneInterval <= 0 {
		c.PruneInterval = time.Second
	}
	e := &Engine{
		cfg:     c,
		ppl:     uint64(c.PPL),
		sink:    sink,
		flows:   newFlowTable(c.MaxFlows, c.MaxFlowList),
		workers: make([]worker, len(lookupers)),
	}
	for i, l := range lookupers {
		if l == nil {
			return nil, fmt.Errorf("correlate: nil lookuper for worker %d", i)
		}
		e.workers[i].diag = l
		e.workers[i].slot = make(map[*flow]int32)
	}
	return e, nil
}

// Block implements capture.Handler: it correlates one ring block.
func (e *Engine) Block(wi int, pkts []capture.Packet) {
	w := &e.workers[wi]
	w.local = [5][2]uint64{}
	w.pending = w.pending[:0]
	w.queries = w.queries[:0]
	w.qflows = w.qflows[:0]
	clear(w.slot)

	var maxTime int64
	for i := range pkts {
		p := &pkts[i]
		d := p.Dir & 1
		maxTime = max(maxTime, p.Time)
		w.local[cPackets][d]++
		k := flowKey{p.Local(), p.Remote()}
		f := w.last
		if f == nil || f.key != k || f.removed.Load() {
			f = e.flows.get(k)
			w.last = f
		}
		if f == nil {
			w.local[cMalloc][d]++
			continue
		}
		if p.Time-f.lastSeen.Load() > int64(time.Millisecond) {
			f.lastSeen.Store(p.Time)
		}
		if n := f.count.Add(1); e.ppl > 1 && n%e.ppl != 0 {
			w.local[cSampledOut][d]++
			continue
		}
		q, ok := w.slot[f]
		if !ok {
			q = int32(len(w.queries))
			w.slot[f] = q
			w.queries = append(w.queries, diag.Query{Local: f.key.local, Remote: f.key.remote})
			w.qflows = append(w.qflows, f)
		}
		w.pending = append(w.pending, pending{pkt: int32(i), query: q})
	}

	w.recs = w.recs[:0]
	if len(w.queries) > 0 {
		e.lookup(w, pkts)
	}
	if len(w.recs) > 0 {
		if !e.sink.Submit(wi, w.recs, maxTime) {
			e.rejected.Add(uint64(len(w.recs)))
			for i := range w.recs {
				w.local[cMalloc][w.recs[i].Pkt.Dir&1]++
			}
		}
	} else if len(pkts) > 0 {
		e.sink.Advance(wi, maxTime)
	}
	for c := range w.local {
		for d := range w.local[c] {
			if v := w.local[c][d]; v != 0 {
				w.counts[c][d].Add(v)
			}
		}
	}
}

// lookup queries the sockets of w.queries and turns w.pending into records
// or skips.
func (e *Engine) lookup(w *worker, pkts []capture.Packet) {
	if cap(w.snaps) < len(w.queries) {
		w.snaps = make([]diag.Snapshot, len(w.queries), 2*len(w.queries))
	}
	snaps := w.snaps[:len(w.queries)]
	e.batches.Add(1)
	e.lookups.Add(uint64(len(w.queries)))
	if err := w.diag.Lookup(w.queries, snaps); err != nil {
		e.lookupErrs.Add(1)
		msg := err.Error()
		e.lastErr.Store(&msg)
		for _, pd := range w.pending {
			w.local[cMalloc][pkts[pd.pkt].Dir&1]++
		}
		return
	}
	for qi := range snaps {
		e.observe(w, qi, &snaps[qi])
	}
	for _, pd := range w.pending {
		p := &pkts[pd.pkt]
		s := &snaps[pd.query]
		d := p.Dir & 1
		switch {
		case s.Status == diag.NoSocket:
			w.local[cInPCB][d]++
		case s.Status != diag.Found || !loggable(s.State):
			w.local[cTCPCB][d]++
		default:
			w.recs = append(w.recs, output.Record{Pkt: *p, Snap: *s})
		}
	}
}

// observe updates a flow from its socket's snapshot: cookie, reuse of the
// 4-tuple by a new socket, established and gone.
func (e *Engine) observe(w *worker, qi int, s *diag.Snapshot) {
	f := w.qflows[qi]
	if s.Status == diag.NoSocket {
		if f.established.Load() {
			f.gone.Store(true)
		}
		return
	}
	if old := f.cookie.Load(); old == 0 {
		f.cookie.CompareAndSwap(0, s.Cookie)
	} else if old != s.Cookie {
		e.reuses.Add(1)
		f = e.flows.replace(f, s.Cookie)
		w.qflows[qi] = f
		w.last = nil
	}
	if s.Status == diag.Found && loggable(s.State) {
		f.established.Store(true)
	} else if f.established.Load() {
		// e.g. TIME_WAIT: the established socket is gone.
		f.gone.Store(true)
	}
}

// loggable reports whether a socket in Linux state st is ESTABLISHED or
// later, as SIFTR requires (t_state >= TCPS_ESTABLISHED).
func loggable(st uint8) bool {
	switch st {
	case diag.StateEstablished, diag.StateFinWait1, diag.StateFinWait2,
		diag.StateCloseWait, diag.StateLastAck, diag.StateClosing:
		return true
	}
	return false
}

// Idle implements capture.Handler: an idle worker lets the sink's ordering move on.
func (e *Engine) Idle(wi int, safe int64) { e.sink.Advance(wi, safe) }

// Run prunes the flow table until ctx is done. It returns nil.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			e.Prune(now)
		}
	}
}

// Prune removes flows whose socket is gone or that had no packet for the
// idle timeout before now.
func (e *Engine) Prune(now time.Time) {
	e.flows.prune(now.Add(-e.cfg.IdleTimeout).UnixNano())
}

// Counts returns the SIFTR totals so far, summed over workers.
func (e *Engine) Counts() output.Counts {
	var c output.Counts
	for i := range e.workers {
		w := &e.workers[i]
		for d := 0; d < 2; d++ {
			c.Packets[d] += w.counts[cPackets][d].Load()
			c.SampledOut[d] += w.counts[cSampledOut][d].Load()
			c.SkipMalloc[d] += w.counts[cMalloc][d].Load()
			c.SkipTCPCB[d] += w.counts[cTCPCB][d].Load()
			c.SkipInPCB[d] += w.counts[cInPCB][d].Load()
		}
	}
	return c
}

// Flows lists every flow that had an established socket, in the order the
// flows were first seen, for the disable line.
func (e *Engine) Flows() []output.Flow { return e.flows.names() }

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	s := Stats{
		ActiveFlows:     e.flows.active.Load(),
		FlowsCreated:    e.flows.created.Load(),
		FlowsPruned:     e.flows.pruned.Load(),
		FlowTableFull:   e.flows.full.Load(),
		FlowListDropped: e.flows.retiredDropped.Load(),
		Lookups:         e.lookups.Load(),
		Batches:         e.batches.Load(),
		LookupErrors:    e.lookupErrs.Load(),
		SinkRejected:    e.rejected.Load(),
		CookieReuses:    e.reuses.Load(),
	}
	if p := e.lastErr.Load(); p != nil {
		s.LastLookupErrMsg = *p
	}
	return s
}
