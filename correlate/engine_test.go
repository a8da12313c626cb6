package correlate

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// fakeDiag answers lookups from a table; unknown sockets are NoSocket.
type fakeDiag struct {
	socks   map[tcp.Query]tcp.Snapshot
	calls   [][]tcp.Query
	err     error
	noCalls bool // don't record calls (benchmarks)
}

func (f *fakeDiag) Lookup(qs []tcp.Query, out []tcp.Snapshot) error {
	if !f.noCalls {
		f.calls = append(f.calls, append([]tcp.Query(nil), qs...))
	}
	if f.err != nil {
		return f.err
	}
	for i, q := range qs {
		s, ok := f.socks[q]
		if !ok {
			s = tcp.Snapshot{Status: tcp.NoSocket}
		}
		out[i] = s
	}
	return nil
}

// fakeSink keeps what it is given.
type fakeSink struct {
	mu         sync.Mutex
	recs       []Record
	watermarks map[int]int64
	reject     bool
}

func (s *fakeSink) Submit(w int, recs []Record, wm int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reject {
		return false
	}
	s.recs = append(s.recs, recs...)
	s.advance(w, wm)
	return true
}

func (s *fakeSink) Advance(w int, wm int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(w, wm)
}

func (s *fakeSink) advance(w int, wm int64) {
	if s.watermarks == nil {
		s.watermarks = map[int]int64{}
	}
	s.watermarks[w] = max(s.watermarks[w], wm)
}

func (s *fakeSink) records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.recs...)
}

func (s *fakeSink) mark(w int) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watermarks[w]
}

func (s *fakeSink) setReject(r bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reject = r
}

// fakeClock is a Config.Clock that moves only when set: flows age by it.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() int64          { return c.ns.Load() }
func (c *fakeClock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }

var (
	local  = netip.MustParseAddrPort("10.0.0.1:40000")
	remote = netip.MustParseAddrPort("10.0.0.2:5201")
)

func established(cookie uint64) tcp.Snapshot {
	return tcp.Snapshot{Status: tcp.Found, State: tcp.StateEstablished, Cookie: cookie, Time: 1}
}

// pkt makes packet number seq of the flow local<->remote in direction d.
func pkt(seq uint32, d tcp.Direction, l, r netip.AddrPort) tcp.Packet {
	p := tcp.Packet{Time: int64(seq) * 1000, Seq: seq, Dir: d}
	if d == tcp.DirOut {
		p.Src, p.Dst = l, r
	} else {
		p.Src, p.Dst = r, l
	}
	return p
}

// fixture is diag mode's state source without a capture: an Engine and
// the Resolver that feeds it ring blocks, driven by hand.
type fixture struct {
	*Engine
	res *Resolver
}

// Block hands the resolver a block as capture would: its watermark is the
// newest packet time (capture.StampLag aside).
func (f *fixture) Block(w int, pkts []tcp.Packet) {
	var safe int64
	for i := range pkts {
		safe = max(safe, pkts[i].Time)
	}
	f.res.Block(w, pkts, safe)
}
func (f *fixture) Idle(w int, safe int64) { f.res.Idle(w, safe) }
func (f *fixture) Flush()                 { f.res.Flush() }
func (f *fixture) Close()                 { f.res.Close() }

// stats is the engine's and the resolver's counters together.
type stats struct {
	Stats
	ResolveStats
}

func (f *fixture) Stats() stats { return stats{f.Engine.Stats(), f.res.Stats()} }

func newEngine(t testing.TB, cfg *Config, sink Sink, ls ...StateReader) *fixture {
	t.Helper()
	return newEngineIf(t, cfg, 0, sink, ls...)
}

// newEngineIf is newEngine with the captured interface's index.
func newEngineIf(t testing.TB, cfg *Config, ifIndex uint32, sink Sink, ls ...StateReader) *fixture {
	t.Helper()
	e, err := NewEngine(cfg, sink, len(ls))
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver(e, ls, ifIndex)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return &fixture{e, r}
}

