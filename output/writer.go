package output

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/clockstep"
	"github.com/siftr-probe/siftr-probe/internal/hist"
)

// Defaults for WriterConfig fields left zero.
const (
	DefaultQueueLen      = 1024
	DefaultQueueRecords  = 1 << 18
	DefaultBatchCap      = 4096
	DefaultDelay         = 5 * time.Millisecond
	DefaultMaxHeld       = 1 << 16
	DefaultFlushInterval = 100 * time.Millisecond
)

// flushSize is how many formatted bytes are gathered before a write.
const flushSize = 1 << 20

// WriterConfig configures a Writer. The zero value of every field but
// Workers means its default.
type WriterConfig struct {
	// Path is the log file. "-" means Stdout. Any other path is opened
	// for appending with OpenFile's rules (never through a symbolic link,
	// created 0644 less the umask, a regular file or a character device
	// only: a FIFO, socket or directory is refused) and, if it is a regular
	// file, locked against a second writer (flock): an existing log is
	// appended to, never truncated.
	Path string
	// Stdout is where records go when Path is "-"; nil means os.Stdout.
	Stdout io.Writer
	// Format formats the log; nil means SIFTR().
	Format Format
	// Workers is the number of producers; they are numbered 0..Workers-1.
	// With Slots, it is how many there can be at once.
	// Each has its own watermark. It must be at least 1.
	Workers int
	// Slots makes the producers come and go: none exists at first, Reserve
	// adds some and Release removes them. A producer slot that is not
	// reserved never holds the output back.
	Slots bool
	// QueueLen bounds the queue between producers and the writer, in
	// batches (one batch per Submit, or more for a Submit of more than
	// BatchCap records); 0 means DefaultQueueLen.
	QueueLen int
	// QueueRecords bounds the records in that queue; 0 means DefaultQueueRecords.
	QueueRecords int
	// BatchCap is the largest batch, in records; 0 means DefaultBatchCap.
	BatchCap int
	// Delay is slack for small timestamp skew between producers: a record is
	// written once its time is at most (lowest watermark - Delay). 0 means
	// DefaultDelay; a negative value means no slack.
	Delay time.Duration
	// Timeline, if set, is the wall clock's backward steps: records and
	// watermarks are ordered by their Timeline keys, so the lines after a
	// step come out in the order their packets came, their times going
	// back at the step. Without it (or before a step) they are ordered by
	// their times.
	Timeline *clockstep.Timeline
	// MaxHeld bounds the records held back for ordering; past it the oldest
	// are written at once (counted in WriterStats.Forced). 0 means DefaultMaxHeld.
	MaxHeld int
	// FlushInterval is how often buffered output is written when less than
	// 1 MiB has gathered; 0 means DefaultFlushInterval.
	FlushInterval time.Duration
	// OnRecord, if set, is called with every record as it is formatted, in
	// output order, on the writer's goroutine; r is valid only during the call.
	OnRecord func(r *correlate.Record)
	// OnWarning, if set, is called with a one-line message (no trailing
	// newline) for a problem that does not stop the writer: the log file
	// was deleted while open (said once per file), a write to the pcap file
	// failed (said once). It runs on the writer's goroutine.
	OnWarning func(msg string)
	// Pcap, if set, is a pcapng file to write the packets of the records
	// beside the log (and with PcapConfig.All, those of SubmitPackets).
	// The Writer owns it from OpenWriter on, also when OpenWriter fails:
	// it writes it with the log, reopens it with Reopen and closes it with
	// Close. Its write errors are counted in WriterStats.Pcap and returned
	// by PcapErr, not by Err or Close.
	Pcap *Pcap
	// KeepPcap leaves Pcap open at Close (and when OpenWriter fails): its
	// opener closes it (Pcap.Close) once no Writer uses it. Writers that
	// use one Pcap in turn, each closed before the next one starts, add to
	// one file, whose section and interface blocks are written once (again
	// after a Reopen to a new file). PcapStats then count this Writer's
	// share of the file.
	KeepPcap bool
}

