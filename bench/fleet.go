package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/traffic"
)

// The fleet measurement (-fleet N): N labs up at once (2N namespaces),
// every one but the first with one connection sending a little at a
// steady rate (an idle-ish pod), the first (offloads off) with one flow
// sending as fast as it can during the measurement (the pps scenario: a
// busy pod). One probe with --all-netns follows them all, beside one with
// --netns on the busy lab alone, in each state source. It measures what a
// node with many pods costs (the time until every namespace is followed,
// peak RSS, CPU) and what following the others costs the busy one.

const (
	fleetMetricsAddr = "127.0.0.1:19722"
	fleetChunk       = 1 << 10                // bytes each idle-ish client writes per tick
	fleetTick        = 100 * time.Millisecond // so ~82 kbit/s per lab
	fleetFollowWait  = 120 * time.Second      // the longest the probe may take to follow all
	fleetPrefix      = "sfleet"
)

type fleetResult struct {
	State         string
	Mode          string // "--all-netns" or "--netns" (the busy lab alone)
	NetNS         int
	FollowSeconds float64 // probe start until siftr_netns_followed = 2N
	RSS           uint64
	CPU           float64 // probe CPU seconds per second of traffic
	BPF           float64 // exact: the programs' in-kernel seconds per second
	Records       uint64
	MinRecords    uint64 // the least any namespace logged
	Silent        int    // namespaces with traffic and no records
	// The busy lab's sender (namespace A): its packets, the share logged.
	BusyPackets uint64
	BusyLogged  float64
	RingDrops   uint64 // frames the kernel dropped because a ring was full, all namespaces
	Err         string
}

// runFleet builds n labs and measures the probe on them in both states.
func runFleet(ctx context.Context, o *options, bin, tmp string, n int) ([]fleetResult, error) {
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("-fleet %d: 1 to 200 labs (subnets 201 and up are the tests')", n)
	}
	logf("fleet: building %d labs (%d namespaces)", n, 2*n)
	var labs []*netlab.Lab
	defer func() {
		for _, l := range labs {
			l.Close()
		}
	}()
	var srvs []*traffic.Server
	defer func() {
		for _, s := range srvs {
			s.Close()
		}
	}()
	for i := range n {
		lab, err := netlab.New(netlab.Config{Name: fleetPrefix, Subnet: uint8(i + 1), NoOffloads: i == 0})
		if err != nil {
			return nil, err
		}
		labs = append(labs, lab)
		var ln net.Listener
		if err := lab.B.Do(func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); return err }); err != nil {
			return nil, err
		}
		srvs = append(srvs, traffic.Serve(ln))
	}
	// Steady traffic in every lab for the whole measurement.
	tctx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopTraffic(); wg.Wait() }()
	for _, lab := range labs[1:] {
		wg.Go(func() { fleetClient(tctx, lab) })
	}
	var res []fleetResult
	for _, state := range []string{"diag", "exact"} {
		for _, mode := range []string{"--all-netns", "--netns"} {
			var rs []fleetResult
			for range o.runs {
				r := measureFleet(ctx, o, bin, tmp, state, mode, labs)
				logf("fleet %s %s: followed %d namespaces in %.1fs, RSS %.0f MiB, CPU %.3f s/s, records %d (least %d), silent %d, busy lab %d packets %.1f%% logged, ring drops %d %s",
					state, mode, r.NetNS, r.FollowSeconds, float64(r.RSS)/(1<<20), r.CPU, r.Records, r.MinRecords, r.Silent, r.BusyPackets, 100*r.BusyLogged, r.RingDrops, r.Err)
				rs = append(rs, r)
			}
			res = append(res, medianFleet(rs))
		}
	}
	return res, nil
}

// busySend sends as fast as it can from the busy lab's A to its B until
// ctx ends.
func busySend(ctx context.Context, lab *netlab.Lab) {
	var c net.Conn
	addr := net.JoinHostPort(lab.B.Addr4.String(), strconv.Itoa(port))
	if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
		logf("fleet: busy lab: %v", err)
		return
	}
	traffic.Send(ctx, c, 0)
}

// fleetClient keeps one connection of the lab sending fleetChunk every
// fleetTick until ctx ends, reconnecting if it breaks.
func fleetClient(ctx context.Context, lab *netlab.Lab) {
	buf := make([]byte, fleetChunk)
	addr := net.JoinHostPort(lab.B.Addr4.String(), strconv.Itoa(port))
	for ctx.Err() == nil {
		var c net.Conn
		if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		t := time.NewTicker(fleetTick)
		for ctx.Err() == nil {
			if _, err := c.Write(buf); err != nil {
				break
			}
			<-t.C
		}
		t.Stop()
		stop()
		c.Close()
	}
}

