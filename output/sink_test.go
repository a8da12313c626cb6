package output

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// smallFS mounts a tmpfs of size bytes on a new directory for the test.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	labtest.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount tmpfs: %v", err)
		}
	})
	return dir
}

// flushNow waits until every submitted record is formatted, then writes
// the buffer (Reopen flushes first; the path still names the open file, so
// nothing else changes).
func flushNow(t *testing.T, w *Writer) error {
	t.Helper()
	waitFor(t, "records formatted", func() bool { st := w.Stats(); return st.Held == 0 && st.QueueRecords == 0 })
	return w.Reopen()
}

// TestIntegrationWriterDiskFull fills a real file system: after the failed
// write the log ends on a whole line, Records and LostToWriteError count
// exactly the lines that are and are not in it, Bytes is its size, and once
// space is free again the writer goes on with whole lines and a disable line
// whose identity holds for the lines in the file.
func TestIntegrationWriterDiskFull(t *testing.T) {
	dir := smallFS(t, "64k")
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 16<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "siftr.log")
	w, err := OpenWriter(&WriterConfig{Path: path, Workers: 1, Delay: -1, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(goldenHeader()); err != nil {
		t.Fatal(err)
	}
	seq := 0
	submit := func(n int) {
		t.Helper()
		for range n {
			r := baseRecord()
			r.Pkt.Time += int64(seq) * 1000
			r.Pkt.Seq = uint32(seq)
			if seq%3 == 0 {
				r.Pkt.Dir = tcp.DirIn
			}
			if !w.Submit(0, []correlate.Record{r}, r.Pkt.Time+1) {
				t.Fatal("Submit refused")
			}
			seq++
		}
	}
	submit(1000) // about 200 KB of lines: far more than fits
	if err := flushNow(t, w); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(w.Err(), syscall.ENOSPC) {
		t.Fatalf("Err() = %v, want ENOSPC", w.Err())
	}
	st := w.Stats()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		t.Fatalf("after the failed write the log ends in %q, not on a whole line", data[max(0, len(data)-40):])
	}
	lines := bytes.Count(data, []byte("\n")) - 1 // less the enable line
	if st.Records != uint64(lines) || st.Records+st.LostToWriteError != 1000 || st.Records == 0 {
		t.Errorf("file has %d data lines; Records %d, LostToWriteError %d (want the lines, and 1000 in all)", lines, st.Records, st.LostToWriteError)
	}
	if st.Bytes != uint64(len(data)) {
		t.Errorf("Bytes = %d, file is %d bytes", st.Bytes, len(data))
	}

	// Space again: the next records and the disable line follow whole lines.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	submit(20)
	var counts correlate.Counts
	for i := range seq {
		d := tcp.DirOut
		if i%3 == 0 {
			d = tcp.DirIn
		}
		counts.Packets[d]++
	}
	if err := w.Close(func() *Footer { return &Footer{Time: time.Unix(1700000200, 0), Counts: counts} }); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Close = %v, want the first error, ENOSPC", err)
	}
	data, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	log, err := siftrlog.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("log after the disk filled: %v", err)
	}
	st = w.Stats()
	if len(log.Lines) != int(st.Records) || len(log.Disable) != 1 || st.Bytes != uint64(len(data)) {
		t.Fatalf("%d data lines, %d disable lines, %d bytes; Records %d, Bytes %d", len(log.Lines), len(log.Disable), len(data), st.Records, st.Bytes)
	}
	for i, d := range []byte{'i', 'o'} {
		key := []string{"num_inbound_skipped_pkts_malloc", "num_outbound_skipped_pkts_malloc"}[i]
		pk := []string{"num_inbound_tcp_pkts", "num_outbound_tcp_pkts"}[i]
		if got, want := log.Uint(pk), uint64(log.Count(d))+log.Uint(key); got != want {
			t.Errorf("%s: %d packets, but %d lines + %d skipped", pk, got, log.Count(d), log.Uint(key))
		}
	}
	if log.Uint("num_inbound_skipped_pkts_malloc")+log.Uint("num_outbound_skipped_pkts_malloc") != st.LostToWriteError {
		t.Errorf("disable line skips %d+%d, lost %d", log.Uint("num_inbound_skipped_pkts_malloc"), log.Uint("num_outbound_skipped_pkts_malloc"), st.LostToWriteError)
	}
}

