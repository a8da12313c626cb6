// Command bench is siftr-probe's benchmark suite: it builds its own network
// lab, builds the probe once, drives real traffic (iperf3, or the built-in
// generator when iperf3 cannot be installed) and runs each scenario for
// siftr-probe and, in the same run and alternating with it, for tcpdump and
// an `ss -tin` loop. It also runs the Go micro-benchmarks of the pipeline
// stages. Results go to a markdown file. See bench/README.md.
//
// Run it as root from the module root:
//
//	go run ./bench -out bench/RESULTS.md
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type toolKind int

const (
	kindProbe toolKind = iota
	kindTcpdump
	kindSS
)

type variant struct {
	name   string
	kind   toolKind
	side   string   // "A" (sender, default) or "B" (receiver)
	args   []string // extra probe flags
	before bool     // run the -baseline build, not this tree's
}

type trafficKind int

const (
	trafficBulk trafficKind = iota
	trafficChurn
	trafficIdle
)

type scenario struct {
	name, desc string
	noOffloads bool
	traffic    trafficKind
	parallel   int      // bulk: connections; churn: goroutines; idle: connections
	iperfArgs  []string // more iperf3 client flags
	variants   []variant
}

var (
	vProbe   = variant{name: "siftr-probe", kind: kindProbe, args: []string{"--ppl", "1"}}
	vTcpdump = variant{name: "tcpdump", kind: kindTcpdump}
	vSS      = variant{name: "ss -tin loop", kind: kindSS}
	// vExact reads the state in the kernel at the packet (eBPF).
	vExact = variant{name: "siftr-probe --state exact", kind: kindProbe, args: []string{"--ppl", "1", "--state", "exact"}}
	// vProbeSlowBlocks shows the block timeout's trade: fewer wake-ups
	// (less CPU) for staler snapshots.
	vProbeSlowBlocks = variant{name: "siftr-probe --block-timeout 8ms", kind: kindProbe, args: []string{"--ppl", "1", "--block-timeout", "8ms"}}
)

func scenarios() []scenario {
	return []scenario{
		{name: "pps", desc: "1 iperf3 flow, TSO/GSO/GRO off, ppl=1", noOffloads: true, parallel: 1,
			variants: []variant{vProbe, vExact, vTcpdump, vSS,
				vProbeSlowBlocks,
				{name: "siftr-probe on receiver (B)", kind: kindProbe, side: "B", args: []string{"--ppl", "1"}},
				{name: "siftr-probe --state exact on receiver (B)", kind: kindProbe, side: "B", args: []string{"--ppl", "1", "--state", "exact"}},
			}},
		{name: "pps-16k-writes", desc: "pps, but iperf3 -l 16K: each sendmsg holds the socket lock for 16 KiB instead of 128 KiB",
			noOffloads: true, parallel: 1, iperfArgs: []string{"-l", "16K"},
			variants: []variant{vProbe, vExact, {name: "siftr-probe on receiver (B)", kind: kindProbe, side: "B", args: []string{"--ppl", "1"}}}},
		{name: "bulk", desc: "1 iperf3 flow, offloads on, ppl=1", parallel: 1,
			variants: []variant{vProbe, vExact, vTcpdump, vSS}},
		{name: "flows", desc: "iperf3 -P 64, offloads off, ppl=1", noOffloads: true, parallel: 64,
			variants: []variant{vProbe, vExact, vTcpdump, vSS}},
		{name: "churn", desc: "8 goroutines: connect, send 16 KiB, close, repeat; offloads off, ppl=1",
			noOffloads: true, traffic: trafficChurn, parallel: 8,
			variants: []variant{vProbe, vExact, vTcpdump, vSS}},
		{name: "sampled", desc: "pps scenario with ppl=100", noOffloads: true, parallel: 1,
			variants: []variant{{name: "siftr-probe --ppl 100", kind: kindProbe, args: []string{"--ppl", "100"}},
				{name: "siftr-probe --state exact --ppl 100", kind: kindProbe, args: []string{"--ppl", "100", "--state", "exact"}}, vTcpdump}},
		{name: "10k", desc: "10,000 concurrent connections, each sending 64 bytes every second, ppl=1",
			traffic: trafficIdle, parallel: 10000,
			variants: []variant{vProbe, vExact, vTcpdump, vSS, vProbeSlowBlocks}},
	}
}