// WriterStats are a Writer's counters. All counts are since OpenWriter.
type WriterStats struct {
	Records          uint64 // records written
	Bytes            uint64 // bytes written, header and footer included
	QueueDepth       int    // batches queued, not yet taken by the writer
	QueueCap         int    // QueueLen
	QueueRecords     int    // records queued, not yet taken by the writer
	Held             int    // records held back for ordering
	Rejected         uint64 // records refused by Submit (queue full or writer closed)
	Forced           uint64 // records written before the watermarks allowed, because MaxHeld was reached
	Late             uint64 // records written after a record with a later time: out of order
	WriteErrors      uint64 // failed writes
	LostToWriteError uint64 // records formatted but not in the log because a write failed
	// LogUnlinked counts the times the open log file was found deleted
	// (its link count 0): records went to a file no one can see.
	LogUnlinked uint64
	// Staleness is the distribution of snapshot time minus packet time of
	// the records handled, in nanoseconds.
	Staleness hist.Snapshot
	// Pcap counts the pcapng file's packets (all zero without one).
	Pcap PcapStats
}

// ErrClosed is returned by Writer methods called after Close.
var ErrClosed = errors.New("output: writer closed")

// Writer orders records by packet time, formats them and writes them, on one
// goroutine of its own. Producers hand it records with Submit, which never
// blocks: when the bounded queue is full the records are refused and the
// producer counts them as skipped.
//
// # Ordering
//
// Every producer (capture worker) has a watermark: with Submit or Advance it
// promises that every record it submits later has Pkt.Time >= watermark.
// The writer writes a record once its time is at most the lowest watermark
// of all producers minus Delay, so records come out in non-decreasing time.
// A producer that has never reported a watermark holds back all output: each
// producer must call Submit or Advance regularly, including when idle (for
// example on every ring poll timeout). Records that break the promise by
// more than Delay are still written, and counted as Late if a later record
// was already written. At most MaxHeld records are held back: past that the
// oldest are written at once (Forced), which keeps memory bounded when a
// producer stalls. Close writes everything still held, in order.
//
// # Memory
//
// The queue holds at most QueueLen batches and QueueRecords records; the
// writer holds at most MaxHeld records for ordering, plus up to one queue's
// worth it is taking in. Batch buffers are reused (by power-of-two size
// class), so their total never exceeds the peak of records queued and held,
// rounded up to a power of two per batch. A Record is 112 bytes, plus its
// share of the snapshot it points to (about 300 bytes, shared by every
// packet one lookup served in diag mode, one per record in exact mode): the
// default queue bound, 256k records, is about 29 MB of records, and up to
// about 100 MB with their snapshots when none is shared.
//
// # Concurrency
//
// Submit and Advance are safe for concurrent use by different workers; the
// calls for one worker must be sequential. Stats and Err are safe for
// concurrent use with everything. Start, Reopen, SetPath, Path, Sync and
// Close may be called from any goroutine.
//
// # Write errors
//
// A failed write (ENOSPC, EIO...) is counted, the records it held that did
// not reach the log are counted as lost, and the writer goes on draining the
// queue and trying to write, so producers never block. The log stays made of
// whole lines: a line cut by the failure is truncated away (or, on a pipe,
// ended before the next write), and Records and LostToWriteError count
// exactly the records that are and are not in it. The disable line counts
// the lost records as skipped (malloc), per direction, so that its identity
// holds for the lines in the log. Err returns the first such error; Close
// returns it too.
type Writer struct {
	format        Format
	delay         int64
	queueLen      int
	queueRecs     int
	batchCap      int
	maxHeld       int
	flushInterval time.Duration
	keepPcap      bool                // WriterConfig.KeepPcap
	timeline      *clockstep.Timeline // WriterConfig.Timeline
	now           func() int64        // the wall clock, for timeline keys

	// reserved packs the batches (high 32 bits) and records (low 32 bits)
	// queued or being queued; it bounds the queue.
	reserved atomic.Uint64
	active   atomic.Int64 // Submit and Advance calls in progress
	closed   atomic.Bool
	queue    chan *batch
	freeMu   sync.Mutex           // guards free
	free     [numClasses][]*batch // idle batches by size class
	marks    []workerMark
	slotMu   sync.Mutex // guards slots
	slots    []bool     // reserved producers
	wake     chan struct{}
	reopenc  chan reopenReq
	syncc    chan *syncReq
	closing  chan struct{}
	done     chan struct{}

	mu      sync.Mutex // guards state, footer, path and, before Start, file and out
	state   int        // stateNew, stateRunning, stateClosed
	path    string     // the log's path
	footer  func() *Footer
	closeMu sync.Mutex // serializes Close
	closeEr error

	// Owned by the writer goroutine once started (by Start/Close/Reopen before).
	sink      *sink
	merge     *merge
	cur       []int64 // watermarks in force
	buf       []byte
	recEnds   []int   // end offset in buf of each record's line
	recDirs   []uint8 // direction of each record in buf
	lostDir   [2]uint64
	onRecord  func(*correlate.Record)
	onWarning func(string)
	pcap      *pcapState              // nil without a pcap file
	emitFn    func(*correlate.Record) // w.emit, made once
	doneFn    func(*batch)            // w.putBatch, made once
	syncs     []*syncReq              // Sync calls waiting

	records, rejected, forced, late atomic.Uint64
	writeErrors, lost               atomic.Uint64
	heldN                           atomic.Int64
	needPoke                        atomic.Bool  // Advance wakes the writer (records held, a Sync waits)
	nMarks                          atomic.Int32 // marks in use: all, or with Slots up to the highest reserved
	stale                           hist.Histogram
	err                             atomic.Pointer[error]
}