// TestIntegrationWriterDiskFullRotate checks that a line cut by a full disk
// does not run into the next file after a rotation.
func TestIntegrationWriterDiskFullRotate(t *testing.T) {
	dir := smallFS(t, "32k")
	path := filepath.Join(dir, "siftr.log")
	w, err := OpenWriter(&WriterConfig{Path: path, Workers: 1, Delay: -1, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(nil)
	if err := w.Start(goldenHeader()); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		r := baseRecord()
		r.Pkt.Time += int64(i)
		w.Submit(0, []correlate.Record{r}, r.Pkt.Time+1)
	}
	if err := flushNow(t, w); err != nil {
		t.Fatal(err)
	}
	if w.Stats().WriteErrors == 0 {
		t.Fatal("the disk did not fill")
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path+".1", 0); err != nil { // make room
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	r := baseRecord()
	r.Pkt.Time += 1000
	w.Submit(0, []correlate.Record{r}, r.Pkt.Time+1)
	if err := flushNow(t, w); err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(old, []byte("\n")) || !bytes.HasPrefix(cur, []byte("o,")) || bytes.Count(cur, []byte("\n")) != 1 {
		t.Errorf("rotated file ends %q; new file is %q: want whole lines in both", old[max(0, len(old)-20):], cur)
	}
}

// shortWriter takes the first limit bytes, then fails with ENOSPC, like a
// pipe or device that cannot be truncated.
type shortWriter struct {
	buf   bytes.Buffer
	limit int
}

func (s *shortWriter) Write(p []byte) (int, error) {
	room := s.limit - s.buf.Len()
	if room >= len(p) {
		return s.buf.Write(p)
	}
	s.buf.Write(p[:max(room, 0)])
	return max(room, 0), syscall.ENOSPC
}

// TestSinkShortWriteUntruncatable checks that where the partial line
// cannot be removed it is ended before the next write, and is not counted.
func TestSinkShortWriteUntruncatable(t *testing.T) {
	sw := &shortWriter{limit: 10}
	s, err := openSink("-", sw, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Write([]byte("line1\nline2\nline3\n"))
	if n != 6 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Write = %d, %v; want 6 (one whole line), ENOSPC", n, err)
	}
	sw.limit = 1 << 20
	if n, err := s.Write([]byte("line4\n")); n != 6 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if got := sw.buf.String(); got != "line1\nline\nline4\n" {
		t.Errorf("output %q: the cut line must be ended before the next", got)
	}
	if s.bytes.Load() != uint64(sw.buf.Len()) {
		t.Errorf("bytes %d, output %d", s.bytes.Load(), sw.buf.Len())
	}
}

// TestWriterLockedLog checks that a second writer on the same log is
// refused with a clear message, and that the lock goes with Close.
func TestWriterLockedLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "siftr.log")
	w1, err := OpenWriter(&WriterConfig{Path: path, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := OpenWriter(&WriterConfig{Path: path, Workers: 1})
	if err == nil {
		w2.Close(nil)
		t.Fatal("a second writer opened a log another writer holds")
	}
	if !strings.Contains(err.Error(), "log file "+path+" is locked by another process") || !errors.Is(err, unix.EWOULDBLOCK) {
		t.Errorf("error %q", err)
	}
	// Reopen of a path that still names the open file keeps it (no self-lock).
	if err := w1.Reopen(); err != nil {
		t.Errorf("Reopen of the same file: %v", err)
	}
	w1.Close(nil)
	w3, err := OpenWriter(&WriterConfig{Path: path, Workers: 1})
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	w3.Close(nil)
}

// TestWriterDeletedLog checks that a log deleted while open is noticed and
// reported once, and that Reopen starts a new file that is watched again.
func TestWriterDeletedLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "siftr.log")
	warned := make(chan string, 4)
	w := openTest(t, &WriterConfig{Path: path, Workers: 1, Delay: -1, FlushInterval: time.Hour,
		OnWarning: func(m string) { warned <- m }})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		w.Submit(0, []correlate.Record{trec(int64(i), 0, i)}, int64(i+1))
		if err := flushNow(t, w); err != nil {
			t.Fatal(err)
		}
	}
	// Reopen (the third flushNow) made a new file; remove that one too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w.Submit(0, []correlate.Record{trec(10, 0, 10)}, 11)
	if err := flushNow(t, w); err != nil {
		t.Fatal(err)
	}
	w.Close(nil)
	close(warned)
	var msgs []string
	for m := range warned {
		msgs = append(msgs, m)
	}
	if len(msgs) != 2 || !strings.Contains(msgs[0], "log file "+path+" was deleted while open") {
		t.Errorf("warnings %q, want one per deleted file", msgs)
	}
	if n := w.Stats().LogUnlinked; n != 2 {
		t.Errorf("LogUnlinked = %d, want 2", n)
	}
}

