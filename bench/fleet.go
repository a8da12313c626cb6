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

// The fleet measurement (-fleet N): N labs up at once, each with one
// connection sending at a steady low rate, followed by one probe with
// --all-netns (2N namespaces), in each state source. It measures what a
// node with many pods costs: the time until every namespace is followed,
// the peak RSS, the CPU, and that every namespace's traffic is logged.

const (
	fleetMetricsAddr = "127.0.0.1:19722"
	fleetChunk       = 16 << 10              // bytes each client writes per tick
	fleetTick        = 20 * time.Millisecond // so ~6.5 Mbit/s per lab
	fleetFollowWait  = 120 * time.Second     // the longest the probe may take to follow all
	fleetPrefix      = "sfleet"
)

type fleetResult struct {
	State         string
	NetNS         int
	FollowSeconds float64 // probe start until siftr_netns_followed = 2N
	RSS           uint64
	CPU           float64 // probe CPU seconds per second of traffic
	BPF           float64 // exact: the programs' in-kernel seconds per second
	Records       uint64
	MinRecords    uint64 // the least any namespace logged
	Silent        int    // namespaces with traffic and no records
	Err           string
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
		lab, err := netlab.New(netlab.Config{Name: fleetPrefix, Subnet: uint8(i + 1)})
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
	for _, lab := range labs {
		wg.Go(func() { fleetClient(tctx, lab) })
	}
	var res []fleetResult
	for _, state := range []string{"diag", "exact"} {
		var rs []fleetResult
		for range o.runs {
			r := measureFleet(ctx, o, bin, tmp, state, labs)
			logf("fleet %s: followed %d namespaces in %.1fs, RSS %.0f MiB, CPU %.3f s/s, records %d (least %d), silent %d %s",
				state, r.NetNS, r.FollowSeconds, float64(r.RSS)/(1<<20), r.CPU, r.Records, r.MinRecords, r.Silent, r.Err)
			rs = append(rs, r)
		}
		res = append(res, medianFleet(rs))
	}
	return res, nil
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

func measureFleet(ctx context.Context, o *options, bin, tmp, state string, labs []*netlab.Lab) fleetResult {
	r := fleetResult{State: state, NetNS: 2 * len(labs)}
	logPath, statsPath := filepath.Join(tmp, "fleet.log"), filepath.Join(tmp, "fleet-stats.json")
	os.Remove(logPath)
	os.Remove(statsPath)
	cmd := command(bin, "--all-netns", "--netns-include", "netns="+fleetPrefix+"-*", "--port", strconv.Itoa(port),
		"--state", state, "--logfile", logPath, "--stats-file", statsPath, "--metrics-addr", fleetMetricsAddr, "--status-interval", "10s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start0 := time.Now()
	if err := start(cmd); err != nil {
		r.Err = err.Error()
		return r
	}
	hwm := watchHWM(cmd.Process.Pid)
	// Followed: the metric reaches 2N.
	for {
		f, ok := scrapeGauge("http://"+fleetMetricsAddr+"/metrics", "siftr_netns_followed")
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
	select {
	case <-time.After(time.Duration(o.seconds * float64(time.Second))):
	case <-ctx.Done():
	}
	secs := time.Since(traffic0).Seconds()
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
	var rep struct {
		Writer struct{ Records uint64 }
		Exact  struct{ RunNanos uint64 }
		NetNS  []struct {
			Name   string `json:"name"`
			Counts struct {
				Packets    [2]uint64
				SampledOut [2]uint64
				SkipMalloc [2]uint64
				SkipTCPCB  [2]uint64
				SkipInPCB  [2]uint64
			} `json:"counts"`
		} `json:"netns"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		r.Err = err.Error()
		return r
	}
	r.Records = rep.Writer.Records
	r.BPF = float64(rep.Exact.RunNanos) / 1e9 / secs
	r.MinRecords = ^uint64(0)
	for _, n := range rep.NetNS {
		c := n.Counts
		logged := c.Packets[0] + c.Packets[1] - c.SampledOut[0] - c.SampledOut[1] - c.SkipMalloc[0] - c.SkipMalloc[1] -
			c.SkipTCPCB[0] - c.SkipTCPCB[1] - c.SkipInPCB[0] - c.SkipInPCB[1]
		r.MinRecords = min(r.MinRecords, logged)
		if logged == 0 {
			r.Silent++
		}
	}
	if len(rep.NetNS) < r.NetNS {
		r.Silent += r.NetNS - len(rep.NetNS)
		r.MinRecords = 0
	}
	return r
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
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
	for _, r := range ok {
		m.Silent = max(m.Silent, r.Silent)
	}
	return m
}

// writeFleet is the markdown table of the fleet measurement.
func writeFleet(w io.Writer, o *options, n int, rs []fleetResult) {
	fmt.Fprintf(w, "\n## Fleet: %d namespaces (%d labs) followed by one probe\n\n", 2*n, n)
	fmt.Fprintf(w, "`%s`: every lab has one connection writing %d KiB every %s (about %.1f Mbit/s); "+
		"one `siftr-probe --all-netns` follows all of them for %.0f s of traffic; medians of %d runs. "+
		"CPU is the probe's over its whole run (start-up included) per second of traffic; "+
		"eBPF is the exact programs' in-kernel time over the run per second of traffic (kernel.bpf_stats_enabled).\n\n",
		o.cmdline, fleetChunk>>10, fleetTick, float64(fleetChunk*8)/fleetTick.Seconds()/1e6, o.seconds, o.runs)
	fmt.Fprintln(w, "| state | namespaces | all followed after | peak RSS | RSS per namespace | CPU s/s | eBPF s/s | records | least per namespace | namespaces without records |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		if r.Err != "" {
			fmt.Fprintf(w, "| %s | %d | error: %s |||||||\n", r.State, r.NetNS, r.Err)
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %.1f s | %.0f MiB | %.2f MiB | %.3f | %.3f | %d | %d | %d |\n",
			r.State, r.NetNS, r.FollowSeconds, float64(r.RSS)/(1<<20), float64(r.RSS)/(1<<20)/float64(r.NetNS),
			r.CPU, r.BPF, r.Records, r.MinRecords, r.Silent)
	}
}
