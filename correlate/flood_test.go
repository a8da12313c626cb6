package correlate

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// spoofed returns the i-th 4-tuple of a flood: a random peer address and
// port, to the local port, with no socket.
func spoofed(rng *rand.Rand) netip.AddrPort {
	a := [4]byte{100, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
	return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(1024+rng.IntN(60000)))
}

// recordsOf counts the records of the flow local<->r.
func recordsOf(recs []Record, r netip.AddrPort) int {
	n := 0
	for i := range recs {
		if recs[i].Pkt.Remote() == r {
			n++
		}
	}
	return n
}

// TestFloodKeepsEstablishedFlows floods the table with ACKs from spoofed
// 4-tuples (no socket), far more than it holds, while an established flow
// sends, and a new connection starts halfway: both are logged throughout
// (every ppl-th packet), the table stays within its bounds and the flood
// refuses no packet (its flows are evicted to make room).
func TestFloodKeepsEstablishedFlows(t *testing.T) {
	for _, ppl := range []uint32{1, 4} {
		rng := rand.New(rand.NewPCG(3, uint64(ppl)))
		old := remote
		late := netip.MustParseAddrPort("10.0.0.3:40000")
		d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{
			{Local: local, Remote: old}:  established(1),
			{Local: local, Remote: late}: established(2),
		}, noCalls: true}
		sink := &fakeSink{}
		cfg := &Config{PPL: ppl, MaxFlows: 16, MaxUnverifiedFlows: 512}
		e := newEngine(t, cfg, sink, d)
		seq := uint32(0)
		next := func(dir tcp.Direction, r netip.AddrPort) tcp.Packet {
			seq++
			p := pkt(seq, dir, local, r)
			p.Flags = tcp.FlagACK
			return p
		}
		var sent [2]int
		const blocks, flood = 100, 250
		for b := range blocks {
			var block []tcp.Packet
			for i := range flood {
				block = append(block, next(tcp.DirIn, spoofed(rng)))
				if i%50 == 0 {
					block = append(block, next(tcp.DirOut, old))
					sent[0]++
					if b >= blocks/2 {
						block = append(block, next(tcp.DirIn, late))
						sent[1]++
					}
				}
			}
			e.Block(0, block)
			if b%10 == 9 {
				e.Flush()
				if s := e.Stats(); s.ActiveFlows > 16+512 || s.UnverifiedFlows > 512 {
					t.Fatalf("ppl %d: %d flows, %d unverified: beyond the bounds", ppl, s.ActiveFlows, s.UnverifiedFlows)
				}
			}
		}
		e.Flush()
		recs := sink.records()
		for i, r := range []netip.AddrPort{old, late} {
			if got, want := recordsOf(recs, r), sent[i]/int(ppl); got != want {
				t.Errorf("ppl %d: flow %v: %d records of %d packets, want %d", ppl, r, got, sent[i], want)
			}
		}
		s := e.Stats()
		if s.FlowTableFull != 0 || s.FlowsEvicted == 0 {
			t.Errorf("ppl %d: %d packets refused, %d flows evicted; want none refused, the flood's flows evicted", ppl, s.FlowTableFull, s.FlowsEvicted)
		}
		if s.ActiveFlows-s.UnverifiedFlows != 2 {
			t.Errorf("ppl %d: %d flows in the main budget, want the 2 established", ppl, s.ActiveFlows-s.UnverifiedFlows)
		}
		c := e.Counts()
		if ppl == 1 && c.SkipInPCB[0] != blocks*flood {
			t.Errorf("ppl 1: %d inpcb skips, want the %d flood packets", c.SkipInPCB[0], blocks*flood)
		}
		checkConservation(t, c, recs)
	}
}