// checkConservation asserts packets = records + sampled out + skips, per direction.
func checkConservation(t *testing.T, c Counts, recs []Record) {
	t.Helper()
	var lines [2]uint64
	for _, r := range recs {
		lines[r.Pkt.Dir]++
	}
	for d := 0; d < 2; d++ {
		got := lines[d] + c.SampledOut[d] + c.SkipMalloc[d] + c.SkipTCPCB[d] + c.SkipInPCB[d]
		if got != c.Packets[d] {
			t.Errorf("direction %d: packets %d != lines %d + sampled out %d + malloc %d + tcpcb %d + inpcb %d",
				d, c.Packets[d], lines[d], c.SampledOut[d], c.SkipMalloc[d], c.SkipTCPCB[d], c.SkipInPCB[d])
		}
	}
}

func TestPPLPhase(t *testing.T) {
	// SIFTR: counter = (counter+1) % ppl, log when it wraps to 0: the N-th,
	// 2N-th, ... packet of each flow, never the first (unless N = 1).
	for _, ppl := range []uint32{1, 2, 3, 7} {
		d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{{Local: local, Remote: remote}: established(9)}}
		sink := &fakeSink{}
		e := newEngine(t, &Config{PPL: ppl}, sink, d)
		var want []uint32
		var block []tcp.Packet
		for n := uint32(1); n <= 20; n++ {
			dir := tcp.Direction(n % 2) // both directions share one counter
			block = append(block, pkt(n, dir, local, remote))
			if n%ppl == 0 {
				want = append(want, n)
			}
			if n%6 == 0 { // several blocks
				e.Block(0, block)
				block = block[:0]
			}
		}
		e.Block(0, block)
		e.Flush()
		var got []uint32
		for _, r := range sink.records() {
			got = append(got, r.Pkt.Seq)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ppl=%d: logged packets (-want +got):\n%s", ppl, diff)
		}
		c := e.Counts()
		if c.Packets[0]+c.Packets[1] != 20 {
			t.Errorf("ppl=%d: counted %v packets, want 20", ppl, c.Packets)
		}
		checkConservation(t, c, sink.records())
	}
}

// TestHandshakePPLPhase follows a connection from its first SYN, on the
// client and on the server: the handshake segments are skipped by their
// flags without a lookup, as SIFTR finds no established socket for them, and
// the ppl counter starts with the first segment after them.
func TestHandshakePPLPhase(t *testing.T) {
	syn := func(seq uint32, d tcp.Direction, flags uint8) tcp.Packet {
		p := pkt(seq, d, local, remote)
		p.Flags = flags
		return p
	}
	const ack = tcp.FlagACK
	for _, tt := range []struct {
		name       string
		first      []tcp.Packet // the handshake as this side sees it
		tcpcb      [2]uint64
		inpcb      [2]uint64
		firstLogNo uint32 // ppl=3: the 3rd packet after the handshake
	}{
		{"client", []tcp.Packet{syn(1, tcp.DirOut, tcp.FlagSYN), syn(2, tcp.DirIn, tcp.FlagSYN|ack)}, [2]uint64{1, 1}, [2]uint64{}, 5},
		{"server", []tcp.Packet{syn(1, tcp.DirIn, tcp.FlagSYN), syn(2, tcp.DirOut, tcp.FlagSYN|ack)}, [2]uint64{}, [2]uint64{1, 1}, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{{Local: local, Remote: remote}: established(9)}}
			sink := &fakeSink{}
			e := newEngine(t, &Config{PPL: 3}, sink, d)
			e.Block(0, tt.first)
			e.Flush()
			if len(d.calls) != 0 {
				t.Errorf("%d lookups for handshake segments, want 0", len(d.calls))
			}
			var rest []tcp.Packet
			for n := uint32(3); n <= 9; n++ {
				rest = append(rest, syn(n, tcp.Direction(n%2), ack))
			}
			e.Block(0, rest)
			e.Flush()
			var got []uint32
			for _, r := range sink.records() {
				got = append(got, r.Pkt.Seq)
			}
			if diff := cmp.Diff([]uint32{tt.firstLogNo, tt.firstLogNo + 3}, got); diff != "" {
				t.Errorf("logged packets (-want +got):\n%s", diff)
			}
			c := e.Counts()
			if c.SkipTCPCB != tt.tcpcb || c.SkipInPCB != tt.inpcb {
				t.Errorf("tcpcb %v inpcb %v, want %v %v", c.SkipTCPCB, c.SkipInPCB, tt.tcpcb, tt.inpcb)
			}
			checkConservation(t, c, sink.records())
		})
	}
}