const (
	stateNew = iota
	stateRunning
	stateClosed
)

// workerMark is one producer's watermark, alone on its cache line.
type workerMark struct {
	wm atomic.Int64
	_  [56]byte
}

// batch is a copy of the records of one Submit, sorted by key once the
// writer takes it; pos is the next record to write. keys are the records'
// timeline keys, nil when each is its record's time (no backward step of
// the clock yet).
type batch struct {
	recs  []correlate.Record
	keys  []int64
	pos   int
	seq   uint64
	class int
}

// key returns the order key of record i.
func (b *batch) key(i int) int64 {
	if len(b.keys) != 0 {
		return b.keys[i]
	}
	return b.recs[i].Pkt.Time
}

// setKeys gives b's records their keys on timeline tl at now, once the
// clock has stepped back; before that it leaves keys nil.
func (b *batch) setKeys(tl *clockstep.Timeline, now int64) {
	if !tl.Stepped() {
		b.keys = nil
		return
	}
	b.keys = b.keys[:0]
	for i := range b.recs {
		b.keys = append(b.keys, tl.Key(b.recs[i].Pkt.Time, now))
	}
}

// keyOf is the key of a watermark or Sync time t, read now.
func (w *Writer) keyOf(t int64) int64 {
	if !w.timeline.Stepped() {
		return t
	}
	return w.timeline.Key(t, w.now())
}

// Batches come in power-of-two size classes from minBatch records, each with
// its own free list, so a batch held for ordering never pins much more
// memory than its records need.
const (
	minBatchBits = 4
	numClasses   = 32 - minBatchBits
)

func classOf(n int) int {
	if n <= 1<<minBatchBits {
		return 0
	}
	return bits.Len(uint(n-1)) - minBatchBits
}

