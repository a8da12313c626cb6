package probe

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/hist"
	"github.com/siftr-probe/siftr-probe/internal/metrics"
)

// status prints a one-line progress report every interval.
type status struct {
	w    io.Writer
	read func() metrics.Stats

	cycle     int // the cycle the baselines below are of
	last      time.Time
	lastPkts  [2]uint64
	lastRecs  uint64
	lastStale hist.Snapshot
}

func newStatus(w io.Writer, read func() metrics.Stats) *status {
	return &status{w: w, read: read, last: time.Now()}
}

func (s *status) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			in := s.read()
			fmt.Fprintln(s.w, s.line(now, &in))
		}
	}
}

// line formats the status at now: rates and staleness over the interval
// since the previous line, totals since the start.
func (s *status) line(now time.Time, in *metrics.Stats) string {
	settings := fmt.Sprintf("ppl %d port %s", in.PPL, portName(in.Port))
	if !in.Enabled {
		return now.Format("15:04:05") + "  disabled " + settings
	}
	if in.Cycle != s.cycle {
		// A new cycle: its counters started from zero when it began.
		if in.CycleStart.After(s.last) {
			s.last = in.CycleStart
		}
		s.lastPkts, s.lastRecs, s.lastStale = [2]uint64{}, 0, hist.Snapshot{}
		s.cycle = in.Cycle
	}
	dt := now.Sub(s.last).Seconds()
	c := &in.Counts
	ws := &in.Writer
	rate := func(cur, prev uint64) string { return si(float64(cur-prev) / dt) }
	skipped := sum2(c.SkipMalloc) + sum2(c.SkipTCPCB) + sum2(c.SkipInPCB)
	stale := ws.Staleness
	stale.Sub(&s.lastStale)
	staleness := "p50 - p99 -" // no record in the interval
	if stale.Count() > 0 {
		staleness = "p50 " + Millis(stale.Quantile(0.5)) + " p99 " + Millis(stale.Quantile(0.99))
	}
	// Packets lost before they were counted: ring drops in diag mode; in
	// exact mode nothing is, and a full ring buffer is a malloc skip.
	drops := fmt.Sprintf("ring drops %d", in.Capture.KernelDrops)
	if in.State == "exact" {
		drops = fmt.Sprintf("ringbuf full %d", sum2(in.Exact.RingFull))
	}
	line := fmt.Sprintf("%s  enabled %s  in %s pkt/s  out %s pkt/s  records %s/s (%s)  skipped %s  %s  queue %d/%d  flows %d  staleness %s",
		now.Format("15:04:05"), settings,
		rate(c.Packets[0], s.lastPkts[0]), rate(c.Packets[1], s.lastPkts[1]),
		rate(ws.Records, s.lastRecs), si(float64(ws.Records)),
		si(float64(skipped)), drops, ws.QueueDepth, ws.QueueCap, in.Engine.ActiveFlows, staleness)
	if n := in.Engine.FlowTableFull; n > 0 {
		line += fmt.Sprintf("  flow table full %d", n)
	}
	if ws.WriteErrors > 0 {
		line += fmt.Sprintf("  WRITE ERRORS %d (%d records lost)", ws.WriteErrors, ws.LostToWriteError)
	}
	if ws.Pcap.WriteErrors > 0 {
		line += fmt.Sprintf("  PCAP WRITE ERRORS %d (%d packets lost)", ws.Pcap.WriteErrors, ws.Pcap.Lost)
	}
	s.last, s.lastPkts, s.lastRecs, s.lastStale = now, c.Packets, ws.Records, ws.Staleness
	return line
}

func sum2(a [2]uint64) uint64 { return a[0] + a[1] }

