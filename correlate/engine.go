package correlate

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// Config tunes an Engine. The zero value is valid.
type Config struct {
	// PPL logs every PPL-th packet of each flow (SIFTR's ppl); 0 means 1.
	// It applies to packets that come without state (Sample): a source
	// that delivers packets with their state samples them itself.
	PPL uint32
	// MaxFlows bounds the flows found established in the flow table. 0
	// means 1<<18.
	MaxFlows int
	// MaxUnverifiedFlows bounds the flows no lookup has found established
	// yet (a 4-tuple without a socket never is): they are evicted, oldest
	// first, to make room for new flows, and pruned after ClosedTimeout
	// without a packet. Packets of new flows that find no room are skipped
	// as malloc (Stats.FlowTableFull). 0 means MaxFlows/8, at least 512.
	MaxUnverifiedFlows int
	// IdleTimeout prunes flows with no packet for this long; 0 means 60s.
	IdleTimeout time.Duration
	// ClosedTimeout prunes flows that are over on the wire (FINs both ways,
	// or a RST), and flows not found established, once they had no packet
	// for this long; 0 means 2s. It keeps the table small under connection
	// churn when sampling leaves the last packets of a connection
	// unlooked-up, and under a flood of segments without a socket.
	ClosedTimeout time.Duration
	// MaxFlowList bounds the flows remembered for the disable line's flow
	// list after they left the table; 0 means DefaultMaxFlowList.
	MaxFlowList int
	// PruneInterval is how often Run prunes the flow table; 0 means 1s.
	PruneInterval time.Duration
	// Origin, if set, is where the sockets live: every record points to it
	// (until SetOrigin).
	Origin *Origin
	// Clock is the monotonic clock that flows age by (in ns from any fixed
	// point); nil means the runtime's. Packet times are wall-clock times
	// (the log's) and can step with it; ageing by them would prune every
	// flow at a forward step and keep dead ones at a backward one.
	Clock func() int64
}

// monoBase is the fixed point of the default Clock.
var monoBase = time.Now()

func monotonic() int64 { return int64(time.Since(monoBase)) }

// DefaultMaxFlowList is Config.MaxFlowList's default: at about 80 bytes a
// flow, 5 MB.
const DefaultMaxFlowList = 1 << 16

// Stats are the engine's own counters beyond the SIFTR counts.
type Stats struct {
	ActiveFlows     int64  // flows in the table now
	UnverifiedFlows int64  // of which not found established (Config.MaxUnverifiedFlows)
	FlowsCreated    uint64 // flows ever created
	FlowsPruned     uint64 // flows removed (socket gone, idle, evicted, or 4-tuple reused)
	FlowsEvicted    uint64 // of which unverified flows evicted to make room for new ones
	FlowTableFull   uint64 // packets of new flows refused because the table was full (malloc skips)
	FlowListDropped uint64 // established flows left out of the flow list (MaxFlowList)
	SinkRejected    uint64 // records the sink refused (queue full); counted as malloc skips
	CookieReuses    uint64 // a 4-tuple seen with a new socket cookie
}

// Engine is SIFTR's accounting, shared by every state source: it counts
// every packet per direction and reason, keeps the flow table and the flow
// list, applies SIFTR's ppl sampling and handshake classification to
// packets that come without state, decides from a socket's state whether a
// packet becomes a record, and hands records to the Sink. It does no I/O of
// its own and starts no goroutine. See the package doc.
type Engine struct {
	cfg   Config
	sink  Sink
	flows *flowTable
	prods []producer

	// ppl and epoch are the sampling rate and its generation (see
	// SetPPL): read by sample under its producer's mu, written under
	// every producer's.
	ppl, epoch uint64

	rejected, reuses atomic.Uint64
	origin           atomic.Pointer[Origin] // Config.Origin, or SetOrigin's
}