func TestIfIndexInQueries(t *testing.T) {
	d := &fakeDiag{}
	e := newEngineIf(t, nil, 42, &fakeSink{}, d)
	e.Block(0, []tcp.Packet{pkt(1, tcp.DirOut, local, remote)})
	e.Flush()
	if len(d.calls) != 1 || len(d.calls[0]) != 1 || d.calls[0][0].IfIndex != 42 {
		t.Errorf("queries %+v, want one with IfIndex 42", d.calls)
	}
}

func TestOneLookupPerSocketPerBlock(t *testing.T) {
	other := netip.MustParseAddrPort("10.0.0.3:5201")
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{
		{Local: local, Remote: remote}: established(1),
		{Local: local, Remote: other}:  established(2),
	}}
	sink := &fakeSink{}
	e := newEngine(t, nil, sink, d)
	e.Block(0, []tcp.Packet{
		pkt(1, tcp.DirOut, local, remote),
		pkt(2, tcp.DirIn, local, remote),
		pkt(3, tcp.DirOut, local, other),
		pkt(4, tcp.DirOut, local, remote),
		pkt(5, tcp.DirIn, local, other),
	})
	e.Flush()
	if len(d.calls) != 1 {
		t.Fatalf("%d Lookup calls, want 1", len(d.calls))
	}
	want := []tcp.Query{{Local: local, Remote: remote}, {Local: local, Remote: other}}
	if diff := cmp.Diff(want, d.calls[0], cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}
	if len(sink.records()) != 5 {
		t.Fatalf("%d records, want 5", len(sink.records()))
	}
	for _, r := range sink.records() {
		wantCookie := uint64(1)
		if r.Pkt.Remote() == other {
			wantCookie = 2
		}
		if r.Snap.Cookie != wantCookie {
			t.Errorf("packet %d got the snapshot of cookie %d, want %d", r.Pkt.Seq, r.Snap.Cookie, wantCookie)
		}
	}
	if s := e.Stats(); s.Lookups != 2 || s.Batches != 1 {
		t.Errorf("stats: %d lookups in %d batches, want 2 in 1", s.Lookups, s.Batches)
	}
	if sink.mark(0) != 5000 {
		t.Errorf("watermark %d, want the block's newest packet time 5000", sink.mark(0))
	}
}

func TestSkipReasons(t *testing.T) {
	synSent := netip.MustParseAddrPort("10.0.0.4:5201")
	closed := netip.MustParseAddrPort("10.0.0.5:5201")
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{
		{Local: local, Remote: synSent}: {Status: tcp.NotEstablished, State: tcp.StateSynSent, Cookie: 3},
		{Local: local, Remote: closed}:  {Status: tcp.Found, State: tcp.StateClose, Cookie: 4},
	}}
	sink := &fakeSink{}
	e := newEngine(t, nil, sink, d)
	e.Block(0, []tcp.Packet{
		pkt(1, tcp.DirOut, local, remote), // no socket: inpcb
		pkt(2, tcp.DirIn, local, remote),
		pkt(3, tcp.DirIn, local, remote),
		pkt(4, tcp.DirOut, local, synSent), // tcpcb
		pkt(5, tcp.DirIn, local, closed),   // tcpcb: CLOSE is before ESTABLISHED in FreeBSD's order
	})
	e.Flush()
	c := e.Counts()
	want := Counts{
		Packets:   [2]uint64{3, 2},
		SkipInPCB: [2]uint64{2, 1},
		SkipTCPCB: [2]uint64{1, 1},
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if len(sink.records()) != 0 {
		t.Errorf("%d records, want 0", len(sink.records()))
	}
	if len(e.Flows()) != 0 {
		t.Errorf("flow list %v, want empty: no flow was established", e.Flows())
	}
}

