package correlate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// Lookuper reads the state of sockets; *diag.Client implements it.
// Each worker has its own, so it need not be safe for concurrent use.
type Lookuper interface {
	Lookup(qs []tcp.Query, out []tcp.Snapshot) error
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
	// ClosedTimeout prunes flows that are over on the wire (FINs both ways,
	// or a RST) once they had no packet for this long; 0 means 2s. It keeps
	// the table small under connection churn when sampling leaves the last
	// packets of a connection unlooked-up.
	ClosedTimeout time.Duration
	// IfIndex is the captured interface's index, sent with every lookup so
	// that sockets bound to it (link-local IPv6) are found; 0 means none.
	IfIndex uint32
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
	HandoffFull      uint64 // sampled packets skipped (malloc) because too many waited for lookups
	LastLookupErrMsg string // the most recent lookup error, if any
}

// Engine correlates packets with socket state. See the package doc.
type Engine struct {
	cfg     Config
	ppl     uint64
	sink    Sink
	flows   *flowTable
	workers []worker
	wg      sync.WaitGroup // lookup goroutines
	closed  atomic.Bool

	lookups, batches, lookupErrs, rejected, reuses, handoffFull atomic.Uint64
	lastErr                                                     atomic.Pointer[string]
}

// A worker is split in two. Its capture side (Block, Idle) runs on the
// capture worker's goroutine: it counts, samples and hands the sampled
// packets over. Its lookup side runs on a goroutine of its own: reading a
// socket's tcp_info takes the socket's lock, which the application holds
// while it sends, so a lookup can sleep for milliseconds; the ring must be
// drained meanwhile. Sampled packets that arrive while a lookup sleeps are
// grouped by socket with the next ones: one lookup serves all of them.
type worker struct {
	id   int
	diag Lookuper
	// counts is published with atomic adds by both sides.
	counts [5][2]atomic.Uint64

	// capture side
	local   [5][2]uint64
	sampled []sampledPkt
	last    *flow // the previous packet's flow: consecutive packets skip the table's locks

	// handoff between the two sides
	mu      sync.Mutex
	cond    sync.Cond     // signalled when the lookup side finished a batch
	pending []sampledPkt  // guarded by mu
	mark    int64         // guarded by mu: watermark after pending
	handed  uint64        // guarded by mu: Block and Idle calls so far
	done    uint64        // guarded by mu: calls whose packets and mark the lookup side finished
	closing bool          // guarded by mu
	wake    chan struct{} // a token: there is something to look at
	stop    chan struct{} // closed by Close

	// lookup side
	batch   []sampledPkt
	slot    map[*flow]int32
	qflows  []*flow
	queries []tcp.Query
	qidx    []int32
	recs    []Record
	lcount  [5][2]uint64
	_       [64]byte
}

// sampledPkt is a sampled packet and its flow, waiting for its lookup.
type sampledPkt struct {
	pkt  tcp.Packet
	flow *flow
}

// maxPending bounds the sampled packets waiting for lookups, per worker.
// Beyond it sampled packets are skipped as malloc.
const maxPending = 1 << 16

// counter indices
const (
	cPackets = iota
	cSampledOut
	cMalloc
	cTCPCB
	cInPCB
)

// New returns an Engine with one worker per Lookuper and starts the
// workers' lookup goroutines; Close stops them.
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
	if c.ClosedTimeout <= 0 {
		c.ClosedTimeout = 2 * time.Second
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
	}
	for i, l := range lookupers {
		w := &e.workers[i]
		w.id, w.diag = i, l
		w.cond.L = &w.mu
		w.wake = make(chan struct{}, 1)
		w.stop = make(chan struct{})
		w.slot = make(map[*flow]int32)
		e.wg.Go(func() { e.lookupLoop(w) })
	}
	return e, nil
}

