package output

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/clockstep"
	"github.com/siftr-probe/siftr-probe/internal/syncbuf"
)

// lineFormat writes "time worker:seq" per record, "H" and "F <n>" lines:
// easy to check for order and completeness.
type lineFormat struct{}

func (lineFormat) AppendHeader(dst []byte, h *Header) []byte { return append(dst, "H\n"...) }
func (lineFormat) AppendFooterStart(dst []byte, f *Footer) []byte {
	return fmt.Appendf(dst, "F %d", f.Counts.Packets[0])
}
func (lineFormat) AppendFlow(dst []byte, _ int, fl *correlate.Flow) []byte {
	return fmt.Appendf(dst, " %v-%v", fl.Local, fl.Remote)
}
func (lineFormat) AppendFooterEnd(dst []byte) []byte { return append(dst, '\n') }
func (lineFormat) AppendRecord(dst []byte, r *correlate.Record) []byte {
	dst = strconv.AppendInt(dst, r.Pkt.Time, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(r.Pkt.Ack), 10)
	dst = append(dst, ':')
	dst = strconv.AppendUint(dst, uint64(r.Pkt.Seq), 10)
	return append(dst, '\n')
}

// trec is a record at time t from worker w with sequence number seq.
func trec(t int64, w int, seq int) correlate.Record {
	r := baseRecord()
	r.Pkt.Time = t
	r.Snap.Time = t + 1000
	r.Pkt.Ack = uint32(w)
	r.Pkt.Seq = uint32(seq)
	return r
}

type outLine struct {
	time   int64
	worker int
	seq    int
}

// readLines parses lineFormat output; it checks the header and footer.
func readLines(t *testing.T, data []byte, wantFooter bool) []outLine {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) == 0 || lines[0] != "H" {
		t.Fatalf("first line is not the header: %q", lines[:min(len(lines), 3)])
	}
	lines = lines[1:]
	if wantFooter {
		if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "F ") {
			t.Fatalf("last line is not the footer: %q", lines[max(0, len(lines)-3):])
		}
		lines = lines[:len(lines)-1]
	}
	var out []outLine
	for _, l := range lines {
		var o outLine
		if _, err := fmt.Sscanf(l, "%d %d:%d", &o.time, &o.worker, &o.seq); err != nil {
			t.Fatalf("bad line %q: %v", l, err)
		}
		out = append(out, o)
	}
	return out
}

func checkSorted(t *testing.T, lines []outLine) {
	t.Helper()
	for i := 1; i < len(lines); i++ {
		if lines[i].time < lines[i-1].time {
			t.Fatalf("line %d: time %d after %d", i, lines[i].time, lines[i-1].time)
		}
	}
}