func TestLookupErrorAndFullSinkAreMalloc(t *testing.T) {
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{{Local: local, Remote: remote}: established(1)}}
	sink := &fakeSink{reject: true}
	e := newEngine(t, nil, sink, d)
	e.Block(0, []tcp.Packet{pkt(1, tcp.DirOut, local, remote), pkt(2, tcp.DirIn, local, remote)})
	e.Flush()
	d.err = errors.New("netlink: boom")
	e.Block(0, []tcp.Packet{pkt(3, tcp.DirOut, local, remote)})
	e.Flush()
	c := e.Counts()
	if c.SkipMalloc != [2]uint64{1, 2} {
		t.Errorf("malloc skips %v, want [1 2]", c.SkipMalloc)
	}
	s := e.Stats()
	if s.SinkRejected != 2 || s.LookupErrors != 1 || s.LastErrMsg != "netlink: boom" {
		t.Errorf("stats %+v", s)
	}
	checkConservation(t, c, nil)
}

// TestFlowTableBound checks the main budget: flows found established beyond
// MaxFlows stay unverified (still logged, in the small budget).
func TestFlowTableBound(t *testing.T) {
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{}}
	sink := &fakeSink{}
	e := newEngine(t, &Config{MaxFlows: 2}, sink, d)
	var block []tcp.Packet
	for i := range 3 {
		r := netip.AddrPortFrom(remote.Addr(), uint16(6000+i))
		d.socks[tcp.Query{Local: local, Remote: r}] = established(uint64(i + 1))
		block = append(block, pkt(uint32(i+1), tcp.DirOut, local, r))
	}
	e.Block(0, block)
	e.Flush()
	c := e.Counts()
	if c.SkipMalloc[1] != 0 || len(sink.records()) != 3 {
		t.Errorf("malloc %v, %d records; want every packet logged", c.SkipMalloc, len(sink.records()))
	}
	if s := e.Stats(); s.ActiveFlows != 3 || s.UnverifiedFlows != 1 || s.FlowTableFull != 0 {
		t.Errorf("stats %+v; want 3 flows, the third unverified", s)
	}
	checkConservation(t, c, sink.records())
}

func TestPruneAndFlowList(t *testing.T) {
	q := tcp.Query{Local: local, Remote: remote}
	idle := netip.MustParseAddrPort("10.0.0.9:5201")
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{q: established(7), {Local: local, Remote: idle}: established(8)}}
	sink := &fakeSink{}
	var clk fakeClock
	e := newEngine(t, &Config{IdleTimeout: time.Minute, Clock: clk.now}, sink, d)
	now := time.Now()
	p := pkt(1, tcp.DirOut, local, remote)
	p.Time = now.UnixNano()
	pi := pkt(2, tcp.DirOut, local, idle)
	pi.Time = now.Add(-2 * time.Minute).UnixNano()
	clk.set(now.Add(-2 * time.Minute))
	e.Block(0, []tcp.Packet{pi})
	clk.set(now)
	e.Block(0, []tcp.Packet{p})
	e.Flush()
	if s := e.Stats(); s.ActiveFlows != 2 {
		t.Fatalf("%d active flows, want 2", s.ActiveFlows)
	}
	// The socket closes: the next lookup finds none, the flow is gone.
	delete(d.socks, q)
	p.Time++
	e.Block(0, []tcp.Packet{p})
	e.Flush()
	e.Prune()
	if s := e.Stats(); s.ActiveFlows != 0 || s.FlowsPruned != 2 {
		t.Errorf("after prune: %+v, want 0 active, 2 pruned", s)
	}
	want := []Flow{{Local: local, Remote: idle}, {Local: local, Remote: remote}}
	if diff := cmp.Diff(want, e.Flows(), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("flow list (-want +got):\n%s", diff)
	}
}