// si formats a count with a k/M suffix.
func si(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// MallocBreakdown says what SIFTR's malloc skips were: packets of new flows
// the flow table refused, records the writer's queue refused, and the rest
// (a lookup failed or too many waited for one, the exact ring buffer was
// full, a write failed).
func MallocBreakdown(malloc, tableFull, queueFull uint64) string {
	other := malloc - min(malloc, tableFull+queueFull)
	return fmt.Sprintf("malloc %d: flow table full %d, queue full %d, other %d", malloc, tableFull, queueFull, other)
}

// Millis formats nanoseconds as milliseconds.
func Millis(ns float64) string { return fmt.Sprintf("%.2fms", ns/1e6) }

// Print writes a human summary of a run.
func (s *Summary) Print(w io.Writer) {
	c := s.Counts
	if s.Cycle == 0 {
		fmt.Fprintf(w, "siftr-probe: summary: no logging cycle ran (started disabled, never enabled)\n")
		return
	}
	total := sum2(c.Packets)
	skipped := sum2(c.SkipMalloc) + sum2(c.SkipTCPCB) + sum2(c.SkipInPCB)
	what := "summary"
	if s.Cycle > 1 {
		what = fmt.Sprintf("summary of cycle %d", s.Cycle)
	}
	fmt.Fprintf(w, "siftr-probe: %s: %d packets (in %d, out %d) in %s, %d records written to %s\n",
		what, total, c.Packets[0], c.Packets[1], s.End.Sub(s.Start).Round(time.Millisecond), s.Writer.Records, s.LogFile)
	fmt.Fprintf(w, "  not logged: sampled out %d; skipped %d (no socket %d, not established %d, %s)\n",
		sum2(c.SampledOut), skipped, sum2(c.SkipInPCB), sum2(c.SkipTCPCB), MallocBreakdown(sum2(c.SkipMalloc), s.Engine.FlowTableFull, s.Engine.SinkRejected))
	if s.State == "exact" {
		x := &s.Exact
		fmt.Fprintf(w, "  exact (eBPF, %s): ring buffer full %d, not local %d, malformed %d; inbound records confirmed by tcp_probe %d, unconfirmed %d; flows %d\n",
			x.Attach, sum2(x.RingFull), sum2(x.NotLocal), sum2(x.Malformed), x.Confirmed, x.Unconfirmed, s.Engine.FlowsCreated)
	} else {
		fmt.Fprintf(w, "  capture: ring drops %d, ring freezes %d, malformed %d, truncated %d, not local %d, other VLANs %d\n",
			s.Capture.KernelDrops, s.Capture.KernelFreezes, s.Capture.Malformed, s.Capture.Truncated, s.Capture.NotLocal, s.Capture.VLAN)
		mean := 0.0
		if s.Resolve.Batches > 0 {
			mean = float64(s.Resolve.Lookups) / float64(s.Resolve.Batches)
		}
		fmt.Fprintf(w, "  lookups %d in %d batches (%.1f per batch), errors %d; flows %d\n",
			s.Resolve.Lookups, s.Resolve.Batches, mean, s.Resolve.LookupErrors, s.Engine.FlowsCreated)
	}
	st := s.Writer.Staleness
	fmt.Fprintf(w, "  snapshot staleness: p50 %s  p99 %s  p99.9 %s  max-bucket %s\n",
		Millis(st.Quantile(0.5)), Millis(st.Quantile(0.99)), Millis(st.Quantile(0.999)), Millis(st.Quantile(1)))
	if s.Writer.Late > 0 {
		fmt.Fprintf(w, "  %d records were written out of timestamp order\n", s.Writer.Late)
	}
	if cs := s.ClockSteps; cs.Steps > 0 {
		times := fmt.Sprintf("%d times", cs.Steps)
		if cs.Steps == 1 {
			times = "once"
		}
		fmt.Fprintf(w, "  the wall clock stepped %s during the run (the last by %v): the log's times jump with it\n", times, cs.Last.Round(time.Microsecond))
	}
	if s.Writer.WriteErrors > 0 {
		fmt.Fprintf(w, "  write errors %d: %d records lost\n", s.Writer.WriteErrors, s.Writer.LostToWriteError)
	}
	if e := &s.Engine; e.FlowTableFull > 0 || e.FlowsEvicted > 0 {
		fmt.Fprintf(w, "  flow table: %d packets of new flows refused (full), %d flows without an established socket evicted\n", e.FlowTableFull, e.FlowsEvicted)
	}
	if n := s.Engine.FlowListDropped; n > 0 {
		fmt.Fprintf(w, "  flow list: %d established flows left out of the disable line (bound reached)\n", n)
	}
	if len(s.NetNS) > 0 || s.NetNSBeyondMax > 0 {
		printNetNS(w, s.NetNS, s.NetNSBeyondMax)
	}
	if s.PcapFile != "" {
		pc := &s.Writer.Pcap
		fmt.Fprintf(w, "  pcap: %d packets (%d logged, with their state) written to %s; dropped (queue full) %d, write errors %d (%d packets lost)\n",
			pc.Packets, pc.Stated, s.PcapFile, pc.Dropped, pc.WriteErrors, pc.Lost)
	}
}

// printNetNS is the summary's per-namespace part (--all-netns): how many
// were followed and the busiest of them.
func printNetNS(w io.Writer, ns []metrics.NetNSStats, beyond uint64) {
	inodes, ended := map[uint64]bool{}, map[uint64]bool{}
	for _, n := range ns {
		inodes[n.Origin.NetNS] = true
		if n.Ended {
			ended[n.Origin.NetNS] = true
		}
	}
	fmt.Fprintf(w, "  namespaces: %d followed (%d of them went away during the run), %d not followed (--max-netns)\n", len(inodes), len(ended), beyond)
	top := slices.Clone(ns)
	slices.SortStableFunc(top, func(a, b metrics.NetNSStats) int { return cmp.Compare(sum2(b.Counts.Packets), sum2(a.Counts.Packets)) })
	for _, n := range top[:min(len(top), 5)] {
		name := n.Origin.NetNSName
		if name == "" {
			name = fmt.Sprint(n.Origin.NetNS)
		}
		if n.Origin.PodName != "" {
			name += " (pod " + n.Origin.PodNamespace + "/" + n.Origin.PodName + ")"
		}
		c := n.Counts
		logged := sum2(c.Packets) - sum2(c.SampledOut) - sum2(c.SkipMalloc) - sum2(c.SkipTCPCB) - sum2(c.SkipInPCB)
		fmt.Fprintf(w, "    %s %s: %d packets, %d logged\n", name, n.Iface, sum2(c.Packets), logged)
	}
}
