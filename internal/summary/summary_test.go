package summary

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/logtest"
	"github.com/siftr-probe/siftr-probe/output"
	"github.com/siftr-probe/siftr-probe/tcp"
)

var start = time.Unix(1700000000, 0)

// handLog is one flow with known state changes, and a second flow with
// two records: slow start 0-3 s, congestion avoidance 3-4 s, recovery
// 4-4.5 s, congestion avoidance after.
func handLog() ([]*correlate.Record, []logtest.Flow) {
	flows := logtest.Flows(2)
	t0 := start.UnixNano() + 1e6
	s := func(cwnd, ss uint32, ca uint8) logtest.State {
		return logtest.State{CwndSegs: cwnd, SsthreshSegs: ss, RTT: 1000 * cwnd, RTO: 200000 + cwnd, Inflight: cwnd * 1000,
			TotalRetrans: cwnd / 20, CAState: ca, StalenessNS: int64(cwnd) * 1000}
	}
	recs := []*correlate.Record{
		logtest.Record(flows[0], tcp.DirOut, t0, s(10, 0, tcp.CAOpen)),
		logtest.Record(flows[0], tcp.DirIn, t0+1e9, s(20, 0, tcp.CAOpen)),
		logtest.Record(flows[1], tcp.DirOut, t0+2e9, s(30, 0, tcp.CAOpen)),
		logtest.Record(flows[0], tcp.DirOut, t0+3e9, s(40, 30, tcp.CAOpen)),
		logtest.Record(flows[0], tcp.DirOut, t0+4e9, s(25, 30, tcp.CARecovery)),
		logtest.Record(flows[1], tcp.DirIn, t0+4e9, s(30, 0, tcp.CAOpen)),
		logtest.Record(flows[0], tcp.DirIn, t0+4.5e9, s(30, 30, tcp.CAOpen)),
	}
	return recs, flows
}

func writeLog(t testing.TB, dir, name string, f output.Format, recs []*correlate.Record, flows []logtest.Flow, skipped [2]uint64) string {
	t.Helper()
	var buf bytes.Buffer
	if err := logtest.Write(&buf, f, start, recs, flows, skipped); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFlowStatistics(t *testing.T) {
	for _, name := range []string{output.NameSIFTR, output.NameJSONL} {
		t.Run(name, func(t *testing.T) {
			f, _ := output.FormatByName(name)
			recs, flows := handLog()
			p := writeLog(t, t.TempDir(), "a.log", f, recs, flows, [2]uint64{1, 2})
			rep, err := Summarise(Config{Paths: []string{p}, PPL: 1})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Sections) != 1 || len(rep.Sections[0].Flows) != 2 {
				t.Fatalf("%d sections", len(rep.Sections))
			}
			s := rep.Sections[0]
			if s.Identity.Check != "exact" || !*s.Identity.Holds {
				t.Errorf("identity %+v", s.Identity)
			}
			if s.FlowList.Listed != 2 || s.FlowList.NotListed != 0 || s.FlowList.ListedNoRecords != 0 {
				t.Errorf("flow list check %+v", s.FlowList)
			}
			fr := s.Flows[0]
			if fr.FlowID != flows[0].FlowID() || fr.Records != (InOut{In: 2, Out: 3}) || fr.DurationS != 4.5 {
				t.Errorf("flow 0: id %d, records %+v, duration %v", fr.FlowID, fr.Records, fr.DurationS)
			}
			if fr.SlowStartS != 3 || fr.CongAvoidS != 1 || fr.RecoveryS != 0.5 {
				t.Errorf("time in states: ss %v ca %v rec %v, want 3, 1, 0.5", fr.SlowStartS, fr.CongAvoidS, fr.RecoveryS)
			}
			if fr.Cwnd.Min != 10*1448 || fr.Cwnd.Max != 40*1448 || math.Abs(fr.Cwnd.P50-25*1448) > 25*1448/64 {
				t.Errorf("cwnd %+v", fr.Cwnd)
			}
			if fr.SsthreshInfinite != 2 || fr.Ssthresh.N != 3 || fr.Ssthresh.Min != 30*1448 {
				t.Errorf("ssthresh %+v, %d infinite", fr.Ssthresh, fr.SsthreshInfinite)
			}
			if fr.SRTT.Min != 10000 || fr.SRTT.Max != 40000 || fr.MSS != [2]uint64{1448, 1448} || fr.SACK != "yes" || fr.SndScale != [2]uint64{7, 7} {
				t.Errorf("srtt %+v mss %v sack %s", fr.SRTT, fr.MSS, fr.SACK)
			}
			if s.Flows[1].SsthreshInfinite != 2 || s.Flows[1].Ssthresh != nil {
				t.Errorf("flow 1 ssthresh %+v", s.Flows[1].Ssthresh)
			}
			if name == output.NameJSONL {
				if fr.Retrans == nil || fr.Retrans.First != 0 || fr.Retrans.Last != 1 || fr.Retrans.InLog != 1 {
					t.Errorf("retransmissions %+v", fr.Retrans)
				}
				if fr.StalenessNS == nil || fr.StalenessNS.Min != 10000 || fr.StalenessNS.Max != 40000 {
					t.Errorf("staleness %+v", fr.StalenessNS)
				}
				if len(fr.Cong) != 1 || fr.Cong[0] != "cubic" || fr.StateSource != "diag" {
					t.Errorf("cong %v, state source %q", fr.Cong, fr.StateSource)
				}
			} else if fr.Retrans != nil || fr.StalenessNS != nil || len(fr.Cong) != 0 {
				t.Errorf("text log with JSON-only statistics: %+v %+v %v", fr.Retrans, fr.StalenessNS, fr.Cong)
			}
			var out bytes.Buffer
			if err := rep.WriteText(&out); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"Section 1 (", "holds: exact check (ppl 1)", "flowid " + itoa(fr.FlowID), "cwnd (B)", "infinite in every record"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("text lacks %q:\n%s", want, out.String())
				}
			}
			for _, l := range strings.Split(out.String(), "\n") {
				if len(l) > 100 && !strings.Contains(l, p) {
					t.Errorf("line of %d columns: %q", len(l), l)
				}
			}
		})
	}
}

