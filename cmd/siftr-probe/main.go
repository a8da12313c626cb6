// Command siftr-probe logs the TCP state of every packet of chosen
// connections, in FreeBSD SIFTR 1.3.0's log format, on Linux.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/siftr-probe/siftr-probe/capture"
	"github.com/siftr-probe/siftr-probe/internal/buildinfo"
	"github.com/siftr-probe/siftr-probe/internal/ctl"
	"github.com/siftr-probe/siftr-probe/internal/demo"
	"github.com/siftr-probe/siftr-probe/internal/probe"
	"github.com/siftr-probe/siftr-probe/output"
)

// Exit statuses.
const (
	exitOK     = 0
	exitError  = 1   // the run failed after it started
	exitUsage  = 2   // bad arguments or set-up: nothing was logged
	exitForced = 130 // a second SIGINT or SIGTERM cut the drain short
)

func main() {
	// Signals first, before anything that takes time: a SIGHUP from
	// logrotate during start-up must not kill the process.
	notifySignals()
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go stopOnSignals(sigs, cancel, os.Stderr, os.Exit)
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

var (
	sigOnce sync.Once
	hupc    chan os.Signal
)

// notifySignals takes over SIGHUP and SIGPIPE for the whole process, once,
// and returns the SIGHUP channel (log reopen). SIGPIPE is ignored, so that
// a write to a closed pipe on standard output returns EPIPE instead of
// killing the process; the run then stops (see brokenPipeWatch).
func notifySignals() <-chan os.Signal {
	sigOnce.Do(func() {
		hupc = make(chan os.Signal, 1)
		signal.Notify(hupc, syscall.SIGHUP)
		signal.Ignore(syscall.SIGPIPE)
	})
	return hupc
}

// brokenPipeWatch passes writes to w; the first that fails with EPIPE (the
// reader of standard output went away: "| head") calls onEPIPE once.
type brokenPipeWatch struct {
	w       io.Writer
	once    sync.Once
	onEPIPE func()
}

func (b *brokenPipeWatch) Write(p []byte) (int, error) {
	n, err := b.w.Write(p)
	if err != nil && errors.Is(err, syscall.EPIPE) {
		b.once.Do(b.onEPIPE)
	}
	return n, err
}

// stopOnSignals cancels the run on the first SIGINT or SIGTERM from sigs,
// for a graceful stop: capture stops, queued records are written, then the
// disable line. A second one, while that drain is under way (output stuck
// on a full pipe or a slow disk), says so on stderr and calls exit.
func stopOnSignals(sigs <-chan os.Signal, cancel context.CancelFunc, stderr io.Writer, exit func(int)) {
	<-sigs
	cancel()
	name := "SIGTERM"
	if <-sigs == os.Interrupt {
		name = "SIGINT"
	}
	fmt.Fprintf(stderr, "siftr-probe: second %s: exiting before the drain is done: queued records may be lost, and the disable line missing\n", name)
	exit(exitForced)
}

const usageHead = `siftr-probe: per-packet TCP state for Linux, as FreeBSD's SIFTR logs it.

For every TCP packet on the port (both directions) it writes one line with the
connection's congestion window, ssthresh, smoothed RTT, RTO, windows, buffer
fill and bytes in flight, read from the socket right after the packet passed.

Usage:
  siftr-probe --iface IFACE [--port PORT] [flags]
  siftr-probe demo [--duration D] [--logfile PATH]
  siftr-probe summary [--flow ID] [--json] LOG...       per-flow statistics
  siftr-probe plot [--flow ID] [--fields F,...] -o FILE LOG...  PNG, SVG, HTML
  siftr-probe convert --to parquet|csv -o OUT LOG...    for pandas, DuckDB
  siftr-probe ctl status | stats | enable | disable | set ppl N | set port P |
      set logfile PATH                               change a running probe
  (each subcommand has its own --help)

Examples:
  siftr-probe --iface eth0 --port 5201                 # to /var/log/siftr.log
  siftr-probe --iface eth0 --port 5201 --logfile -     # to stdout
  siftr-probe --iface eth0 --port 443 --ppl 10 --duration 1m --logfile s.log
  siftr-probe --iface lo --port 8080 --format jsonl --logfile -
  siftr-probe --iface eth0 --port 5201 --netns /var/run/netns/blue
  siftr-probe --iface eth0 --port 5201 --metrics-addr 127.0.0.1:9721
  siftr-probe --iface eth0 --port 5201 --pcap s.pcapng # tcpdump -r s.pcapng
  sudo siftr-probe demo                                # a lab run, ~10 s

Flags (each also read from the environment as SIFTR_PROBE_<FLAG>, e.g.
SIFTR_PROBE_IFACE=eth0; a flag on the command line wins):
`

const usageTail = `
Needs CAP_NET_RAW (root) to capture; --netns also needs CAP_SYS_ADMIN.
Stop with Ctrl-C or SIGTERM: queued records are written, then the disable line;
a second Ctrl-C or SIGTERM exits at once (queued records may be lost).
SIGHUP reopens the log file (for logrotate), and the --pcap file with it: a
rotated pcap file is a whole pcapng file, the new one starts with its own
section header. If standard output is the log
and its reader goes away (| head), the run stops and exits 1.
siftr-probe ctl changes a running probe through its control socket
(--control): it enables and disables logging cycles and sets ppl, port and
the log file, as SIFTR's sysctls do (siftr-probe ctl --help).
With --metrics-addr, /healthz answers 200 "ok" while capturing or disabled,
and 503 once stopping or after a failed log write (records are being lost).
Exit status: 0 done, 1 failed while running, 2 bad arguments or set-up error,
130 stopped by a second signal.
`

// options are the parsed command line.
type options struct {
	cfg     probe.Config
	port    int
	ppl     int
	quiet   bool
	version bool
	status  time.Duration
	stats   string
	cpuprof string
}

func newFlagSet(o *options) *flag.FlagSet {
	fs := newQuietFlagSet("siftr-probe")
	c := &o.cfg
	// A word in backquotes is the value's placeholder in --help.
	fs.StringVar(&c.Iface, "iface", "", "capture on interface `IFACE` (required), e.g. eth0, lo")
	fs.Var(intFlag{&o.port}, "port", "log TCP packets whose source or destination port is `PORT` (decimal); 0 = all TCP")
	o.ppl = 1
	fs.Var(intFlag{&o.ppl}, "ppl", "log every `N`-th packet of each flow (SIFTR's ppl); 1 = every packet")
	fs.StringVar(&c.LogFile, "logfile", "/var/log/siftr.log", "append the log to file `PATH` (created 0644; a regular file or a device, never a symlink or FIFO; locked against a second probe); - = stdout")
	fs.StringVar(&c.Format, "format", "siftr", "log `FORMAT`: siftr for SIFTR 1.3.0 text, jsonl for JSON lines with more fields")
	fs.StringVar(&c.Pcap, "pcap", "", "also write the headers of every logged packet to the pcapng file `FILE`, each with the record's cwnd, ssthresh, srtt, flowid, state and state source as its comment (for Wireshark, tcpdump -r); IP and TCP headers rebuilt from the decoded fields, without payload, TCP options or TCP checksum; the rules of --logfile, replaced; reopened with the log on SIGHUP")
	fs.BoolVar(&c.PcapAll, "pcap-all", false, "with --pcap, every captured packet, logged or not (without a comment); with --state exact only with --ppl 1, since exact mode samples in the kernel and the other packets never reach the probe: then the file has every packet but SIFTR's skips (handshake, sockets not established)")
	fs.StringVar(&c.State, "state", "diag", "where each record's socket state comes from, `SOURCE`: exact reads it in the kernel at the packet (eBPF; root, Linux 5.12+ with BTF), diag reads it with inet_diag just after (CAP_NET_RAW only), auto uses exact where it can and says which")
	fs.StringVar(&c.Attach, "attach", "", "how --state exact attaches its programs, `MODE`: tcx (Linux 6.6+) or tc (a clsact qdisc); default tcx where the kernel has it")
	fs.Var(intFlag{&c.Workers}, "workers", "`N` capture rings, one per CPU, in a fanout group; 0 = all online CPUs; at most 256")
	fs.DurationVar(&c.BlockTimeout, "block-timeout", time.Millisecond, "ring block timeout `D` (whole milliseconds): the longest a packet waits in its ring; lower = fresher snapshots, more CPU")
	fs.Var(sizeFlag{&c.BlockSize}, "block-size", "ring block size `SIZE` in bytes, k/M suffixes allowed (default 128k)")
	fs.Var(sizeFlag{&c.RingSize}, "ring-size", "`SIZE` of each ring in bytes, k/M suffixes allowed (default 8M)")
	fs.DurationVar(&c.Duration, "duration", 0, "stop after `D` (e.g. 30s, 5m); 0 = run until Ctrl-C or SIGTERM")
	fs.StringVar(&c.NetNS, "netns", "", "capture and look up sockets in the network namespace at `PATH` (/var/run/netns/NAME, /proc/PID/ns/net)")
	fs.BoolVar(&c.AllNetNS, "all-netns", false, "follow every network namespace of the host (pods, containers, ip netns), found within a second, each on its interfaces: --iface is then a pattern (eth*), by default every interface with a global address")
	fs.Var(listFlag{&c.NetNSInclude}, "netns-include", "with --all-netns, follow only namespaces matching one of `TERMS` (comma-separated netns=GLOB for a name or inode, iface=GLOB, and with --node-name pod=NAMESPACE/NAME or label=KEY=VALUE, globs)")
	fs.Var(listFlag{&c.NetNSExclude}, "netns-exclude", "with --all-netns, leave out namespaces matching one of `TERMS` (as --netns-include)")
	fs.Var(intFlag{&c.MaxNetNS}, "max-netns", "with --all-netns, follow at most `N` namespaces; more are counted and named in a warning (default 256)")
	fs.StringVar(&c.NodeName, "node-name", "", "with --all-netns, label each namespace with its pod: the pods of Kubernetes node `NAME` are watched through the API server (in a pod: from the downward API's spec.nodeName)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "with --node-name, reach the API server with kubeconfig `FILE` (default: in-cluster, the pod's service account)")
	fs.StringVar(&c.LogPerNetNS, "log-per-netns", "", "with --all-netns, write a SIFTR log per namespace and interface into directory `DIR` (NAME-IFACE.log, each with its own enable and disable lines) instead of one log")
	fs.DurationVar(&o.status, "status-interval", 5*time.Second, "print a status line on stderr every `D`, at least 100ms; 0 = none")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "serve Prometheus /metrics and /healthz on `ADDR` (host:port, e.g. 127.0.0.1:9721); off when empty")
	fs.StringVar(&o.stats, "stats-file", "", "at exit, write the run's summary as JSON to file `PATH` (counts, drops, staleness, CPU, peak RSS); opened at start, with the rules of --logfile, replaced at exit")
	fs.StringVar(&o.cpuprof, "cpuprofile", "", "write a Go CPU profile of the run to file `PATH` (for go tool pprof), with the rules of --logfile, replaced")
	fs.StringVar(&c.Control, "control", defaultControl, "serve the control socket for siftr-probe ctl at `PATH` (mode 0600, for root and the probe's user); \"\" = none")
	fs.BoolVar(&c.StartDisabled, "start-disabled", false, "capture and log nothing until siftr-probe ctl enable")
	fs.BoolVar(&o.quiet, "quiet", false, "no status lines and no summary on stderr")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

// newQuietFlagSet returns a flag set that prints nothing itself: parse
// errors become one line (see flagError), and --help is printed by the
// caller.
func newQuietFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// printFlags lists the flags of fs, in the order they were defined, the
// way --help shows them: "--name PLACEHOLDER", then the description and
// the default below it, wrapped at 79 columns.
func printFlags(w io.Writer, fs *flag.FlagSet, order []string) {
	done := map[string]bool{}
	show := func(f *flag.Flag) {
		if done[f.Name] {
			return
		}
		done[f.Name] = true
		arg, usage := flag.UnquoteUsage(f)
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
			arg = ""
		}
		head := "  --" + f.Name
		if arg != "" {
			head += " " + arg
		}
		switch f.DefValue {
		case "", "0", "0s", "false":
		default:
			usage += " (default " + f.DefValue + ")"
		}
		fmt.Fprintln(w, head)
		line := "       "
		for _, word := range strings.Fields(usage) {
			if len(line)+1+len(word) > 79 && len(line) > 8 {
				fmt.Fprintln(w, line)
				line = "       "
			}
			line += " " + word
		}
		fmt.Fprintln(w, line)
	}
	for _, name := range order {
		if f := fs.Lookup(name); f != nil {
			show(f)
		}
	}
	fs.VisitAll(show)
}

// flagOrder is the order of the flags in --help: most used first.
var flagOrder = []string{"iface", "port", "ppl", "logfile", "format", "pcap", "pcap-all", "state", "duration", "netns",
	"all-netns", "netns-include", "netns-exclude", "max-netns", "log-per-netns", "node-name", "kubeconfig",
	"control", "start-disabled", "metrics-addr", "status-interval", "quiet", "stats-file",
	"workers", "block-timeout", "block-size", "ring-size", "attach", "cpuprofile", "version"}

func printUsage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	printFlags(w, newFlagSet(&options{}), flagOrder)
	fmt.Fprint(w, "  --help\n        print this help and exit\n")
	fmt.Fprint(w, usageTail)
}

// flagError rewrites a flag package parse error as one line in the
// command's own terms ("bad --port \"abc\": not a whole number").
func flagError(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if m := reInvalid.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("bad --%s %q: %s", m[2], m[1], valueProblem(fs.Lookup(m[2]), m[3]))
	}
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("unknown flag --%s", name)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("--%s needs a value", name)
	}
	return err
}

