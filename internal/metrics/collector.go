package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/siftr-probe/siftr-probe/capture"
	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/diag"
	"github.com/siftr-probe/siftr-probe/exact"
	"github.com/siftr-probe/siftr-probe/internal/buildinfo"
	"github.com/siftr-probe/siftr-probe/internal/clockstep"
	"github.com/siftr-probe/siftr-probe/internal/hist"
	"github.com/siftr-probe/siftr-probe/output"
)

// Stats is one reading of every pipeline counter the Collector reports.
type Stats struct {
	State string // the state source: "diag" or "exact"
	// The settings in force and the logging cycles (an enable to its
	// disable; the counts below are those of the current cycle or, while
	// disabled, of the last one).
	Enabled    bool
	PPL        uint32
	Port       uint16    // 0: all ports
	Cycle      int       // cycles begun
	CycleStart time.Time // when the current or last cycle began; zero before the first
	// Sampled is what sampling did in the cycle (not a metric of its own:
	// SampledOut is, and Sampled is what the records and skips share).
	Sampled correlate.SampleCounts

	Counts  correlate.Counts       // correlate.Engine.Counts
	Engine  correlate.Stats        // correlate.Engine.Stats
	Writer  output.WriterStats     // output.Writer.Stats
	Capture capture.Stats          // diag mode: capture.Capture.Stats
	Resolve correlate.ResolveStats // diag mode: correlate.Resolver.Stats
	Diag    diag.Stats             // diag mode: diag.Client.Stats, summed over clients
	Exact   exact.Stats            // exact mode: exact.Source.Stats
	// NetNS breaks the counts down by network namespace and interface
	// (--all-netns); NetNSBeyondMax counts namespaces not followed.
	NetNS          []NetNSStats
	NetNSBeyondMax uint64
	// Pods is the pod watcher's state (--node-name); nil without.
	Pods *PodStats
	// ClockSteps are the steps of the wall clock during the run (not only
	// the cycle).
	ClockSteps clockstep.Stats
}

// PodStats are the pod watcher's counters (internal/pods.Stats).
type PodStats struct {
	Known                  int  // pods of the node with an IP, not host-network
	Synced                 bool // the first list is in
	Lists, Watches, Errors uint64
}

// NetNSStats are one followed namespace's interface's counts.
type NetNSStats struct {
	Origin correlate.Origin
	Iface  string
	Counts correlate.Counts
	Ended  bool // the namespace went away; its counts are final
}

// StalenessBuckets are the upper bounds, in seconds, of the
// siftr_snapshot_staleness_seconds histogram: 100µs to 10s.
var StalenessBuckets = []float64{
	0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05,
	0.1, 0.25, 0.5,
	1, 2.5, 5, 10,
}

const namespace = "siftr"

// directions are the direction label values, indexed as correlate.Counts
// (tcp.DirIn = 0, tcp.DirOut = 1).
var directions = [2]string{"in", "out"}

// Collector is a prometheus.Collector that reads Stats on every scrape.
type Collector struct {
	read func() Stats
	info buildinfo.Info

	buildInfo *prometheus.Desc

	enabled, ppl, portFilter, cycles, cycleStart *prometheus.Desc

	packets, sampledOut, skipped, records *prometheus.Desc

	frames, discarded, kernelPackets, ringDrops, ringFreezes, kernelStatsErrors *prometheus.Desc

	flowsActive, flowsCreated, flowsPruned, flowTableFull, cookieReuses *prometheus.Desc
	flowsUnverified, flowsEvicted, flowListDropped                      *prometheus.Desc
	lookupCalls, lookupCallErrors, handoffFull                          *prometheus.Desc

	diagLookups, diagBatches, diagResults, diagErrors, diagOverruns, diagResent *prometheus.Desc

	queueDepth, queueCap, queueRecords, held                                        *prometheus.Desc
	bytes, rejected, forced, late, writeErrors, lostRecords, logUnlinked, staleness *prometheus.Desc

	exactRecords, exactDiscarded, exactConfirms, exactLost, exactRunSeconds, exactRuns *prometheus.Desc

	pcapPackets, pcapBytes, pcapDropped, pcapWriteErrors, pcapLost *prometheus.Desc

	netnsFollowed, netnsBeyondMax, netnsPackets, netnsLogged *prometheus.Desc

	podsKnown, podsSynced, podsRequests, podsErrors *prometheus.Desc

	clockSteps *prometheus.Desc
}