func itoa(v uint32) string { b, _ := json.Marshal(v); return string(b) }

// TestIdentity: exact with ppl 1, bound otherwise, failing when the
// disable line counts fewer packets than there are data lines.
func TestIdentity(t *testing.T) {
	recs, flows := handLog()
	dir := t.TempDir()
	p := writeLog(t, dir, "a.log", output.SIFTR(), recs, flows, [2]uint64{0, 0})
	for _, c := range []struct {
		ppl         uint64
		check       string
		holds, eq   bool
		editDisable string
	}{
		{0, "bound", true, true, ""},
		{1, "exact", true, true, ""},
		{3, "bound", true, true, ""},
		{1, "exact", false, false, "num_inbound_tcp_pkts=4"}, // one packet more than lines: exact fails
		{0, "bound", true, false, "num_inbound_tcp_pkts=4"},  // still within the bound
		{0, "bound", false, false, "num_inbound_tcp_pkts=2"}, // fewer packets than lines
	} {
		path := p
		if c.editDisable != "" {
			b, _ := os.ReadFile(p)
			b = bytes.Replace(b, []byte("num_inbound_tcp_pkts=3"), []byte(c.editDisable), 1)
			path = filepath.Join(dir, "edited.log")
			os.WriteFile(path, b, 0o644)
		}
		rep, err := Summarise(Config{Paths: []string{path}, PPL: c.ppl})
		if err != nil {
			t.Fatal(err)
		}
		id := rep.Sections[0].Identity
		if id.Check != c.check || *id.Holds != c.holds || id.Equal != c.eq {
			t.Errorf("ppl %d %q: check %s holds %v equal %v, want %s %v %v", c.ppl, c.editDisable, id.Check, *id.Holds, id.Equal, c.check, c.holds, c.eq)
		}
	}
}

