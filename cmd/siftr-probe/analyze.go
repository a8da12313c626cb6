package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/siftr-probe/siftr-probe/internal/convert"
	"github.com/siftr-probe/siftr-probe/internal/plot"
	"github.com/siftr-probe/siftr-probe/internal/summary"
)

// The subcommands that read logs: summary, plot, convert. Each takes
// flags and log files in any order ("-" is stdin), exits 2 for bad
// arguments with a one-line message, 1 when reading or writing fails.

// flowIDs is a --flow value: flowids, comma-separated or repeated.
type flowIDs struct{ ids *[]uint32 }

func (f flowIDs) String() string {
	if f.ids == nil {
		return ""
	}
	var s []string
	for _, id := range *f.ids {
		s = append(s, strconv.FormatUint(uint64(id), 10))
	}
	return strings.Join(s, ",")
}

func (f flowIDs) Set(v string) error {
	for p := range strings.SplitSeq(v, ",") {
		id, err := strconv.ParseUint(strings.TrimSpace(p), 10, 32)
		if err != nil {
			return errors.New("not a flowid (a whole number, the 26th column of a data line)")
		}
		*f.ids = append(*f.ids, uint32(id))
	}
	return nil
}

// parseArgs parses flags and positional arguments in any order; "--" ends
// the flags. It returns the positional arguments.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// subcommand runs the common part of a log-reading subcommand: parsing,
// --help, the one-line errors. It returns the log paths, or an exit
// status to return at once.
func subcommand(name, help string, fs *flag.FlagSet, order []string, args []string, stdout, stderr io.Writer) ([]string, int, bool) {
	usage := func(w io.Writer) {
		fmt.Fprint(w, help)
		fmt.Fprint(w, "\nFlags:\n")
		printFlags(w, fs, order)
		fmt.Fprint(w, "  --help\n        print this help and exit\n")
	}
	paths, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return nil, exitOK, false
	}
	if err != nil {
		fmt.Fprintf(stderr, "siftr-probe %s: %v\nrun 'siftr-probe %s --help' for usage\n", name, flagError(fs, err), name)
		return nil, exitUsage, false
	}
	if len(paths) == 0 {
		fmt.Fprintf(stderr, "siftr-probe %s: no log file given (use - for stdin)\nrun 'siftr-probe %s --help' for usage\n", name, name)
		return nil, exitUsage, false
	}
	for _, p := range paths {
		if p == "" {
			fmt.Fprintf(stderr, "siftr-probe %s: empty file name\n", name)
			return nil, exitUsage, false
		}
	}
	return paths, 0, true
}

const summaryHelp = `siftr-probe summary: per-flow statistics of SIFTR logs.

Usage:
  siftr-probe summary [--flow ID] [--json] [--ppl N] LOG...

Reads SIFTR 1.3.0 text logs (from siftr-probe or FreeBSD's siftr) and
siftr-probe JSON lines, plain or gzip/zstd compressed; - reads stdin. Several
files are read as one stream, in the order given: give rotated files oldest
first. One pass, memory grows with the number of flows only.

For each run (section: enable line to disable line) it prints the disable
line's totals and checks the conservation identity (packets = data lines +
sampled out + skipped, per direction), then per flow: duration, records,
mss, SACK, window scales, min/p50/p99/max of cwnd, ssthresh, bytes in
flight, srtt and rto (quantiles within 1.6%), time in slow start, congestion
avoidance and recovery, and from JSON lines retransmissions, staleness and
the state source. Malformed lines are counted and the first 5 shown.

Examples:
  siftr-probe summary /var/log/siftr.log
  siftr-probe summary --flow 476312 --json siftr.log.1.gz siftr.log
  zstdcat big.log.zst | siftr-probe summary -
`