func openTest(t *testing.T, cfg *WriterConfig) *Writer {
	t.Helper()
	if cfg.Format == nil {
		cfg.Format = lineFormat{}
	}
	w, err := OpenWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(nil) })
	return w
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWriterOrderingTwoProducers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w := openTest(t, &WriterConfig{Path: path, Workers: 2, Delay: -1, QueueLen: 8, BatchCap: 5})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	// Each producer's records are shuffled within a batch, and a batch may
	// hold records older than the previous batch's newest, but never older
	// than the watermark sent with the previous batch.
	rng := rand.New(rand.NewPCG(7, 8))
	next := [2]int64{1000, 1003}
	seq := [2]int{}
	total, retries := 0, 0
	for round := range 200 {
		for p := range 2 {
			n := rng.IntN(12) // may exceed BatchCap: split into batches
			recs := make([]correlate.Record, 0, n)
			base := next[p]
			for range n {
				recs = append(recs, trec(base+rng.Int64N(50), p, seq[p]))
				seq[p]++
			}
			rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
			next[p] = base + 10 + rng.Int64N(10)
			for !w.Submit(p, recs, next[p]) {
				// Tiny queue: wait for room. Refused records may be submitted
				// again since a refused Submit leaves the watermark alone.
				retries += n
				time.Sleep(100 * time.Microsecond)
			}
			total += n
		}
		if round%50 == 0 {
			w.Advance(0, next[0]) // repeated watermark: no effect
		}
	}
	if err := w.Close(func() *Footer { return &Footer{} }); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, data, true)
	if len(lines) != total {
		t.Fatalf("%d records written, want %d", len(lines), total)
	}
	checkSorted(t, lines)
	st := w.Stats()
	if st.Late != 0 || st.Records != uint64(total) || st.Rejected != uint64(retries) || st.Forced != 0 {
		t.Errorf("stats: %s", statsNoHist(st))
	}
	if med := st.Staleness.Quantile(0.5); st.Staleness.Count() != uint64(total) || med < 1000-1000/16 || med > 1000 {
		t.Errorf("staleness: count %d median %v", st.Staleness.Count(), st.Staleness.Quantile(0.5))
	}
	seen := make(map[[2]int]bool)
	for _, l := range lines {
		k := [2]int{l.worker, l.seq}
		if seen[k] {
			t.Fatalf("record %v written twice", k)
		}
		seen[k] = true
	}
}

func TestWriterEqualTimesKeepSubmissionOrder(t *testing.T) {
	var out syncbuf.Buffer
	w := openTest(t, &WriterConfig{Path: "-", Stdout: &out, Workers: 2})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	w.Submit(0, []correlate.Record{trec(5, 0, 0), trec(7, 0, 1), trec(5, 0, 2)}, 5)
	w.Submit(1, []correlate.Record{trec(5, 1, 3), trec(4, 1, 4)}, 5)
	w.Submit(0, []correlate.Record{trec(5, 0, 5)}, 5)
	if err := w.Close(func() *Footer { return &Footer{} }); err != nil {
		t.Fatal(err)
	}
	var seqs []int
	for _, l := range readLines(t, out.Bytes(), true) {
		seqs = append(seqs, l.seq)
	}
	if want := []int{4, 0, 2, 3, 5, 1}; !slices.Equal(seqs, want) {
		t.Errorf("order %v, want %v", seqs, want)
	}
}

func statsNoHist(s WriterStats) string {
	return fmt.Sprintf("records %d bytes %d queue %d/%d (%d records) held %d rejected %d forced %d late %d writeErrors %d lost %d",
		s.Records, s.Bytes, s.QueueDepth, s.QueueCap, s.QueueRecords, s.Held, s.Rejected, s.Forced, s.Late,
		s.WriteErrors, s.LostToWriteError)
}

func TestWriterConcurrentProducers(t *testing.T) {
	var out syncbuf.Buffer
	const workers, perWorker = 4, 20000
	w := openTest(t, &WriterConfig{Path: "-", Stdout: &out, Workers: workers, QueueLen: 64, BatchCap: 256})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var rejected [workers]int
	for p := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 1))
			now := int64(1_000_000)
			recs := make([]correlate.Record, 0, 100)
			for i := 0; i < perWorker; {
				recs = recs[:0]
				n := min(1+rng.IntN(100), perWorker-i)
				for range n {
					// within a batch, times jitter up to 2000 ns around now
					recs = append(recs, trec(now+rng.Int64N(2000), p, i))
					i++
				}
				now += 1000 + rng.Int64N(1000)
				if !w.Submit(p, recs, now) {
					rejected[p] += n
				}
				if rng.IntN(10) == 0 {
					w.Advance(p, now)
					time.Sleep(time.Duration(rng.IntN(50)) * time.Microsecond)
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(func() *Footer { return &Footer{Counts: correlate.Counts{Packets: [2]uint64{42}}} }); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, out.Bytes(), true)
	nrej := 0
	for _, r := range rejected {
		nrej += r
	}
	if len(lines)+nrej != workers*perWorker {
		t.Fatalf("%d written + %d rejected, want %d", len(lines), nrej, workers*perWorker)
	}
	checkSorted(t, lines)
	st := w.Stats()
	if st.Late != 0 || st.Rejected != uint64(nrej) || st.Records != uint64(len(lines)) {
		t.Errorf("stats: %s", statsNoHist(st))
	}
	if !bytes.HasSuffix(out.Bytes(), []byte("F 42\n")) {
		t.Error("footer is not last")
	}
	t.Logf("%d records, %d rejected", len(lines), nrej)
}

