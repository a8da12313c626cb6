package summary

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/logtest"
	"github.com/siftr-probe/siftr-probe/output"
)

// benchLines is the size of the benchmark's log: 10M data lines of 8
// flows, about 1.5 GB of SIFTR text, written once to a temporary directory.
const benchLines = 10_000_000

// BenchmarkSummary summarises the 10M-line log: one iteration is the whole
// log, reported as lines/s. The file is in the page cache after writing,
// so this measures parsing and aggregation, not the disk.
func BenchmarkSummary(b *testing.B) {
	path := filepath.Join(b.TempDir(), "big.log")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fm := output.SIFTR()
	flows := logtest.Flows(8)
	buf := fm.AppendHeader(nil, logtest.Header(start))
	var counts [2]uint64
	logtest.Synthetic(flows, benchLines, start, func(r *correlate.Record) {
		counts[r.Pkt.Dir]++
		buf = fm.AppendRecord(buf, r)
		if len(buf) > 1<<16 {
			w.Write(buf)
			buf = buf[:0]
		}
	})
	ft := logtest.Footer(start.Add(200e9), nil, flows, [2]uint64{})
	ft.Counts.Packets = counts
	w.Write(output.AppendFooter(fm, buf, ft))
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	st, _ := os.Stat(path)
	b.SetBytes(st.Size())
	b.ReportAllocs()
	for b.Loop() {
		rep, err := Summarise(Config{Paths: []string{path}, PPL: 1})
		if err != nil {
			b.Fatal(err)
		}
		if got := rep.Total.DataLines.In + rep.Total.DataLines.Out; got != benchLines || !rep.Total.IdentityHolds {
			b.Fatalf("%d lines, identity %v", got, rep.Total.IdentityHolds)
		}
	}
	b.ReportMetric(float64(benchLines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