// producer is one producer's share of the engine: its counts and the flow
// of its previous packet.
type producer struct {
	// counts is published with atomic adds: a producer's packets may be
	// counted from two goroutines (a resolver's capture and lookup sides).
	counts [numCounts][2]atomic.Uint64
	// mu is held by sample for a whole block and by SetPPL, which takes
	// every producer's: a change of ppl falls between two blocks.
	mu sync.Mutex
	// last is the previous packet's flow on the calling goroutine that
	// owns it (Sample's or Stated's caller): consecutive packets of one
	// flow skip the table's locks.
	last, lastStated *flow
	_                [64]byte
}

// counter indices
const (
	cPackets = iota
	cSampledOut
	cMalloc
	cTCPCB
	cInPCB
	cSampled // kept by sampling, for a lookup (not one of SIFTR's counts)
	numCounts
)

// tally accumulates counts on a caller's stack before they are published.
type tally [numCounts][2]uint64

func (t *tally) add(c, dir int) { t[c][dir&1]++ }

// NewEngine returns an Engine for producers numbered 0..producers-1, which
// hands records to sink.
func NewEngine(cfg *Config, sink Sink, producers int) (*Engine, error) {
	if sink == nil {
		return nil, errors.New("correlate: nil sink")
	}
	if producers < 1 {
		return nil, errors.New("correlate: no producers")
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
	if c.MaxUnverifiedFlows <= 0 {
		c.MaxUnverifiedFlows = max(c.MaxFlows/8, 512)
	}
	if c.MaxFlowList <= 0 {
		c.MaxFlowList = DefaultMaxFlowList
	}
	if c.PruneInterval <= 0 {
		c.PruneInterval = time.Second
	}
	if c.Clock == nil {
		c.Clock = monotonic
	}
	e := &Engine{
		cfg:   c,
		ppl:   uint64(c.PPL),
		sink:  sink,
		flows: newFlowTable(c.MaxFlows, c.MaxUnverifiedFlows, c.MaxFlowList, c.Clock),
		prods: make([]producer, producers),
	}
	e.origin.Store(c.Origin)
	return e, nil
}

// Producers returns the number of producers the engine was made for.
func (e *Engine) Producers() int { return len(e.prods) }

// sampledPkt is a packet that SIFTR's sampling kept, waiting for its socket's
// state, with the flow it counted in.
type sampledPkt struct {
	pkt  tcp.Packet
	flow *flow
}

// sample counts producer p's packets that come without state, in capture
// order: it classifies handshake segments by their flags, finds each
// packet's flow, advances the flow's ppl counter and appends the packets
// sampling keeps to keep, returning it. Their state is read afterwards (see
// Resolver). Calls for one producer must be sequential.
func (e *Engine) sample(p int, pkts []tcp.Packet, keep []sampledPkt) []sampledPkt {
	pr := &e.prods[p]
	pr.mu.Lock()
	defer pr.mu.Unlock()
	ppl, epoch := e.ppl, e.epoch
	var t tally
	for i := range pkts {
		pk := &pkts[i]
		d := int(pk.Dir)
		t.add(cPackets, d)
		if pk.Flags&tcp.FlagSYN != 0 {
			t.add(handshakeSkip(pk), d)
			continue
		}
		f, n := e.flowOf(&pr.last, pk, epoch)
		if f == nil {
			t.add(cMalloc, d)
			continue
		}
		if n%ppl != 0 {
			t.add(cSampledOut, d)
			continue
		}
		t.add(cSampled, d)
		keep = append(keep, sampledPkt{*pk, f})
	}
	pr.publish(&t)
	return keep
}

// flowOf returns the flow of pk, through the cached flow *last, with pk
// counted in it, and pk's count in the flow at epoch (see advance); it
// notes when the flow had the packet, and its FIN or RST. It returns nil
// when the flow table is full. A flow that leaves the table meanwhile
// counts nothing: pk is counted in the flow that follows it.
func (e *Engine) flowOf(last **flow, pk *tcp.Packet, epoch uint64) (*flow, uint64) {
	k := flowKey{pk.Local(), pk.Remote()}
	f := *last
	for {
		if f == nil || f.key != k || f.removed.Load() {
			f = e.flows.get(k)
			*last = f
			if f == nil {
				return nil, 0
			}
		}
		// lastSeen before the count: the pruner reads them the other way.
		if d := pk.Time - f.lastPkt.Load(); d > int64(time.Millisecond) || d < -int64(time.Millisecond) {
			f.lastPkt.Store(pk.Time)
			f.lastSeen.Store(e.cfg.Clock())
		}
		if n, ok := advance(f, epoch); ok {
			if pk.Flags&(tcp.FlagFIN|tcp.FlagRST) != 0 {
				f.sawEnd(pk)
			}
			return f, n
		}
		f = nil // it left the table: the next one
	}
}

// drop counts sampled packets that could not be settled (their lookup
// failed, or too many waited for one) as malloc skips.
func (e *Engine) drop(p int, s []sampledPkt) {
	var t tally
	for i := range s {
		t.add(cMalloc, int(s[i].pkt.Dir))
	}
	e.prods[p].publish(&t)
}

// settle turns one packet and its socket's state into a record, appended
// to recs, if the socket is established or later, else into a skip counted
// under SIFTR's reason in t.
func settle(t *tally, pk *tcp.Packet, snap *tcp.Snapshot, recs []Record) []Record {
	d := int(pk.Dir)
	switch {
	case snap.Status == tcp.NoSocket:
		t.add(cInPCB, d)
	case snap.Status != tcp.Found || !Loggable(snap.State):
		t.add(cTCPCB, d)
	default:
		recs = append(recs, Record{Pkt: *pk, Snap: snap})
	}
	return recs
}

// stamp points the records an engine made to its origin.
func (e *Engine) stamp(recs []Record) {
	o := e.origin.Load()
	if o == nil {
		return
	}
	for i := range recs {
		recs[i].Origin = o
	}
}

// SetOrigin points the records made from now on to o (a namespace's pod
// became known, or changed). o must not be modified afterwards. Safe for
// concurrent use.
func (e *Engine) SetOrigin(o *Origin) { e.origin.Store(o) }

// Stated takes a packet that comes with its socket's state, read at the
// packet by a source that also sampled it: it is counted in its flow and
// becomes a record (appended to recs, and returned), unless its state says
// otherwise. The source counts the packet itself, and every packet it did
// not deliver, with Tally. Calls for one producer must be sequential.
func (e *Engine) Stated(p int, pk *tcp.Packet, snap *tcp.Snapshot, recs []Record) []Record {
	pr := &e.prods[p]
	var t tally
	// Epoch 0: such a source samples itself, the count only tells the
	// table the flow is alive.
	if f, _ := e.flowOf(&pr.lastStated, pk, 0); f == nil {
		t.add(cMalloc, int(pk.Dir))
	} else {
		e.observe(f, snap)
		recs = settle(&t, pk, snap, recs)
	}
	pr.publish(&t)
	return recs
}

// Tally adds counts a source made itself to producer p's: packets it saw,
// and those it sampled out or skipped without delivering them.
func (e *Engine) Tally(p int, c *Counts) {
	var t tally
	for d := range 2 {
		t[cPackets][d] = c.Packets[d]
		t[cSampledOut][d] = c.SampledOut[d]
		t[cMalloc][d] = c.SkipMalloc[d]
		t[cTCPCB][d] = c.SkipTCPCB[d]
		t[cInPCB][d] = c.SkipInPCB[d]
	}
	e.prods[p].publish(&t)
}

// Submit hands producer p's records to the sink with the producer's
// watermark (every record p submits later has a Pkt.Time >= watermark).
// Records the sink refuses are counted as malloc skips. It never blocks.
func (e *Engine) Submit(p int, recs []Record, watermark int64) {
	if len(recs) == 0 {
		e.sink.Advance(p, watermark)
		return
	}
	e.stamp(recs)
	if e.sink.Submit(p, recs, watermark) {
		return
	}
	e.rejected.Add(uint64(len(recs)))
	var t tally
	for i := range recs {
		t.add(cMalloc, int(recs[i].Pkt.Dir))
	}
	e.prods[p].publish(&t)
	e.sink.Advance(p, watermark)
}

// Advance moves producer p's watermark on without records.
func (e *Engine) Advance(p int, watermark int64) { e.sink.Advance(p, watermark) }

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

func (pr *producer) publish(t *tally) {
	for i := range t {
		for d := range t[i] {
			if v := t[i][d]; v != 0 {
				pr.counts[i][d].Add(v)
			}
		}
	}
}

// observe updates a flow from its socket's snapshot: cookie, reuse of the
// 4-tuple by a new socket, established (which moves it to the table's main
// budget) and gone. A flow without a socket is gone too, established or
// not: the pruner removes it, and a new flow needing room evicts it first.
func (e *Engine) observe(f *flow, s *tcp.Snapshot) {
	if s.Status == tcp.NoSocket {
		f.gone.Store(true)
		return
	}
	if old := f.cookie.Load(); old == 0 {
		f.cookie.CompareAndSwap(0, s.Cookie)
	} else if old != s.Cookie {
		e.reuses.Add(1)
		f = e.flows.replace(f, s.Cookie)
	}
	if s.Status == tcp.Found && Loggable(s.State) {
		if !f.established.Load() {
			f.established.Store(true)
			e.flows.verify(f)
		}
	} else if f.established.Load() {
		// e.g. TIME_WAIT: the established socket is gone.
		f.gone.Store(true)
	}
}

// Loggable reports whether a socket in Linux state st is ESTABLISHED or
// later, as SIFTR requires (t_state >= TCPS_ESTABLISHED).
func Loggable(st uint8) bool {
	switch st {
	case tcp.StateEstablished, tcp.StateFinWait1, tcp.StateFinWait2,
		tcp.StateCloseWait, tcp.StateLastAck, tcp.StateClosing:
		return true
	}
	return false
}

// Prune removes flows whose socket is gone, flows that ended on the wire
// and had no packet for the closed timeout, and flows that had no packet for
// the idle timeout, by Config.Clock.
func (e *Engine) Prune() {
	now := e.cfg.Clock()
	e.flows.prune(now-int64(e.cfg.IdleTimeout), now-int64(e.cfg.ClosedTimeout))
}

// Run prunes the flow table every Config.PruneInterval until ctx is done.
// It returns nil.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			e.Prune()
		}
	}
}

