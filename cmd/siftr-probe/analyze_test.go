package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/logtest"
	"github.com/siftr-probe/siftr-probe/output"
)

func testLog(t *testing.T) string {
	t.Helper()
	flows := logtest.Flows(2)
	var recs []*correlate.Record
	logtest.Synthetic(flows, 300, time.Unix(1700000000, 0), func(r *correlate.Record) { recs = append(recs, r) })
	var buf bytes.Buffer
	if err := logtest.Write(&buf, output.SIFTR(), time.Unix(1700000000, 0), recs, flows, [2]uint64{}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "a.log")
	os.WriteFile(p, buf.Bytes(), 0o644)
	return p
}

// TestSubcommands runs summary, plot and convert as the command line does:
// exit statuses, one-line errors, help.
func TestSubcommands(t *testing.T) {
	log := testLog(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "x.log")
	for _, c := range []struct {
		args       []string
		code       int
		out, err   string // substrings of stdout and stderr
		errOneLine bool
	}{
		{[]string{"summary", log}, 0, "2 flows, 300 data lines", "", false},
		{[]string{"summary", log, "--json", "--ppl", "1"}, 0, `"identity_holds": true`, "", false},
		{[]string{"summary", "--flow", "1", log}, 0, "flowid 1 ", "", false},
		{[]string{"summary", missing}, 1, "", "siftr-probe summary: " + missing + ": no such file\n", true},
		{[]string{"summary"}, 2, "", "siftr-probe summary: no log file given (use - for stdin)", false},
		{[]string{"summary", "--bogus", log}, 2, "", "siftr-probe summary: unknown flag --bogus", false},
		{[]string{"summary", "--flow", "abc", log}, 2, "", `siftr-probe summary: bad --flow "abc": not a flowid`, false},
		{[]string{"summary", "--flow", "99", log}, 1, "", "siftr-probe summary: no flow with flowid 99 in the input\n", false},
		{[]string{"summary", "--help"}, 0, "Usage:\n  siftr-probe summary [--flow ID] [--json] [--ppl N] LOG...", "", false},
		{[]string{"plot", "-o", filepath.Join(dir, "a.png"), log}, 0, "", "wrote " + filepath.Join(dir, "a.png"), false},
		{[]string{"plot", log}, 2, "", "siftr-probe plot: -o is required", false},
		{[]string{"plot", "-o", "a.jpg", log}, 2, "", `name it .png, .svg or .html`, false},
		{[]string{"plot", "-o", "a.png", "--fields", "cwnd,x", log}, 2, "", `bad --fields: unknown field "x"`, false},
		{[]string{"plot", "-o", filepath.Join(dir, "b.svg"), missing}, 1, "", "siftr-probe plot: " + missing + ": no such file\n", true},
		{[]string{"plot", "--help"}, 0, "--max-points N", "", false},
		{[]string{"convert", "--to", "csv", "-o", "-", log}, 0, "direction,time,local_addr", "", false},
		{[]string{"convert", "--to", "parquet", "-o", filepath.Join(dir, "a.parquet"), log}, 0, "", "300 rows, 27 columns", false},
		{[]string{"convert", "-o", "x", log}, 2, "", "siftr-probe convert: --to is required", false},
		{[]string{"convert", "--to", "xml", "-o", "x", log}, 2, "", `bad --to "xml"`, false},
		{[]string{"convert", "--to", "csv", log}, 2, "", "-o is required", false},
		{[]string{"convert", "--to", "csv", "-o", filepath.Join(dir, "no", "x.csv"), log}, 1, "", "siftr-probe convert: " + filepath.Join(dir, "no", "x.csv") + ": no such file or directory\n", true},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), c.args, &stdout, &stderr)
		if code != c.code || !strings.Contains(stdout.String(), c.out) || !strings.Contains(stderr.String(), c.err) {
			t.Errorf("%q: exit %d, want %d\nstdout: %.300s\nstderr: %s", c.args, code, c.code, stdout.String(), stderr.String())
		}
		if c.errOneLine && strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("%q: stderr is not one line: %q", c.args, stderr.String())
		}
	}
}

func TestParseArgsInterspersed(t *testing.T) {
	var o struct {
		json bool
		to   string
	}
	fs := newQuietFlagSet("x")
	fs.BoolVar(&o.json, "json", false, "")
	fs.StringVar(&o.to, "to", "", "")
	pos, err := parseArgs(fs, []string{"a.log", "--json", "-", "--to", "csv", "b.log", "--", "--c.log"})
	if err != nil || !o.json || o.to != "csv" || strings.Join(pos, " ") != "a.log - b.log --c.log" {
		t.Errorf("%v %+v %v", pos, o, err)
	}
}
