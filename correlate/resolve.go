package correlate

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// StateReader reads the state of sockets named by their 4-tuples, after
// their packets passed; *diag.Client implements it. out has one entry per
// query. Each producer has its own, so it need not be safe for concurrent
// use.
type StateReader interface {
	Lookup(qs []tcp.Query, out []tcp.Snapshot) error
}

// ResolveStats are a Resolver's counters.
type ResolveStats struct {
	Lookups      uint64 // sockets looked up
	Batches      uint64 // Lookup calls (one per ring block with sampled packets)
	LookupErrors uint64 // Lookup calls that failed; their packets count as malloc skips
	HandoffFull  uint64 // sampled packets skipped (malloc) because too many waited for lookups
	LastErrMsg   string // the most recent lookup error, if any
}

// Resolver gives packets that come without state their sockets' state,
// read afterwards through a StateReader per producer: the state source of
// diag mode. It takes ring blocks (Block, Idle: it is a capture.Handler),
// has the Engine count and sample them, and looks the sampled packets'
// sockets up on a goroutine per producer, so that the capture is never
// held up by a lookup; then it has the Engine settle each packet from its
// socket's state and submits the records.
type Resolver struct {
	eng     *Engine
	ifIndex uint32
	workers []worker
	wg      sync.WaitGroup // lookup goroutines
	closed  atomic.Bool

	lookups, batches, lookupErrs, handoffFull atomic.Uint64
	lastErr                                   atomic.Pointer[string]
}

// A worker is one producer's resolver, split in two. Its capture side
// (Block, Idle) runs on the capture worker's goroutine: it counts, samples
// and hands the sampled packets over. Its lookup side runs on a goroutine of
// its own: reading a socket's tcp_info takes the socket's lock, which the
// application holds while it sends, so a lookup can sleep for milliseconds;
// the ring must be drained meanwhile. Sampled packets that arrive while a
// lookup sleeps are grouped by socket with the next ones: one lookup serves
// all of them.
type worker struct {
	id     int
	reader StateReader

	// capture side
	sampled []sampledPkt

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
	_       [64]byte
}

// maxPending bounds the sampled packets waiting for lookups, per worker.
// Beyond it sampled packets are skipped as malloc.
const maxPending = 1 << 16

// NewResolver returns a Resolver for eng with one StateReader per producer
// of eng, and starts the lookup goroutines; Close stops them. ifIndex is
// the captured interface's index, sent with every lookup so that sockets
// bound to it (link-local IPv6) are found; 0 means none.
func NewResolver(eng *Engine, readers []StateReader, ifIndex uint32) (*Resolver, error) {
	if len(readers) != eng.Producers() {
		return nil, fmt.Errorf("correlate: %d state readers for %d producers", len(readers), eng.Producers())
	}
	for i, rd := range readers {
		if rd == nil {
			return nil, fmt.Errorf("correlate: nil state reader for producer %d", i)
		}
	}
	if len(readers) == 0 {
		return nil, errors.New("correlate: no state readers")
	}
	r := &Resolver{eng: eng, ifIndex: ifIndex, workers: make([]worker, len(readers))}
	for i, rd := range readers {
		w := &r.workers[i]
		w.id, w.reader = i, rd
		w.cond.L = &w.mu
		w.wake = make(chan struct{}, 1)
		w.stop = make(chan struct{})
		w.slot = make(map[*flow]int32)
		r.wg.Go(func() { r.lookupLoop(w) })
	}
	return r, nil
}

