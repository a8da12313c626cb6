// Command genlog writes a synthetic siftr-probe log (logtest.Synthetic) to
// stdout, for benchmarks against other tools:
//
//	go run ./internal/logtest/genlog -n 10000000 -flows 8 > /tmp/big.log
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/logtest"
	"github.com/siftr-probe/siftr-probe/output"
)

func main() {
	n := flag.Int("n", 1000000, "data lines")
	nflows := flag.Int("flows", 8, "flows")
	format := flag.String("format", "siftr", "siftr or jsonl")
	flag.Parse()
	f, err := output.FormatByName(*format)
	if err != nil || *n < 0 || *nflows < 1 {
		fmt.Fprintln(os.Stderr, "genlog: bad arguments")
		os.Exit(2)
	}
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	start := time.Unix(1700000000, 0)
	flows := logtest.Flows(*nflows)
	var recs [2]uint64
	buf := f.AppendHeader(nil, logtest.Header(start))
	logtest.Synthetic(flows, *n, start, func(r *correlate.Record) {
		recs[r.Pkt.Dir]++
		buf = f.AppendRecord(buf, r)
		if len(buf) > 1<<16 {
			w.Write(buf)
			buf = buf[:0]
		}
	})
	ft := logtest.Footer(start.Add(time.Duration(*n)*10*time.Microsecond+time.Millisecond), nil, flows, [2]uint64{})
	ft.Counts.Packets = recs
	buf = output.AppendFooter(f, buf, ft)
	w.Write(buf)
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "genlog:", err)
		os.Exit(1)
	}
}