// TestOpenFileRefuses checks OpenFile's rules: no FIFO (not even blocking
// on one), no socket, no symlink, no directory; character devices are fine.
func TestOpenFileRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "target"), link); err != nil {
		t.Fatal(err)
	}
	// A FIFO with a reader opens without blocking, and is refused too.
	fifo2 := filepath.Join(dir, "fifo2")
	if err := unix.Mkfifo(fifo2, 0o644); err != nil {
		t.Fatal(err)
	}
	rd, err := os.OpenFile(fifo2, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	for _, tc := range []struct{ path, want string }{
		{fifo, "stats file " + fifo + " is a named pipe (FIFO), not a regular file"},
		{fifo2, "stats file " + fifo2 + " is a named pipe (FIFO), not a regular file"},
		{link, "stats file " + link + " is a symbolic link; refusing to follow it"},
		{dir, "stats file " + dir + " is a directory"},
		{filepath.Join(dir, "no", "x"), "cannot create stats file " + filepath.Join(dir, "no", "x") + ": its directory does not exist"},
		{"", "stats file: empty path"},
	} {
		f, err := OpenFile(tc.path, "stats file", os.O_TRUNC)
		if err == nil {
			f.Close()
			t.Errorf("%s: opened", tc.path)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want %q", tc.path, err, tc.want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "target")); !errors.Is(err, os.ErrNotExist) {
		t.Error("the symlink's target was created")
	}
	f, err := OpenFile(os.DevNull, "stats file", 0)
	if err != nil {
		t.Fatalf("%s: %v", os.DevNull, err)
	}
	f.Close()
	p := filepath.Join(dir, "new")
	f, err = OpenFile(p, "stats file", os.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("x"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() || fi.Size() != 1 {
		t.Errorf("new file: %v %v", fi, err)
	}
}

// TestOpenWriterFIFO checks that a FIFO log is refused at once rather than
// blocking until someone reads it.
func TestOpenWriterFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		w, err := OpenWriter(&WriterConfig{Path: fifo, Workers: 1})
		if err == nil {
			w.Close(nil)
		}
		done <- err
	}()
	err := <-done // before the fix this blocked forever in open(2)
	if err == nil || !strings.Contains(err.Error(), "log file "+fifo+" is a named pipe (FIFO), not a regular file") {
		t.Errorf("error %v", err)
	}
}

// manyFlows returns n distinct flows.
func manyFlows(n int) []correlate.Flow {
	flows := make([]correlate.Flow, n)
	for i := range flows {
		flows[i] = correlate.Flow{
			Local:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 16), byte(i >> 8)}), uint16(i)),
			Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, 0, 1}), 5201),
		}
	}
	return flows
}