// OpenWriter opens the log described by cfg. Nothing is written before Start.
func OpenWriter(cfg *WriterConfig) (w *Writer, err error) {
	if cfg == nil {
		return nil, errors.New("output: nil WriterConfig")
	}
	if cfg.Pcap != nil && !cfg.KeepPcap {
		defer func() {
			if err != nil {
				cfg.Pcap.Close()
			}
		}()
	}
	if cfg.Workers < 1 {
		return nil, fmt.Errorf("output: WriterConfig.Workers is %d, need at least 1", cfg.Workers)
	}
	w = &Writer{
		format:        cfg.Format,
		delay:         int64(cfg.Delay),
		queueLen:      cfg.QueueLen,
		queueRecs:     cfg.QueueRecords,
		batchCap:      cfg.BatchCap,
		maxHeld:       cfg.MaxHeld,
		flushInterval: cfg.FlushInterval,
		onRecord:      cfg.OnRecord,
		onWarning:     cfg.OnWarning,
		keepPcap:      cfg.KeepPcap,
		timeline:      cfg.Timeline,
		now:           func() int64 { return time.Now().UnixNano() },
	}
	if w.format == nil {
		w.format = SIFTR()
	}
	if w.delay == 0 {
		w.delay = int64(DefaultDelay)
	} else if w.delay < 0 {
		w.delay = 0
	}
	if w.queueLen <= 0 {
		w.queueLen = DefaultQueueLen
	}
	if w.queueRecs <= 0 {
		w.queueRecs = DefaultQueueRecords
	}
	if w.batchCap <= 0 {
		w.batchCap = DefaultBatchCap
	}
	w.queueLen = min(w.queueLen, math.MaxInt32)
	w.queueRecs = min(w.queueRecs, math.MaxInt32)
	w.batchCap = min(w.batchCap, w.queueRecs, 1<<30)
	if w.maxHeld <= 0 {
		w.maxHeld = DefaultMaxHeld
	}
	if w.flushInterval <= 0 {
		w.flushInterval = DefaultFlushInterval
	}

	if cfg.Path == "" {
		return nil, errors.New(`output: WriterConfig.Path is empty (use "-" for standard output)`)
	}
	s, err := openSink(cfg.Path, cfg.Stdout, cfg.OnWarning)
	if err != nil {
		return nil, err
	}
	w.sink = s
	w.path = cfg.Path
	w.merge = newMerge(w.delay, w.maxHeld)
	w.emitFn = w.emit
	w.doneFn = w.putBatch

	w.queue = make(chan *batch, w.queueLen)
	w.marks = make([]workerMark, cfg.Workers)
	w.slots = make([]bool, cfg.Workers)
	for i := range w.marks {
		if cfg.Slots {
			w.marks[i].wm.Store(math.MaxInt64)
		} else {
			w.marks[i].wm.Store(math.MinInt64)
			w.slots[i] = true
		}
	}
	w.cur = make([]int64, cfg.Workers)
	if !cfg.Slots {
		w.nMarks.Store(int32(cfg.Workers))
	}
	w.wake = make(chan struct{}, 1)
	w.reopenc = make(chan reopenReq)
	w.syncc = make(chan *syncReq)
	w.closing = make(chan struct{})
	w.done = make(chan struct{})
	w.buf = make([]byte, 0, flushSize+64<<10)
	if cfg.Pcap != nil {
		w.pcap = newPcapState(w, cfg.Pcap, cfg.Workers)
	}
	return w, nil
}

// Start writes the header (none if h is nil) and starts the writer
// goroutine. The goroutine runs even if writing the header failed (that
// error is returned and kept for Err), so Submit and Close work as usual.
// Records submitted before Start wait in the queue.
func (w *Writer) Start(h *Header) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.state {
	case stateRunning:
		return errors.New("output: writer already started")
	case stateClosed:
		return ErrClosed
	}
	if h != nil {
		w.buf = w.format.AppendHeader(w.buf, h)
		w.writeOut()
	}
	if w.pcap != nil {
		w.pcapStart()
	}
	w.state = stateRunning
	go w.run()
	return w.loadErr()
}

// Submit queues a copy of recs from producer worker (0 <= worker <
// WriterConfig.Workers, else it panics), and sets that producer's watermark: it promises that every record it submits later has
// Pkt.Time >= watermark (a watermark lower than an earlier one is ignored).
// recs need not be sorted, and may be reused when Submit returns.
//
// Submit never blocks. It returns false when the queue is full or the
// writer is closed: then nothing is queued and the watermark is unchanged,
// and the caller counts those packets as skipped (malloc). Submit does not
// allocate once the writer's batch buffers have warmed up.
func (w *Writer) Submit(worker int, recs []correlate.Record, watermark int64) bool {
	w.active.Add(1)
	defer w.active.Add(-1)
	if w.closed.Load() {
		w.rejected.Add(uint64(len(recs)))
		return false
	}
	if len(recs) > 0 && !w.enqueue(recs) {
		w.rejected.Add(uint64(len(recs)))
		return false
	}
	// The watermark is stored after the batches are in the queue: the writer
	// loads watermarks before draining the queue, so it never applies a
	// watermark without the records submitted with it.
	if w.setMark(worker, w.keyOf(watermark)) {
		w.poke()
	}
	return true
}