// TestEndedFlowsPruned checks that flows that ended on the wire (FINs both
// ways, or a RST) leave the table after the closed timeout even when no
// lookup saw their socket go, and so does one never looked up, while a
// quiet open flow found established stays until the idle timeout; and that an established connection whose flow was pruned while
// idle is listed once when it comes back.
func TestEndedFlowsPruned(t *testing.T) {
	finBoth := netip.MustParseAddrPort("10.0.0.6:5201")
	finOne := netip.MustParseAddrPort("10.0.0.7:5201")
	rst := netip.MustParseAddrPort("10.0.0.8:5201")
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{{Local: local, Remote: remote}: established(5)}}
	sink := &fakeSink{}
	// ppl 1000: nothing but the first flow's packet is looked up.
	var clk fakeClock
	e := newEngine(t, &Config{PPL: 1000, IdleTimeout: time.Minute, ClosedTimeout: time.Second, Clock: clk.now}, sink, d)
	now := time.Now()
	at := func(p tcp.Packet, ago time.Duration, flags uint8) tcp.Packet {
		p.Time, p.Flags = now.Add(-ago).UnixNano(), flags
		return p
	}
	var open []tcp.Packet
	for i := range 1000 {
		open = append(open, at(pkt(uint32(i), tcp.DirOut, local, remote), 30*time.Second, tcp.FlagACK))
	}
	clk.set(now.Add(-30 * time.Second))
	e.Block(0, open)
	clk.set(now.Add(-5 * time.Second))
	e.Block(0, []tcp.Packet{
		at(pkt(1, tcp.DirOut, local, finBoth), 5*time.Second, tcp.FlagFIN|tcp.FlagACK),
		at(pkt(2, tcp.DirIn, local, finBoth), 5*time.Second, tcp.FlagFIN|tcp.FlagACK),
		at(pkt(3, tcp.DirOut, local, finOne), 5*time.Second, tcp.FlagFIN|tcp.FlagACK),
		at(pkt(4, tcp.DirIn, local, rst), 5*time.Second, tcp.FlagRST),
	})
	e.Flush()
	clk.set(now)
	e.Prune()
	// The half-closed flow was never looked up: unverified, it leaves
	// after the closed timeout too.
	if s := e.Stats(); s.ActiveFlows != 1 || s.FlowsPruned != 3 {
		t.Errorf("after prune: %d active, %d pruned; want the open flow kept, 3 pruned", s.ActiveFlows, s.FlowsPruned)
	}
	// Idle for more than the idle timeout: the open flow goes, then comes back.
	clk.set(now.Add(2 * time.Minute))
	e.Prune()
	back := open[:1000:1000]
	for i := range back {
		back[i].Time = now.Add(3 * time.Minute).UnixNano()
	}
	e.Block(0, back)
	e.Flush()
	if got := len(sink.records()); got != 2 {
		t.Fatalf("%d records, want 2", got)
	}
	if diff := cmp.Diff([]Flow{{Local: local, Remote: remote}}, e.Flows(), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("flow list (-want +got):\n%s", diff)
	}
}

func TestReusedFourTupleIsNewFlow(t *testing.T) {
	q := tcp.Query{Local: local, Remote: remote}
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{q: established(100)}}
	sink := &fakeSink{}
	e := newEngine(t, &Config{PPL: 2}, sink, d)
	e.Block(0, []tcp.Packet{pkt(1, tcp.DirOut, local, remote), pkt(2, tcp.DirOut, local, remote)})
	e.Flush()
	d.socks[q] = established(200)
	// packet 3 and 4 belong to the old flow's counter; 4 is sampled and reveals the new cookie.
	e.Block(0, []tcp.Packet{pkt(3, tcp.DirOut, local, remote), pkt(4, tcp.DirOut, local, remote)})
	e.Flush()
	// The new flow counts from zero: 6 is its 2nd packet.
	e.Block(0, []tcp.Packet{pkt(5, tcp.DirOut, local, remote), pkt(6, tcp.DirOut, local, remote)})
	e.Flush()
	var got []uint64
	for _, r := range sink.records() {
		got = append(got, r.Snap.Cookie)
	}
	if diff := cmp.Diff([]uint64{100, 200, 200}, got); diff != "" {
		t.Errorf("record cookies (-want +got):\n%s", diff)
	}
	if s := e.Stats(); s.CookieReuses != 1 {
		t.Errorf("%d cookie reuses, want 1", s.CookieReuses)
	}
	if n := len(e.Flows()); n != 2 {
		t.Errorf("flow list has %d entries, want 2 (two connections on one 4-tuple)", n)
	}
}

func TestIdleAdvancesWatermark(t *testing.T) {
	sink := &fakeSink{}
	e := newEngine(t, nil, sink, &fakeDiag{}, &fakeDiag{})
	e.Idle(1, 12345)
	e.Flush()
	if sink.mark(1) != 12345 {
		t.Errorf("watermark %d, want 12345", sink.mark(1))
	}
}

