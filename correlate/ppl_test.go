package correlate

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// TestSetPPLSegments changes ppl between blocks: each segment of the run
// logs the ppl-th, 2ppl-th, ... packet of the flow counted from the change,
// and the counts SetPPL returns are those of the packets before it.
func TestSetPPLSegments(t *testing.T) {
	d := &fakeDiag{socks: map[tcp.Query]tcp.Snapshot{{Local: local, Remote: remote}: established(9)}}
	sink := &fakeSink{}
	e := newEngine(t, nil, sink, d)
	seq := uint32(0)
	feed := func(n int) {
		var block []tcp.Packet
		for range n {
			seq++
			block = append(block, pkt(seq, tcp.Direction(seq%2), local, remote))
		}
		e.Block(0, block)
	}
	var want []uint32
	feed(7) // ppl 1: all 7
	for s := uint32(1); s <= 7; s++ {
		want = append(want, s)
	}
	cut1 := e.SetPPL(10)
	feed(25) // ppl 10: the 10th and 20th after the change (seq 17, 27)
	want = append(want, 17, 27)
	cut2 := e.SetPPL(3)
	feed(8) // ppl 3: the 3rd and 6th after the change (seq 35, 38)
	want = append(want, 35, 38)
	cut3 := e.SetPPL(1)
	feed(2) // ppl 1: both
	want = append(want, 41, 42)
	e.Flush()
	var got []uint32
	for _, r := range sink.records() {
		got = append(got, r.Pkt.Seq)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("logged packets (-want +got):\n%s", diff)
	}
	sum := func(a [2]uint64) uint64 { return a[0] + a[1] }
	for i, tc := range []struct {
		seg                SampleCounts
		pkts, out, sampled uint64
	}{
		{cut1, 7, 0, 7},
		{cut2.Sub(cut1), 25, 23, 2},
		{cut3.Sub(cut2), 8, 6, 2},
		{e.Sampled().Sub(cut3), 2, 0, 2},
	} {
		if sum(tc.seg.Packets) != tc.pkts || sum(tc.seg.SampledOut) != tc.out || sum(tc.seg.Sampled) != tc.sampled {
			t.Errorf("segment %d: %+v, want %d packets, %d sampled out, %d sampled", i+1, tc.seg, tc.pkts, tc.out, tc.sampled)
		}
	}
	if got := e.PPL(); got != 1 {
		t.Errorf("PPL() = %d, want 1", got)
	}
	checkConservation(t, e.Counts(), sink.records())
}

// TestSetPPLConcurrent changes ppl while two producers count the packets
// of one flow (its two directions, as two CPUs see them): every packet is
// counted once, and in every segment between two changes the flow keeps
// exactly floor(its packets / ppl).
func TestSetPPLConcurrent(t *testing.T) {
	socks := map[tcp.Query]tcp.Snapshot{{Local: local, Remote: remote}: established(1)}
	sink := &fakeSink{}
	e := newEngine(t, nil, sink, &fakeDiag{socks: socks, noCalls: true}, &fakeDiag{socks: socks, noCalls: true})
	ppls := []uint32{1, 7, 2, 10, 1, 3}
	const perSegment = 5000 // packets per producer
	const perProducer = perSegment * 6
	// Each producer may run half a segment past the next change, so that
	// the changes come while both are counting.
	var gate atomic.Uint64
	gate.Store(perSegment + perSegment/2)
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Go(func() {
			var block []tcp.Packet
			for n := range perProducer {
				for uint64(n) >= gate.Load() {
					runtime.Gosched()
				}
				block = append(block, pkt(uint32(n), tcp.Direction(p), local, remote))
				if len(block) == 8 {
					e.Block(p, block)
					block = block[:0]
				}
			}
			e.Block(p, block)
		})
	}
	var cuts []SampleCounts
	total := func() uint64 { c := e.Sampled(); return c.Packets[0] + c.Packets[1] }
	for i, ppl := range ppls[1:] {
		for total() < uint64(i+1)*2*perSegment {
			runtime.Gosched()
		}
		cuts = append(cuts, e.SetPPL(ppl))
		gate.Store(uint64(i+2)*perSegment + perSegment/2)
	}
	wg.Wait()
	e.Flush()
	cuts = append(cuts, e.Sampled())
	c := e.Counts()
	if got := c.Packets[0] + c.Packets[1]; got != 2*perProducer {
		t.Fatalf("%d packets counted, want %d", got, 2*perProducer)
	}
	checkConservation(t, c, sink.records())
	prev := SampleCounts{}
	for i, cut := range cuts {
		seg := cut.Sub(prev)
		prev = cut
		n := seg.Packets[0] + seg.Packets[1]
		out := seg.SampledOut[0] + seg.SampledOut[1]
		kept := seg.Sampled[0] + seg.Sampled[1]
		ppl := uint64(ppls[i])
		if out+kept != n || kept != n/ppl {
			t.Errorf("segment %d (ppl %d): %d packets, %d sampled out, %d kept; want floor(%d/%d) = %d kept and the rest sampled out",
				i+1, ppl, n, out, kept, n, ppl, n/ppl)
		}
		if n < perSegment {
			t.Errorf("segment %d: %d packets, want at least %d", i+1, n, perSegment)
		}
	}
}