func runSummary(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newQuietFlagSet("siftr-probe summary")
	var cfg summary.Config
	var asJSON, quiet bool
	var ppl uint64
	fs.Var(flowIDs{&cfg.FlowIDs}, "flow", "only the flow(s) with flowid `ID` (the 26th column; comma-separated or repeated)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON document instead of the tables")
	fs.Uint64Var(&ppl, "ppl", 0, "the --ppl the log was written with, `N`: 1 makes the identity check exact; 0 = unknown")
	fs.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	paths, code, ok := subcommand("summary", summaryHelp, fs, []string{"flow", "json", "ppl", "quiet"}, args, stdout, stderr)
	if !ok {
		return code
	}
	cfg.Paths, cfg.Stdin, cfg.PPL = paths, stdin, ppl
	if !quiet {
		cfg.Progress = stderr
	}
	rep, err := summary.Summarise(cfg)
	if rep != nil {
		var werr error
		if asJSON {
			werr = rep.WriteJSON(stdout)
		} else {
			werr = rep.WriteText(stdout)
		}
		if werr != nil && err == nil {
			err = fmt.Errorf("write: %w", werr)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "siftr-probe summary: %v\n", err)
		return exitError
	}
	return exitOK
}

const convertHelp = `siftr-probe convert: SIFTR logs to Parquet or CSV, one row per data line.

Usage:
  siftr-probe convert --to parquet|csv -o OUT [--flow ID] LOG...

Column names are the JSON lines keys (output/FORMATS.md); a text log gives its
27 columns under the same names. Parquet columns are typed (strings, double
time, integers of the fields' widths) and the file's key-value metadata holds
the runs' enable and disable lines, the flow list, the input files and
formats (siftr.sources, siftr.sections, siftr.flows, siftr.malformed), so
pandas, Polars, DuckDB or Spark read a run directly. CSV has a header row.
Streaming: memory is bounded by one row group (128k rows). -o - writes to
stdout; a file is written under a temporary name and renamed when complete.

Examples:
  siftr-probe convert --to parquet -o run.parquet siftr.log
  siftr-probe convert --to csv -o - --flow 476312 siftr.log.gz > flow.csv
  duckdb -c "select flowid, max(snd_cwnd) from 'run.parquet' group by 1"
`

func runConvert(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newQuietFlagSet("siftr-probe convert")
	var cfg convert.Config
	var quiet bool
	fs.StringVar(&cfg.To, "to", "", "output `FORMAT`: parquet or csv (required)")
	fs.StringVar(&cfg.Out, "o", "", "write to file `OUT` (required); - = stdout")
	fs.Var(flowIDs{&cfg.FlowIDs}, "flow", "only the flow(s) with flowid `ID` (comma-separated or repeated)")
	fs.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	paths, code, ok := subcommand("convert", convertHelp, fs, []string{"to", "o", "flow", "quiet"}, args, stdout, stderr)
	if !ok {
		return code
	}
	usageErr := func(msg string) int {
		fmt.Fprintf(stderr, "siftr-probe convert: %s\nrun 'siftr-probe convert --help' for usage\n", msg)
		return exitUsage
	}
	switch {
	case cfg.To == "":
		return usageErr("--to is required (parquet or csv)")
	case cfg.To != "parquet" && cfg.To != "csv":
		return usageErr(fmt.Sprintf("bad --to %q: must be parquet or csv", cfg.To))
	case cfg.Out == "":
		return usageErr("-o is required (a file, or - for stdout)")
	}
	cfg.Paths, cfg.Stdin, cfg.Stdout = paths, stdin, stdout
	if !quiet {
		cfg.Progress = stderr
	}
	res, err := convert.Convert(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "siftr-probe convert: %v\n", err)
		return exitError
	}
	if !quiet && cfg.Out != "-" {
		fmt.Fprintf(stderr, "siftr-probe convert: wrote %s: %d rows, %d columns", cfg.Out, res.Rows, len(res.Columns))
		if res.Malformed > 0 {
			fmt.Fprintf(stderr, "; %d malformed lines skipped (see siftr-probe summary)", res.Malformed)
		}
		if res.Dropped > 0 {
			fmt.Fprintf(stderr, "; %d values of keys outside the columns dropped", res.Dropped)
		}
		fmt.Fprintln(stderr)
	}
	return exitOK
}

