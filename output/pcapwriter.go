package output

import (
	"fmt"
	"math"
	"sort"
	"sync/atomic"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// PcapStats are the counters of a Writer's pcapng file (WriterConfig.Pcap).
// Once the Writer is closed: without PcapConfig.All, Packets + Lost =
// records written (or lost) to the log; with All, Packets + Lost =
// packets submitted - Dropped + Unmatched.
type PcapStats struct {
	Packets     uint64 // packet blocks in the file
	Stated      uint64 // of those, blocks of logged packets (with a record's state)
	Bytes       uint64 // bytes written, section and interface blocks included
	Dropped     uint64 // packets SubmitPackets refused (queue full, writer closed): not in the file
	Held        int    // packets held back for ordering (All)
	Forced      uint64 // packets written before the watermarks allowed (All: MaxHeld reached)
	Late        uint64 // packets written after a packet with a later time (All)
	Unmatched   uint64 // records whose packet was not among the submitted packets of its time (All): written alone
	WriteErrors uint64 // failed writes
	Lost        uint64 // packet blocks formatted but not in the file because a write failed
}

// pcapState is a Writer's pcapng side. The fields below the counters are
// owned by the writer goroutine.
type pcapState struct {
	p   *Pcap
	all bool

	// All: the queue of SubmitPackets and the producers' watermarks.
	reserved           atomic.Uint64 // batches (high 32 bits) and packets queued, as Writer.reserved
	queue              chan *batch
	queueLen, queueMax int
	marks              []workerMark

	packets, stated, dropped, writeErrors, lost, unmatched atomic.Uint64
	forced, late                                           atomic.Uint64
	heldN                                                  atomic.Int64
	err                                                    atomic.Pointer[error]

	buf     []byte
	ends    []int  // end offset in buf of each packet block
	states  []bool // whether each packet block in buf has a record's state
	warned  bool
	started bool   // the Writer started (the file has its section and interface blocks)
	bytes0  uint64 // the file's bytes before this Writer (WriterConfig.KeepPcap)

	// All: the merge of submitted packets (records with a nil Snap) and
	// of the records the log released (pend), in packet-time order.
	merge  *merge
	cur    []int64
	pend   []correlate.Record
	group  []pcapEntry // released entries of one packet time, not yet written
	emitFn func(*correlate.Record)
}

// pcapEntry is a released entry of the pcap merge: a submitted packet or
// a record.
type pcapEntry struct {
	rec    correlate.Record
	packet bool // a submitted packet (Snap nil until a record is placed on it)
	done   bool // a packet given its record, or a record placed on its packet
}

func newPcapState(w *Writer, p *Pcap, workers int) *pcapState {
	ps := &pcapState{p: p, all: p.cfg.All, buf: make([]byte, 0, flushSize+64<<10), bytes0: p.sink.bytes.Load()}
	if !ps.all {
		return ps
	}
	ps.queueLen = min(p.cfg.QueueLen, 1<<31-1)
	if ps.queueLen <= 0 {
		ps.queueLen = DefaultQueueLen
	}
	ps.queueMax = min(p.cfg.QueuePackets, 1<<31-1)
	if ps.queueMax <= 0 {
		ps.queueMax = DefaultQueueRecords
	}
	held := p.cfg.MaxHeld
	if held <= 0 {
		held = 2 * DefaultMaxHeld
	}
	ps.queue = make(chan *batch, ps.queueLen)
	ps.marks = make([]workerMark, workers)
	for i := range ps.marks {
		ps.marks[i].wm.Store(math.MinInt64)
	}
	ps.cur = make([]int64, 2*workers)
	ps.merge = newMerge(w.delay, held)
	ps.emitFn = w.pcapEmit
	return ps
}

// SubmitPackets hands the writer captured packets of producer worker for
// the pcapng file, when it was opened with PcapConfig.All: every packet,
// logged or not (the ones that become records are written once, with their
// state). It sets the producer's packet watermark: every packet it submits
// later has Time >= watermark. It never blocks and does not allocate once
// warmed up: when the bounded queue is full (or the writer is closed) the
// packets are not taken, and counted in PcapStats.Dropped, but the
// watermark moves on all the same. pkts may be reused when it returns.
// Without All it does nothing and returns false.
func (w *Writer) SubmitPackets(worker int, pkts []tcp.Packet, watermark int64) bool {
	ps := w.pcap
	if ps == nil || !ps.all {
		return false
	}
	w.active.Add(1)
	defer w.active.Add(-1)
	if w.closed.Load() {
		ps.dropped.Add(uint64(len(pkts)))
		return false
	}
	ok := true
	now := int64(0)
	if w.timeline.Stepped() {
		now = w.now()
	}
	if n := len(pkts); n > 0 {
		nb := (n + w.batchCap - 1) / w.batchCap
		if !reserve(&ps.reserved, nb, n, ps.queueLen, ps.queueMax) {
			ps.dropped.Add(uint64(n))
			ok = false
		} else {
			for len(pkts) > 0 {
				k := min(len(pkts), w.batchCap)
				b := w.getBatch(k)
				b.recs = b.recs[:k]
				for i := range k {
					b.recs[i] = correlate.Record{Pkt: pkts[i]}
				}
				b.setKeys(w.timeline, now)
				pkts = pkts[k:]
				ps.queue <- b // never blocks: reserved counts it
			}
		}
	}
	if setMarkIn(ps.marks, worker, w.keyOf(watermark)) {
		w.poke()
	}
	return ok
}

// AdvancePackets sets producer worker's packet watermark without packets
// (see SubmitPackets), for a producer that is idle.
func (w *Writer) AdvancePackets(worker int, watermark int64) {
	ps := w.pcap
	if ps == nil || !ps.all {
		return
	}
	w.active.Add(1)
	defer w.active.Add(-1)
	if w.closed.Load() {
		return
	}
	if setMarkIn(ps.marks, worker, w.keyOf(watermark)) {
		w.poke()
	}
}

// pcapQueue is the queue of SubmitPackets, nil without All (a nil channel
// is never ready in the writer's select).
func (w *Writer) pcapQueue() chan *batch {
	if w.pcap == nil {
		return nil
	}
	return w.pcap.queue
}

// pcapAccept takes a batch of submitted packets into the pcap merge.
func (w *Writer) pcapAccept(b *batch) {
	ps := w.pcap
	ps.reserved.Add(^(uint64(1)<<32 | uint64(len(b.recs))) + 1)
	if len(b.recs) == 0 {
		w.putBatch(b)
		return
	}
	ps.merge.add(b)
}

// pcapRecord takes a record the log released: written at once, or, with
// All, into the pcap merge to meet its packet.
func (w *Writer) pcapRecord(r *correlate.Record) {
	ps := w.pcap
	if ps.all {
		ps.pend = append(ps.pend, *r)
		return
	}
	w.appendPacket(r)
}

// pcapStep releases what the watermarks allow from the pcap merge (All):
// the submitted packets and the records the log released in this step.
// It runs after the log's release, with w.cur holding the record
// watermarks it used.
func (w *Writer) pcapStep(drain bool) {
	ps := w.pcap
	// As in step: load the packet watermarks, then take every batch queued
	// before them.
	n := len(ps.marks)
	for i := range ps.marks {
		ps.cur[i] = ps.marks[i].wm.Load()
	}
	copy(ps.cur[n:], w.cur)
	for k := len(ps.queue); k > 0; k-- {
		w.pcapAccept(<-ps.queue)
	}
	now := int64(0)
	if w.timeline.Stepped() {
		now = w.now()
	}
	for off := 0; off < len(ps.pend); {
		k := min(len(ps.pend)-off, w.batchCap)
		b := w.getBatch(k)
		b.recs = append(b.recs[:0], ps.pend[off:off+k]...)
		b.setKeys(w.timeline, now) // released just now by the log: keyed as then
		ps.merge.add(b)
		off += k
	}
	clear(ps.pend) // drop snapshot pointers
	ps.pend = ps.pend[:0]
	if drain {
		ps.merge.drain(ps.emitFn, w.doneFn)
	} else {
		// A record is released by the log only once its time is under
		// every record watermark less the delay, and its packet only once
		// it is under every packet and record watermark less the delay: a
		// packet and its record leave this merge in the same release.
		ps.merge.release(ps.cur, ps.emitFn, w.doneFn)
	}
	w.flushGroup()
	ps.heldN.Store(int64(ps.merge.held))
	ps.forced.Store(ps.merge.forced)
	ps.late.Store(ps.merge.late)
	if len(ps.buf) >= flushSize {
		w.writePcap()
	}
}

// pcapEmit takes an entry the pcap merge released, in time order, into
// the group of its packet time.
func (w *Writer) pcapEmit(r *correlate.Record) {
	ps := w.pcap
	if len(ps.group) > 0 && ps.group[0].rec.Pkt.Time != r.Pkt.Time {
		w.flushGroup()
	}
	ps.group = append(ps.group, pcapEntry{rec: *r, packet: r.Snap == nil})
}

// flushGroup writes the entries of one packet time: each record on the
// first submitted packet equal to its own (the same packet), the packets
// without a record plain, and a record whose packet is not there alone.
func (w *Writer) flushGroup() {
	ps := w.pcap
	g := ps.group
	for i := range g {
		if g[i].packet {
			continue
		}
		for j := range g {
			if g[j].packet && !g[j].done && g[j].rec.Pkt == g[i].rec.Pkt {
				g[j].rec.Snap, g[j].done, g[i].done = g[i].rec.Snap, true, true
				break
			}
		}
	}
	for i := range g {
		e := &g[i]
		if !e.packet {
			if e.done {
				continue // written on its packet
			}
			ps.unmatched.Add(1)
		}
		w.appendPacket(&e.rec)
	}
	clear(g)
	ps.group = g[:0]
}

// appendPacket formats one packet block into the pcap buffer.
func (w *Writer) appendPacket(r *correlate.Record) {
	ps := w.pcap
	ps.buf = AppendEPB(ps.buf, r)
	ps.ends = append(ps.ends, len(ps.buf))
	ps.states = append(ps.states, r.Snap != nil)
	if len(ps.buf) >= flushSize {
		w.writePcap()
	}
}

// writePcap writes the pcap buffer. If the write fails, the packet blocks
// that did not reach the file are counted as lost.
func (w *Writer) writePcap() {
	ps := w.pcap
	if len(ps.buf) == 0 {
		return
	}
	n, err := ps.p.sink.Write(ps.buf)
	k := sort.SearchInts(ps.ends, n+1)
	stated := 0
	for _, s := range ps.states[:k] {
		if s {
			stated++
		}
	}
	ps.packets.Add(uint64(k))
	ps.stated.Add(uint64(stated))
	if err != nil {
		ps.writeErrors.Add(1)
		ps.lost.Add(uint64(len(ps.ends) - k))
		werr := fmt.Errorf("output: write %s: %w", ps.p.sink.name(), err)
		ps.err.CompareAndSwap(nil, &werr)
		if !ps.warned && w.onWarning != nil {
			ps.warned = true
			w.onWarning(fmt.Sprintf("pcap file %s: %v: its packets are counted as lost until writes succeed again", ps.p.sink.name(), err))
		}
	}
	ps.buf = ps.buf[:0]
	ps.ends = ps.ends[:0]
	ps.states = ps.states[:0]
}

// pcapStart writes the section and interface blocks, unless the file has
// them already (a Writer before this one wrote them: KeepPcap).
func (w *Writer) pcapStart() {
	ps := w.pcap
	ps.started = true
	if !ps.p.headed {
		ps.p.headed = true
		ps.buf = append(ps.buf, ps.p.header...)
	}
	w.writePcap()
}

// pcapReopen writes what is buffered and reopens the pcap path; a new file
// starts with its own section and interface blocks.
func (w *Writer) pcapReopen() error {
	w.writePcap()
	reopened, err := w.pcap.p.sink.Reopen()
	if reopened {
		w.pcap.p.headed = false
		if w.pcap.started {
			w.pcapStart()
		}
	}
	if err != nil {
		return fmt.Errorf("output: reopen pcap: %w", err)
	}
	return nil
}

// PcapErr returns the first write error of the pcap file, or nil.
func (w *Writer) PcapErr() error {
	if w.pcap == nil {
		return nil
	}
	if p := w.pcap.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (w *Writer) pcapStats() PcapStats {
	ps := w.pcap
	if ps == nil {
		return PcapStats{}
	}
	return PcapStats{
		Packets:     ps.packets.Load(),
		Stated:      ps.stated.Load(),
		Bytes:       ps.p.sink.bytes.Load() - ps.bytes0,
		Dropped:     ps.dropped.Load(),
		Held:        int(ps.heldN.Load()),
		Forced:      ps.forced.Load(),
		Late:        ps.late.Load(),
		Unmatched:   ps.unmatched.Load(),
		WriteErrors: ps.writeErrors.Load(),
		Lost:        ps.lost.Load(),
	}
}

// reserve reserves room for nb batches of n records in a queue whose
// batches (high 32 bits) and records (low 32 bits) r counts, within maxB
// batches and maxR records. It reports success.
func reserve(r *atomic.Uint64, nb, n, maxB, maxR int) bool {
	if n > maxR || nb > maxB {
		return false
	}
	add := uint64(nb)<<32 | uint64(n)
	for {
		v := r.Load()
		if int(v>>32)+nb > maxB || int(v&0xffffffff)+n > maxR {
			return false
		}
		if r.CompareAndSwap(v, v+add) {
			return true
		}
	}
}

// setMarkIn raises the watermark of producer worker in marks; it reports
// whether it moved. Only that producer stores to its mark.
func setMarkIn(marks []workerMark, worker int, wm int64) bool {
	m := &marks[worker].wm
	if wm <= m.Load() {
		return false
	}
	m.Store(wm)
	return true
}