// TestConservationRandom drives random traffic over many flows, sockets in
// every state and a sink that sometimes refuses, and checks the identity.
func TestConservationRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{}}
	var remotes []netip.AddrPort
	for i := range 50 {
		r := netip.AddrPortFrom(remote.Addr(), uint16(7000+i))
		remotes = append(remotes, r)
		switch i % 4 {
		case 0, 1:
			d.socks[tcp.Query{Local: local, Remote: r}] = established(uint64(i + 1))
		case 2:
			d.socks[tcp.Query{Local: local, Remote: r}] = tcp.Snapshot{Status: tcp.NotEstablished, State: tcp.StateTimeWait, Cookie: uint64(i + 1)}
		}
	}
	sink := &fakeSink{}
	e := newEngine(t, &Config{PPL: 3, MaxFlows: 40}, sink, d, d)
	for b := range 200 {
		e.Flush()
		sink.setReject(b%17 == 0)
		n := rng.IntN(300)
		block := make([]tcp.Packet, n)
		for i := range block {
			block[i] = pkt(uint32(b*1000+i), tcp.Direction(rng.IntN(2)), local, remotes[rng.IntN(len(remotes))])
			block[i].Flags = [...]uint8{tcp.FlagACK, tcp.FlagACK, tcp.FlagACK, tcp.FlagSYN,
				tcp.FlagSYN | tcp.FlagACK, tcp.FlagFIN | tcp.FlagACK, tcp.FlagRST}[rng.IntN(7)]
		}
		if b%50 == 49 {
			e.Prune()
		}
		e.Block(b%2, block)
	}
	e.Close()
	checkConservation(t, e.Counts(), sink.records())
}

// BenchmarkBlock measures the per-packet cost of flow lookup and sampling
// (ppl=100, 64 flows, 256-packet blocks) including the lookups of sampled packets.
func BenchmarkBlock(b *testing.B) {
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{}, noCalls: true}
	var block []tcp.Packet
	for i := range 256 {
		r := netip.AddrPortFrom(remote.Addr(), uint16(7000+i%64))
		d.socks[tcp.Query{Local: local, Remote: r}] = established(uint64(i + 1))
		block = append(block, pkt(uint32(i), tcp.Direction(i%2), local, r))
	}
	sink := discardSink{}
	e := newEngine(b, &Config{PPL: 100}, sink, d)
	e.Block(0, block)
	e.Flush()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		e.Block(0, block)
		e.Flush()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(block)), "ns/packet")
}

type discardSink struct{}

func (discardSink) Submit(int, []Record, int64) bool { return true }
func (discardSink) Advance(int, int64)               {}

// TestFlowsAgeByMonotonicClock checks that a step of the wall clock, which
// packet times follow, neither prunes active flows nor keeps them from
// ageing: a forward step longer than the idle timeout keeps every flow
// and its ppl phase, and after a backward step a flow that keeps getting
// packets stays while one that does not goes after the idle timeout.
func TestFlowsAgeByMonotonicClock(t *testing.T) {
	quiet := netip.MustParseAddrPort("10.0.0.9:5201")
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{
		{Local: local, Remote: remote}: established(1),
		{Local: local, Remote: quiet}:  established(2),
	}}
	sink := &fakeSink{}
	var clk fakeClock
	e := newEngine(t, &Config{PPL: 10, IdleTimeout: time.Minute, Clock: clk.now}, sink, d)
	wall := time.Now()
	n := 0
	send := func(step time.Duration) {
		// 25 packets of the busy flow, 10 ms apart in both clocks.
		var b []tcp.Packet
		for range 25 {
			p := pkt(uint32(n), tcp.DirOut, local, remote)
			p.Time = wall.UnixNano()
			b = append(b, p)
			wall = wall.Add(10 * time.Millisecond)
			clk.add(10 * time.Millisecond)
			n++
		}
		e.Block(0, b)
		e.Flush()
		wall = wall.Add(step)
	}
	q := pkt(0, tcp.DirOut, local, quiet)
	q.Time = wall.UnixNano()
	e.Block(0, []tcp.Packet{q})
	send(10 * time.Minute) // the wall clock steps forward 10 minutes
	send(0)
	e.Prune()
	if s := e.Stats(); s.ActiveFlows != 2 || s.FlowsPruned != 0 {
		t.Fatalf("after a forward step: %d active, %d pruned; want both flows kept", s.ActiveFlows, s.FlowsPruned)
	}
	wall = wall.Add(-time.Hour) // and back an hour
	for range 8 {               // 8 x (250 ms + 10 s) of the monotonic clock: past the idle timeout
		send(0)
		clk.add(10 * time.Second)
		e.Prune()
	}
	s := e.Stats()
	if s.ActiveFlows != 1 || s.FlowsPruned != 1 {
		t.Errorf("after a backward step: %d active, %d pruned; want the busy flow kept, the quiet one pruned", s.ActiveFlows, s.FlowsPruned)
	}
	// One flow throughout: every 10th of its packets is a record.
	if got, want := recordsOf(sink.records(), remote), n/10; got != want {
		t.Errorf("%d records of the busy flow, want %d (one flow, ppl 10, %d packets)", got, want, n)
	}
	checkConservation(t, e.Counts(), sink.records())
}