type options struct {
	out, profiles     string
	seconds           float64
	runs, goBenchRuns int
	only              map[string]bool
	useIperf          bool
	haveTcpdump       bool
	fidelity          bool
	fleet             int    // -fleet N: only the fleet measurement, N labs
	baseline          string // -baseline DIR: a checkout whose diag mode runs beside this one's
	baselineBin       string
	baselineRev       string
	cmdline           string
}

func main() {
	var o options
	var scen string
	flag.StringVar(&o.out, "out", "bench/RESULTS.md", "write the markdown results here")
	flag.Float64Var(&o.seconds, "seconds", 3, "traffic seconds per measurement")
	flag.IntVar(&o.runs, "runs", 3, "repetitions of each scenario (medians are reported)")
	flag.StringVar(&scen, "scenarios", "all", "comma-separated scenarios: pps,pps-16k-writes,bulk,flows,churn,sampled,10k (or all)")
	flag.IntVar(&o.goBenchRuns, "gobench", 5, "-count for the Go micro-benchmarks; 0 skips them")
	discard := flag.String("discard-server", "", "internal: run a discard server on this address (used for the 10k scenario)")
	flag.StringVar(&o.profiles, "profiles", "", "if set, write a CPU profile of each probe variant's first run into this directory")
	flag.BoolVar(&o.fidelity, "fidelity", true, "measure both state sources against the kernel's tcp:tcp_probe tracepoint")
	flag.StringVar(&o.baseline, "baseline", "", "if set, a checkout of an earlier siftr-probe: its build runs beside this one's diag mode (\"(before)\" rows) in every scenario, to show diag mode unchanged")
	flag.IntVar(&o.fleet, "fleet", 0, "if set, only the fleet measurement: N labs (2N namespaces) followed by one --all-netns probe; results to -out (default bench/FLEET.md)")
	flag.Parse()
	if o.fleet > 0 && !isFlagSet("out") {
		o.out = "bench/FLEET.md"
	}
	if *discard != "" {
		if err := discardServer(*discard); err != nil {
			fmt.Fprintf(os.Stderr, "bench -discard-server: %v\n", err)
			os.Exit(1)
		}
		return
	}
	o.cmdline = "go run ./bench " + strings.Join(os.Args[1:], " ")
	o.only = map[string]bool{}
	for _, s := range strings.Split(scen, ",") {
		if s = strings.TrimSpace(s); s != "" && s != "all" {
			o.only[s] = true
		}
	}
	known := map[string]bool{}
	for _, s := range scenarios() {
		known[s.name] = true
	}
	for s := range o.only {
		if !known[s] {
			fmt.Fprintf(os.Stderr, "bench: unknown scenario %q\n", s)
			os.Exit(2)
		}
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: run as root: it builds network namespaces and captures packets")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, &o)
	stop()
	killChildren()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func isFlagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, o *options) error {
	// The 10k scenario's client ends are in this process.
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	o.useIperf, o.haveTcpdump = ensureTools()
	// The kernel counts the eBPF programs' run time only with this on: it
	// is charged to whatever process a packet interrupted, so the exact
	// source's in-kernel cost is read from its programs' statistics.
	if restore, err := setSysctl("/proc/sys/kernel/bpf_stats_enabled", "1"); err != nil {
		logf("kernel.bpf_stats_enabled: %v (the programs' in-kernel time stays 0)", err)
	} else {
		defer restore()
	}

	tmp, err := os.MkdirTemp("", "siftr-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "siftr-probe")
	logf("building the probe: go build -o %s ./cmd/siftr-probe", bin)
	build := exec.Command("go", "build", "-o", bin, "./cmd/siftr-probe")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build the probe: %w", err)
	}

	if o.baseline != "" {
		o.baselineBin = filepath.Join(tmp, "siftr-probe-before")
		logf("building the baseline: go build -o %s ./cmd/siftr-probe (in %s)", o.baselineBin, o.baseline)
		build := exec.Command("go", "build", "-o", o.baselineBin, "./cmd/siftr-probe")
		build.Dir, build.Stdout, build.Stderr = o.baseline, os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build the baseline: %w", err)
		}
		if rev, err := exec.Command("git", "-C", o.baseline, "rev-parse", "--short", "HEAD").Output(); err == nil {
			o.baselineRev = strings.TrimSpace(string(rev))
		}
	}
	if o.fleet > 0 {
		rs, err := runFleet(ctx, o, bin, tmp, o.fleet)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return errors.New("interrupted; results not written")
		}
		var b strings.Builder
		fmt.Fprintf(&b, "# siftr-probe fleet measurement\n\nWritten by `%s` on %s, kernel %s, %d CPUs.\n", o.cmdline, time.Now().UTC().Format("2006-01-02"), kernelRelease(), runtime.NumCPU())
		writeFleet(&b, o, o.fleet, rs)
		if err := os.WriteFile(o.out, []byte(b.String()), 0o644); err != nil {
			return err
		}
		logf("wrote %s", o.out)
		return nil
	}
	env := collectEnv(o)
	var results []*scenarioResult
	begin := time.Now()
	for _, sc := range scenarios() {
		if len(o.only) > 0 && !o.only[sc.name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		res, err := runScenario(ctx, o, bin, tmp, sc)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			logf("scenario %s: %v", sc.name, err)
			res = &scenarioResult{sc: sc, err: err.Error()}
		}
		results = append(results, res)
	}
	var fid []fidelityResult
	if o.fidelity && ctx.Err() == nil {
		fid = runFidelity(ctx, o)
	}
	var gb []goBench
	var gbErr error
	if o.goBenchRuns > 0 && ctx.Err() == nil {
		gb, gbErr = runGoBench(ctx, o.goBenchRuns)
		if gbErr != nil {
			logf("go benchmarks: %v", gbErr)
		}
	}
	if ctx.Err() != nil {
		return errors.New("interrupted; results not written")
	}
	env.elapsed = time.Since(begin)
	md := renderMarkdown(o, env, results, fid, gb, gbErr)
	if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
		return err
	}
	logf("wrote %s (%s)", o.out, env.elapsed.Round(time.Second))
	return nil
}