// Block implements capture.Handler: it counts and samples one ring block
// and hands the sampled packets to the worker's lookup side. It never waits
// for a lookup.
func (e *Engine) Block(wi int, pkts []tcp.Packet) {
	w := &e.workers[wi]
	w.local = [5][2]uint64{}
	w.sampled = w.sampled[:0]
	var maxTime int64
	for i := range pkts {
		p := &pkts[i]
		d := p.Dir & 1
		maxTime = max(maxTime, p.Time)
		w.local[cPackets][d]++
		if p.Flags&tcp.FlagSYN != 0 {
			w.local[handshakeSkip(p)][d]++
			continue
		}
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
		if p.Flags&(tcp.FlagFIN|tcp.FlagRST) != 0 {
			f.sawEnd(p)
		}
		if n := f.count.Add(1); e.ppl > 1 && n%e.ppl != 0 {
			w.local[cSampledOut][d]++
			continue
		}
		w.sampled = append(w.sampled, sampledPkt{*p, f})
	}

	w.mu.Lock()
	room := maxPending - len(w.pending)
	take := min(room, len(w.sampled))
	w.pending = append(w.pending, w.sampled[:take]...)
	w.mark = max(w.mark, maxTime)
	w.handed++
	w.mu.Unlock()
	for _, sp := range w.sampled[take:] {
		w.local[cMalloc][sp.pkt.Dir&1]++
	}
	if n := len(w.sampled) - take; n > 0 {
		e.handoffFull.Add(uint64(n))
	}
	clear(w.sampled) // drop flow pointers
	w.publish(&w.local)
	w.poke()
}

// Idle implements capture.Handler: an idle worker lets the sink's ordering
// move on, after the packets already handed over.
func (e *Engine) Idle(wi int, safe int64) {
	w := &e.workers[wi]
	w.mu.Lock()
	w.mark = max(w.mark, safe)
	w.handed++
	w.mu.Unlock()
	w.poke()
}

// handshakeSkip is the skip reason of a segment with SYN set, decided from
// its flags without a lookup, as FreeBSD's SIFTR finds it at packet time: the
// client's SYN and the SYN-ACK it receives belong to a socket in SYN_SENT
// (tcpcb); the SYN a server receives and the SYN-ACK it sends have no
// connection socket yet, only the listener and the SYN cache (inpcb). Such
// segments do not advance the flow's ppl counter.
func handshakeSkip(p *tcp.Packet) int {
	synAck := p.Flags&tcp.FlagACK != 0
	if (p.Dir == tcp.DirOut) != synAck {
		return cTCPCB // outbound SYN, inbound SYN-ACK
	}
	return cInPCB // inbound SYN, outbound SYN-ACK
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) publish(c *[5][2]uint64) {
	for i := range c {
		for d := range c[i] {
			if v := c[i][d]; v != 0 {
				w.counts[i][d].Add(v)
			}
		}
	}
}

// lookupLoop is a worker's lookup side: it takes what the capture side
// handed over, looks the sockets up and submits the records.
func (e *Engine) lookupLoop(w *worker) {
	for {
		select {
		case <-w.wake:
		case <-w.stop:
		}
		for {
			w.mu.Lock()
			w.batch, w.pending = w.pending, w.batch[:0]
			mark, closing, handed := w.mark, w.closing, w.handed
			w.mu.Unlock()
			if len(w.batch) > 0 {
				e.process(w, mark)
				clear(w.batch)
			} else {
				e.sink.Advance(w.id, mark)
			}
			w.mu.Lock()
			w.done = handed
			more := len(w.pending) > 0
			w.mu.Unlock()
			w.cond.Broadcast()
			if !more {
				if closing {
					return
				}
				break
			}
		}
	}
}

// process looks up the sockets of w.batch, one lookup per socket, and
// turns each packet into a record or a counted skip.
func (e *Engine) process(w *worker, mark int64) {
	w.lcount = [5][2]uint64{}
	w.queries, w.qflows, w.qidx, w.recs = w.queries[:0], w.qflows[:0], w.qidx[:0], w.recs[:0]
	clear(w.slot)
	for i := range w.batch {
		f := w.batch[i].flow
		q, ok := w.slot[f]
		if !ok {
			q = int32(len(w.queries))
			w.slot[f] = q
			w.queries = append(w.queries, tcp.Query{Local: f.key.local, Remote: f.key.remote, IfIndex: e.cfg.IfIndex})
			w.qflows = append(w.qflows, f)
		}
		w.qidx = append(w.qidx, q)
	}
	e.lookup(w)
	if len(w.recs) > 0 {
		if !e.sink.Submit(w.id, w.recs, mark) {
			e.rejected.Add(uint64(len(w.recs)))
			for i := range w.recs {
				w.lcount[cMalloc][w.recs[i].Pkt.Dir&1]++
			}
			e.sink.Advance(w.id, mark)
		}
	} else {
		e.sink.Advance(w.id, mark)
	}
	w.publish(&w.lcount)
}