// TestConcurrentProducersAndPruner drives two producers on shared flows
// while the pruner runs, under a clock that makes flows idle at every
// prune, and checks that no packet is counted in a flow after it left the
// table and every packet is counted in exactly one flow.
func TestConcurrentProducersAndPruner(t *testing.T) {
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{}, noCalls: true}
	var remotes []netip.AddrPort
	for i := range 16 {
		r := netip.AddrPortFrom(remote.Addr(), uint16(8000+i))
		remotes = append(remotes, r)
		if i%2 == 0 { // half have an established socket, half none (gone at once)
			d.socks[tcp.Query{Local: local, Remote: r}] = established(uint64(i + 1))
		}
	}
	var clk fakeClock
	sink := &fakeSink{}
	e := newEngine(t, &Config{PPL: 3, IdleTimeout: time.Millisecond, ClosedTimeout: time.Millisecond, Clock: clk.now}, sink, d, d)
	type removal struct {
		f     *flow
		count uint64
	}
	var (
		mu      sync.Mutex
		removed []removal
	)
	e.flows.onRemove = func(f *flow) {
		mu.Lock()
		removed = append(removed, removal{f, f.count.Load() & countMask})
		mu.Unlock()
	}
	const blocks = 400
	var sent [2]map[flowKey]uint64
	var wg sync.WaitGroup
	for w := range 2 {
		sent[w] = map[flowKey]uint64{}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for b := range blocks {
				block := make([]tcp.Packet, 64)
				for i := range block {
					r := remotes[rng.IntN(len(remotes))]
					block[i] = pkt(uint32(b*100+i), tcp.Direction(rng.IntN(2)), local, r)
					block[i].Time = int64(rng.IntN(1e9)) // far apart: every packet stamps its flow
					block[i].Flags = tcp.FlagACK
					sent[w][flowKey{local, r}]++
				}
				e.Block(w, block)
			}
		})
	}
	stop := make(chan struct{})
	var pruner sync.WaitGroup
	pruner.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			clk.add(time.Second)
			e.Prune()
		}
	})
	wg.Wait()
	close(stop)
	pruner.Wait()
	e.Flush()

	got := map[flowKey]uint64{}
	mu.Lock()
	for _, r := range removed {
		if c := r.f.count.Load() & countMask; c != r.count {
			t.Errorf("flow %v counted %d packets after it left the table", r.f.key, c-r.count)
		}
		got[r.f.key] += r.count
	}
	mu.Unlock()
	for i := range e.flows.shards {
		for k, f := range e.flows.shards[i].m {
			got[k] += f.count.Load() & countMask
		}
	}
	for k := range sent[0] {
		if want := sent[0][k] + sent[1][k]; got[k] != want {
			t.Errorf("flow %v: %d packets counted in its flows, %d sent", k, got[k], want)
		}
	}
	if len(removed) == 0 {
		t.Error("the pruner removed no flow: the test exercised nothing")
	}
	checkConservation(t, e.Counts(), sink.records())
}