func TestWriterWatermarks(t *testing.T) {
	var out syncbuf.Buffer
	w := openTest(t, &WriterConfig{Path: "-", Stdout: &out, Workers: 2, Delay: 10, FlushInterval: time.Millisecond})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	recs := []correlate.Record{trec(100, 0, 0), trec(120, 0, 1), trec(140, 0, 2), trec(160, 0, 3)}
	if !w.Submit(0, recs, 200) {
		t.Fatal("Submit refused")
	}
	// Worker 1 has reported nothing: everything is held (that nothing is
	// written then is TestMergeWatermarks's, without goroutines or clocks).
	waitFor(t, "records held", func() bool { return w.Stats().Held == 4 })
	if n := w.Stats().Records; n != 0 {
		t.Fatalf("%d records written before every producer reported a watermark", n)
	}
	// Worker 1's watermark 140 allows records up to 140-Delay = 130.
	w.Advance(1, 140)
	waitFor(t, "two records written", func() bool { return w.Stats().Records == 2 })
	if st := w.Stats(); st.Held != 2 {
		t.Fatalf("Held = %d, want 2", st.Held)
	}
	// An older watermark is ignored.
	w.Advance(1, 50)
	w.Advance(1, 1000)
	// Now worker 0's 200 is the lowest: 160 can go.
	waitFor(t, "all written", func() bool { return w.Stats().Records == 4 })
	// A record below the writer's progress is written anyway, counted Late.
	if !w.Submit(1, []correlate.Record{trec(110, 1, 0)}, 1000) {
		t.Fatal("Submit refused")
	}
	w.Advance(0, 2000)
	waitFor(t, "late record written", func() bool { return w.Stats().Records == 5 })
	if st := w.Stats(); st.Late != 1 {
		t.Errorf("Late = %d, want 1", st.Late)
	}
	// Records held at Close are written, in order, before the footer.
	w.Submit(0, []correlate.Record{trec(5000, 0, 9), trec(3000, 0, 8)}, 6000)
	if err := w.Close(func() *Footer { return &Footer{} }); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, out.Bytes(), true)
	var times []int64
	for _, l := range lines {
		times = append(times, l.time)
	}
	if want := []int64{100, 120, 140, 160, 110, 3000, 5000}; !slices.Equal(times, want) {
		t.Errorf("times = %v, want %v", times, want)
	}
}

func TestWriterForcedByMaxHeld(t *testing.T) {
	var out syncbuf.Buffer
	w := openTest(t, &WriterConfig{Path: "-", Stdout: &out, Workers: 2, MaxHeld: 10})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	// Worker 1 never reports: only the hold cap lets records out.
	for i := range 25 {
		if !w.Submit(0, []correlate.Record{trec(int64(i), 0, i)}, int64(i)) {
			t.Fatal("Submit refused")
		}
	}
	waitFor(t, "forced records", func() bool { return w.Stats().Forced == 15 })
	if st := w.Stats(); st.Held != 10 {
		t.Errorf("Held = %d, want 10", st.Held)
	}
	if err := w.Close(func() *Footer { return &Footer{} }); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, out.Bytes(), true)
	if len(lines) != 25 {
		t.Fatalf("%d lines", len(lines))
	}
	checkSorted(t, lines)
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	buf     syncbuf.Buffer
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return b.buf.Write(p)
}