const plotHelp = `siftr-probe plot: time series of each flow's state, as an image or a web page.

Usage:
  siftr-probe plot [--flow ID] [--fields cwnd,ssthresh,...] -o FILE LOG...

Per flow, against seconds since its first record: cwnd, ssthresh (absent
while infinite), bytes in flight, snd_wnd and rcv_wnd on a bytes panel; srtt
and rto on a milliseconds panel. Outbound records are drawn as lines, inbound
records as dots (HTML: separate series). The output kind comes from -o:
  .png, .svg   static image, one row per flow (gonum/plot)
  .html        one self-contained page that works offline: zoom (drag, wheel),
               pan (shift+drag), toggle series (legend) and flows, hover values
Millions of records are decimated for drawing (min and max per time bucket,
which keeps peaks), and it says so on stderr and in the page; --max-points 0
keeps every record (siftr-probe convert exports the full data).

Fields: cwnd ssthresh inflight snd_wnd rcv_wnd snd_buf_cc rcv_buf_cc
        srtt rto staleness (staleness from JSON lines only)

Examples:
  siftr-probe plot -o cwnd.png siftr.log
  siftr-probe plot --flow 476312 --fields cwnd,ssthresh,srtt -o flow.svg siftr.log
  siftr-probe plot -o run.html siftr.log.1 siftr.log
`

func runPlot(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newQuietFlagSet("siftr-probe plot")
	var cfg plot.Config
	var fields string
	var quiet bool
	fs.Var(flowIDs{&cfg.FlowIDs}, "flow", "only the flow(s) with flowid `ID` (comma-separated or repeated)")
	fs.StringVar(&fields, "fields", plot.DefaultFields, "the `LIST` of fields to draw, comma-separated")
	fs.StringVar(&cfg.Out, "o", "", "write to `FILE` (required): .png, .svg or .html")
	fs.IntVar(&cfg.MaxPoints, "max-points", -1, "keep at most `N` points per flow and direction, decimating beyond; 0 = every record; -1 = 4000 for images, 20000 for HTML")
	fs.BoolVar(&quiet, "quiet", false, "no progress lines and no decimation notes on stderr")
	paths, code, ok := subcommand("plot", plotHelp, fs, []string{"o", "flow", "fields", "max-points", "quiet"}, args, stdout, stderr)
	if !ok {
		return code
	}
	usageErr := func(msg string) int {
		fmt.Fprintf(stderr, "siftr-probe plot: %s\nrun 'siftr-probe plot --help' for usage\n", msg)
		return exitUsage
	}
	if cfg.Out == "" {
		return usageErr("-o is required (a .png, .svg or .html file)")
	}
	if _, err := plot.KindOf(cfg.Out); err != nil {
		return usageErr(err.Error())
	}
	var err error
	if cfg.Fields, err = plot.ParseFields(fields); err != nil {
		return usageErr("bad --fields: " + err.Error())
	}
	if cfg.MaxPoints < -1 {
		return usageErr(fmt.Sprintf("bad --max-points %d: must be 0 (every record) or more", cfg.MaxPoints))
	}
	cfg.Paths, cfg.Stdin = paths, stdin
	if !quiet {
		cfg.Progress = stderr
	}
	res, err := plot.Plot(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "siftr-probe plot: %v\n", err)
		return exitError
	}
	if !quiet {
		for _, d := range res.Decimated() {
			fmt.Fprintf(stderr, "siftr-probe plot: %s\n", d)
		}
		fmt.Fprintf(stderr, "siftr-probe plot: wrote %s: %d flows\n", cfg.Out, len(res.Flows))
	}
	return exitOK
}
