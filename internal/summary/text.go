package summary

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteText writes the report for people: per section its lines, totals
// and checks, then a block per flow with an aligned table of the
// distributions; with several sections a table of every flow over all of
// them. Lines stay within 100 columns except for very long addresses.
func (r *Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	nflows := len(r.Total.Flows)
	fmt.Fprintf(ew, "%s, %s, %s, %s data lines (%s out, %s in), %s\n",
		plural(len(r.Files), "file"), plural(len(r.Sections), "section"), plural(nflows, "flow"),
		count(r.Total.DataLines.In+r.Total.DataLines.Out), count(r.Total.DataLines.Out), count(r.Total.DataLines.In),
		plural64(r.Malformed, "malformed line"))
	for _, p := range r.Problems {
		fmt.Fprintf(ew, "  malformed: %s\n", p)
	}
	if r.Malformed > uint64(len(r.Problems)) {
		fmt.Fprintf(ew, "  (and %s more)\n", count(r.Malformed-uint64(len(r.Problems))))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(ew, "  note: %s\n", n)
	}
	for i := range r.Sections {
		writeSection(ew, &r.Sections[i])
	}
	if len(r.Sections) > 1 {
		t := &r.Total
		fmt.Fprintf(ew, "\nAll %d sections: %s data lines (%s out, %s in)", t.Sections,
			count(t.DataLines.In+t.DataLines.Out), count(t.DataLines.Out), count(t.DataLines.In))
		if t.Checked > 0 {
			verdict := "holds in all"
			if !t.IdentityHolds {
				verdict = "FAILS in some"
			}
			fmt.Fprintf(ew, "; identity %s %d with a disable line", verdict, t.Checked)
		}
		fmt.Fprintln(ew)
		writeFlowTable(ew, t.Flows)
	}
	return ew.err
}

func writeSection(w io.Writer, s *SectionReport) {
	files := ""
	if len(s.Files) > 1 {
		files = ", " + plural(len(s.Files), "file")
	}
	fmt.Fprintf(w, "\nSection %d (%s%s)\n", s.Index, s.Format, files)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  from\t%s\n  to\t%s\n", s.Start, s.End)
	if e := s.Enable; e != nil {
		src := ""
		if e.StateSource != "" {
			src = ", state " + e.StateSource
		}
		fmt.Fprintf(tw, "  enabled\t%s  %s %s, ipmode %s, siftr %s%s\n", e.Time, e.SysName, e.SysVer, e.IPMode, e.SiftrVer, src)
	} else {
		fmt.Fprintf(tw, "  enabled\t(no enable line: starts in a rotated or cut file)\n")
	}
	if d := s.Disable; d != nil {
		fmt.Fprintf(tw, "  disabled\t%s  after %.3f s\n", d.Time, s.DurationS)
		fmt.Fprintf(tw, "  packets\tin %s, out %s (total %s); skipped in %s, out %s (malloc %d/%d, tcpcb %d/%d, inpcb %d/%d)\n",
			count(d.Packets.In), count(d.Packets.Out), count(d.TotalPackets),
			count(d.SkipMalloc.In+d.SkipTCPCB.In+d.SkipInPCB.In), count(d.SkipMalloc.Out+d.SkipTCPCB.Out+d.SkipInPCB.Out),
			d.SkipMalloc.In, d.SkipMalloc.Out, d.SkipTCPCB.In, d.SkipTCPCB.Out, d.SkipInPCB.In, d.SkipInPCB.Out)
	} else {
		fmt.Fprintf(tw, "  disabled\t(no disable line) records span %.3f s\n", s.DurationS)
	}
	fmt.Fprintf(tw, "  data lines\tin %s, out %s", count(s.DataLines.In), count(s.DataLines.Out))
	if s.Malformed > 0 {
		fmt.Fprintf(tw, "; %s", plural64(s.Malformed, "malformed line"))
	}
	if s.OutOfOrder > 0 {
		fmt.Fprintf(tw, "; %s out of time order", plural64(s.OutOfOrder, "record"))
	}
	fmt.Fprintln(tw)
	verdict, detail := identityText(&s.Identity)
	fmt.Fprintf(tw, "  identity\t%s\n", verdict)
	if detail != "" {
		fmt.Fprintf(tw, "\t%s\n", detail)
	}
	for _, n := range s.Identity.Notes {
		fmt.Fprintf(tw, "\t(%s)\n", n)
	}
	if c := s.FlowList; c != nil {
		msg := plural(c.Listed, "flow")
		if c.ListedNoRecords == 0 && c.NotListed == 0 {
			msg += ", all with records"
		}
		if c.ListedNoRecords > 0 {
			msg += fmt.Sprintf(", %d without records", c.ListedNoRecords)
		}
		if c.NotListed > 0 {
			msg += fmt.Sprintf("; %s with records not listed", plural(c.NotListed, "flow"))
		}
		fmt.Fprintf(tw, "  flow_list\t%s\n", msg)
	}
	tw.Flush()
	for i := range s.Flows {
		writeFlow(w, &s.Flows[i])
	}
}