// NewCollector returns a Collector that calls read once per scrape and
// reports info as siftr_build_info. read must be safe for concurrent use.
func NewCollector(read func() Stats, info buildinfo.Info) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help, labels, nil)
	}
	return &Collector{
		read: read,
		info: info,

		buildInfo: d("build_info", "A metric with a constant '1' value labeled by the version, Go version and VCS revision siftr-probe was built from.", "version", "goversion", "revision"),

		enabled:    d("enabled", "1 while logging (SIFTR's net.inet.siftr.enabled), 0 while disabled (siftr-probe ctl disable, --start-disabled)."),
		ppl:        d("ppl", "The ppl setting in force: every ppl-th packet of each flow is logged (SIFTR's net.inet.siftr.ppl)."),
		portFilter: d("port_filter", "The TCP port logged, as source or destination; 0 means all ports (SIFTR's net.inet.siftr.port_filter)."),
		cycles:     d("cycles_total", "Logging cycles begun: enables, each writing an enable line. The other siftr_*_total counters start again from zero at each."),
		cycleStart: d("cycle_start_time_seconds", "Unix time the current logging cycle began (while disabled, the last one); 0 before the first."),

		packets:    d("packets_total", "TCP packets on the port seen with a local direction (SIFTR's num_inbound/outbound_tcp_pkts).", "direction"),
		sampledOut: d("sampled_out_packets_total", "Packets not logged because of ppl sampling.", "direction"),
		skipped:    d("skipped_packets_total", "Sampled packets not logged, by SIFTR skip reason: malloc (a queue or the flow table was full, or a lookup failed), tcpcb (socket not established), inpcb (no socket).", "reason", "direction"),
		records:    d("records_total", "Records written to the log (data lines)."),

		frames:            d("capture_frames_total", "Frames read from the capture rings."),
		discarded:         d("capture_discarded_frames_total", "Frames not delivered as packets, by reason: not_local (forwarded, broadcast or sniffed), truncated, malformed (the IP layer would drop it), filtered (not TCP on the port once fully decoded), vlan (tagged for another device's VLAN), drain_left (still in a ring when the drain at the stop gave up).", "reason"),
		kernelPackets:     d("capture_kernel_packets_total", "Frames that passed the kernel filter, dropped ones included (PACKET_STATISTICS tp_packets)."),
		ringDrops:         d("capture_ring_drops_total", "Frames the kernel dropped because a ring was full (tp_drops)."),
		ringFreezes:       d("capture_ring_freezes_total", "Times a ring ran out of free blocks (tp_freeze_q_cnt)."),
		kernelStatsErrors: d("capture_kernel_stats_errors_total", "Failed reads of the rings' PACKET_STATISTICS (the drain at the stop then waits its longest)."),

		flowsActive:     d("flows_active", "Flows in the flow table."),
		flowsCreated:    d("flows_created_total", "Flows created in the flow table."),
		flowsPruned:     d("flows_pruned_total", "Flows removed from the flow table (socket gone, idle, or 4-tuple reused)."),
		flowTableFull:   d("flow_table_full_packets_total", "Packets of new flows refused because the flow table was full (counted as malloc skips)."),
		cookieReuses:    d("flow_cookie_reuses_total", "Times a 4-tuple was seen with a new socket cookie."),
		flowsUnverified: d("flows_unverified", "Flows in the flow table not found established (yet): 4-tuples without a socket, or not looked up yet; they have a small budget of their own."),
		flowsEvicted:    d("flows_evicted_total", "Flows not found established evicted from the flow table to make room for new flows."),
		flowListDropped: d("flow_list_dropped_flows_total", "Established flows left out of the disable line's flow list because its bound was reached."),

		lookupCalls:      d("lookup_calls_total", "Socket lookup calls (one per ring block with sampled packets)."),
		lookupCallErrors: d("lookup_call_errors_total", "Socket lookup calls that failed; their packets count as malloc skips."),
		handoffFull:      d("lookup_handoff_full_packets_total", "Sampled packets skipped (malloc) because too many waited for lookups."),

		diagLookups:  d("diag_lookups_total", "Sockets queried over inet_diag."),
		diagBatches:  d("diag_batches_total", "inet_diag request batches sent (one sendmsg each)."),
		diagResults:  d("diag_results_total", "inet_diag query outcomes: found, not_established, no_socket.", "result"),
		diagErrors:   d("diag_errors_total", "inet_diag per-query errors other than ENOENT, unqueryable addresses and malformed replies."),
		diagOverruns: d("diag_overruns_total", "Times the kernel dropped inet_diag replies because the receive buffer was full (ENOBUFS)."),
		diagResent:   d("diag_resent_queries_total", "inet_diag queries asked again because their reply was lost."),

		queueDepth:   d("writer_queue_depth_batches", "Record batches queued for the writer, not yet taken."),
		queueCap:     d("writer_queue_capacity_batches", "Capacity of the writer's queue, in batches."),
		queueRecords: d("writer_queue_records", "Records queued for the writer, not yet taken."),
		held:         d("writer_held_records", "Records the writer holds back to write them in timestamp order."),
		bytes:        d("writer_bytes_total", "Bytes written to the log, enable and disable lines included."),
		rejected:     d("writer_rejected_records_total", "Records the writer's queue refused (full or closed); counted as malloc skips."),
		forced:       d("writer_forced_records_total", "Records written before the watermarks allowed because too many were held."),
		late:         d("writer_late_records_total", "Records written after a record with a later time (out of order)."),
		writeErrors:  d("writer_write_errors_total", "Failed writes to the log."),
		lostRecords:  d("writer_lost_records_total", "Records formatted but lost because a write failed."),
		logUnlinked:  d("writer_log_unlinked_total", "Times the open log file was found deleted (records go nowhere until SIGHUP reopens it)."),
		clockSteps:   d("clock_steps_total", "Steps of the wall clock (set, not slewed) during the run: the log's times jump with them (lines stay in the order of their packets)."),

		exactRecords:    d("exact_records_total", "exact mode: records read from the programs' ring buffer."),
		exactDiscarded:  d("exact_discarded_packets_total", "exact mode: inbound TCP segments on the port not counted as packets, by reason: not_local (not for this host, or tagged for another device's VLAN), malformed (the IP layer would drop it).", "reason"),
		exactConfirms:   d("exact_confirmations_total", "exact mode: inbound records by how their state was settled: confirmed (the state TCP met, from tcp_probe), unconfirmed (the state tc read: no confirmation came), stray (a confirmation without its record), lost (a confirmation the ring buffer had no room for).", "result"),
		exactLost:       d("exact_lost_records_total", "exact mode: records the programs wrote that never reached the probe (counted as malloc skips; should stay 0)."),
		exactRunSeconds: d("exact_program_run_seconds_total", "exact mode: time the programs ran in the kernel (with kernel.bpf_stats_enabled=1; else 0), charged to whatever the packets interrupted."),
		exactRuns:       d("exact_program_runs_total", "exact mode: program runs (with kernel.bpf_stats_enabled=1; else 0)."),
		staleness:       d("snapshot_staleness_seconds", "Socket snapshot time minus packet capture time of the records handled."),

		pcapPackets:     d("pcap_packets_total", "--pcap: packets written to the pcapng file, by kind: logged (with the record's state as comment) or unlogged (--pcap-all).", "kind"),
		pcapBytes:       d("pcap_bytes_total", "--pcap: bytes written to the pcapng file, section and interface blocks included."),
		pcapDropped:     d("pcap_dropped_packets_total", "--pcap-all: captured packets the pcap queue refused (full): not in the pcapng file."),
		pcapWriteErrors: d("pcap_write_errors_total", "--pcap: failed writes to the pcapng file."),
		pcapLost:        d("pcap_lost_packets_total", "--pcap: packets formatted but lost because a write to the pcapng file failed."),

		netnsFollowed:  d("netns_followed", "--all-netns: network namespaces followed now."),
		netnsBeyondMax: d("netns_beyond_max", "--all-netns: network namespaces found but not followed because --max-netns were already followed."),
		netnsPackets:   d("netns_packets_total", "--all-netns: TCP packets on the port, by followed namespace (its name, else its inode) and interface; a namespace's series go when it does.", netnsLabels...),
		netnsLogged:    d("netns_logged_packets_total", "--all-netns: packets logged (not sampled out or skipped), by followed namespace and interface.", netnsLabels...),

		podsKnown:    d("pods_known", "--node-name: pods of this node the namespaces can be labelled with (an IP, not host-network, not finished)."),
		podsSynced:   d("pods_synced", "--node-name: 1 once the node's pods have been listed from the API server."),
		podsRequests: d("pods_api_requests_total", "--node-name: list and watch requests to the API server.", "verb"),
		podsErrors:   d("pods_api_errors_total", "--node-name: failed list and watch requests (retried)."),
	}
}