func TestWriterSubmitNeverBlocks(t *testing.T) {
	bw := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	w := openTest(t, &WriterConfig{Path: "-", Stdout: bw, Workers: 1, QueueLen: 2, QueueRecords: 100,
		BatchCap: 10, Delay: -1, FlushInterval: time.Millisecond})
	if err := w.Start(nil); err != nil {
		t.Fatal(err)
	}
	if !w.Submit(0, []correlate.Record{trec(1, 0, 0)}, 2) {
		t.Fatal("first Submit refused")
	}
	<-bw.entered // the writer goroutine is stuck in Write
	done := make(chan struct{})
	var results []bool
	go func() {
		defer close(done)
		batch := make([]correlate.Record, 10)
		for i := range batch {
			batch[i] = trec(10, 0, i)
		}
		results = append(results, w.Submit(0, batch[:3], 20))  // queued
		results = append(results, w.Submit(0, batch[:3], 20))  // queued: the queue holds 2 batches
		results = append(results, w.Submit(0, batch[:3], 20))  // refused: no room
		results = append(results, w.Submit(0, batch[:0], 30))  // watermark only: always accepted
		results = append(results, w.Submit(0, batch[:10], 40)) // refused
		w.Advance(0, 50)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Submit blocked on a stuck writer")
	}
	if want := []bool{true, true, false, true, false}; !slices.Equal(results, want) {
		t.Errorf("Submit results = %v, want %v", results, want)
	}
	st := w.Stats()
	if st.Rejected != 13 || st.QueueDepth != 2 || st.QueueRecords != 6 || st.QueueCap != 2 {
		t.Errorf("stats: %s", statsNoHist(st))
	}
	// A Submit larger than the whole queue is refused outright.
	if w.Submit(0, make([]correlate.Record, 101), 60) {
		t.Error("Submit of more records than QueueRecords accepted")
	}
	close(bw.release)
	if err := w.Close(func() *Footer { return &Footer{} }); err != nil {
		t.Fatal(err)
	}
	if w.Submit(0, []correlate.Record{trec(100, 0, 0)}, 100) {
		t.Error("Submit after Close accepted")
	}
	lines := strings.Count(string(bw.buf.Bytes()), "\n")
	if lines != 1+6+1 { // first record, two batches of 3, footer (no header)
		t.Errorf("%d lines written, want 8:\n%s", lines, bw.buf.Bytes())
	}
}

func TestWriterAppendsAndMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "siftr.log")
	if err := os.WriteFile(path, []byte("previous run\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for run := range 2 {
		w, err := OpenWriter(&WriterConfig{Path: path, Workers: 1, Format: SIFTR()})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(goldenHeader()); err != nil {
			t.Fatal(err)
		}
		r := baseRecord()
		r.Pkt.Time += int64(run)
		w.Submit(0, []correlate.Record{r}, r.Pkt.Time+1)
		if err := w.Close(func() *Footer { return goldenFooter() }); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 7 || lines[0] != "previous run" || !strings.HasPrefix(lines[1], "enable_time_secs=") ||
		!strings.HasPrefix(lines[2], "o,") || !strings.HasPrefix(lines[3], "disable_time_secs=") ||
		!strings.HasPrefix(lines[4], "enable_time_secs=") || !strings.HasPrefix(lines[6], "disable_time_secs=") {
		t.Errorf("file after two runs:\n%s", data)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("existing file's mode changed to %v", fi.Mode())
	}

	// A new file gets 0644 (less the umask).
	newPath := filepath.Join(t.TempDir(), "new.log")
	w, err := OpenWriter(&WriterConfig{Path: newPath, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	w.Close(nil)
	fi, err = os.Stat(newPath)
	if err != nil {
		t.Fatal(err)
	}
	if p := fi.Mode().Perm(); p&^0o644 != 0 || p&0o600 != 0o600 || !fi.Mode().IsRegular() {
		t.Errorf("new file mode %v, want 0644 less the umask", fi.Mode())
	}
}

func TestOpenWriterErrors(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Skip("no symlinks:", err)
	}
	tests := []struct {
		name string
		cfg  WriterConfig
		want string
		is   error
	}{
		{"symlink", WriterConfig{Path: link, Workers: 1}, "symbolic link", syscall.ELOOP},
		{"dangling symlink", WriterConfig{Path: filepath.Join(dir, "dangling"), Workers: 1}, "symbolic link", syscall.ELOOP},
		{"directory", WriterConfig{Path: dir, Workers: 1}, "is a directory", syscall.EISDIR},
		{"no such directory", WriterConfig{Path: filepath.Join(dir, "nodir", "log"), Workers: 1}, "directory does not exist", os.ErrNotExist},
		{"no workers", WriterConfig{Path: "-"}, "Workers", nil},
		{"empty path", WriterConfig{Workers: 1}, "Path is empty", nil},
	}
	if err := os.Symlink(filepath.Join(dir, "missing"), filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := OpenWriter(&tt.cfg)
			if err == nil {
				w.Close(nil)
				t.Fatal("OpenWriter succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a dangling symlink's target was created")
	}
	if _, err := OpenWriter(nil); err == nil {
		t.Error("OpenWriter(nil) succeeded")
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		_, err := OpenWriter(&WriterConfig{Path: filepath.Join(ro, "log"), Workers: 1})
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("read-only directory: error %v", err)
		}
	}
}

func TestWriterReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "log")
	w := openTest(t, &WriterConfig{Path: path, Workers: 1, Delay: -1, FlushInterval: time.Hour})
	if err := w.Reopen(); err != nil { // before Start: allowed
		t.Fatal(err)
	}
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	seq := 0
	submit := func(n int) {
		for range n {
			w.Submit(0, []correlate.Record{trec(int64(seq), 0, seq)}, int64(seq)-1)
			seq++
		}
	}
	submit(100) // written up to seq 98 (watermark 98), 99 held
	waitFor(t, "records formatted", func() bool { return w.Stats().Held == 1 })
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	submit(50) // some go to the old file's buffer
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	submit(50)
	if err := w.Close(func() *Footer { return &Footer{} }); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); !errors.Is(err, ErrClosed) {
		t.Errorf("Reopen after Close: %v", err)
	}
	old, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	a := readLines(t, old, false)
	b := readLines(t, append([]byte("H\n"), cur...), true)
	all := append(a, b...)
	if len(all) != seq || len(a) == 0 || len(b) == 0 {
		t.Fatalf("old file %d + new file %d records, want %d", len(a), len(b), seq)
	}
	for i, l := range all {
		if l.seq != i {
			t.Fatalf("record %d is seq %d", i, l.seq)
		}
	}
}