func measureFleet(ctx context.Context, o *options, bin, tmp, state, mode string, labs []*netlab.Lab) fleetResult {
	r := fleetResult{State: state, Mode: mode, NetNS: 2 * len(labs)}
	busy := labs[0]
	logPath, statsPath := filepath.Join(tmp, "fleet.log"), filepath.Join(tmp, "fleet-stats.json")
	os.Remove(logPath)
	os.Remove(statsPath)
	args := []string{"--all-netns", "--netns-include", "netns=" + fleetPrefix + "-*"}
	if mode == "--netns" {
		args, r.NetNS = []string{"--netns", busy.A.NetNS, "--iface", busy.A.Iface}, 1
	}
	cmd := command(bin, append(args, "--port", strconv.Itoa(port),
		"--state", state, "--logfile", logPath, "--stats-file", statsPath, "--metrics-addr", fleetMetricsAddr, "--status-interval", "10s")...)
	if o.profiles != "" {
		os.MkdirAll(o.profiles, 0o755)
		prof, _ := filepath.Abs(filepath.Join(o.profiles, "fleet_"+state+strings.TrimLeft(mode, "-")+".pprof"))
		cmd.Args = append(cmd.Args, "--cpuprofile", prof)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start0 := time.Now()
	if err := start(cmd); err != nil {
		r.Err = err.Error()
		return r
	}
	hwm := watchHWM(cmd.Process.Pid)
	// Followed: the metric reaches 2N (one namespace: the probe answers).
	for {
		f, ok := scrapeGauge("http://"+fleetMetricsAddr+"/metrics", "siftr_netns_followed")
		if mode == "--netns" {
			f, ok = scrapeGauge("http://"+fleetMetricsAddr+"/metrics", "siftr_records_total")
			f = min(f+1, 1)
		}
		if ok && int(f) >= r.NetNS {
			r.FollowSeconds = time.Since(start0).Seconds()
			break
		}
		if time.Since(start0) > fleetFollowWait || ctx.Err() != nil {
			r.Err = fmt.Sprintf("%.0f of %d namespaces followed after %s", f, r.NetNS, fleetFollowWait)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer func() {
		if r.Err != "" || r.Silent > 0 {
			logf("fleet %s: the probe's stderr:\n%s", state, lastLines(stderr.String(), 30))
		}
	}()
	traffic0 := time.Now()
	bctx, stopBusy := context.WithTimeout(ctx, time.Duration(o.seconds*float64(time.Second)))
	busySend(bctx, busy)
	<-bctx.Done()
	stopBusy()
	secs := time.Since(traffic0).Seconds()
	time.Sleep(200 * time.Millisecond) // the last ACKs
	err := stopCmd(cmd, 120*time.Second)
	r.RSS = hwm.end()
	if err != nil {
		r.Err = fmt.Sprintf("%v: %s", err, strings.TrimSpace(stderr.String()))
		return r
	}
	// CPU over the whole run, start-up included, per second of traffic:
	// the cost of following this many namespaces for that long.
	r.CPU = cpuSeconds(cmd.ProcessState) / secs
	b, err := os.ReadFile(statsPath)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	type counts struct {
		Packets    [2]uint64
		SampledOut [2]uint64
		SkipMalloc [2]uint64
		SkipTCPCB  [2]uint64
		SkipInPCB  [2]uint64
	}
	loggedOf := func(c counts) uint64 {
		return c.Packets[0] + c.Packets[1] - c.SampledOut[0] - c.SampledOut[1] - c.SkipMalloc[0] - c.SkipMalloc[1] -
			c.SkipTCPCB[0] - c.SkipTCPCB[1] - c.SkipInPCB[0] - c.SkipInPCB[1]
	}
	var rep struct {
		Writer  struct{ Records uint64 }
		Exact   struct{ RunNanos uint64 }
		Capture struct{ KernelDrops uint64 }
		Counts  counts
		NetNS   []struct {
			Name   string `json:"name"`
			Counts counts `json:"counts"`
		} `json:"netns"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		r.Err = err.Error()
		return r
	}
	r.Records = rep.Writer.Records
	r.BPF = float64(rep.Exact.RunNanos) / 1e9 / secs
	r.RingDrops = rep.Capture.KernelDrops
	busyCounts := rep.Counts
	if mode == "--netns" {
		r.MinRecords = loggedOf(rep.Counts)
	} else {
		r.MinRecords = ^uint64(0)
	}
	for _, n := range rep.NetNS {
		logged := loggedOf(n.Counts)
		r.MinRecords = min(r.MinRecords, logged)
		if logged == 0 {
			r.Silent++
		}
		if n.Name == filepath.Base(busy.A.NetNS) {
			busyCounts = n.Counts
		}
	}
	r.BusyPackets = busyCounts.Packets[0] + busyCounts.Packets[1]
	if r.BusyPackets > 0 {
		r.BusyLogged = float64(loggedOf(busyCounts)) / float64(r.BusyPackets)
	}
	if mode == "--all-netns" && len(rep.NetNS) < r.NetNS {
		r.Silent += r.NetNS - len(rep.NetNS)
		r.MinRecords = 0
	}
	return r
}

// scrapeGauge reads one unlabelled sample from a Prometheus text page.
func scrapeGauge(url, name string) (float64, bool) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// medianFleet is the run with the median follow time (its other figures
// with it), the errors of any run kept.
func medianFleet(rs []fleetResult) fleetResult {
	ok := rs[:0:0]
	for _, r := range rs {
		if r.Err == "" {
			ok = append(ok, r)
		}
	}
	if len(ok) == 0 {
		return rs[0]
	}
	med := func(get func(fleetResult) float64) float64 {
		v := make([]float64, len(ok))
		for i, r := range ok {
			v[i] = get(r)
		}
		return median(v)
	}
	m := ok[0]
	m.FollowSeconds = med(func(r fleetResult) float64 { return r.FollowSeconds })
	m.RSS = uint64(med(func(r fleetResult) float64 { return float64(r.RSS) }))
	m.CPU = med(func(r fleetResult) float64 { return r.CPU })
	m.BPF = med(func(r fleetResult) float64 { return r.BPF })
	m.Records = uint64(med(func(r fleetResult) float64 { return float64(r.Records) }))
	m.MinRecords = uint64(med(func(r fleetResult) float64 { return float64(r.MinRecords) }))
	m.BusyPackets = uint64(med(func(r fleetResult) float64 { return float64(r.BusyPackets) }))
	m.BusyLogged = med(func(r fleetResult) float64 { return r.BusyLogged })
	m.RingDrops = uint64(med(func(r fleetResult) float64 { return float64(r.RingDrops) }))
	for _, r := range ok {
		m.Silent = max(m.Silent, r.Silent)
	}
	return m
}

// writeFleet is the markdown table of the fleet measurement.
func writeFleet(w io.Writer, o *options, n int, rs []fleetResult) {
	fmt.Fprintf(w, "\n## Fleet: %d namespaces (%d labs) followed by one probe\n\n", 2*n, n)
	fmt.Fprintf(w, "`%s`: %d labs have one connection writing %d KiB every %s (about %.0f kbit/s, an idle-ish pod); "+
		"the first lab (offloads off) sends one flow as fast as it can for %.0f s (the pps scenario, a busy pod). "+
		"`--all-netns` follows all %d namespaces; `--netns` the busy lab's sender alone, for comparison. Medians of %d runs. "+
		"CPU is the probe's over its whole run (start-up included) per second of busy traffic; "+
		"eBPF is the exact programs' in-kernel time, likewise (kernel.bpf_stats_enabled).\n\n",
		o.cmdline, n-1, fleetChunk>>10, fleetTick, float64(fleetChunk*8)/fleetTick.Seconds()/1e3, o.seconds, 2*n, o.runs)
	fmt.Fprintln(w, "| state | probe | namespaces | all followed after | peak RSS | RSS per namespace | CPU s/s | eBPF s/s | busy lab: packets | busy lab: logged | ring drops | least records of a namespace | namespaces without records |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		if r.Err != "" {
			fmt.Fprintf(w, "| %s | %s | %d | error: %s ||||||||||\n", r.State, r.Mode, r.NetNS, r.Err)
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %d | %.1f s | %.0f MiB | %.2f MiB | %.3f | %.3f | %d | %.1f %% | %d | %d | %d |\n",
			r.State, r.Mode, r.NetNS, r.FollowSeconds, float64(r.RSS)/(1<<20), float64(r.RSS)/(1<<20)/float64(r.NetNS),
			r.CPU, r.BPF, r.BusyPackets, 100*r.BusyLogged, r.RingDrops, r.MinRecords, r.Silent)
	}
}