// Advance sets producer worker's watermark without records, for a producer
// that is idle (0 <= worker < WriterConfig.Workers, else it panics). It never blocks; a watermark lower than an earlier one is ignored.
func (w *Writer) Advance(worker int, watermark int64) {
	w.active.Add(1)
	defer w.active.Add(-1)
	if w.closed.Load() {
		return
	}
	// A later watermark can only release held records or end a Sync: with
	// neither, the writer is left asleep (a host with many idle sources
	// would wake it thousands of times a second for nothing).
	if w.setMark(worker, w.keyOf(watermark)) && w.needPoke.Load() {
		w.poke()
	}
}

func (w *Writer) setMark(worker int, wm int64) bool { return setMarkIn(w.marks, worker, wm) }

// Reserve adds n producers (WriterConfig.Slots) and returns the number of
// the first; they are numbered first..first+n-1. Their watermarks start at
// from: they must not submit records older than that (they would be written
// late). It fails when n contiguous slots are not free.
func (w *Writer) Reserve(n int, from int64) (int, error) {
	w.slotMu.Lock()
	defer w.slotMu.Unlock()
	for first := 0; first+n <= len(w.slots); first++ {
		free := true
		for i := first; i < first+n; i++ {
			if w.slots[i] {
				free, first = false, i
				break
			}
		}
		if !free {
			continue
		}
		from = w.keyOf(from)
		for i := first; i < first+n; i++ {
			w.slots[i] = true
			w.marks[i].wm.Store(from)
		}
		if int32(first+n) > w.nMarks.Load() {
			w.nMarks.Store(int32(first + n)) // after the marks: a step that sees it sees them
		}
		w.needPoke.Store(true) // the new slot holds the output back until it advances
		w.poke()
		return first, nil
	}
	return 0, fmt.Errorf("output: no %d free producer slots of %d", n, len(w.slots))
}

// Release removes the producers first..first+n-1, which must have stopped
// submitting: the records they submitted are written as usual, and they
// hold the output back no more.
func (w *Writer) Release(first, n int) {
	w.slotMu.Lock()
	defer w.slotMu.Unlock()
	for i := first; i < first+n; i++ {
		w.slots[i] = false
		w.marks[i].wm.Store(math.MaxInt64)
	}
	hi := w.nMarks.Load()
	for hi > 0 && !w.slots[hi-1] {
		hi--
	}
	w.nMarks.Store(hi)
	w.poke()
}

// poke wakes the writer goroutine without blocking.
func (w *Writer) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// enqueue reserves room for recs and queues them in batches of at most batchCap.
func (w *Writer) enqueue(recs []correlate.Record) bool {
	nb := (len(recs) + w.batchCap - 1) / w.batchCap
	if !reserve(&w.reserved, nb, len(recs), w.queueLen, w.queueRecs) {
		return false
	}
	now := int64(0)
	if w.timeline.Stepped() {
		now = w.now()
	}
	for len(recs) > 0 {
		n := min(len(recs), w.batchCap)
		b := w.getBatch(n)
		b.recs = append(b.recs[:0], recs[:n]...)
		b.setKeys(w.timeline, now)
		recs = recs[n:]
		w.queue <- b // never blocks: reserved counts every batch in the queue
	}
	return true
}

// getBatch returns an idle batch that can hold n records. The free lists
// never hold more batches than were once queued or held at the same time,
// which QueueLen, QueueRecords and MaxHeld bound.
func (w *Writer) getBatch(n int) *batch {
	c := classOf(n)
	w.freeMu.Lock()
	if k := len(w.free[c]); k > 0 {
		b := w.free[c][k-1]
		w.free[c][k-1] = nil
		w.free[c] = w.free[c][:k-1]
		w.freeMu.Unlock()
		return b
	}
	w.freeMu.Unlock()
	return &batch{recs: make([]correlate.Record, 0, 1<<(c+minBatchBits)), class: c}
}

