package output

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
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
	// O_WRONLY|O_APPEND|O_CREATE|O_NOFOLLOW|O_CLOEXEC with mode 0644 (less
	// the umask): an existing log is appended to, never truncated; a symbolic
	// link or a directory is refused.
	Path string
	// Stdout is where records go when Path is "-"; nil means os.Stdout.
	Stdout io.Writer
	// Format formats the log; nil means SIFTR().
	Format Format
	// Workers is the number of producers; they are numbered 0..Workers-1.
	// Each has its own watermark. It must be at least 1.
	Workers int
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
	// MaxHeld bounds the records held back for ordering; past it the oldest
	// are written at once (counted in WriterStats.Forced). 0 means DefaultMaxHeld.
	MaxHeld int
	// FlushInterval is how often buffered output is written when less than
	// 1 MiB has gathered; 0 means DefaultFlushInterval.
	FlushInterval time.Duration
	// OnRecord, if set, is called with every record as it is formatted, in
	// output order, on the writer's goroutine; r is valid only during the call.
	OnRecord func(r *correlate.Record)
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
	LostToWriteError uint64 // records formatted but not written because a write failed
	// Staleness is the distribution of snapshot time minus packet time of
	// the records handled, in nanoseconds.
	Staleness hist.Snapshot
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
// rounded up to a power of two per batch. A Record is 104 bytes, plus its
// share of the snapshot it points to (about 300 bytes, shared by every
// packet one lookup served in diag mode, one per record in exact mode): the
// default queue bound, 256k records, is about 27 MB of records, and up to
// about 100 MB with their snapshots when none is shared.
//
// # Concurrency
//
// Submit and Advance are safe for concurrent use by different workers; the
// calls for one worker must be sequential. Stats and Err are safe for
// concurrent use with everything. Start, Reopen and Close may be called from
// any goroutine.
//
// # Write errors
//
// A failed write (ENOSPC, EIO...) is counted, the records it held are counted
// as lost, and the writer goes on draining the queue and trying to write, so
// producers never block. Err returns the first such error; Close returns it too.
type Writer struct {
	format        Format
	path          string
	delay         int64
	queueLen      int
	queueRecs     int
	batchCap      int
	maxHeld       int
	flushInterval time.Duration

	// reserved packs the batches (high 32 bits) and records (low 32 bits)
	// queued or being queued; it bounds the queue.
	reserved atomic.Uint64
	active   atomic.Int64 // Submit and Advance calls in progress
	closed   atomic.Bool
	queue    chan *batch
	freeMu   sync.Mutex           // guards free
	free     [numClasses][]*batch // idle batches by size class
	marks    []workerMark
	wake     chan struct{}
	reopenc  chan chan error
	closing  chan struct{}
	done     chan struct{}

	mu      sync.Mutex // guards state, footer and, before Start, file and out
	state   int        // stateNew, stateRunning, stateClosed
	footer  func() *Footer
	closeMu sync.Mutex // serializes Close
	closeEr error

	// Owned by the writer goroutine once started (by Start/Close/Reopen before).
	file     *os.File  // nil when writing to Stdout
	out      io.Writer // file or Stdout
	heap     []*batch
	seq      uint64
	held     int
	cur      []int64 // watermarks in force
	buf      []byte
	bufRecs  int
	lastTime int64
	torn     bool // the last failed write left a partial line
	onRecord func(*correlate.Record)

	records, bytes, rejected, forced, late atomic.Uint64
	writeErrors, lost                      atomic.Uint64
	heldN                                  atomic.Int64
	stale                                  hist.Histogram
	err                                    atomic.Pointer[error]
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

// batch is a copy of the records of one Submit, sorted by time once the
// writer takes it; pos is the next record to write.
type batch struct {
	recs  []correlate.Record
	pos   int
	seq   uint64
	class int
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
func OpenWriter(cfg *WriterConfig) (*Writer, error) {
	if cfg == nil {
		return nil, errors.New("output: nil WriterConfig")
	}
	if cfg.Workers < 1 {
		return nil, fmt.Errorf("output: WriterConfig.Workers is %d, need at least 1", cfg.Workers)
	}
	w := &Writer{
		format:        cfg.Format,
		path:          cfg.Path,
		delay:         int64(cfg.Delay),
		queueLen:      cfg.QueueLen,
		queueRecs:     cfg.QueueRecords,
		batchCap:      cfg.BatchCap,
		maxHeld:       cfg.MaxHeld,
		flushInterval: cfg.FlushInterval,
		onRecord:      cfg.OnRecord,
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
	if cfg.Path == "-" {
		w.out = cfg.Stdout
		if w.out == nil {
			w.out = os.Stdout
		}
	} else {
		f, err := openLog(cfg.Path)
		if err != nil {
			return nil, err
		}
		w.file, w.out = f, f
	}

	w.queue = make(chan *batch, w.queueLen)
	w.marks = make([]workerMark, cfg.Workers)
	for i := range w.marks {
		w.marks[i].wm.Store(math.MinInt64)
	}
	w.cur = make([]int64, cfg.Workers)
	w.wake = make(chan struct{}, 1)
	w.reopenc = make(chan chan error)
	w.closing = make(chan struct{})
	w.done = make(chan struct{})
	w.buf = make([]byte, 0, flushSize+64<<10)
	w.lastTime = math.MinInt64
	return w, nil
}

// openLog opens path for appending, with errors that say what is wrong.
func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o644)
	if err == nil {
		return f, nil
	}
	switch {
	case errors.Is(err, syscall.ELOOP):
		if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
			return nil, fmt.Errorf("output: log file %s is a symbolic link; refusing to follow it: %w", path, err)
		}
	case errors.Is(err, syscall.EISDIR):
		return nil, fmt.Errorf("output: log file %s is a directory: %w", path, err)
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("output: cannot create log file %s: its directory does not exist: %w", path, err)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("output: cannot open log file %s: permission denied: %w", path, err)
	}
	return nil, fmt.Errorf("output: open log file: %w", err)
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
	if w.setMark(worker, watermark) {
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
	if w.setMark(worker, watermark) {
		w.poke()
	}
}

func (w *Writer) setMark(worker int, wm int64) bool {
	m := &w.marks[worker].wm
	if wm <= m.Load() {
		return false
	}
	m.Store(wm) // only this worker stores to m
	return true
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
	if len(recs) > w.queueRecs || nb > w.queueLen {
		return false
	}
	add := uint64(nb)<<32 | uint64(len(recs))
	for {
		r := w.reserved.Load()
		if int(r>>32)+nb > w.queueLen || int(r&0xffffffff)+len(recs) > w.queueRecs {
			return false
		}
		if w.reserved.CompareAndSwap(r, r+add) {
			break
		}
	}
	for len(recs) > 0 {
		n := min(len(recs), w.batchCap)
		b := w.getBatch(n)
		b.recs = append(b.recs[:0], recs[:n]...)
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
	for {
		select {
		case b := <-w.queue:
			w.accept(b)
		case <-w.wake:
		case <-tick.C:
			if len(w.buf) > 0 {
				w.writeOut()
			}
		case rc := <-w.reopenc:
			rc <- w.reopen()
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
	if !sortedByTime(b.recs) {
		slices.SortStableFunc(b.recs, func(x, y correlate.Record) int {
			switch {
			case x.Pkt.Time < y.Pkt.Time:
				return -1
			case x.Pkt.Time > y.Pkt.Time:
				return 1
			}
			return 0
		})
	}
	b.pos = 0
	b.seq = w.seq
	w.seq++
	w.held += len(b.recs)
	w.push(b)
}

func sortedByTime(recs []correlate.Record) bool {
	for i := 1; i < len(recs); i++ {
		if recs[i].Pkt.Time < recs[i-1].Pkt.Time {
			return false
		}
	}
	return true
}

// step applies the watermarks and writes what they allow.
func (w *Writer) step() {
	// Load the watermarks first, then take every batch queued at that point:
	// a batch submitted before a watermark we loaded was sent before that
	// watermark was stored, so it is among them (no other goroutine
	// receives from the queue, so the receives below never block).
	for i := range w.marks {
		w.cur[i] = w.marks[i].wm.Load()
	}
	for n := len(w.queue); n > 0; n-- {
		w.accept(<-w.queue)
	}
	low := int64(math.MaxInt64)
	for _, m := range w.cur {
		low = min(low, m)
	}
	if low != math.MinInt64 {
		limit := low - w.delay
		if limit > low { // overflow near MinInt64
			limit = math.MinInt64
		}
		for len(w.heap) > 0 && w.heap[0].head() <= limit {
			w.emitTop()
		}
	}
	for w.held > w.maxHeld {
		w.emitTop()
		w.forced.Add(1)
	}
	w.heldN.Store(int64(w.held))
	if len(w.buf) >= flushSize {
		w.writeOut()
	}
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
	for len(w.heap) > 0 {
		w.emitTop()
	}
	w.heldN.Store(0)
	w.mu.Lock()
	footer := w.footer
	w.mu.Unlock()
	if footer != nil {
		if f := footer(); f != nil {
			w.buf = w.format.AppendFooter(w.buf, f)
		}
	}
	if len(w.buf) > 0 {
		w.writeOut()
	}
}

func (b *batch) head() int64 { return b.recs[b.pos].Pkt.Time }

// emitTop formats the oldest held record.
func (w *Writer) emitTop() {
	b := w.heap[0]
	r := &b.recs[b.pos]
	if r.Pkt.Time < w.lastTime {
		w.late.Add(1)
	} else {
		w.lastTime = r.Pkt.Time
	}
	w.stale.Record(r.Staleness())
	if w.onRecord != nil {
		w.onRecord(r)
	}
	w.buf = w.format.AppendRecord(w.buf, r)
	w.bufRecs++
	w.held--
	b.pos++
	if b.pos == len(b.recs) {
		w.pop()
		w.putBatch(b)
	} else {
		w.down(0)
	}
	if len(w.buf) >= flushSize {
		w.writeOut()
	}
}

// writeOut writes the buffer. On failure its records are counted as lost.
func (w *Writer) writeOut() {
	if w.torn {
		// A failed write left part of a line: end it, so the next line is whole.
		if _, err := w.out.Write([]byte{'\n'}); err != nil {
			w.failWrite(err)
			return
		}
		w.bytes.Add(1)
		w.torn = false
	}
	n, err := w.out.Write(w.buf)
	w.bytes.Add(uint64(n))
	if err != nil {
		w.torn = n > 0 && w.buf[n-1] != '\n'
		w.failWrite(err)
		return
	}
	w.records.Add(uint64(w.bufRecs))
	w.buf = w.buf[:0]
	w.bufRecs = 0
}

func (w *Writer) failWrite(err error) {
	w.writeErrors.Add(1)
	w.lost.Add(uint64(w.bufRecs))
	w.setErr(fmt.Errorf("output: write %s: %w", w.name(), err))
	w.buf = w.buf[:0]
	w.bufRecs = 0
}

func (w *Writer) name() string {
	if w.file == nil {
		return "standard output"
	}
	return w.path
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
// flushes. Safe to call from any goroutine.
func (w *Writer) Reopen() error {
	w.mu.Lock()
	switch w.state {
	case stateClosed:
		w.mu.Unlock()
		return ErrClosed
	case stateNew:
		defer w.mu.Unlock()
		return w.reopen()
	}
	w.mu.Unlock()
	rc := make(chan error, 1)
	select {
	case w.reopenc <- rc:
		return <-rc
	case <-w.done:
		return ErrClosed
	}
}

func (w *Writer) reopen() error {
	if len(w.buf) > 0 {
		w.writeOut()
	}
	if w.file == nil {
		return nil
	}
	f, err := openLog(w.path)
	if err != nil {
		return fmt.Errorf("output: reopen: %w", err)
	}
	old := w.file
	w.file, w.out = f, f
	w.torn = false
	if err := old.Close(); err != nil {
		return fmt.Errorf("output: close rotated log %s: %w", w.path, err)
	}
	return nil
}

// Close writes every record submitted before Close, in order, then the
// footer that footer returns (called once the last record is written, so
// counts taken in it are final; nil writes none), then flushes, syncs and
// closes the file. footer runs on the writer goroutine and must not call
// Close or Reopen. Close waits for the writer goroutine. It returns the first
// write error, if any, else the sync or close error. Calls after the first
// return the same result. A writer never started writes nothing: records
// submitted to it are discarded.
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
	if w.file != nil {
		if serr := w.file.Sync(); serr != nil && !errors.Is(serr, syscall.EINVAL) && !errors.Is(serr, syscall.ENOTSUP) && err == nil {
			err = fmt.Errorf("output: sync %s: %w", w.path, serr)
		}
		if cerr := w.file.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("output: close %s: %w", w.path, cerr)
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
		Bytes:            w.bytes.Load(),
		QueueDepth:       int(r >> 32),
		QueueCap:         w.queueLen,
		QueueRecords:     int(r & 0xffffffff),
		Held:             int(w.heldN.Load()),
		Rejected:         w.rejected.Load(),
		Forced:           w.forced.Load(),
		Late:             w.late.Load(),
		WriteErrors:      w.writeErrors.Load(),
		LostToWriteError: w.lost.Load(),
		Staleness:        w.stale.Snapshot(),
	}
}

// Heap of batches ordered by (time of next record, arrival).

func (w *Writer) less(i, j int) bool {
	a, b := w.heap[i], w.heap[j]
	ta, tb := a.head(), b.head()
	return ta < tb || (ta == tb && a.seq < b.seq)
}

func (w *Writer) push(b *batch) {
	w.heap = append(w.heap, b)
	i := len(w.heap) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !w.less(i, p) {
			break
		}
		w.heap[i], w.heap[p] = w.heap[p], w.heap[i]
		i = p
	}
}

func (w *Writer) pop() {
	n := len(w.heap) - 1
	w.heap[0] = w.heap[n]
	w.heap[n] = nil
	w.heap = w.heap[:n]
	if n > 0 {
		w.down(0)
	}
}

func (w *Writer) down(i int) {
	n := len(w.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && w.less(r, l) {
			m = r
		}
		if !w.less(m, i) {
			return
		}
		w.heap[i], w.heap[m] = w.heap[m], w.heap[i]
		i = m
	}
}
