package exact

import (
	"sync"
	"testing"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// markSink keeps records and the last watermark.
type markSink struct {
	mu   sync.Mutex
	recs []correlate.Record
	mark int64
}

func (s *markSink) Submit(_ int, recs []correlate.Record, wm int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, recs...)
	s.mark = wm
	return true
}

func (s *markSink) Advance(_ int, wm int64) { s.mark = wm }

func newTestReader(t *testing.T) (*reader, *markSink) {
	t.Helper()
	out := &markSink{}
	e, err := correlate.NewEngine(nil, out, 1)
	if err != nil {
		t.Fatal(err)
	}
	return newReader(e, 250, 0), out
}

// inbound is a record of an established socket's inbound pure ACK,
// awaiting confirmation, with cwnd 10.
func inbound(t uint64, skb uint64, ack uint32, owned bool) *probeEvent {
	ev := &probeEvent{Kind: evRecord, Confirm: 1, TimeNs: t, Skb: skb, Id: 7, Ipver: 4, Dir: 0,
		State: tcp.StateEstablished, Sport: 5201, Dport: 40000, Seq: 100, Ack: ack, SndCwnd: 10, MssCache: 1448}
	if owned {
		ev.Owned = 1
	}
	return ev
}

// confirmation is the state TCP met for skb: cwnd.
func confirmation(t, skb uint64, ack uint32, cwnd uint32, owned bool) *probeEvent {
	ev := &probeEvent{Kind: evConfirm, TimeNs: t, Skb: skb, Id: 7, State: tcp.StateEstablished, Seq: 100, Ack: ack, SndCwnd: cwnd, MssCache: 1448}
	if owned {
		ev.Owned = 1
	}
	return ev
}

func cwnds(recs []correlate.Record) map[uint32]uint32 {
	m := map[uint32]uint32{}
	for _, r := range recs {
		m[r.Pkt.Ack] = r.Snap.Info.SndCwnd
	}
	return m
}

func TestReaderConfirms(t *testing.T) {
	r, out := newTestReader(t)
	r.event(inbound(1000, 0xa, 1, false))
	r.flush(0)
	if len(out.recs) != 0 || out.mark >= 1000 {
		t.Fatalf("a record awaiting confirmation was submitted (%d), or the watermark %d passed it", len(out.recs), out.mark)
	}
	r.event(confirmation(1500, 0xa, 1, 12, false))
	r.flush(0)
	if len(out.recs) != 1 || out.recs[0].Snap.Info.SndCwnd != 12 || out.recs[0].Staleness() != 0 {
		t.Fatalf("records %+v: want one with the confirmed cwnd 12, at the packet", out.recs)
	}
	if r.stats.confirmed != 1 || r.stats.unconfirmed != 0 || r.stats.stray != 0 {
		t.Errorf("stats %+v", r.stats)
	}
}

// TestReaderCoalesced: two records that went to the backlog and one
// confirmation for the first skb, with the second one's ACK: the kernel
// merged them, and both get its state.
func TestReaderCoalesced(t *testing.T) {
	r, out := newTestReader(t)
	r.event(inbound(1000, 0xa, 1, true))
	r.event(inbound(1010, 0xb, 2, true))
	r.event(inbound(1020, 0xc, 3, true))
	r.event(confirmation(2000, 0xa, 2, 12, true))
	r.flush(0)
	if got := cwnds(out.recs); len(got) != 2 || got[1] != 12 || got[2] != 12 {
		t.Fatalf("cwnds by ack %v: want acks 1 and 2 confirmed with 12, ack 3 still held", got)
	}
	r.event(confirmation(2100, 0xc, 3, 14, true))
	r.flush(0)
	if got := cwnds(out.recs); got[3] != 14 || r.nheld != 0 {
		t.Fatalf("cwnds %v, %d held", got, r.nheld)
	}
}

// TestReaderOutOfOrder: TCP met two segments in another order than tc saw
// them; each gets its own confirmation, and a confirmation without a
// record is stray.
func TestReaderOutOfOrder(t *testing.T) {
	r, out := newTestReader(t)
	r.event(inbound(1000, 0xa, 1, false))
	r.event(inbound(1010, 0xb, 2, false))
	r.event(confirmation(1500, 0xb, 2, 20, false))
	r.event(confirmation(1600, 0xa, 1, 21, false))
	r.event(confirmation(1700, 0xf, 9, 22, false))
	r.flush(0)
	if got := cwnds(out.recs); got[1] != 21 || got[2] != 20 {
		t.Fatalf("cwnds by ack %v: want 1 -> 21, 2 -> 20", got)
	}
	if r.stats.stray != 1 {
		t.Errorf("%d stray confirmations, want 1", r.stats.stray)
	}
}

// TestReaderExpire: a record whose confirmation never comes, and one
// whose skb address a later record reuses, are logged with the state tc
// read once they waited holdFor; the later one gets the confirmation.
func TestReaderExpire(t *testing.T) {
	r, out := newTestReader(t)
	r.event(inbound(1000, 0xa, 1, false))
	r.event(inbound(2000, 0xa, 2, false))
	r.event(confirmation(2500, 0xa, 2, 30, false))
	r.flush(0)
	if got := cwnds(out.recs); len(got) != 1 || got[2] != 30 {
		t.Fatalf("cwnds %v: want the later record confirmed", got)
	}
	if out.mark >= 1000 {
		t.Errorf("watermark %d passed the record still held at 1000", out.mark)
	}
	r.expire(1000 + 1)
	r.flush(0)
	if got := cwnds(out.recs); got[1] != 10 || r.stats.unconfirmed != 1 || r.nheld != 0 {
		t.Fatalf("cwnds %v, unconfirmed %d, held %d: want the old record logged as tc read it", got, r.stats.unconfirmed, r.nheld)
	}
	if out.mark < 2000 {
		t.Errorf("watermark %d after everything was logged, want the newest record time 2000", out.mark)
	}
}

// TestReaderOffsetBack checks that after the wall clock steps back (the
// offset to Unix time shrinks) the watermark follows the records' new
// times rather than staying at the newest time read before the step.
func TestReaderOffsetBack(t *testing.T) {
	r, out := newTestReader(t)
	ev := inbound(5_000_000_000, 0xa, 1, false)
	ev.Confirm = 0
	r.event(ev)
	r.flush(0)
	if out.mark != 5_000_000_000 {
		t.Fatalf("watermark %d, want the record's time", out.mark)
	}
	r.setOffset(r.offset - 2_000_000_000) // the clock stepped back 2 s
	r.flush(3_500_000_000)
	if out.mark != 3_500_000_000 {
		t.Errorf("watermark %d after a step back, want the idle time 3.5 s (not the old newest 5 s)", out.mark)
	}
	r.setOffset(r.offset + 1000) // slewing: nothing forgotten
	r.event(ev)
	r.flush(0)
	if out.mark != 3_000_001_000 {
		t.Errorf("watermark %d, want the record's new time", out.mark)
	}
}