// writeSizes records the size of each write, in memory.
type writeSizes struct {
	buf   bytes.Buffer
	sizes []int
}

func (w *writeSizes) Write(p []byte) (int, error) {
	w.sizes = append(w.sizes, len(p))
	return w.buf.Write(p)
}

// TestWriterStreamsDisableLine writes a disable line of 300,000 flows
// (about 11 MB) and checks that it went out in writes of about flushSize,
// not as one buffer the size of the line, and reads back whole.
func TestWriterStreamsDisableLine(t *testing.T) {
	const n = 300_000
	out := &writeSizes{}
	w, err := OpenWriter(&WriterConfig{Path: "-", Stdout: out, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(goldenHeader()); err != nil {
		t.Fatal(err)
	}
	flows := manyFlows(n)
	if err := w.Close(func() *Footer { return &Footer{Time: time.Unix(1700000200, 0), Flows: flows} }); err != nil {
		t.Fatal(err)
	}
	if len(out.sizes) < 5 || slices.Max(out.sizes) > flushSize+4<<10 {
		t.Errorf("%d bytes in %d writes, the largest %d: want the line streamed in writes of about %d",
			out.buf.Len(), len(out.sizes), slices.Max(out.sizes), flushSize)
	}
	log, err := siftrlog.Parse(&out.buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(log.Disable) != 1 || len(log.Flows) != n || log.Flows[n-1] != "10.1.4.147;37855-10.2.0.1;5201" {
		t.Errorf("%d disable lines, %d flows (last %q), want 1 and %d", len(log.Disable), len(log.Flows), log.Flows[len(log.Flows)-1], n)
	}
}

// TestIntegrationWriterDiskFullDisableLine fills the disk part way
// through a streamed disable line: the parts already written are taken
// back, so the log ends on its last whole line, and Bytes is its size.
func TestIntegrationWriterDiskFullDisableLine(t *testing.T) {
	dir := smallFS(t, "2m")
	path := filepath.Join(dir, "siftr.log")
	w, err := OpenWriter(&WriterConfig{Path: path, Workers: 1, Delay: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(goldenHeader()); err != nil {
		t.Fatal(err)
	}
	r := baseRecord()
	w.Submit(0, []correlate.Record{r}, r.Pkt.Time+1)
	flows := manyFlows(150_000) // about 5 MB: more than one write fits
	if err := w.Close(func() *Footer { return &Footer{Time: time.Unix(1700000200, 0), Flows: flows} }); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close = %v, want ENOSPC", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	log, err := siftrlog.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("log: %v (ends %q)", err, data[max(0, len(data)-40):])
	}
	if len(log.Enable) != 1 || len(log.Lines) != 1 || len(log.Disable) != 0 {
		t.Errorf("%d enable, %d data, %d disable lines: want the enable line and the record, no part of the disable line",
			len(log.Enable), len(log.Lines), len(log.Disable))
	}
	if st := w.Stats(); st.Bytes != uint64(len(data)) || st.Records != 1 {
		t.Errorf("Bytes %d, Records %d; the file is %d bytes with 1 record", st.Bytes, st.Records, len(data))
	}
}

// TestSinkLineInPartsUntruncatable: where a line written in parts cannot
// be taken back, it is ended before the next write.
func TestSinkLineInPartsUntruncatable(t *testing.T) {
	sw := &shortWriter{limit: 14}
	s, err := openSink("-", sw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.Write([]byte("line1\nlo")); n != 8 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if n, err := s.Write([]byte("ng line\n")); n != 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Write = %d, %v; want 0 (the line is not whole), ENOSPC", n, err)
	}
	sw.limit = 1 << 20
	if n, err := s.Write([]byte("line3\n")); n != 6 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if got := sw.buf.String(); got != "line1\nlong lin\nline3\n" {
		t.Errorf("output %q", got)
	}
	if s.bytes.Load() != uint64(sw.buf.Len()) {
		t.Errorf("bytes %d, output %d", s.bytes.Load(), sw.buf.Len())
	}
}