func (w *Writer) putBatch(b *batch) {
	clear(b.recs) // drop references (netip.Addr zones) before pooling
	b.recs = b.recs[:0]
	b.keys = b.keys[:0]
	b.pos = 0
	w.freeMu.Lock()
	w.free[b.class] = append(w.free[b.class], b)
	w.freeMu.Unlock()
}

// run is the writer goroutine.
func (w *Writer) run() {
	defer close(w.done)
	tick := time.NewTicker(w.flushInterval)
	defer tick.Stop()
	pq := w.pcapQueue()
	for {
		select {
		case b := <-w.queue:
			w.accept(b)
		case b := <-pq:
			w.pcapAccept(b)
		case <-w.wake:
		case <-tick.C:
			if len(w.buf) > 0 {
				w.writeOut()
			}
			if w.pcap != nil {
				w.writePcap()
			}
		case rq := <-w.reopenc:
			rq.done <- w.reopen(rq.path)
		case rq := <-w.syncc:
			w.syncs = append(w.syncs, rq)
		case <-w.closing:
			w.finish()
			return
		}
		w.step()
	}
}

// accept takes a batch out of the queue and adds it to the held records.
func (w *Writer) accept(b *batch) {
	w.reserved.Add(^(uint64(1)<<32 | uint64(len(b.recs))) + 1)
	if len(b.recs) == 0 {
		w.putBatch(b)
		return
	}
	w.merge.add(b)
}

// step applies the watermarks and writes what they allow.
func (w *Writer) step() {
	// Load the watermarks first, then take every batch queued at that point:
	// a batch submitted before a watermark we loaded was sent before that
	// watermark was stored, so it is among them (no other goroutine
	// receives from the queue, so the receives below never block).
	// Only the slots up to the highest reserved one can hold the output
	// back (the others are at MaxInt64).
	cur := w.cur[:w.nMarks.Load()]
	for i := range cur {
		cur[i] = w.marks[i].wm.Load()
	}
	for n := len(w.queue); n > 0; n-- {
		w.accept(<-w.queue)
	}
	w.merge.release(cur, w.emitFn, w.doneFn)
	w.syncCounts()
	if len(w.buf) >= flushSize {
		w.writeOut()
	}
	if w.pcap != nil && w.pcap.all {
		w.pcapStep(false)
	}
	if len(w.syncs) > 0 {
		w.syncDone(w.merge.limit(cur))
	}
	w.needPoke.Store(w.merge.held > 0 || len(w.syncs) > 0 || (w.pcap != nil && w.pcap.all))
}

// syncReq is a Sync call waiting for the records before t to be written.
type syncReq struct {
	t    int64
	done chan struct{}
}

// syncDone ends the Sync calls whose records the watermarks released,
// those before limit, once they are written out.
func (w *Writer) syncDone(limit int64) {
	flushed := false
	k := 0
	for _, rq := range w.syncs {
		if rq.t-1 > limit { // a record at t-1 may still be held
			w.syncs[k] = rq
			k++
			continue
		}
		if !flushed && len(w.buf) > 0 {
			w.writeOut()
		}
		flushed = true
		close(rq.done)
	}
	clear(w.syncs[k:])
	w.syncs = w.syncs[:k]
}

// syncCounts publishes the merge's counters for Stats.
func (w *Writer) syncCounts() {
	w.heldN.Store(int64(w.merge.held))
	w.forced.Store(w.merge.forced)
	w.late.Store(w.merge.late)
}

// finish writes everything at Close: the queue, the held records, the footer.
func (w *Writer) finish() {
	for {
		select {
		case b := <-w.queue:
			w.accept(b)
			continue
		default:
		}
		break
	}
	w.merge.drain(w.emitFn, w.doneFn)
	w.syncCounts()
	// Write the records first, so that the footer can count exactly the
	// ones that did not reach the log.
	if len(w.buf) > 0 {
		w.writeOut()
	}
	if ps := w.pcap; ps != nil {
		if ps.all {
			for k := len(ps.queue); k > 0; k-- {
				w.pcapAccept(<-ps.queue)
			}
			w.pcapStep(true)
		}
		w.writePcap()
	}
	w.mu.Lock()
	footer := w.footer
	w.mu.Unlock()
	if footer != nil {
		if f := footer(); f != nil {
			ff := *f
			ff.Counts.SkipMalloc[0] += w.lostDir[0]
			ff.Counts.SkipMalloc[1] += w.lostDir[1]
			w.writeFooter(&ff)
		}
	}
	if len(w.buf) > 0 {
		w.writeOut()
	}
	for _, rq := range w.syncs {
		close(rq.done)
	}
	w.syncs = nil
}