var reInvalid = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-([^:]+): (.*)$`)

// valueProblem says what is wrong with a value the flag f could not take;
// reason is the error of f's Set.
func valueProblem(f *flag.Flag, reason string) string {
	switch reason {
	case "value out of range":
		return "out of range"
	case "parse error":
	default:
		return reason
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return "not a valid value"
	}
	switch g.Get().(type) {
	case int, int64, uint, uint64:
		return "not a whole number"
	case time.Duration:
		return "not a duration (e.g. 500ms, 30s, 5m)"
	case bool:
		return "not true or false"
	}
	return "not a valid value"
}

// parse reads args and the environment into options. It returns a usage
// error for anything invalid.
func parse(args []string, getenv func(string) string) (*options, *flag.FlagSet, error) {
	o := &options{}
	fs := newFlagSet(o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, fs, err
		}
		return nil, fs, flagError(fs, err)
	}
	if fs.NArg() > 0 {
		return nil, fs, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	if err := applyEnv(fs, getenv); err != nil {
		return nil, fs, err
	}
	if o.version {
		return o, fs, nil
	}
	if o.cfg.Iface == "" && !o.cfg.AllNetNS {
		return nil, fs, errors.New("--iface is required (for example --iface eth0; list interfaces with: ip link)")
	}
	if !o.cfg.AllNetNS {
		for _, name := range []string{"netns-include", "netns-exclude", "max-netns", "log-per-netns", "node-name", "kubeconfig"} {
			if given(fs, name) {
				return nil, fs, fmt.Errorf("--%s needs --all-netns", name)
			}
		}
	}
	if o.cfg.AllNetNS && o.cfg.NetNS != "" {
		return nil, fs, errors.New("--all-netns and --netns exclude each other")
	}
	if o.cfg.AllNetNS {
		// The fleet has no logging cycles yet; the default control socket,
		// not asked for, is simply not made.
		switch {
		case o.cfg.StartDisabled:
			return nil, fs, errors.New("--start-disabled does not go with --all-netns yet (a fleet run has no logging cycles to enable)")
		case given(fs, "control") && o.cfg.Control != "":
			return nil, fs, errors.New("--control does not go with --all-netns yet (a fleet run has no logging cycles to change)")
		}
	}
	for name, v := range map[string]string{"logfile": o.cfg.LogFile, "stats-file": o.stats, "cpuprofile": o.cpuprof, "pcap": o.cfg.Pcap} {
		if v == "" && given(fs, name) {
			if name == "logfile" {
				return nil, fs, errors.New("--logfile needs a path (- for standard output)")
			}
			return nil, fs, fmt.Errorf("--%s needs a path", name)
		}
	}
	if err := checkPcap(o); err != nil {
		return nil, fs, err
	}
	if o.port < 0 || o.port > 65535 {
		return nil, fs, fmt.Errorf("bad --port %d: must be 0 (all) to 65535", o.port)
	}
	if o.ppl < 1 {
		return nil, fs, fmt.Errorf("bad --ppl %d: must be 1 (every packet) or more", o.ppl)
	}
	if o.ppl > 1<<31 {
		return nil, fs, fmt.Errorf("bad --ppl %d: must be at most %d", o.ppl, 1<<31)
	}
	if o.cfg.BlockTimeout < time.Millisecond || o.cfg.BlockTimeout%time.Millisecond != 0 {
		return nil, fs, fmt.Errorf("bad --block-timeout %s: must be a whole number of milliseconds, at least 1ms", o.cfg.BlockTimeout)
	}
	if o.cfg.Workers < 0 {
		return nil, fs, fmt.Errorf("bad --workers %d: must be 0 (all online CPUs) or more", o.cfg.Workers)
	}
	if given(fs, "max-netns") && (o.cfg.MaxNetNS < 1 || o.cfg.MaxNetNS > 65536) {
		return nil, fs, fmt.Errorf("bad --max-netns %d: must be 1 to 65536", o.cfg.MaxNetNS)
	}
	if o.cfg.Workers > capture.MaxWorkers {
		return nil, fs, fmt.Errorf("bad --workers %d: at most %d (a fanout group's limit)", o.cfg.Workers, capture.MaxWorkers)
	}
	if o.cfg.BlockSize > capture.MaxBlockSize {
		return nil, fs, fmt.Errorf("bad --block-size %d: at most %d (1G)", o.cfg.BlockSize, capture.MaxBlockSize)
	}
	if o.cfg.RingSize > capture.MaxRingSize {
		return nil, fs, fmt.Errorf("bad --ring-size %d: at most %d (16G)", o.cfg.RingSize, capture.MaxRingSize)
	}
	if o.cfg.Duration < 0 {
		return nil, fs, fmt.Errorf("bad --duration %s: must be 0 (until stopped) or more", o.cfg.Duration)
	}
	if o.status < 0 || (o.status > 0 && o.status < minStatusInterval) {
		return nil, fs, fmt.Errorf("bad --status-interval %s: must be 0 (none) or at least %s", o.status, minStatusInterval)
	}
	if o.cfg.Format != "siftr" && o.cfg.Format != "jsonl" {
		return nil, fs, fmt.Errorf("bad --format %q: must be siftr or jsonl", o.cfg.Format)
	}
	switch o.cfg.State {
	case probe.StateDiag, probe.StateExact, probe.StateAuto:
	default:
		return nil, fs, fmt.Errorf("bad --state %q: must be diag, exact or auto", o.cfg.State)
	}
	switch o.cfg.Attach {
	case "", "tcx", "tc":
	default:
		return nil, fs, fmt.Errorf("bad --attach %q: must be tcx or tc", o.cfg.Attach)
	}
	if o.cfg.Control != "" {
		abs, err := filepath.Abs(o.cfg.Control)
		if err != nil {
			return nil, fs, fmt.Errorf("bad --control %q: %v", o.cfg.Control, err)
		}
		o.cfg.Control = abs
	}
	if o.cfg.StartDisabled && o.cfg.Control == "" {
		return nil, fs, errors.New("--start-disabled needs a control socket to be enabled through (--control PATH)")
	}
	// The default socket path is made if it can be; one asked for must be.
	o.cfg.ControlOptional = !given(fs, "control")
	o.cfg.Port = uint16(o.port)
	o.cfg.PPL = uint32(o.ppl)
	if !o.quiet {
		o.cfg.StatusEvery = o.status
	}
	return o, fs, nil
}

// checkPcap checks --pcap and --pcap-all against each other and the rest.
func checkPcap(o *options) error {
	c := &o.cfg
	switch {
	case c.PcapAll && c.Pcap == "":
		return errors.New("--pcap-all needs --pcap FILE")
	case c.Pcap == "":
		return nil
	case c.Pcap == "-":
		return errors.New("--pcap needs a file path: standard output is not supported")
	case c.LogFile != "-" && sameFile(c.Pcap, c.LogFile):
		return fmt.Errorf("--pcap %s is the log file: give it a path of its own", c.Pcap)
	case c.PcapAll && c.State == probe.StateExact && o.ppl != 1:
		return fmt.Errorf("--pcap-all with --state exact needs --ppl 1 (not %d): exact mode samples in the kernel, so the packets not logged never reach the probe", o.ppl)
	}
	return nil
}

// sameFile reports whether two paths name one file: the same path, or
// existing files that are the same.
func sameFile(a, b string) bool {
	if aa, err := filepath.Abs(a); err == nil {
		if bb, err := filepath.Abs(b); err == nil && aa == bb {
			return true
		}
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// defaultControl is --control's default. The tests set it to "" so that
// they never touch /run.
var defaultControl = ctl.DefaultPath

// minStatusInterval is the shortest --status-interval: a line more often
// than this is no longer readable, and only costs.
const minStatusInterval = 100 * time.Millisecond

// given reports whether flag name was set, on the command line or from the
// environment.
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// applyEnv sets every flag not given on the command line from
// SIFTR_PROBE_<NAME> (upper case, dashes as underscores), if set.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		key := EnvName(f.Name)
		if v := getenv(key); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("bad %s=%q: %s", key, v, valueProblem(f, e.Error()))
			}
		}
	})
	return err
}

// EnvName is the environment variable that sets a flag.
func EnvName(flagName string) string {
	return "SIFTR_PROBE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	if len(args) > 0 {
		switch args[0] {
		case "demo":
			return runDemo(ctx, args[1:], stdout, stderr)
		case "summary":
			return runSummary(args[1:], os.Stdin, stdout, stderr)
		case "plot":
			return runPlot(args[1:], os.Stdin, stdout, stderr)
		case "convert":
			return runConvert(args[1:], os.Stdin, stdout, stderr)
		case "ctl":
			return runCtl(args[1:], stdout, stderr)
		}
	}
	o, _, err := parse(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "siftr-probe: %v\nrun 'siftr-probe --help' for usage\n", err)
		return exitUsage
	}
	if o.version {
		fmt.Fprintln(stdout, buildinfo.Get())
		return exitOK
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	o.cfg.Stdout = &brokenPipeWatch{w: stdout, onEPIPE: func() {
		fmt.Fprintln(stderr, "siftr-probe: standard output was closed (broken pipe): stopping; records not yet written are lost")
		cancel()
	}}
	o.cfg.Stderr = stderr
	o.cfg.Reopen = notifySignals()
	if !o.quiet {
		o.cfg.MetricsListening = func(a net.Addr) {
			fmt.Fprintf(stderr, "siftr-probe: metrics on http://%s/metrics, health on /healthz\n", a)
		}
	}

	// The stats file and the profile follow the log file's rules, checked
	// now, before anything is captured.
	var statsFile *os.File
	if o.stats != "" {
		_, lerr := os.Lstat(o.stats)
		f, err := output.OpenFile(o.stats, "stats file", 0)
		if err != nil {
			fmt.Fprintf(stderr, "siftr-probe: %s\n", fileError(err))
			return exitUsage
		}
		defer f.Close()
		statsFile = f
		if lerr != nil { // made now: remove it if the run does not start
			defer func() {
				if code == exitUsage {
					os.Remove(o.stats)
				}
			}()
		}
	}
	if o.cpuprof != "" {
		f, err := output.OpenFile(o.cpuprof, "CPU profile", os.O_TRUNC)
		if err != nil {
			fmt.Fprintf(stderr, "siftr-probe: %s\n", fileError(err))
			return exitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "siftr-probe: --cpuprofile: %v\n", err)
			return exitUsage
		}
		defer pprof.StopCPUProfile()
	}
	sum, err := probe.Run(ctx, o.cfg)
	var se *probe.SetupError
	if errors.As(err, &se) {
		fmt.Fprintf(stderr, "siftr-probe: %v\n", err)
		return exitUsage
	}
	if sum != nil && !o.quiet {
		sum.Print(stderr)
	}
	if sum != nil && statsFile != nil {
		if werr := writeReport(statsFile, sum); werr != nil {
			fmt.Fprintf(stderr, "siftr-probe: write --stats-file: %v\n", werr)
			if err == nil {
				return exitError
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "siftr-probe: %v\n", err)
		return exitError
	}
	return exitOK
}

// fileError is output.OpenFile's error in one line: its explanation
// without the system error it wraps, which repeats the path.
func fileError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "output: ")
	var pe *os.PathError
	if errors.As(err, &pe) {
		msg = strings.TrimSuffix(msg, ": "+pe.Error())
	}
	return msg
}

// writeReport replaces f's contents with the run's summary as JSON.
func writeReport(f *os.File, sum *probe.Summary) error {
	b, err := json.MarshalIndent(sum.Report(), "", "  ")
	if err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(append(b, '\n'), 0); err != nil {
		return err
	}
	return f.Close()
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newQuietFlagSet("siftr-probe demo")
	cfg := demo.Config{}
	fs.DurationVar(&cfg.Duration, "duration", 4*time.Second, "length `D` of each transfer")
	fs.StringVar(&cfg.LogFile, "logfile", "siftr-demo.log", "write the demo's log to file `PATH`")
	usage := func(w io.Writer) {
		fmt.Fprint(w, `siftr-probe demo: a self-contained lab run (needs root).

