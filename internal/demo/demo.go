// Package demo is `siftr-probe demo`: a self-contained lab run for a
// newcomer. It builds two network namespaces joined by a veth pair with a
// TBF rate limit, runs built-in bulk transfers on port 5201 over IPv4 and
// IPv6 to a dual-stack server, captures on the sender's side and prints a
// per-flow summary, then draws the log as an HTML page and a PNG beside
// it. The lab is removed when it ends, also on Ctrl-C.
package demo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/hist"
	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/plot"
	"github.com/siftr-probe/siftr-probe/internal/probe"
	"github.com/siftr-probe/siftr-probe/internal/traffic"
	"github.com/siftr-probe/siftr-probe/output"
)

// ErrNeedRoot: the demo builds network namespaces, which needs root.
var ErrNeedRoot = errors.New("the demo builds network namespaces and captures packets: run it as root (sudo siftr-probe demo)")

// Port is the demo's TCP port, iperf3's.
const Port = 5201

// Config is the demo's settings.
type Config struct {
	Duration time.Duration // length of each transfer
	LogFile  string        // where the log goes
	RateBits uint64        // bottleneck rate; 0 = 100 Mbit/s
	Stdout   io.Writer
	Stderr   io.Writer
}

// flowStats accumulates one connection's records.
type flowStats struct {
	name      string
	first     int64
	records   int
	in, out   int
	cwndMin   uint64
	cwndMax   uint64
	srtt      []uint32
	staleness hist.Histogram
	cong      string
	mss       uint32
	flowID    uint32
}

// Run runs the demo.
func Run(ctx context.Context, cfg Config) error {
	if os.Geteuid() != 0 {
		return ErrNeedRoot
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 4 * time.Second
	}
	if cfg.RateBits == 0 {
		cfg.RateBits = 100e6
	}
	out, errw := cfg.Stdout, cfg.Stderr
	fmt.Fprintf(out, "building the lab: namespaces A and B, veth pair, TBF %d Mbit/s on A's egress\n", cfg.RateBits/1e6)
	lab, err := netlab.New(netlab.Config{Name: "siftr-demo", RateBitsPerSec: cfg.RateBits, QueueBytes: 200 << 10})
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	defer func() {
		if err := lab.Close(); err != nil {
			fmt.Fprintf(errw, "siftr-probe demo: removing the lab: %v\n", err)
		} else {
			fmt.Fprintln(out, "lab removed")
		}
	}()

	// A dual-stack server on [::]:5201, as iperf3 -s listens: IPv4 clients
	// are served by AF_INET6 sockets with v4-mapped addresses.
	var ln net.Listener
	if err := lab.B.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", Port))
		return err
	}); err != nil {
		return fmt.Errorf("start server: %w", err)
	}
	srv := traffic.Serve(ln)
	defer srv.Close()

	var mu sync.Mutex
	flows := map[uint64]*flowStats{}
	onRecord := func(r *correlate.Record) {
		mu.Lock()
		defer mu.Unlock()
		f := flows[r.Snap.Cookie]
		if f == nil {
			l, rem := r.Pkt.Local(), r.Pkt.Remote()
			f = &flowStats{name: fmt.Sprintf("%s -> %s", l, rem), first: r.Pkt.Time, cwndMin: ^uint64(0), cong: r.Snap.CongName(), mss: r.Snap.Info.SndMSS, flowID: output.FlowID(r.Snap)}
			flows[r.Snap.Cookie] = f
		}
		f.records++
		if r.Pkt.Dir == 0 {
			f.in++
		} else {
			f.out++
		}
		cwnd := uint64(r.Snap.Info.SndCwnd) * uint64(r.Snap.Info.SndMSS)
		f.cwndMin, f.cwndMax = min(f.cwndMin, cwnd), max(f.cwndMax, cwnd)
		f.srtt = append(f.srtt, r.Snap.Info.RTT)
		f.staleness.Record(r.Staleness())
	}

	pctx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	started := make(chan struct{})
	type result struct {
		sum *probe.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		sum, err := probe.Run(pctx, probe.Config{
			Iface:    lab.A.Iface,
			Port:     Port,
			LogFile:  cfg.LogFile,
			NetNS:    lab.A.NetNS,
			Stderr:   errw,
			OnRecord: onRecord,
			Started:  func() { close(started) },
		})
		done <- result{sum, err}
	}()
	select {
	case <-started:
	case r := <-done:
		return r.err
	}
	fmt.Fprintf(out, "capturing on %s in %s, port %d, logging to %s\n", lab.A.Iface, lab.A.NetNS, Port, cfg.LogFile)

	var terr error
	for _, dst := range []netip.Addr{lab.B.Addr4, lab.B.Addr6} {
		if ctx.Err() != nil {
			break
		}
		addr := netip.AddrPortFrom(dst, Port).String()
		fmt.Fprintf(out, "transfer to %s for %s ...\n", addr, cfg.Duration)
		var c net.Conn
		if err := lab.A.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", addr, 5*time.Second)
			return err
		}); err != nil {
			terr = fmt.Errorf("connect %s: %w", addr, err)
			break
		}
		tctx, cancel := context.WithTimeout(ctx, cfg.Duration)
		res, err := traffic.Send(tctx, c, 0)
		cancel()
		if err != nil && ctx.Err() == nil {
			terr = fmt.Errorf("transfer to %s: %w", addr, err)
			break
		}
		fmt.Fprintf(out, "  sent %.1f MB in %s (%.1f Mbit/s)\n", float64(res.Bytes)/1e6,
			res.Duration.Round(time.Millisecond), float64(res.Bytes)*8/res.Duration.Seconds()/1e6)
	}
	// Let the last packets reach the ring, then stop and drain.
	time.Sleep(50 * time.Millisecond)
	stopProbe()
	r := <-done
	if r.err != nil {
		return r.err
	}
	if ctx.Err() != nil {
		fmt.Fprintln(out, "interrupted")
	}
	fmt.Fprintln(out)
	r.sum.Print(out)
	fmt.Fprintln(out)
	printFlows(out, flows)
	fmt.Fprintf(out, "\nthe log: %s (%d data lines)\n", cfg.LogFile, r.sum.Lines())
	var ids []uint32 // this run's flows: the log may hold earlier runs too
	for _, f := range flows {
		ids = append(ids, f.flowID)
	}
	htmlPath, pngPath, err := writePlots(cfg.LogFile, ids)
	if err != nil {
		fmt.Fprintf(errw, "siftr-probe demo: plotting the log: %v\n", err)
	} else {
		fmt.Fprintf(out, "plots:   %s (open it in a browser: zoom, pan, hover for values)\n         %s\n", htmlPath, pngPath)
	}
	fmt.Fprintf(out, "more:    siftr-probe summary %s\n         siftr-probe convert --to parquet -o %s %s\n",
		cfg.LogFile, PlotPaths(cfg.LogFile, ".parquet"), cfg.LogFile)
	return terr
}