// TestRotation: a run split into two files by a SIGHUP reopen is one
// section again when both are given oldest first; each alone is a section
// without enable or without disable line.
func TestRotation(t *testing.T) {
	recs, flows := handLog()
	dir := t.TempDir()
	whole := writeLog(t, dir, "whole.log", output.SIFTR(), recs, flows, [2]uint64{1, 1})
	b, _ := os.ReadFile(whole)
	lines := strings.SplitAfter(string(b), "\n")
	old := filepath.Join(dir, "siftr.log.1")
	cur := filepath.Join(dir, "siftr.log")
	os.WriteFile(old, []byte(strings.Join(lines[:4], "")), 0o644)
	os.WriteFile(cur, []byte(strings.Join(lines[4:], "")), 0o644)

	rep, err := Summarise(Config{Paths: []string{old, cur}, PPL: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Sections) != 1 || len(rep.Sections[0].Files) != 2 || rep.Sections[0].Identity.Check != "exact" || !*rep.Sections[0].Identity.Holds {
		t.Fatalf("sections %+v", rep.Sections)
	}
	if len(rep.Notes) != 0 {
		t.Errorf("notes %v", rep.Notes)
	}

	rep, _ = Summarise(Config{Paths: []string{cur}, PPL: 1})
	if s := rep.Sections[0]; s.Enable != nil || s.Identity.Check != "bound" || !*s.Identity.Holds {
		t.Errorf("the newer file alone: %+v", s.Identity)
	}
	rep, _ = Summarise(Config{Paths: []string{old}})
	if s := rep.Sections[0]; s.Disable != nil || s.Identity.Check != "none" || s.Identity.Holds != nil {
		t.Errorf("the older file alone: %+v", s.Identity)
	}
	rep, _ = Summarise(Config{Paths: []string{cur, old}})
	if len(rep.Sections) != 2 || len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "oldest first") {
		t.Errorf("newest first: %d sections, notes %v", len(rep.Sections), rep.Notes)
	}
}