// Counts returns the SIFTR totals so far, summed over producers.
func (e *Engine) Counts() Counts {
	var c Counts
	for i := range e.prods {
		pr := &e.prods[i]
		for d := 0; d < 2; d++ {
			c.Packets[d] += pr.counts[cPackets][d].Load()
			c.SampledOut[d] += pr.counts[cSampledOut][d].Load()
			c.SkipMalloc[d] += pr.counts[cMalloc][d].Load()
			c.SkipTCPCB[d] += pr.counts[cTCPCB][d].Load()
			c.SkipInPCB[d] += pr.counts[cInPCB][d].Load()
		}
	}
	return c
}

// Flows lists every flow that had an established socket, in the order the
// flows were first seen, for the disable line.
func (e *Engine) Flows() []Flow { return e.flows.names() }

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	return Stats{
		ActiveFlows:     e.flows.active.Load(),
		UnverifiedFlows: e.flows.unverif.Load(),
		FlowsCreated:    e.flows.created.Load(),
		FlowsPruned:     e.flows.pruned.Load(),
		FlowsEvicted:    e.flows.evicted.Load(),
		FlowTableFull:   e.flows.full.Load(),
		FlowListDropped: e.flows.retiredDropped.Load(),
		SinkRejected:    e.rejected.Load(),
		CookieReuses:    e.reuses.Load(),
	}
}