// TestFloodStated is the flood in exact mode: packets come with their
// state, so a flood's flow is known socketless at its first packet.
func TestFloodStated(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	sink := &fakeSink{}
	e, err := NewEngine(&Config{MaxFlows: 16, MaxUnverifiedFlows: 512}, sink, 1)
	if err != nil {
		t.Fatal(err)
	}
	est, none := established(1), tcp.Snapshot{Status: tcp.NoSocket}
	var tl tally
	var recs []Record
	logged := 0
	for i := range 50000 {
		p := pkt(uint32(i), tcp.DirIn, local, spoofed(rng))
		snap := &none
		if i%100 == 0 {
			p = pkt(uint32(i), tcp.DirOut, local, remote)
			snap = &est
			logged++
		}
		tl.add(cPackets, int(p.Dir))
		recs = e.Stated(0, &p, snap, recs[:0])
		e.Submit(0, recs, p.Time)
	}
	e.prods[0].publish(&tl)
	if got := recordsOf(sink.records(), remote); got != logged {
		t.Errorf("%d records of the established flow, want %d", got, logged)
	}
	s := e.Stats()
	if s.FlowTableFull != 0 || s.ActiveFlows > 16+512 || s.ActiveFlows-s.UnverifiedFlows != 1 {
		t.Errorf("stats %+v", s)
	}
	// Socketless flows are gone: the next prune removes them all.
	e.Prune()
	if s := e.Stats(); s.ActiveFlows != 1 {
		t.Errorf("after prune: %d flows, want the established one", s.ActiveFlows)
	}
	checkConservation(t, e.Counts(), sink.records())
}

// TestFlowTableFullCounted fills every shard's unverified budget with flows
// that keep having packets (never looked up, at ppl 1000): a new flow then
// finds none to evict, and its packet is refused, counted as flow table
// full and as a malloc skip. Once those flows had no packet since they were
// last looked at, new flows evict them.
func TestFlowTableFullCounted(t *testing.T) {
	sink := &fakeSink{}
	e := newEngine(t, &Config{PPL: 1000, MaxUnverifiedFlows: 512}, sink, &fakeDiag{})
	// 8 flows per shard (the budget), and one more per shard.
	var perShard [1 << shardBits][]netip.AddrPort
	for i := 0; ; i++ {
		r := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), uint16(1024+i))
		k := flowKey{local, r}
		s := k.shard()
		if len(perShard[s]) < minShardUnv+2 {
			perShard[s] = append(perShard[s], r)
		}
		done := true
		for _, l := range perShard {
			done = done && len(l) == minShardUnv+2
		}
		if done {
			break
		}
	}
	seq := uint32(0)
	block := func(n int, from int) []tcp.Packet {
		var b []tcp.Packet
		for _, l := range perShard {
			for _, r := range l[from : from+n] {
				seq++
				b = append(b, pkt(seq, tcp.DirIn, local, r))
			}
		}
		return b
	}
	e.Block(0, block(minShardUnv, 0)) // fills the budget
	e.Block(0, block(minShardUnv, 0)) // every one had a packet since
	e.Block(0, block(1, minShardUnv)) // no room
	e.Flush()
	n := uint64(len(perShard))
	s := e.Stats()
	if s.FlowTableFull != n || s.FlowsEvicted != 0 {
		t.Errorf("%d refused, %d evicted; want %d refused, none evicted", s.FlowTableFull, s.FlowsEvicted, n)
	}
	if c := e.Counts(); c.SkipMalloc[0] != n {
		t.Errorf("%d malloc skips, want %d", c.SkipMalloc[0], n)
	}
	// No packet since they were last looked at: a new flow evicts one.
	e.Block(0, block(1, minShardUnv+1))
	e.Flush()
	if s := e.Stats(); s.FlowTableFull != n || s.FlowsEvicted != n {
		t.Errorf("then %d refused, %d evicted; want %d and %d", s.FlowTableFull, s.FlowsEvicted, n, n)
	}
	checkConservation(t, e.Counts(), sink.records())
}