// writeFooter writes the disable line, streaming its flow list a
// flushSize at a time (a list of many flows is tens of megabytes). If a
// write fails, the rest of the line is not written: the sink has taken the
// part already written back (see sink).
func (w *Writer) writeFooter(f *Footer) {
	w.buf = w.format.AppendFooterStart(w.buf, f)
	for i := range f.Flows {
		w.buf = w.format.AppendFlow(w.buf, i, &f.Flows[i])
		if len(w.buf) >= flushSize {
			if w.writeOut() != nil {
				return
			}
		}
	}
	w.buf = w.format.AppendFooterEnd(w.buf)
}

// emit formats a record the merge released.
func (w *Writer) emit(r *correlate.Record) {
	w.stale.Record(r.Staleness())
	if w.onRecord != nil {
		w.onRecord(r)
	}
	w.buf = w.format.AppendRecord(w.buf, r)
	if w.pcap != nil {
		w.pcapRecord(r)
	}
	w.recEnds = append(w.recEnds, len(w.buf))
	w.recDirs = append(w.recDirs, uint8(r.Pkt.Dir&1))
	if len(w.buf) >= flushSize {
		w.writeOut()
	}
}

// writeOut writes the buffer. If the write fails, the records whose lines
// did not reach the log are counted as lost, by direction, and the error
// is returned.
func (w *Writer) writeOut() error {
	n, err := w.sink.Write(w.buf)
	// Records whose line ends within the n bytes in the log were written.
	k := sort.SearchInts(w.recEnds, n+1)
	w.records.Add(uint64(k))
	if err != nil {
		w.writeErrors.Add(1)
		w.lost.Add(uint64(len(w.recEnds) - k))
		for _, d := range w.recDirs[k:] {
			w.lostDir[d]++
		}
		w.setErr(fmt.Errorf("output: write %s: %w", w.sink.name(), err))
	}
	w.buf = w.buf[:0]
	w.recEnds = w.recEnds[:0]
	w.recDirs = w.recDirs[:0]
	return err
}

func (w *Writer) setErr(err error) {
	w.err.CompareAndSwap(nil, &err)
}

func (w *Writer) loadErr() error {
	if p := w.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Err returns the first write error, or nil.
func (w *Writer) Err() error { return w.loadErr() }

// Reopen writes what is buffered and reopens the log path, for log rotation
// (SIGHUP): if the file was renamed or removed, a new one is created. The
// old file is closed only once the new one is open, and held or queued
// records are not affected, so no record is lost. With Path "-" it only
// flushes. The pcap file, if any, is reopened the same way (a new one
// starts with its section and interface blocks): without PcapConfig.All
// the two files switch at the same record; with All, the packets still
// held for ordering (normally a few milliseconds' worth) go to the new
// pcap file. Safe to call from any goroutine.
func (w *Writer) Reopen() error { return w.reopenAs("") }

// SetPath switches the log to path (OpenFile's rules, locked; "-" means
// Stdout) while the writer runs, as Reopen does for rotation: what is
// buffered goes to the old file, which is closed once the new one is
// open, and nothing is written at the switch; held and queued records go
// to the new file. If path cannot be opened, the log stays where it was
// and the error says why. Reopen reopens path from then on. Once the log
// has switched, the pcap file, if any, is reopened at its own path as
// Reopen does it (a new one if it was renamed or removed). Safe to call
// from any goroutine.
func (w *Writer) SetPath(path string) error {
	if path == "" {
		return errors.New(`output: SetPath: empty path (use "-" for standard output)`)
	}
	return w.reopenAs(path)
}

// Path returns the log's path ("-" for standard output).
func (w *Writer) Path() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.path
}

// reopenReq asks the writer goroutine to reopen the log, at path if it is
// not "".
type reopenReq struct {
	path string
	done chan error
}