It builds two network namespaces joined by a veth pair with a TBF rate limit,
runs built-in TCP bulk transfers on port 5201 over IPv4 and IPv6, captures on
the sender's side, writes the log, prints a per-flow summary and draws the log
beside it (siftr-demo.html, siftr-demo.png). The lab is removed at the end,
also on Ctrl-C. No external program is needed.

Flags:
`)
		printFlags(w, fs, []string{"duration", "logfile"})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "siftr-probe demo: %v\nrun 'siftr-probe demo --help' for usage\n", flagError(fs, err))
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "siftr-probe demo: unexpected argument %q\nrun 'siftr-probe demo --help' for usage\n", fs.Arg(0))
		return exitUsage
	}
	cfg.Stdout, cfg.Stderr = stdout, stderr
	if err := demo.Run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "siftr-probe demo: %v\n", err)
		var se *probe.SetupError
		if errors.As(err, &se) || errors.Is(err, demo.ErrNeedRoot) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}

// sizeFlag parses byte sizes with optional k, M, G suffixes (powers of 1024).
type sizeFlag struct{ p *int }

func (s sizeFlag) String() string {
	if s.p == nil || *s.p == 0 {
		return ""
	}
	return strconv.Itoa(*s.p)
}

func (s sizeFlag) Set(v string) error {
	mult := 1
	t := strings.TrimSuffix(strings.TrimSuffix(v, "B"), "i")
	switch {
	case strings.HasSuffix(t, "k"), strings.HasSuffix(t, "K"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "M"), strings.HasSuffix(t, "m"):
		mult, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "G"), strings.HasSuffix(t, "g"):
		mult, t = 1<<30, t[:len(t)-1]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if errors.Is(err, strconv.ErrRange) || (err == nil && n > math.MaxInt64/int64(mult)) {
		return errors.New("out of range")
	}
	if err != nil || n <= 0 {
		return errors.New("not a size (e.g. 131072, 128k, 8M)")
	}
	*s.p = int(n) * mult
	return nil
}

// intFlag parses a decimal integer. flag.IntVar would take "0443" as octal
// (291) and "0x1451" as hex; here the first is 443 and the second an error.
type intFlag struct{ p *int }

func (f intFlag) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.Itoa(*f.p)
}

func (f intFlag) Set(v string) error {
	n, err := strconv.ParseInt(v, 10, strconv.IntSize)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return errors.New("out of range")
	case err != nil:
		return errors.New("not a whole number")
	}
	*f.p = int(n)
	return nil
}

func (f intFlag) Get() any { return *f.p }

// listFlag collects comma-separated values, from one or more uses of the flag.
type listFlag struct{ p *[]string }

func (l listFlag) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listFlag) Set(v string) error {
	for _, t := range strings.Split(v, ",") {
		if t = strings.TrimSpace(t); t != "" {
			*l.p = append(*l.p, t)
		}
	}
	return nil
}