func (c *Collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{
		c.buildInfo,
		c.enabled, c.ppl, c.portFilter, c.cycles, c.cycleStart,
		c.packets, c.sampledOut, c.skipped, c.records,
		c.frames, c.discarded, c.kernelPackets, c.ringDrops, c.ringFreezes, c.kernelStatsErrors,
		c.flowsActive, c.flowsCreated, c.flowsPruned, c.flowTableFull, c.cookieReuses,
		c.flowsUnverified, c.flowsEvicted, c.flowListDropped,
		c.lookupCalls, c.lookupCallErrors, c.handoffFull,
		c.diagLookups, c.diagBatches, c.diagResults, c.diagErrors, c.diagOverruns, c.diagResent,
		c.queueDepth, c.queueCap, c.queueRecords, c.held,
		c.bytes, c.rejected, c.forced, c.late, c.writeErrors, c.lostRecords, c.logUnlinked, c.staleness,
		c.exactRecords, c.exactDiscarded, c.exactConfirms, c.exactLost, c.exactRunSeconds, c.exactRuns,
		c.pcapPackets, c.pcapBytes, c.pcapDropped, c.pcapWriteErrors, c.pcapLost,
		c.netnsFollowed, c.netnsBeyondMax, c.netnsPackets, c.netnsLogged,
		c.podsKnown, c.podsSynced, c.podsRequests, c.podsErrors,
		c.clockSteps,
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the stats once and
// sends every metric.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	gauge(c.buildInfo, 1, c.info.Version, c.info.GoVersion, c.info.Revision)

	enabled := 0.0
	if s.Enabled {
		enabled = 1
	}
	gauge(c.enabled, enabled)
	gauge(c.ppl, float64(s.PPL))
	gauge(c.portFilter, float64(s.Port))
	counter(c.cycles, uint64(s.Cycle))
	start := 0.0
	if !s.CycleStart.IsZero() {
		start = float64(s.CycleStart.UnixNano()) / 1e9
	}
	gauge(c.cycleStart, start)

	n := &s.Counts
	for d, dir := range directions {
		counter(c.packets, n.Packets[d], dir)
		counter(c.sampledOut, n.SampledOut[d], dir)
		counter(c.skipped, n.SkipMalloc[d], "malloc", dir)
		counter(c.skipped, n.SkipTCPCB[d], "tcpcb", dir)
		counter(c.skipped, n.SkipInPCB[d], "inpcb", dir)
	}
	counter(c.records, s.Writer.Records)

	cs := &s.Capture
	counter(c.frames, cs.Frames)
	counter(c.discarded, cs.NotLocal, "not_local")
	counter(c.discarded, cs.Truncated, "truncated")
	counter(c.discarded, cs.Malformed, "malformed")
	counter(c.discarded, cs.Filtered, "filtered")
	counter(c.discarded, cs.VLAN, "vlan")
	counter(c.discarded, cs.DrainLeft, "drain_left")
	counter(c.kernelStatsErrors, cs.KernelStatsErrors)
	counter(c.kernelPackets, cs.KernelPackets)
	counter(c.ringDrops, cs.KernelDrops)
	counter(c.ringFreezes, cs.KernelFreezes)

	es := &s.Engine
	gauge(c.flowsActive, float64(es.ActiveFlows))
	counter(c.flowsCreated, es.FlowsCreated)
	counter(c.flowsPruned, es.FlowsPruned)
	counter(c.flowTableFull, es.FlowTableFull)
	counter(c.cookieReuses, es.CookieReuses)
	gauge(c.flowsUnverified, float64(es.UnverifiedFlows))
	counter(c.flowsEvicted, es.FlowsEvicted)
	counter(c.flowListDropped, es.FlowListDropped)
	rs := &s.Resolve
	counter(c.lookupCalls, rs.Batches)
	counter(c.lookupCallErrors, rs.LookupErrors)
	counter(c.handoffFull, rs.HandoffFull)

	ds := &s.Diag
	counter(c.diagLookups, ds.Lookups)
	counter(c.diagBatches, ds.Batches)
	counter(c.diagResults, ds.Found, "found")
	counter(c.diagResults, ds.NotEstablished, "not_established")
	counter(c.diagResults, ds.NoSocket, "no_socket")
	counter(c.diagErrors, ds.Errors)
	counter(c.diagOverruns, ds.Overruns)
	counter(c.diagResent, ds.Resent)

	ws := &s.Writer
	gauge(c.queueDepth, float64(ws.QueueDepth))
	gauge(c.queueCap, float64(ws.QueueCap))
	gauge(c.queueRecords, float64(ws.QueueRecords))
	gauge(c.held, float64(ws.Held))
	counter(c.bytes, ws.Bytes)
	counter(c.rejected, ws.Rejected)
	counter(c.forced, ws.Forced)
	counter(c.late, ws.Late)
	counter(c.writeErrors, ws.WriteErrors)
	counter(c.lostRecords, ws.LostToWriteError)
	counter(c.logUnlinked, ws.LogUnlinked)
	counter(c.clockSteps, s.ClockSteps.Steps)
	count, sum, buckets := Histogram(&ws.Staleness, StalenessBuckets)
	ch <- prometheus.MustNewConstHistogram(c.staleness, count, sum, buckets)

	xs := &s.Exact
	counter(c.exactRecords, xs.Records)
	counter(c.exactDiscarded, xs.NotLocal[0]+xs.NotLocal[1], "not_local")
	counter(c.exactDiscarded, xs.Malformed[0]+xs.Malformed[1], "malformed")
	counter(c.exactConfirms, xs.Confirmed, "confirmed")
	counter(c.exactConfirms, xs.Unconfirmed, "unconfirmed")
	counter(c.exactConfirms, xs.StrayConfirms, "stray")
	counter(c.exactConfirms, xs.ConfirmsLost, "lost")
	counter(c.exactLost, xs.Lost)
	ch <- prometheus.MustNewConstMetric(c.exactRunSeconds, prometheus.CounterValue, float64(xs.RunNanos)/1e9)
	counter(c.exactRuns, xs.RunCount)

	ps := &ws.Pcap
	counter(c.pcapPackets, ps.Stated, "logged")
	counter(c.pcapPackets, ps.Packets-ps.Stated, "unlogged")
	counter(c.pcapBytes, ps.Bytes)
	counter(c.pcapDropped, ps.Dropped)
	counter(c.pcapWriteErrors, ps.WriteErrors)
	counter(c.pcapLost, ps.Lost)

	if p := s.Pods; p != nil {
		gauge(c.podsKnown, float64(p.Known))
		synced := 0.0
		if p.Synced {
			synced = 1
		}
		gauge(c.podsSynced, synced)
		counter(c.podsRequests, p.Lists, "list")
		counter(c.podsRequests, p.Watches, "watch")
		counter(c.podsErrors, p.Errors)
	}
	if s.NetNS == nil && s.NetNSBeyondMax == 0 {
		return // not --all-netns
	}
	followed := map[uint64]bool{}
	for i := range s.NetNS {
		n := &s.NetNS[i]
		if n.Ended {
			continue
		}
		followed[n.Origin.NetNS] = true
		name := n.Origin.NetNSName
		if name == "" {
			name = fmt.Sprint(n.Origin.NetNS)
		}
		k := &n.Counts
		for d, dir := range directions {
			logged := k.Packets[d] - k.SampledOut[d] - k.SkipMalloc[d] - k.SkipTCPCB[d] - k.SkipInPCB[d]
			counter(c.netnsPackets, k.Packets[d], name, n.Iface, n.Origin.PodNamespace, n.Origin.PodName, dir)
			counter(c.netnsLogged, logged, name, n.Iface, n.Origin.PodNamespace, n.Origin.PodName, dir)
		}
	}
	gauge(c.netnsFollowed, float64(len(followed)))
	gauge(c.netnsBeyondMax, float64(s.NetNSBeyondMax))
}

// netnsLabels label the per-namespace series. Their number is bounded by
// --max-netns times the interfaces followed per namespace.
var netnsLabels = []string{"netns", "iface", "pod_namespace", "pod", "direction"}

// Histogram converts a nanosecond hist.Snapshot into a Prometheus
// histogram's count, sum (in seconds) and cumulative bucket counts for the
// upper bounds le (in seconds, ascending).
//
// A hist bucket [lo, hi] is counted in the first le >= hi, so a cumulative
// count never includes a value above its bound; a hist bucket that straddles
// a bound is counted in the next one. hist buckets are at most 1/16 as wide
// as their lower bound, so a value can be counted at most one le too high,
// and only when it is within about 6% of that bound.
func Histogram(s *hist.Snapshot, le []float64) (count uint64, sum float64, buckets map[float64]uint64) {
	per := make([]uint64, len(le))
	j := 0
	for i, n := range s.Counts {
		if n == 0 {
			continue
		}
		_, hi := hist.BucketBounds(i)
		for j < len(le) && float64(hi) > le[j]*1e9 {
			j++
		}
		if j == len(le) {
			break // above the last bound: only in +Inf, which is count
		}
		per[j] += n
	}
	buckets = make(map[float64]uint64, len(le))
	var cum uint64
	for i, b := range le {
		cum += per[i]
		buckets[b] = cum
	}
	return s.Total, float64(s.Sum) / 1e9, buckets
}
