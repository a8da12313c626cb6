package exact

import (
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/monoclock"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// Kinds of event (enum in bpf/probe.bpf.c).
const (
	evRecord  = 0 // a segment at tc, with its socket's state
	evConfirm = 1 // the state TCP met for an skb (tcp_probe)
)

const (
	// holdFor is how long an inbound record waits for its confirmation
	// before it is logged with the state tc read (in packet time, ns).
	holdFor = 10_000_000
	// maxHeld bounds the records waiting for confirmation; past it the
	// oldest are logged with the state tc read.
	maxHeld = 1 << 16
	// stepTolerance is how far the wall clock may move from the offset
	// before followClock measures it again: far below a step a reader of
	// the log would notice, and above what slewing does between polls
	// (NTP slews at most 500 ppm: 50 µs in 100 ms, so at most ten
	// re-measurements a second of about 1 µs each).
	stepTolerance = int64(50 * time.Microsecond)
)

// reader turns the programs' events, in ring buffer order, into records
// for the engine, in batches with a watermark. An inbound record of an
// established socket is held until the confirmation of its skb arrives:
// then it, and the records of the segments the kernel coalesced into that
// skb, get the state TCP met (see bpf/probe.bpf.c). A record whose
// confirmation does not come (the skb was processed outside
// tcp_rcv_established, dropped, or its confirmation found the ring full)
// is logged after holdFor with the state tc read. It is used by one
// goroutine.
type reader struct {
	eng    *correlate.Engine
	hz     uint32
	offset int64 // Unix time - monotonic time

	recs   []correlate.Record // the batch being built
	slab   []tcp.Snapshot     // snapshots for records; each batch of them is fresh
	newest int64              // the newest packet time read

	held  map[uint64][]heldRec // per socket id, in arrival order
	order []heldRef            // every held record, in arrival order
	nheld int
	seq   uint64

	stats readerStats
}

// readerStats are the reader's counts; Source publishes them.
type readerStats struct {
	read        [2]uint64 // records read, per direction
	confirmed   uint64    // records given the state TCP met
	unconfirmed uint64    // records logged with the state tc read, no confirmation came
	stray       uint64    // confirmations that matched no held record
}

type heldRec struct {
	n     uint64 // arrival number
	pkt   tcp.Packet
	snap  *tcp.Snapshot
	skb   uint64
	owned bool // the skb went to the socket's backlog
}

type heldRef struct {
	id, n uint64
	time  int64
}

func newReader(e *correlate.Engine, hz uint32, offset int64) *reader {
	return &reader{eng: e, hz: hz, offset: offset, recs: make([]correlate.Record, 0, batchLen), held: map[uint64][]heldRec{}}
}

// snapshot returns fresh memory for one record's snapshot: records point
// to their snapshots until the writer is done with them.
func (r *reader) snapshot() *tcp.Snapshot {
	if len(r.slab) == 0 {
		r.slab = make([]tcp.Snapshot, batchLen)
	}
	s := &r.slab[0]
	r.slab = r.slab[1:]
	return s
}

// event takes one event from the ring buffer.
func (r *reader) event(ev *probeEvent) {
	if ev.Kind == evConfirm {
		r.confirm(ev)
		return
	}
	snap := r.snapshot()
	var p tcp.Packet
	decode(ev, r.offset, r.hz, &p, snap)
	r.newest = max(r.newest, p.Time)
	r.stats.read[p.Dir]++
	if ev.Confirm == 0 {
		r.log(&p, snap)
		return
	}
	if r.nheld >= maxHeld {
		r.releaseOldest()
	}
	r.seq++
	r.held[ev.Id] = append(r.held[ev.Id], heldRec{r.seq, p, snap, ev.Skb, ev.Owned != 0})
	r.order = append(r.order, heldRef{ev.Id, r.seq, p.Time})
	r.nheld++
}

// log adds a record to the batch.
func (r *reader) log(p *tcp.Packet, s *tcp.Snapshot) {
	r.recs = r.eng.Stated(0, p, s, r.recs)
}

// confirm gives the state TCP met to the held record of the confirmed skb
// and, when TCP processed it from the socket's backlog, to the records of
// the segments the kernel coalesced into it there: the backlogged records
// right after it, up to the one whose ACK and sequence end the coalesced
// skb carries. Records held before it stay held: segments of one socket
// that reached the host on two CPUs can reach TCP in another order than
// tc saw them. An address can be a recent skb's and an older, freed one's:
// the most recent record with it is the one confirmed.
func (r *reader) confirm(ev *probeEvent) {
	q := r.held[ev.Id]
	k := len(q) - 1
	for k >= 0 && q[k].skb != ev.Skb {
		k--
	}
	if k < 0 {
		r.stats.stray++
		return
	}
	end := ev.Seq + ev.PayloadLen
	last := k // the last record the coalesced skb holds
	if ev.Owned != 0 && q[k].owned {
		for m := k; m < len(q) && q[m].owned; m++ {
			h := &q[m].pkt
			if !seqLE(ev.Seq, h.Seq) || !seqLE(h.Seq+h.PayloadLen, end) {
				break
			}
			if h.Ack == ev.Ack && h.Seq+h.PayloadLen == end {
				last = m
				break
			}
		}
	}
	var p tcp.Packet
	var met tcp.Snapshot
	decode(ev, r.offset, r.hz, &p, &met)
	for m := k; m <= last; m++ {
		s := q[m].snap
		t := s.Time
		*s = met
		s.Time = t // the state at the packet, as TCP met it
		r.stats.confirmed++
		r.log(&q[m].pkt, s)
	}
	r.nheld -= last + 1 - k
	q = append(q[:k], q[last+1:]...)
	if len(q) == 0 {
		delete(r.held, ev.Id)
	} else {
		r.held[ev.Id] = q
	}
}

// seqLE reports whether a <= b in TCP sequence space.
func seqLE(a, b uint32) bool { return int32(b-a) >= 0 }

// expire logs the held records older than cutoff (packet time) with the
// state tc read.
func (r *reader) expire(cutoff int64) {
	for len(r.order) > 0 && r.order[0].time < cutoff {
		r.releaseOldest()
	}
}

// releaseOldest logs the oldest held record, if it is still held.
func (r *reader) releaseOldest() {
	for len(r.order) > 0 {
		ref := r.order[0]
		r.order = r.order[1:]
		q := r.held[ref.id]
		if len(q) == 0 || q[0].n != ref.n {
			// Confirmed meanwhile. (Refs leave in arrival order, so
			// every older record of the socket has left already.)
			continue
		}
		r.stats.unconfirmed++
		r.log(&q[0].pkt, q[0].snap)
		r.nheld--
		if len(q) == 1 {
			delete(r.held, ref.id)
		} else {
			r.held[ref.id] = q[1:]
		}
		return
	}
}

// oldestHeld is the packet time of the oldest record still held, and
// whether there is one.
func (r *reader) oldestHeld() (int64, bool) {
	for len(r.order) > 0 {
		ref := r.order[0]
		if q := r.held[ref.id]; len(q) > 0 && q[0].n == ref.n {
			return ref.time, true
		}
		r.order = r.order[1:] // confirmed meanwhile
	}
	return 0, false
}

// releaseAll logs every held record with the state tc read.
func (r *reader) releaseAll() {
	for r.nheld > 0 {
		r.releaseOldest()
	}
	r.order = r.order[:0]
}

// setOffset changes the offset from the programs' monotonic times to Unix
// time, as the wall clock moved. After a backward step the newest time
// read is forgotten: the records read from now on are older, and a
// watermark held at it would hold them (the writer orders across the
// step by its timeline, not by times).
func (r *reader) setOffset(o int64) {
	if o < r.offset-int64(time.Millisecond) {
		r.newest = 0
	}
	r.offset = o
}

// followClock follows a step of the wall clock: if the clock has moved
// from the offset by more than stepTolerance, the offset is measured
// again, so records read from now on are in the clock's new frame. The
// Run loop calls it each time it polls and every batch, so lines follow a
// step within a poll or a batch; the once-a-second refresh then only
// follows slewing.
func (r *reader) followClock() {
	if d := monoclock.Drift(r.offset); d > stepTolerance || d < -stepTolerance {
		r.setOffset(monoclock.Offset())
	}
}

// flush submits the batch. Its watermark is the newest time read, held
// back to just before the oldest record still waiting: every record
// submitted later is no older than that. idle, if later, is a time before
// which no record can still arrive.
func (r *reader) flush(idle int64) {
	mark := max(r.newest, idle)
	if t, ok := r.oldestHeld(); ok && t-1 < mark {
		mark = t - 1
	}
	r.eng.Submit(0, r.recs, mark)
	clear(r.recs) // drop snapshot pointers
	r.recs = r.recs[:0]
}