func TestWriterFailingFile(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	w, err := OpenWriter(&WriterConfig{Path: "/dev/full", Workers: 1, Delay: -1, FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(&Header{}); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Start: %v, want ENOSPC", err)
	}
	start := time.Now()
	const n = 5000
	accepted := 0
	for i := range n {
		if w.Submit(0, []correlate.Record{trec(int64(i), 0, i)}, int64(i+1)) {
			accepted++
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Submit took %v for %d records", d, n)
	}
	waitFor(t, "write errors", func() bool { return w.Stats().WriteErrors > 0 })
	if !errors.Is(w.Err(), syscall.ENOSPC) {
		t.Errorf("Err() = %v", w.Err())
	}
	cerr := w.Close(func() *Footer { return &Footer{} })
	if !errors.Is(cerr, syscall.ENOSPC) || !strings.Contains(cerr.Error(), "/dev/full") {
		t.Errorf("Close = %v, want an ENOSPC error naming the file", cerr)
	}
	if again := w.Close(nil); again != cerr {
		t.Errorf("second Close = %v, want %v", again, cerr)
	}
	st := w.Stats()
	if st.LostToWriteError != uint64(accepted) || st.Records != 0 || accepted == 0 {
		t.Errorf("accepted %d; stats %+v", accepted, statsNoHist(st))
	}
}

func TestWriterCloseWithoutStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w, err := OpenWriter(&WriterConfig{Path: path, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	called := false
	if err := w.Close(func() *Footer { called = true; return &Footer{} }); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(&Header{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	if called {
		t.Error("footer built for a writer never started")
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("file: %v %v", fi, err)
	}
}

func TestWriterIdleFlush(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w := openTest(t, &WriterConfig{Path: path, Workers: 1, Delay: -1, Format: SIFTR()})
	if err := w.Start(goldenHeader()); err != nil {
		t.Fatal(err)
	}
	r := baseRecord()
	w.Submit(0, []correlate.Record{r}, r.Pkt.Time+1)
	// No Close: the record must reach the file within the flush interval.
	// The line reaches the file just before the writer counts it.
	waitFor(t, "flush", func() bool {
		data, _ := os.ReadFile(path)
		return bytes.Count(data, []byte("\n")) == 2 && w.Stats().Records == 1
	})
	if st := w.Stats(); st.Records != 1 {
		t.Errorf("Records = %d", st.Records)
	}
}

func TestSubmitAllocs(t *testing.T) {
	w := openTest(t, &WriterConfig{Path: "-", Stdout: io.Discard, Workers: 1, Delay: -1})
	if err := w.Start(nil); err != nil {
		t.Fatal(err)
	}
	recs := make([]correlate.Record, 64)
	for i := range recs {
		recs[i] = trec(0, 0, i) // snapshots come from the lookups, not from Submit
	}
	now := int64(0)
	submit := func() {
		for i := range recs {
			recs[i].Pkt.Time = now + int64(i)
		}
		now += int64(len(recs))
		if !w.Submit(0, recs, now) {
			t.Fatal("Submit refused")
		}
		for w.Stats().QueueDepth != 0 {
			time.Sleep(10 * time.Microsecond)
		}
	}
	for range 100 {
		submit() // warm up the batch pool
	}
	if n := testing.AllocsPerRun(200, submit); n > 0.05 {
		t.Errorf("Submit allocates %v times per call", n)
	}
}

func BenchmarkWriterThroughput(b *testing.B) {
	for _, name := range []string{NameSIFTR, NameJSONL} {
		f, _ := FormatByName(name)
		b.Run(name, func(b *testing.B) {
			w, err := OpenWriter(&WriterConfig{Path: "-", Stdout: io.Discard, Workers: 2, Format: f})
			if err != nil {
				b.Fatal(err)
			}
			if err := w.Start(goldenHeader()); err != nil {
				b.Fatal(err)
			}
			recs := [2][]correlate.Record{make([]correlate.Record, 64), make([]correlate.Record, 64)}
			for p := range recs {
				for i := range recs[p] {
					recs[p][i] = baseRecord()
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			now := int64(1_700_000_000_000_000_000)
			for sent, k := 0, 0; sent < b.N; k++ {
				p := k & 1
				batch := recs[p][:min(64, b.N-sent)]
				for i := range batch {
					batch[i].Pkt.Time = now + int64(i)*1000
				}
				now += 64 * 1000
				for !w.Submit(p, batch, now) {
					time.Sleep(50 * time.Microsecond)
				}
				sent += len(batch)
			}
			if err := w.Close(nil); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if st := w.Stats(); st.Records != uint64(b.N) {
				b.Fatalf("wrote %d records, want %d", st.Records, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

func TestWriterOnRecord(t *testing.T) {
	var got []int64
	w := openTest(t, &WriterConfig{Path: "-", Stdout: io.Discard, Workers: 1,
		OnRecord: func(r *correlate.Record) { got = append(got, r.Pkt.Time) }})
	if err := w.Start(nil); err != nil {
		t.Fatal(err)
	}
	w.Submit(0, []correlate.Record{trec(3, 0, 0), trec(1, 0, 1), trec(2, 0, 2)}, 0)
	if err := w.Close(nil); err != nil {
		t.Fatal(err)
	}
	if want := []int64{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("OnRecord saw %v, want %v", got, want)
	}
}

// TestRecordSize guards the memory estimate in the Writer's doc: the
// default queue bound is sized for 112-byte records.
func TestRecordSize(t *testing.T) {
	if n := unsafe.Sizeof(correlate.Record{}); n > 112 {
		t.Errorf("correlate.Record is %d bytes; the queue bounds assume 112", n)
	}
}

// TestWriterOrderAcrossBackwardStep submits the records of two producers
// before and after the wall clock steps back 10 s. With the run's
// Timeline the lines come out in the order of their packets (those before
// the step, then those after, each merged in time order) and none is late;
// without it (the writer's time order alone) those after the step are all
// late, released as they come.
func TestWriterOrderAcrossBackwardStep(t *testing.T) {
	const ms = int64(time.Millisecond)
	base := int64(1_000_000) * int64(time.Second)
	for _, withTimeline := range []bool{true, false} {
		t.Run(fmt.Sprintf("timeline=%v", withTimeline), func(t *testing.T) {
			var tl *clockstep.Timeline
			if withTimeline {
				tl = new(clockstep.Timeline)
			}
			var (
				mu  sync.Mutex
				got []int64
			)
			w := openTest(t, &WriterConfig{Path: "-", Stdout: io.Discard, Workers: 2, Delay: -1, Timeline: tl,
				OnRecord: func(r *correlate.Record) { mu.Lock(); got = append(got, r.Pkt.Time); mu.Unlock() }})
			var now atomic.Int64
			w.now = now.Load
			if err := w.Start(&Header{}); err != nil {
				t.Fatal(err)
			}
			var want []int64
			// submit gives producer p the records at t0 + 2i ms + p ms, i < 10,
			// newest first, with the watermark after them.
			submit := func(p int, t0 int64) {
				var recs []correlate.Record
				for i := range 10 {
					recs = append(recs, trec(t0+int64(2*i+p)*ms, p, i))
				}
				slices.Reverse(recs) // each batch is sorted by the writer
				if !w.Submit(p, recs, t0+20*ms+int64(p)*ms) {
					t.Fatal("Submit refused")
				}
			}
			now.Store(base + 30*ms)
			submit(0, base)
			submit(1, base)
			for i := range 20 {
				want = append(want, base+int64(i)*ms)
			}
			waitFor(t, "the records before the step", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 20 })
			// The clock steps back 10 s; the packets after it are stamped
			// in the new frame. Producer 0 is ahead of producer 1.
			after := base + 30*ms - 10*int64(time.Second)
			if tl != nil {
				tl.Back(10 * time.Second)
			}
			now.Store(after + 30*ms)
			submit(0, after)
			submit(1, after)
			for i := range 20 {
				want = append(want, after+int64(i)*ms)
			}
			if err := w.Close(func() *Footer { return &Footer{} }); err != nil {
				t.Fatal(err)
			}
			late := w.Stats().Late
			mu.Lock()
			defer mu.Unlock()
			if withTimeline {
				if !slices.Equal(got, want) || late != 0 {
					t.Errorf("%d late; order (ns from base):\n got %v\nwant %v", late, rel(got, base), rel(want, base))
				}
				return
			}
			if late != 20 {
				t.Errorf("without a timeline: %d late, want the 20 after the step", late)
			}
		})
	}
}

func rel(ts []int64, base int64) []int64 {
	out := make([]int64, len(ts))
	for i, v := range ts {
		out[i] = (v - base) / int64(time.Millisecond)
	}
	return out
}