// lookup queries the sockets of w.queries and turns w.batch into records
// or skips.
func (e *Engine) lookup(w *worker) {
	// Records point to their snapshot until the writer is done with them:
	// each lookup gets fresh snapshots (an allocation per lookup, not per packet).
	snaps := make([]tcp.Snapshot, len(w.queries))
	e.batches.Add(1)
	e.lookups.Add(uint64(len(w.queries)))
	if err := w.diag.Lookup(w.queries, snaps); err != nil {
		e.lookupErrs.Add(1)
		msg := err.Error()
		e.lastErr.Store(&msg)
		for i := range w.batch {
			w.lcount[cMalloc][w.batch[i].pkt.Dir&1]++
		}
		return
	}
	for qi := range snaps {
		e.observe(w, qi, &snaps[qi])
	}
	for i := range w.batch {
		p := &w.batch[i].pkt
		s := &snaps[w.qidx[i]]
		d := p.Dir & 1
		switch {
		case s.Status == tcp.NoSocket:
			w.lcount[cInPCB][d]++
		case s.Status != tcp.Found || !loggable(s.State):
			w.lcount[cTCPCB][d]++
		default:
			w.recs = append(w.recs, Record{Pkt: *p, Snap: s})
		}
	}
}

// observe updates a flow from its socket's snapshot: cookie, reuse of the
// 4-tuple by a new socket, established and gone.
func (e *Engine) observe(w *worker, qi int, s *tcp.Snapshot) {
	f := w.qflows[qi]
	if s.Status == tcp.NoSocket {
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
	}
	if s.Status == tcp.Found && loggable(s.State) {
		f.established.Store(true)
	} else if f.established.Load() {
		// e.g. TIME_WAIT: the established socket is gone.
		f.gone.Store(true)
	}
}

// Flush waits until every packet handed to Block so far has been looked up
// and its record submitted.
func (e *Engine) Flush() {
	for i := range e.workers {
		w := &e.workers[i]
		w.mu.Lock()
		target := w.handed
		w.poke()
		for w.done < target {
			w.cond.Wait()
		}
		w.mu.Unlock()
	}
}

// Close finishes the lookups of every packet handed to Block, submits
// their records and stops the lookup goroutines. Call it after the capture
// has stopped calling Block and Idle; Counts are final afterwards. It is
// idempotent.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	for i := range e.workers {
		w := &e.workers[i]
		w.mu.Lock()
		w.closing = true
		w.mu.Unlock()
		close(w.stop)
	}
	e.wg.Wait()
	return nil
}

// loggable reports whether a socket in Linux state st is ESTABLISHED or
// later, as SIFTR requires (t_state >= TCPS_ESTABLISHED).
func loggable(st uint8) bool {
	switch st {
	case tcp.StateEstablished, tcp.StateFinWait1, tcp.StateFinWait2,
		tcp.StateCloseWait, tcp.StateLastAck, tcp.StateClosing:
		return true
	}
	return false
}

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

// Prune removes flows whose socket is gone, flows that ended on the wire
// and had no packet for the closed timeout, and flows that had no packet for
// the idle timeout, before now.
func (e *Engine) Prune(now time.Time) {
	e.flows.prune(now.Add(-e.cfg.IdleTimeout).UnixNano(), now.Add(-e.cfg.ClosedTimeout).UnixNano())
}

// Counts returns the SIFTR totals so far, summed over workers.
func (e *Engine) Counts() Counts {
	var c Counts
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
func (e *Engine) Flows() []Flow { return e.flows.names() }

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
		HandoffFull:     e.handoffFull.Load(),
	}
	if p := e.lastErr.Load(); p != nil {
		s.LastLookupErrMsg = *p
	}
	return s
}