// identityText returns the verdict and check made, and the numbers.
func identityText(id *IdentityReport) (string, string) {
	if id.Check == "none" {
		return "not checked", ""
	}
	verdict := "holds"
	if !*id.Holds {
		verdict = "FAILS"
	}
	ppl := "ppl unknown"
	if id.PPL != 0 {
		ppl = "ppl " + strconv.FormatUint(id.PPL, 10)
	}
	op := "<="
	how := "bound check (" + ppl + "): data lines <= packets - skipped"
	if id.Check == "exact" {
		op = "="
		how = "exact check (ppl 1): data lines = packets - skipped"
	}
	var parts []string
	for _, d := range id.PerDir {
		parts = append(parts, fmt.Sprintf("%s %s %s %s - %s", d.Dir, count(d.DataLines), op, count(d.Packets), count(d.Skipped)))
	}
	s := strings.Join(parts, ", ")
	if id.Check == "bound" && id.Equal {
		s += "; equal, as with ppl 1"
	}
	return verdict + ": " + how, s
}

func writeFlow(w io.Writer, f *FlowReport) {
	fmt.Fprintf(w, "\n  flowid %d  %s -> %s\n", f.FlowID, f.Local, f.Remote)
	mss := strconv.FormatUint(f.MSS[0], 10)
	if f.MSS[1] != f.MSS[0] {
		mss += "-" + strconv.FormatUint(f.MSS[1], 10)
	}
	fmt.Fprintf(w, "    %.3f s, %s records (%s out, %s in), mss %s, sack %s, wscale snd %s rcv %s\n",
		f.DurationS, count(f.Records.In+f.Records.Out), count(f.Records.Out), count(f.Records.In), mss, f.SACK,
		span(f.SndScale), span(f.RcvScale))
	cc := "-"
	if len(f.Cong) > 0 {
		cc = strings.Join(f.Cong, "+")
	}
	line := fmt.Sprintf("    cc %s, state source %s", cc, f.StateSource)
	if r := f.Retrans; r != nil {
		line += fmt.Sprintf(", retransmissions %d in the log (socket total %d)", r.InLog, r.Last)
	}
	fmt.Fprintln(w, line)
	if st := f.StalenessNS; st != nil {
		fmt.Fprintf(w, "    staleness p50 %s ms, p99 %s ms, max %s ms\n", ms(st.P50/1e3), ms(st.P99/1e3), ms(float64(st.Max)/1e3))
	}
	total := f.SlowStartS + f.CongAvoidS + f.RecoveryS
	pct := func(x float64) string {
		if total == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*x/total)
	}
	fmt.Fprintf(w, "    slow start %.3f s (%s), congestion avoidance %.3f s (%s), recovery %.3f s (%s)\n",
		f.SlowStartS, pct(f.SlowStartS), f.CongAvoidS, pct(f.CongAvoidS), f.RecoveryS, pct(f.RecoveryS))

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "    %-14s\tmin\tp50\tp99\tmax\t\n", "")
	bytesRow := func(name string, d *Dist, extra string) {
		if d == nil {
			fmt.Fprintf(tw, "    %-14s\t-\t-\t-\t-\t%s\n", name, extra)
			return
		}
		fmt.Fprintf(tw, "    %-14s\t%d\t%.0f\t%.0f\t%d\t%s\n", name, d.Min, d.P50, d.P99, d.Max, extra)
	}
	msRow := func(name string, d *Dist) {
		if d == nil {
			fmt.Fprintf(tw, "    %-14s\t-\t-\t-\t-\t\n", name)
			return
		}
		fmt.Fprintf(tw, "    %-14s\t%s\t%s\t%s\t%s\t\n", name, ms(float64(d.Min)), ms(d.P50), ms(d.P99), ms(float64(d.Max)))
	}
	bytesRow("cwnd (B)", f.Cwnd, "")
	inf := ""
	if f.SsthreshInfinite > 0 {
		inf = "  " + count(f.SsthreshInfinite) + " records infinite"
		if f.Ssthresh == nil {
			inf = "  infinite in every record"
		}
	}
	bytesRow("ssthresh (B)", f.Ssthresh, inf)
	bytesRow("inflight (B)", f.Inflight, "")
	msRow("srtt (ms)", f.SRTT)
	msRow("rto (ms)", f.RTO)
	tw.Flush()
}

func writeFlowTable(w io.Writer, flows []FlowReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  flowid\tlocal -> remote\tduration\trecords\tcwnd p50 (B)\tsrtt p50")
	for _, f := range flows {
		cw, rt := "-", "-"
		if f.Cwnd != nil {
			cw = fmt.Sprintf("%.0f", f.Cwnd.P50)
		}
		if f.SRTT != nil {
			rt = ms(f.SRTT.P50) + " ms"
		}
		fmt.Fprintf(tw, "  %d\t%s -> %s\t%.3f s\t%s\t%s\t%s\n", f.FlowID, f.Local, f.Remote, f.DurationS,
			count(f.Records.In+f.Records.Out), cw, rt)
	}
	tw.Flush()
}

// ms formats microseconds as milliseconds.
func ms(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.0f", us/1e3)
	case us >= 1e4:
		return fmt.Sprintf("%.1f", us/1e3)
	}
	return fmt.Sprintf("%.3f", us/1e3)
}

func span(v [2]uint64) string {
	if v[0] == v[1] {
		return strconv.FormatUint(v[0], 10)
	}
	return fmt.Sprintf("%d-%d", v[0], v[1])
}

// count formats n with thousands separators.
func count(n uint64) string {
	s := strconv.FormatUint(n, 10)
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	pre := len(s) % 3
	if pre > 0 {
		b.WriteString(s[:pre])
	}
	for i := pre; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

func plural(n int, what string) string { return plural64(uint64(n), what) }

func plural64(n uint64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return count(n) + " " + what + "s"
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