// TestSections: two runs appended to one file, the second compressed and
// read from stdin, are two sections and a total.
func TestSections(t *testing.T) {
	recs, flows := handLog()
	dir := t.TempDir()
	a := writeLog(t, dir, "a.log", output.SIFTR(), recs[:3], flows, [2]uint64{})
	b := writeLog(t, dir, "b.log", output.SIFTR(), recs[3:], flows, [2]uint64{})
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	both := filepath.Join(dir, "both.log")
	os.WriteFile(both, append(ab, bb...), 0o644)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(append(ab, bb...))
	zw.Close()
	for _, c := range []struct {
		paths []string
		stdin []byte
	}{{[]string{both}, nil}, {[]string{"-"}, gz.Bytes()}} {
		rep, err := Summarise(Config{Paths: c.paths, Stdin: bytes.NewReader(c.stdin), PPL: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Sections) != 2 || !rep.Total.IdentityHolds || rep.Total.Checked != 2 || len(rep.Total.Flows) != 2 {
			t.Fatalf("%v: %d sections, total %+v", c.paths, len(rep.Sections), rep.Total)
		}
		// The 2 s between the sections (no run logged them) count in neither.
		if f := rep.Total.Flows[0]; f.Records.In+f.Records.Out != 5 || f.SlowStartS != 1 || f.CongAvoidS != 1 || f.RecoveryS != 0.5 {
			t.Errorf("flow over both sections: %+v", f)
		}
		if rep.Files[0].Compression != map[bool]string{true: "gzip", false: "plain"}[c.stdin != nil] {
			t.Errorf("compression %s", rep.Files[0].Compression)
		}
		var out bytes.Buffer
		rep.WriteText(&out)
		if !strings.Contains(out.String(), "All 2 sections") || !strings.Contains(out.String(), "identity holds in all 2") {
			t.Errorf("text:\n%s", out.String())
		}
	}
}

// TestMalformed: garbage, a line cut short at the end, a file without
// enable and disable lines: counted and reported, never fatal.
func TestMalformed(t *testing.T) {
	recs, flows := handLog()
	dir := t.TempDir()
	p := writeLog(t, dir, "a.log", output.SIFTR(), recs, flows, [2]uint64{})
	b, _ := os.ReadFile(p)
	lines := strings.SplitAfter(string(b), "\n")
	var in strings.Builder
	for i, l := range lines[1 : len(lines)-2] { // no enable, no disable
		in.WriteString(l)
		if i < 4 {
			in.WriteString("garbage line\n")
		}
	}
	in.WriteString("\x00\x01\xff\n")
	in.WriteString(lines[2][:30]) // cut short
	bad := filepath.Join(dir, "bad.log")
	os.WriteFile(bad, []byte(in.String()), 0o644)
	rep, err := Summarise(Config{Paths: []string{bad}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Malformed != 6 || len(rep.Problems) != 5 || rep.Total.DataLines.In+rep.Total.DataLines.Out != 7 {
		t.Errorf("%d malformed, problems %v, %+v data lines", rep.Malformed, rep.Problems, rep.Total.DataLines)
	}
	if !strings.HasPrefix(rep.Problems[0], bad+":2: bad direction") {
		t.Errorf("first problem %q", rep.Problems[0])
	}
	var out bytes.Buffer
	rep.WriteText(&out)
	if !strings.Contains(out.String(), "(and 1 more)") || !strings.Contains(out.String(), "no enable line") || !strings.Contains(out.String(), "not checked") {
		t.Errorf("text:\n%s", out.String())
	}
}

// freeBSDLog is a log as FreeBSD 14's siftr(4) writes it (hand-made:
// sysname=FreeBSD, t_maxseg 1460, a zero flowid, FASTRECOVERY in t_flags).
const freeBSDLog = "enable_time_secs=1712345678\tenable_time_usecs=000123\tsiftrver=1.3.0\tsysname=FreeBSD\tsysver=1400097\tipmode=4\n" +
	"o,1712345678.100000,192.168.1.10,22,192.168.1.20,51234,1073725440,14600,0,65535,65535,6,6,4,1460,2250,1,1073742816,1200000,33304,0,66608,0,0,0,0,0\n" +
	"i,1712345678.200000,192.168.1.10,22,192.168.1.20,51234,1073725440,17520,0,65535,65535,6,6,4,1460,2250,1,1073742816,1200000,33304,1460,66608,0,1460,0,0,0\n" +
	"o,1712345679.000001,192.168.1.10,5001,192.168.1.30,40000,29200,43800,32,1049600,65700,6,6,4,1460,18000,1,538969056,230000,2097152,87600,1049600,0,43800,3,2881356813,2\n" +
	"o,1712345679.500001,192.168.1.10,5001,192.168.1.30,40000,29200,43800,32,1049600,65700,6,6,4,1460,18000,1,538969056,230000,2097152,87600,1049600,0,43800,3,2881356813,2\n" +
	"disable_time_secs=1712345680\tdisable_time_usecs=500000\tnum_inbound_tcp_pkts=2\tnum_outbound_tcp_pkts=4\ttotal_tcp_pkts=6\tnum_inbound_skipped_pkts_malloc=0\tnum_outbound_skipped_pkts_malloc=0\tnum_inbound_skipped_pkts_tcpcb=1\tnum_outbound_skipped_pkts_tcpcb=1\tnum_inbound_skipped_pkts_inpcb=0\tnum_outbound_skipped_pkts_inpcb=0\ttotal_skipped_tcp_pkts=2\tflow_list=192.168.1.10;22-192.168.1.20;51234,192.168.1.10;5001-192.168.1.30;40000,\n"

func TestFreeBSD(t *testing.T) {
	rep, err := Summarise(Config{Paths: []string{"-"}, Stdin: strings.NewReader(freeBSDLog), FlowIDs: []uint32{2881356813}})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Sections[0]
	if s.Enable.SysName != "FreeBSD" || !*s.Identity.Holds || !s.Identity.Equal || s.DurationS != 2.499877 {
		t.Errorf("section %+v, identity %+v", s.Enable, s.Identity)
	}
	if len(s.Flows) != 1 || s.Flows[0].RecoveryS != 0.5 || s.Flows[0].MSS != [2]uint64{1460, 1460} {
		t.Errorf("flows %+v", s.Flows)
	}
	if _, err := Summarise(Config{Paths: []string{"-"}, Stdin: strings.NewReader(freeBSDLog), FlowIDs: []uint32{7}}); err == nil || err.Error() != "no flow with flowid 7 in the input" {
		t.Errorf("unknown flow: %v", err)
	}
	var out bytes.Buffer
	rep.WriteJSON(&out)
	var doc map[string]any
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"files", "sections", "total", "malformed_lines", "first_malformed", "notes"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
}

func TestOpenError(t *testing.T) {
	_, err := Summarise(Config{Paths: []string{"/nonexistent/x.log"}})
	if err == nil || err.Error() != "/nonexistent/x.log: no such file" {
		t.Errorf("error %v", err)
	}
}