// TestUnverifiedFlowsShortLife checks that flows never found established
// leave after the closed timeout without a packet, socketless ones at the
// next prune, while an established flow stays until the idle timeout.
func TestUnverifiedFlowsShortLife(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{{Local: local, Remote: remote}: established(1)}}
	sink := &fakeSink{}
	var clk fakeClock
	e := newEngine(t, &Config{PPL: 1, IdleTimeout: time.Minute, ClosedTimeout: 2 * time.Second, Clock: clk.now}, sink, d)
	now := time.Now()
	var b []tcp.Packet
	for i := range 100 {
		p := pkt(uint32(i), tcp.DirIn, local, spoofed(rng))
		p.Time = now.UnixNano()
		b = append(b, p)
	}
	p := pkt(1000, tcp.DirOut, local, remote)
	p.Time = now.Add(-10 * time.Second).UnixNano()
	b = append(b, p)
	clk.set(now.Add(-10 * time.Second))
	e.Block(0, b)
	e.Flush()
	clk.set(now)
	e.Prune()
	if s := e.Stats(); s.ActiveFlows != 1 || s.UnverifiedFlows != 0 {
		t.Errorf("after prune: %+v; want the socketless flows gone", s.Stats)
	}

	// Never looked up (ppl 1000): unverified, gone after the closed timeout.
	e2 := newEngine(t, &Config{PPL: 1000, ClosedTimeout: 2 * time.Second, Clock: clk.now}, &fakeSink{}, &fakeDiag{})
	b = b[:0]
	for i := range 100 {
		p := pkt(uint32(i), tcp.DirIn, local, spoofed(rng))
		p.Time = now.Add(-time.Second).UnixNano()
		b = append(b, p)
	}
	clk.set(now.Add(-time.Second))
	e2.Block(0, b)
	e2.Flush()
	clk.set(now)
	e2.Prune()
	if s := e2.Stats(); s.ActiveFlows != 100 {
		t.Errorf("%d flows after 1s, want 100", s.ActiveFlows)
	}
	clk.set(now.Add(2 * time.Second))
	e2.Prune()
	if s := e2.Stats(); s.ActiveFlows != 0 || s.FlowsPruned != 100 {
		t.Errorf("after the closed timeout: %+v, want all pruned", s.Stats)
	}
}

// TestFlowListBound checks that the established flows left out of the flow
// list (Config.MaxFlowList) are counted: established minus listed.
func TestFlowListBound(t *testing.T) {
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{}}
	sink := &fakeSink{}
	e := newEngine(t, &Config{MaxFlowList: 10}, sink, d)
	now := time.Now()
	var b []tcp.Packet
	for i := range 30 {
		r := netip.AddrPortFrom(remote.Addr(), uint16(6000+i))
		d.socks[tcp.Query{Local: local, Remote: r}] = established(uint64(i + 1))
		p := pkt(uint32(i), tcp.DirOut, local, r)
		p.Time = now.UnixNano()
		b = append(b, p)
	}
	e.Block(0, b)
	e.Flush()
	clear(d.socks) // the sockets close: the next lookups find none
	e.Block(0, b)
	e.Flush()
	e.Prune()
	s := e.Stats()
	listed := len(e.Flows())
	if listed != 10 || s.FlowListDropped != uint64(30-listed) {
		t.Errorf("%d listed, %d left out; want 10 and %d", listed, s.FlowListDropped, 30-listed)
	}
	checkConservation(t, e.Counts(), sink.records())
}

// BenchmarkFlowList measures building the disable line's flow list from a
// full retired list (DefaultMaxFlowList) and as many live flows: its
// allocations are the disable line's peak memory in the engine.
func BenchmarkFlowList(b *testing.B) {
	const n = DefaultMaxFlowList
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{}}
	e := newEngine(b, &Config{MaxFlows: 4 * n}, &fakeSink{}, d)
	now := time.Now()
	batch := func(base int) []tcp.Packet {
		var ps []tcp.Packet
		for i := range n {
			j := base + i
			r := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(j >> 16), byte(j >> 8)}), uint16(j))
			d.socks[tcp.Query{Local: local, Remote: r}] = established(uint64(j + 1))
			p := pkt(uint32(j), tcp.DirOut, local, r)
			p.Time = now.UnixNano()
			ps = append(ps, p)
		}
		return ps
	}
	// In blocks, each looked up before the next: unverified flows have a
	// budget of their own.
	feed := func(ps []tcp.Packet) {
		for c := range slices.Chunk(ps, 1024) {
			e.Block(0, c)
			e.Flush()
		}
	}
	retire := batch(0)
	feed(retire)
	clear(d.socks) // these close: the next lookups find none, and they retire
	feed(retire)
	e.Prune()
	feed(batch(n))
	if got := len(e.Flows()); got != 2*n {
		b.Fatalf("%d flows listed, want %d", got, 2*n)
	}
	b.ReportAllocs()
	for b.Loop() {
		e.Flows()
	}
}
