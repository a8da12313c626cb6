package output

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
)

// TestWriterSync: Sync returns once every record before its time is in
// the file, which needs every producer's watermark past it; a producer
// that reports none holds it, until the caller gives up.
func TestWriterSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w := openTest(t, &WriterConfig{Path: path, Workers: 2, Delay: -1, FlushInterval: time.Hour})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	w.Submit(0, []correlate.Record{trec(10, 0, 1), trec(20, 0, 2), trec(30, 0, 3)}, 30)
	// Producer 1 has no watermark yet: nothing can be written.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := w.Sync(ctx, 25); err != context.DeadlineExceeded {
		t.Errorf("Sync with a producer silent: %v, want the deadline", err)
	}
	cancel()
	done := make(chan error, 1)
	go func() { done <- w.Sync(context.Background(), 25) }()
	w.Advance(1, 22) // releases 10 and 20 only: not yet past 25
	select {
	case err := <-done:
		t.Fatalf("Sync returned (%v) before the watermarks passed its time", err)
	case <-time.After(50 * time.Millisecond):
	}
	w.Advance(1, 40)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The flush interval is an hour: Sync itself wrote the lines out.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, b, false)
	if len(lines) != 3 || lines[1].time != 20 {
		t.Errorf("log after Sync: %q, want the records up to the watermark (30)", b)
	}
	if err := w.Close(nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(context.Background(), 1000); err != nil {
		t.Errorf("Sync after Close: %v", err)
	}
}

// TestWriterSetPath switches the log to another file and to stdout: lines
// buffered before go to the old file, nothing is written at the switch,
// and a path that cannot be opened leaves the log where it was.
func TestWriterSetPath(t *testing.T) {
	dir := t.TempDir()
	first, second := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	var stdout strings.Builder
	w := openTest(t, &WriterConfig{Path: first, Stdout: &stdout, Workers: 1, Delay: -1, FlushInterval: time.Hour})
	if err := w.Start(&Header{}); err != nil {
		t.Fatal(err)
	}
	w.Submit(0, []correlate.Record{trec(1, 0, 1), trec(2, 0, 2)}, 2)
	waitFor(t, "records formatted", func() bool { return w.Stats().Held == 0 })
	if err := os.Symlink(second, filepath.Join(dir, "link.log")); err != nil {
		t.Fatal(err)
	}
	if err := w.SetPath(filepath.Join(dir, "link.log")); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("SetPath to a symlink: %v, want it refused", err)
	}
	if got := w.Path(); got != first {
		t.Errorf("Path() = %q after a failed switch, want %q", got, first)
	}
	if err := w.SetPath(second); err != nil {
		t.Fatal(err)
	}
	// Another name of the open file: no switch, and not "locked".
	if err := w.SetPath(dir + "/./b.log"); err != nil {
		t.Errorf("SetPath to another name of the open file: %v", err)
	}
	w.Submit(0, []correlate.Record{trec(3, 0, 3)}, 3)
	if err := w.Sync(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	if err := w.SetPath("-"); err != nil {
		t.Fatal(err)
	}
	w.Submit(0, []correlate.Record{trec(4, 0, 4)}, 4)
	if err := w.SetPath(second); err != nil { // back to b.log: appended
		t.Fatal(err)
	}
	w.Submit(0, []correlate.Record{trec(5, 0, 5)}, 5)
	if err := w.Close(func() *Footer { return &Footer{} }); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(first)
	b, _ := os.ReadFile(second)
	if want := "H\n1 0:1\n2 0:2\n"; string(a) != want {
		t.Errorf("first file %q, want %q", a, want)
	}
	if want := "3 0:3\n5 0:5\nF 0\n"; string(b) != want {
		t.Errorf("second file %q, want %q", b, want)
	}
	if want := "4 0:4\n"; stdout.String() != want {
		t.Errorf("stdout %q, want %q", stdout.String(), want)
	}
	if got := w.Path(); got != second {
		t.Errorf("Path() = %q, want %q", got, second)
	}
}
