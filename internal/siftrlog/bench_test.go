package siftrlog_test

import (
	"bytes"
	"io"
	"runtime"
	"testing"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/logtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/output"
)

// BenchmarkReader reads 100,000 synthetic data lines of 8 flows per
// iteration, from memory, and reports lines/s.
func BenchmarkReader(b *testing.B) {
	for _, name := range []string{output.NameSIFTR, output.NameJSONL} {
		f, _ := output.FormatByName(name)
		const n = 100000
		var log []byte
		logtest.Synthetic(logtest.Flows(8), n, start, func(r *correlate.Record) { log = f.AppendRecord(log, r) })
		runtime.GC()
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(log)))
			br := bytes.NewReader(log)
			rd := siftrlog.NewReader(br)
			for b.Loop() {
				br.Reset(log)
				rd.Reset(br)
				lines := 0
				for {
					err := rd.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					lines++
				}
				if lines != n {
					b.Fatalf("%d lines", lines)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "lines/s")
		})
	}
}