// PlotPaths returns the file beside the log with extension ext in place
// of the log's (siftr-demo.log -> siftr-demo.html).
func PlotPaths(logFile, ext string) string {
	return strings.TrimSuffix(logFile, filepath.Ext(logFile)) + ext
}

// writePlots draws the flows ids of the demo's log as an HTML page and a
// PNG beside it.
func writePlots(logFile string, ids []uint32) (htmlPath, pngPath string, err error) {
	htmlPath, pngPath = PlotPaths(logFile, ".html"), PlotPaths(logFile, ".png")
	for _, p := range []string{htmlPath, pngPath} {
		if _, err := plot.Plot(plot.Config{Paths: []string{logFile}, Out: p, MaxPoints: -1, FlowIDs: ids}); err != nil {
			return "", "", err
		}
	}
	return htmlPath, pngPath, nil
}

func printFlows(w io.Writer, flows map[uint64]*flowStats) {
	list := make([]*flowStats, 0, len(flows))
	for _, f := range flows {
		list = append(list, f)
	}
	slices.SortFunc(list, func(a, b *flowStats) int { return cmp.Compare(a.first, b.first) })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "flow (local -> remote)\trecords\tout/in\tcc\tmss\tcwnd min..max (bytes)\tsrtt p50\tstaleness p50 / p99")
	for _, f := range list {
		slices.Sort(f.srtt)
		med := time.Duration(0)
		if len(f.srtt) > 0 {
			med = time.Duration(f.srtt[len(f.srtt)/2]) * time.Microsecond
		}
		st := f.staleness.Snapshot()
		fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%s\t%d\t%d..%d\t%s\t%s / %s\n", f.name, f.records, f.out, f.in, f.cong, f.mss,
			f.cwndMin, f.cwndMax, med, probe.Millis(st.Quantile(0.5)), probe.Millis(st.Quantile(0.99)))
	}
	tw.Flush()
}
