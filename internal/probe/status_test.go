package probe

import (
	"strings"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/hist"
	"github.com/siftr-probe/siftr-probe/internal/metrics"
	"github.com/siftr-probe/siftr-probe/output"
)

// TestStatusLineInterval checks that the status line's rates and staleness
// quantiles cover the interval since the previous line, not the whole run.
func TestStatusLineInterval(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 18, 7, 1, 0, time.Local)
	s := &status{last: t0}
	var h hist.Histogram
	for range 1000 {
		h.Record(int64(40 * time.Millisecond))
	}
	in := metrics.Stats{
		Enabled: true, PPL: 1, Port: 5201, Cycle: 1, CycleStart: t0,
		Counts: correlate.Counts{Packets: [2]uint64{100, 1000}},
		Writer: output.WriterStats{Records: 1000, QueueCap: 1024, Staleness: h.Snapshot()},
		Engine: correlate.Stats{ActiveFlows: 2},
	}
	first := s.line(t0.Add(time.Second), &in)
	q := Millis(in.Writer.Staleness.Quantile(0.5)) // 40 ms, give or take the bucket width
	if want := "18:07:02  enabled ppl 1 port 5201  in 100 pkt/s  out 1000 pkt/s  records 1000/s (1000)  skipped 0  ring drops 0  queue 0/1024  flows 2  staleness p50 " + q + " p99 " + q; first != want {
		t.Errorf("first line:\n%s\nwant\n%s", first, want)
	}

	// The next second: 10 records, all 1 ms stale.
	for range 10 {
		h.Record(int64(time.Millisecond))
	}
	in.Counts.Packets = [2]uint64{110, 1010}
	in.Writer.Records = 1010
	in.Writer.Staleness = h.Snapshot()
	second := s.line(t0.Add(2*time.Second), &in)
	if !strings.Contains(second, "records 10/s (1010)") || !strings.Contains(second, "in 10 pkt/s  out 10 pkt/s") {
		t.Errorf("second line rates: %s", second)
	}
	if !strings.HasSuffix(second, "staleness p50 1.00ms p99 1.00ms") {
		t.Errorf("second line: %s\nwant the staleness of the last second only (1 ms), not of the run (40 ms)", second)
	}

	// A second without records.
	third := s.line(t0.Add(3*time.Second), &in)
	if !strings.HasSuffix(third, "staleness p50 - p99 -") {
		t.Errorf("third line: %s\nwant no staleness for an interval without records", third)
	}
}

// TestStatusLineCycles: while disabled the line says so and the settings;
// a new cycle's rates start from its own zero counters.
func TestStatusLineCycles(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 18, 7, 1, 0, time.Local)
	s := &status{last: t0}
	in := metrics.Stats{Enabled: true, PPL: 1, Port: 5201, Cycle: 1, CycleStart: t0,
		Counts: correlate.Counts{Packets: [2]uint64{5000, 5000}}, Writer: output.WriterStats{Records: 10000, QueueCap: 1024}}
	s.line(t0.Add(time.Second), &in)
	off := metrics.Stats{PPL: 10, Port: 0, Cycle: 1}
	if got, want := s.line(t0.Add(2*time.Second), &off), "18:07:03  disabled ppl 10 port all"; got != want {
		t.Errorf("disabled: %q, want %q", got, want)
	}
	// Cycle 2 began at 18:07:04 and has counted 300 packets by 18:07:05.
	next := metrics.Stats{Enabled: true, PPL: 10, Cycle: 2, CycleStart: t0.Add(3 * time.Second),
		Counts: correlate.Counts{Packets: [2]uint64{100, 200}}, Writer: output.WriterStats{Records: 30, QueueCap: 1024}}
	got := s.line(t0.Add(4*time.Second), &next)
	if !strings.Contains(got, "enabled ppl 10 port all  in 100 pkt/s  out 200 pkt/s  records 30/s (30)") {
		t.Errorf("first line of cycle 2: %q, want its rates from its own start", got)
	}
}