// ensureTools installs iperf3 and tcpdump with apt-get if they are missing.
// It reports which can be used.
func ensureTools() (iperf, tcpdump bool) {
	missing := func() []string {
		var m []string
		for _, p := range []string{"iperf3", "tcpdump"} {
			if _, err := exec.LookPath(p); err != nil {
				m = append(m, p)
			}
		}
		return m
	}
	if m := missing(); len(m) > 0 {
		logf("installing %v with apt-get", m)
		install := func() error {
			cmd := exec.Command("apt-get", append([]string{"install", "-y", "--no-install-recommends"}, m...)...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			return cmd.Run()
		}
		if install() != nil {
			exec.Command("apt-get", "update").Run()
			if err := install(); err != nil {
				logf("apt-get install %v: %v", m, err)
			}
		}
	}
	_, e1 := exec.LookPath("iperf3")
	_, e2 := exec.LookPath("tcpdump")
	if e1 != nil {
		logf("iperf3 not available: using the built-in traffic generator")
	}
	if e2 != nil {
		logf("tcpdump not available: its column stays empty")
	}
	return e1 == nil, e2 == nil
}

type scenarioResult struct {
	sc      scenario
	runs    [][]measurement // [variant][run]
	traffic string
	err     string
}

func runScenario(ctx context.Context, o *options, bin, tmp string, sc scenario) (*scenarioResult, error) {
	logf("scenario %s: %s", sc.name, sc.desc)
	lab, err := newBenchLab(sc.noOffloads)
	if err != nil {
		return nil, fmt.Errorf("build lab: %w", err)
	}
	defer lab.Close()
	useIperf := o.useIperf && sc.traffic == trafficBulk
	if err := lab.startServer(useIperf, sc.traffic == trafficIdle); err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	if o.baselineBin != "" {
		sc.variants = withBaseline(sc.variants, o.baselineRev)
	}
	res := &scenarioResult{sc: sc, runs: make([][]measurement, len(sc.variants))}
	d := time.Duration(o.seconds * float64(time.Second))
	switch sc.traffic {
	case trafficBulk:
		res.traffic = "built-in generator"
		if useIperf {
			res.traffic = "iperf3"
		}
	case trafficChurn:
		// TIME_WAIT sockets on the client would use up the ports.
		if err := lab.sysctlA("net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000"); err != nil {
			return nil, err
		}
		res.traffic = "built-in churn client"
	case trafficIdle:
		logf("  opening %d connections", sc.parallel)
		idle, err := lab.openIdleFlows(sc.parallel, time.Second)
		if err != nil {
			return nil, err
		}
		defer idle.Close()
		time.Sleep(2 * time.Second) // every flow has sent at least once
		res.traffic = "built-in idle flows"
	}
	for r := range o.runs {
		for i, v := range sc.variants {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			m := measureOne(ctx, o, lab, bin, tmp, sc, v, d, r == 0)
			if m.Err != "" {
				logf("  run %d %-30s error: %s", r+1, v.name, m.Err)
			} else {
				logf("  run %d %-30s offered %8d captured %8d records %8d kdrops %d qdrops %d cpu %.2fs rss %.0fMB stale p99 %.2fms id=%v %s",
					r+1, v.name, m.Offered, m.Captured, m.Records, m.KernelDrops, m.QueueDrops, m.CPU,
					float64(m.RSS)/1e6, m.StaleP99, m.Identity, m.IdentityNote)
			}
			res.runs[i] = append(res.runs[i], m)
		}
	}
	return res, nil
}

// withBaseline adds, after each diag-mode variant of this tree on the
// sender, the same run of the baseline build.
func withBaseline(vs []variant, rev string) []variant {
	var out []variant
	for _, v := range vs {
		out = append(out, v)
		if v.kind == kindProbe && !slices.Contains(v.args, "--state") && v.side != "B" && !slices.Contains(v.args, "--block-timeout") {
			b := v
			b.name, b.before = v.name+" (before, "+rev+")", true
			out = append(out, b)
		}
	}
	return out
}

func measureOne(ctx context.Context, o *options, lab *benchLab, bin, tmp string, sc scenario, v variant, d time.Duration, first bool) (m measurement) {
	if v.before {
		bin = o.baselineBin
	}
	var t tool
	switch v.kind {
	case kindProbe:
		p := &probeTool{bin: bin, dir: tmp, netnsPath: lab.A.NetNS, iface: lab.A.Iface, args: v.args}
		if v.side == "B" {
			p.netnsPath, p.iface = lab.B.NetNS, lab.B.Iface
		}
		if first && o.profiles != "" {
			os.MkdirAll(o.profiles, 0o755)
			name := strings.NewReplacer(" ", "_", "-", "", "(", "", ")", "").Replace(v.name)
			p.cpuprofile, _ = filepath.Abs(filepath.Join(o.profiles, sc.name+"_"+name+".pprof"))
		}
		t = p
	case kindTcpdump:
		if !o.haveTcpdump {
			m.Err = "tcpdump not installed"
			return m
		}
		t = &tcpdumpTool{netnsPath: lab.A.NetNS, iface: lab.A.Iface}
	case kindSS:
		t = &ssTool{netnsPath: lab.A.NetNS, filter: fmt.Sprintf("dport = :%d", port)}
	}
	if err := t.begin(ctx); err != nil {
		m.Err = err.Error()
		return m
	}
	st0 := readCPUStat()
	off0, err := lab.offered()
	if err != nil {
		m.Err = err.Error()
	}
	switch sc.traffic {
	case trafficBulk:
		bps, err := lab.bulk(ctx, o.useIperf, sc.parallel, d, sc.iperfArgs...)
		if err != nil {
			m.Err = err.Error()
		}
		m.Traffic = fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	case trafficChurn:
		n, bad, err := lab.churn(ctx, sc.parallel, d)
		m.Conns = uint64(n + bad)
		m.Traffic = fmt.Sprintf("%.0f conn/s", float64(n)/d.Seconds())
		if bad > 0 {
			// Not a failure of the tool under test: noted, not an error.
			m.Traffic += fmt.Sprintf(" (%d failed: %v)", bad, err)
		}
	case trafficIdle:
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
		m.Traffic = fmt.Sprintf("%d conns", sc.parallel)
	}
	time.Sleep(200 * time.Millisecond) // the last ACKs and FINs
	off1, _ := lab.offered()
	m.Offered = off1 - off0
	m.Busy, m.Steal = readCPUStat().since(st0)
	if err := t.end(&m); err != nil && m.Err == "" {
		m.Err = err.Error()
	}
	return m
}

// cpuStat is the machine-wide "cpu" line of /proc/stat, in ticks.
type cpuStat struct{ busy, steal, total uint64 }

func readCPUStat() cpuStat {
	var c cpuStat
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return c
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, s := range f[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		if i >= 8 { // guest time is already in user
			break
		}
		c.total += v
		switch i {
		case 3, 4: // idle, iowait
		case 7:
			c.steal += v
		default:
			c.busy += v
		}
	}
	return c
}

// since returns the busy and steal shares (0..1) of all CPUs since c0.
func (c cpuStat) since(c0 cpuStat) (busy, steal float64) {
	t := float64(c.total - c0.total)
	if t == 0 {
		return 0, 0
	}
	return float64(c.busy-c0.busy) / t, float64(c.steal-c0.steal) / t
}

// setSysctl writes value to a /proc/sys file and returns a function that
// writes the old value back.
func setSysctl(path, value string) (func(), error) {
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		return nil, err
	}
	return func() { os.WriteFile(path, old, 0) }, nil
}