func (w *Writer) reopenAs(path string) error {
	w.mu.Lock()
	switch w.state {
	case stateClosed:
		w.mu.Unlock()
		return ErrClosed
	case stateNew:
		defer w.mu.Unlock()
		return w.reopenLocked(path)
	}
	w.mu.Unlock()
	rq := reopenReq{path, make(chan error, 1)}
	select {
	case w.reopenc <- rq:
		return <-rq.done
	case <-w.done:
		return ErrClosed
	}
}

// reopen runs on the writer goroutine.
func (w *Writer) reopen(path string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reopenLocked(path)
}

func (w *Writer) reopenLocked(path string) error {
	if len(w.buf) > 0 {
		w.writeOut()
	}
	var err error
	if path == "" {
		if _, rerr := w.sink.Reopen(); rerr != nil {
			err = fmt.Errorf("output: reopen: %w", rerr)
		}
	} else if serr := w.sink.Switch(path); serr != nil {
		// The log stays where it was, and so does the pcap file.
		return fmt.Errorf("output: reopen: %w", serr)
	}
	w.path = w.sink.path
	if w.pcap != nil {
		if perr := w.pcapReopen(); perr != nil {
			err = errors.Join(err, perr)
		}
	}
	return err
}

// Sync waits until every record with a time before t (ns) that was
// submitted, or will be, is in the log: until the producers' watermarks,
// less Delay, have passed t, and the records they released are written.
// It returns ctx's error if that does not happen before ctx is done (a
// producer that stopped reporting watermarks), nil once the writer is
// closed (Close writes everything). Safe to call from any goroutine.
func (w *Writer) Sync(ctx context.Context, t int64) error {
	w.mu.Lock()
	if w.state != stateRunning {
		w.mu.Unlock()
		return nil
	}
	w.mu.Unlock()
	rq := &syncReq{t: w.keyOf(t), done: make(chan struct{})}
	select {
	case w.syncc <- rq:
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	w.poke()
	select {
	case <-rq.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes every record (and, with a pcap file, every packet)
// submitted before Close, in order, then the
// footer that footer returns (called once the last record is written, so
// counts taken in it are final; nil writes none), then flushes, syncs and
// closes the file. footer runs on the writer goroutine and must not call
// Close or Reopen. Close waits for the writer goroutine. It returns the first
// write error, if any, else the sync or close error. Calls after the first
// return the same result. A writer never started writes nothing: records
// submitted to it are discarded. The pcap file's write and close errors
// are not returned here but by PcapErr.
func (w *Writer) Close(footer func() *Footer) error {
	w.closeMu.Lock()
	defer w.closeMu.Unlock()
	w.mu.Lock()
	if w.state == stateClosed {
		w.mu.Unlock()
		return w.closeEr
	}
	started := w.state == stateRunning
	w.state = stateClosed
	w.footer = footer
	w.mu.Unlock()

	w.closed.Store(true)
	for w.active.Load() != 0 { // Submits that began before Close finish queuing
		runtime.Gosched()
	}
	if started {
		close(w.closing)
		<-w.done
	}
	err := w.loadErr()
	if cerr := w.sink.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if w.pcap != nil && !w.keepPcap {
		if cerr := w.pcap.p.sink.Close(); cerr != nil {
			w.pcap.err.CompareAndSwap(nil, &cerr)
		}
	}
	w.closeEr = err
	return err
}

// Stats returns the writer's counters. Safe for concurrent use.
func (w *Writer) Stats() WriterStats {
	r := w.reserved.Load()
	return WriterStats{
		Records:          w.records.Load(),
		Bytes:            w.sink.bytes.Load(),
		QueueDepth:       int(r >> 32),
		QueueCap:         w.queueLen,
		QueueRecords:     int(r & 0xffffffff),
		Held:             int(w.heldN.Load()),
		Rejected:         w.rejected.Load(),
		Forced:           w.forced.Load(),
		Late:             w.late.Load(),
		WriteErrors:      w.writeErrors.Load(),
		LostToWriteError: w.lost.Load(),
		LogUnlinked:      w.sink.unlinked.Load(),
		Staleness:        w.stale.Snapshot(),
		Pcap:             w.pcapStats(),
	}
}