// Block counts and samples one ring block of producer wi (capture.Handler:
// every packet wi delivers later has Time >= safe) and hands the sampled
// packets to the worker's lookup side. It never waits for a lookup.
func (r *Resolver) Block(wi int, pkts []tcp.Packet, safe int64) {
	w := &r.workers[wi]
	w.sampled = r.eng.sample(wi, pkts, w.sampled[:0])

	w.mu.Lock()
	room := maxPending - len(w.pending)
	take := min(room, len(w.sampled))
	w.pending = append(w.pending, w.sampled[:take]...)
	// The latest, not the highest: after a backward step of the wall
	// clock the marks go back with the packets (the sink keeps its own
	// highest by its timeline).
	w.mark = safe
	w.handed++
	w.mu.Unlock()
	if n := len(w.sampled) - take; n > 0 {
		r.eng.drop(wi, w.sampled[take:])
		r.handoffFull.Add(uint64(n))
	}
	clear(w.sampled) // drop flow pointers
	w.poke()
}

// Idle lets producer wi's watermark move on, after the packets already
// handed over (capture.Handler).
func (r *Resolver) Idle(wi int, safe int64) {
	w := &r.workers[wi]
	w.mu.Lock()
	w.mark = safe
	w.handed++
	w.mu.Unlock()
	w.poke()
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// lookupLoop is a worker's lookup side: it takes what the capture side
// handed over, looks the sockets up and submits the records.
func (r *Resolver) lookupLoop(w *worker) {
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
				r.process(w, mark)
				clear(w.batch)
			} else {
				r.eng.Advance(w.id, mark)
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

// process looks up the sockets of w.batch, one lookup per socket, has the
// engine settle each packet and submits the records.
func (r *Resolver) process(w *worker, mark int64) {
	w.queries, w.qflows, w.qidx, w.recs = w.queries[:0], w.qflows[:0], w.qidx[:0], w.recs[:0]
	clear(w.slot)
	for i := range w.batch {
		f := w.batch[i].flow
		q, ok := w.slot[f]
		if !ok {
			q = int32(len(w.queries))
			w.slot[f] = q
			w.queries = append(w.queries, tcp.Query{Local: f.key.local, Remote: f.key.remote, IfIndex: r.ifIndex})
			w.qflows = append(w.qflows, f)
		}
		w.qidx = append(w.qidx, q)
	}
	// Records point to their snapshot until the writer is done with them:
	// each lookup gets fresh snapshots (an allocation per lookup, not per packet).
	snaps := make([]tcp.Snapshot, len(w.queries))
	r.batches.Add(1)
	r.lookups.Add(uint64(len(w.queries)))
	if err := w.reader.Lookup(w.queries, snaps); err != nil {
		r.lookupErrs.Add(1)
		msg := err.Error()
		r.lastErr.Store(&msg)
		r.eng.drop(w.id, w.batch)
		r.eng.Advance(w.id, mark)
		return
	}
	for qi := range snaps {
		r.eng.observe(w.qflows[qi], &snaps[qi])
	}
	var t tally
	for i := range w.batch {
		w.recs = settle(&t, &w.batch[i].pkt, &snaps[w.qidx[i]], w.recs)
	}
	r.eng.prods[w.id].publish(&t)
	r.eng.Submit(w.id, w.recs, mark)
	clear(w.recs) // drop snapshot pointers
}

// Flush waits until every packet handed to Block so far has been looked up
// and its record submitted.
func (r *Resolver) Flush() {
	for i := range r.workers {
		w := &r.workers[i]
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
// has stopped calling Block and Idle; the engine's Counts are final
// afterwards. It is idempotent.
func (r *Resolver) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	for i := range r.workers {
		w := &r.workers[i]
		w.mu.Lock()
		w.closing = true
		w.mu.Unlock()
		close(w.stop)
	}
	r.wg.Wait()
	return nil
}

// Stats returns the resolver's counters.
func (r *Resolver) Stats() ResolveStats {
	s := ResolveStats{
		Lookups:      r.lookups.Load(),
		Batches:      r.batches.Load(),
		LookupErrors: r.lookupErrs.Load(),
		HandoffFull:  r.handoffFull.Load(),
	}
	if p := r.lastErr.Load(); p != nil {
		s.LastErrMsg = *p
	}
	return s
}
