// Package probe wires the pipeline stages into one run: a state source
// (capture rings and inet_diag lookups, or exact mode's eBPF programs)
// feeds a correlate.Engine, which hands records to an output.Writer. A run
// is one or more logging cycles (SIFTR's enable to disable), changed while
// it runs through the control socket (package ctl). The command, the
// demo, the tests and the benchmarks all run the probe through Run.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/buildinfo"
	"github.com/siftr-probe/siftr-probe/internal/clockstep"
	"github.com/siftr-probe/siftr-probe/internal/ctl"
	"github.com/siftr-probe/siftr-probe/internal/metrics"
	"github.com/siftr-probe/siftr-probe/output"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// Config is one run's settings. Zero values mean the documented defaults.
type Config struct {
	Iface        string        // interface to capture on (required)
	Port         uint16        // TCP port filter; 0 = all ports
	PPL          uint32        // log every PPL-th packet of each flow; 0 = 1
	LogFile      string        // log path; "-" = Stdout
	Format       string        // "siftr" (default) or "jsonl"
	Workers      int           // capture rings; 0 = all online CPUs
	BlockTimeout time.Duration // ring block timeout; 0 = 1ms
	BlockSize    int           // ring block size in bytes; 0 = capture's default
	RingSize     int           // bytes per ring; 0 = capture's default
	Duration     time.Duration // stop after this long; 0 = until ctx is done
	NetNS        string        // network namespace path to capture and look up in; "" = current
	// State is the state source: "diag" (AF_PACKET and inet_diag, the
	// default), "exact" (eBPF programs read the socket at the packet) or
	// "auto" (exact where the kernel and the privileges allow it, else
	// diag, saying which and why on Stderr).
	State string
	// Attach is how exact mode attaches its programs: "" (tcx where the
	// kernel has it, else clsact), "tcx" or "tc".
	Attach string
	// Pcap, if set, is a pcapng file for the packets beside the records
	// (output.OpenPcap: the log file's rules, replaced, locked), written
	// and reopened with the log.
	Pcap string
	// PcapAll writes every captured packet to Pcap, logged or not (diag
	// mode: the capture hands each ring block to the writer too). In exact
	// mode unlogged packets never reach user space: with PPL 1 the file
	// gets what is logged (every packet but SIFTR's skips); with a larger
	// PPL it is a set-up error.
	PcapAll bool
	// MaxFlows, MaxUnverifiedFlows and MaxFlowList bound each engine's flow
	// table and flow list (correlate.Config); 0 = correlate's defaults.
	MaxFlows, MaxUnverifiedFlows, MaxFlowList int
	StatusEvery                               time.Duration // status line interval on Stderr; 0 = none
	Stdout                                    io.Writer     // for LogFile "-"; nil = os.Stdout
	Stderr                                    io.Writer     // status lines; nil = os.Stderr
	// Reopen, if set: each value received reopens the log file (SIGHUP, for logrotate).
	Reopen <-chan os.Signal
	// OnRecord, if set, sees every record as it is written, on the writer's goroutine.
	OnRecord func(*correlate.Record)
	// Started, if set, is called once Run is under way: the first cycle
	// capturing or, with StartDisabled, the control socket served.
	Started func()
	// MetricsAddr, if set, is a TCP address (host:port) on which to serve
	// Prometheus /metrics and /healthz (see package metrics) from just
	// before capture starts until Run returns. It is bound in the caller's
	// network namespace, also with NetNS. /healthz answers 200 "ok" while
	// capturing, 503 once stopping and after a failed log write.
	MetricsAddr string
	// MetricsListening, if set, is called with the bound metrics address
	// (useful with port 0) before capture starts.
	MetricsListening func(net.Addr)

	// AllNetNS follows every network namespace of the host (--all-netns):
	// each is discovered within about a second and followed on its
	// interfaces (Iface is then a shell pattern; "" = every interface with
	// a global address), until it goes away. NetNS must be empty.
	AllNetNS bool
	// NetNSInclude and NetNSExclude select the namespaces followed: terms
	// netns=GLOB (name or inode), iface=GLOB, pod=NAMESPACE/NAME-GLOB.
	NetNSInclude, NetNSExclude []string
	// MaxNetNS bounds the namespaces followed; 0 = DefaultMaxNetNS.
	MaxNetNS int
	// LogPerNetNS, if set, is a directory where each followed namespace's
	// interface gets a SIFTR log of its own (NAME-IFACE.log, with its own
	// enable and disable lines) instead of one shared log.
	LogPerNetNS string
	// NodeName, if set with AllNetNS, labels each namespace with its pod:
	// the node's pods are watched through the Kubernetes API server (with
	// Kubeconfig, else in-cluster) and a namespace is the pod one of its
	// addresses belongs to.
	NodeName, Kubeconfig string

	// Control, if set, is the path of the control socket (package ctl)
	// that New makes and Run serves: enable, disable and set while the
	// probe runs. ControlOptional turns a socket that cannot be made
	// into a warning on Stderr instead of a set-up error (the command's
	// default path, not asked for). With AllNetNS a Control asked for is
	// a set-up error, and an optional one is not made.
	Control         string
	ControlOptional bool
	// StartDisabled: Run begins no logging cycle, and nothing is captured
	// until an enable on the control socket.
	StartDisabled bool
}

// SetupError is a problem found before capture started: unknown interface,
// missing privilege, unwritable log file, bad setting. Nothing was logged.
type SetupError struct{ Err error }

func (e *SetupError) Error() string { return e.Err.Error() }
func (e *SetupError) Unwrap() error { return e.Err }

func setupErr(format string, a ...any) error { return &SetupError{fmt.Errorf(format, a...)} }

// Summary is what a logging cycle did: its counters at its end (or now,
// for one under way), and when and where it logged. Cycle is its number,
// from 1; 0 when no cycle ran (started disabled, never enabled).
type Summary struct {
	Start, End time.Time
	LogFile    string
	PcapFile   string // "" without --pcap
	Cycle      int
	metrics.Stats
}

// Lines is the number of records written.
func (s *Summary) Lines() uint64 { return s.Writer.Records }

// Pipeline is one run: logging cycles, each a state source feeding a
// correlate.Engine, which hands records to an output.Writer. A cycle is
// SIFTR's enable to disable: it begins with an enable line and ends with
// the disable line of its own counts and flow list (see control.go for
// the changes a run takes while it runs). New sets a run up (everything
// that can fail before logging starts), Run logs until told to stop,
// Close releases what is left. The command, the demo, the tests and the
// benchmarks all run the probe through it.
type Pipeline struct {
	cfg       Config // its PPL, Port and LogFile are the settings in force: guarded by mu
	fleet     *fleet // with Config.AllNetNS: no cycles, the fleet logs from Run to its end
	metricsLn net.Listener
	ctl       *ctl.Listener
	state     tcp.Source // the state source New chose
	// pcap is Config.Pcap's file: opened (and emptied) once for the run,
	// and handed to each cycle's writer in turn (output.WriterConfig.KeepPcap).
	pcap     *output.Pcap
	madePcap bool // New created the pcap file and has not finished: Close removes it

	mu       sync.Mutex // guards cfg's settings and the fields below
	cur      *cycle     // the cycle logging now; nil while disabled
	last     *cycle     // the latest cycle begun: cur, or the one that ended
	next     *cycle     // opened by New for the first enable
	cycles   int        // cycles begun
	started  time.Time  // when Run began
	running  bool       // Run is serving changes
	stopping bool       // Run is ending: no new cycle
	werr     error      // the first log write error of any cycle
	perr     error      // the first pcap write error of any cycle
	ran      bool
	closed   bool

	// clock notices steps of the wall clock from Run to Close; nil if it
	// could not be set up (said on Stderr). It records the backward ones
	// in timeline, by which every writer of the run orders its lines.
	clock    *clockstep.Watcher
	timeline clockstep.Timeline

	// changeMu serializes the changes: enable, disable, set.
	changeMu sync.Mutex
	// failed gets a cycle whose source stopped by itself (an error).
	failed chan *cycle
}

// Run sets a pipeline up with New, runs it and closes it.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	p, err := New(cfg)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return p.Run(ctx)
}

// New opens the state source, the log, the pcap file, the metrics listener
// and the control socket of a run. Nothing is logged yet; with
// StartDisabled the source and the log are opened only to check them, and
// closed again (the pcap file stays open: it is the run's). With AllNetNS
// it sets up the fleet instead (sources open as namespaces are found). An
// error is a *SetupError.
func New(cfg Config) (*Pipeline, error) {
	if cfg.Iface == "" && !cfg.AllNetNS {
		return nil, setupErr("no interface given (--iface)")
	}
	if cfg.PPL == 0 {
		cfg.PPL = 1
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.LogFile == "" {
		cfg.LogFile = "/var/log/siftr.log"
	}
	if cfg.Format == "" {
		cfg.Format = "siftr"
	}
	format, err := output.FormatByName(cfg.Format)
	if err != nil {
		return nil, &SetupError{err}
	}
	if cfg.AllNetNS {
		// The fleet logs from Run to its end, without cycles to enable and
		// disable; the command's default socket, not asked for, is not made.
		switch {
		case cfg.Control != "" && !cfg.ControlOptional:
			return nil, setupErr("--control does not go with --all-netns yet (a fleet run has no logging cycles to change)")
		case cfg.StartDisabled:
			return nil, setupErr("--start-disabled does not go with --all-netns yet (a fleet run has no logging cycles to enable)")
		}
		cfg.Control, cfg.ControlOptional = "", false
	}
	p := &Pipeline{cfg: cfg, failed: make(chan *cycle, 1)}

	// Bind the metrics address first: a busy port is a set-up error, found
	// before any ring is opened.
	if cfg.MetricsAddr != "" {
		if p.metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return nil, setupErr("cannot serve metrics on %s: %w", cfg.MetricsAddr, unwrapOp(err))
		}
	}
	if cfg.AllNetNS {
		return p.newFleet(format)
	}
	c, err := p.openCycle(&p.cfg)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.state = c.src.state()
	// Later cycles use the source chosen now (auto decides once).
	p.cfg.State = p.state.String()
	if cfg.StartDisabled {
		c.close()
	} else {
		p.next = c
	}
	if cfg.Control != "" {
		if err := p.listenControl(); err != nil {
			p.Close()
			return nil, err
		}
	}
	if cfg.StartDisabled && p.ctl == nil {
		p.Close()
		return nil, setupErr("--start-disabled needs a control socket (--control PATH) to be enabled through")
	}
	p.madePcap = false // the run starts: the file stays
	return p, nil
}

// openPcap opens Config.Pcap for the run's writers, the cycles' in turn:
// once per run, so that the file (replaced when it is opened) holds the
// packets of every cycle. state is the state source's.
func (p *Pipeline) openPcap(cfg *Config, state tcp.Source) error {
	exact := state == tcp.SourceExact
	if cfg.PcapAll && exact && cfg.PPL > 1 {
		return setupErr("--pcap-all needs --ppl 1 in exact mode: its programs sample in the kernel, so the packets ppl leaves out never reach the probe")
	}
	filter := "tcp"
	if cfg.Port != 0 {
		filter = fmt.Sprintf("tcp port %d", cfg.Port)
	}
	_, lerr := os.Lstat(cfg.Pcap)
	pc, err := output.OpenPcap(&output.PcapConfig{
		Path:        cfg.Pcap,
		Iface:       cfg.Iface,
		Filter:      filter,
		Application: "siftr-probe " + buildinfo.Get().Version,
		// In exact mode with ppl 1 the records are every packet that
		// reaches user space: there is nothing else to add.
		All: cfg.PcapAll && !exact,
	})
	if err != nil {
		return explainFile("pcap file", cfg.Pcap, err)
	}
	p.pcap, p.madePcap = pc, lerr != nil
	return nil
}

// Close releases what the pipeline holds: a cycle New opened that never
// began (its log closed without a line), the fleet's shared log if Run
// never wrote its lines, the pcap file, the metrics listener and the
// control socket. It is idempotent.
func (p *Pipeline) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	next, ran := p.next, p.ran
	p.next = nil
	p.mu.Unlock()
	if next != nil {
		next.close()
	}
	if f := p.fleet; f != nil && f.shared != nil && !ran {
		f.shared.Close(nil)
	}
	if p.pcap != nil {
		p.pcap.Close()
	}
	if p.madePcap {
		os.Remove(p.cfg.Pcap)
		p.madePcap = false
	}
	if p.metricsLn != nil {
		p.metricsLn.Close()
	}
	if p.ctl != nil {
		p.ctl.Close()
	}
	if w := p.clockWatcher(); w != nil {
		w.Close()
	}
	return nil
}

// watchClock starts noticing steps of the wall clock for the run: each is
// said on Stderr and counted (metrics.Stats.ClockSteps).
func (p *Pipeline) watchClock() {
	w, err := clockstep.Watch(p.clockStepped)
	if err != nil {
		fmt.Fprintf(p.cfg.Stderr, "siftr-probe: steps of the wall clock will not be noticed: %v\n", err)
		return
	}
	p.mu.Lock()
	p.clock = w
	p.mu.Unlock()
}

func (p *Pipeline) clockWatcher() *clockstep.Watcher {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.clock
}

// clockSteps are the steps of the wall clock noticed so far.
func (p *Pipeline) clockSteps() clockstep.Stats {
	if w := p.clockWatcher(); w != nil {
		return w.Stats()
	}
	return clockstep.Stats{}
}

// clockStepped says what a step of the wall clock does to the log.
func (p *Pipeline) clockStepped(s clockstep.Step) {
	p.timeline.Back(-s.By)
	by := s.By.Round(time.Microsecond)
	if by >= 0 {
		p.logf("the wall clock stepped forward by %v: the log's times jump with it (flows age by the monotonic clock: none is pruned for it)", by)
		return
	}
	p.logf("the wall clock stepped back by %v: the log's times go back with it, its lines stay in the order of their packets; flows age by the monotonic clock: none is pruned for it", -by)
}

// read is one reading of every counter of the pipeline: the summary, the
// status line, the control socket's status and the metrics are all built
// from it. The counts are those of the current cycle or, while disabled,
// of the last one.
func (p *Pipeline) read() metrics.Stats {
	if p.fleet != nil {
		return p.readFleet()
	}
	p.mu.Lock()
	c := p.last
	s := metrics.Stats{State: p.state.String(), Enabled: p.cur != nil, PPL: p.cfg.PPL, Port: p.cfg.Port, Cycle: p.cycles}
	p.mu.Unlock()
	if c == nil {
		s.ClockSteps = p.clockSteps()
		return s
	}
	return p.readCycle(c)
}

// readFleet is read with Config.AllNetNS: the fleet logs as one cycle,
// from Run to its end, with the settings it started with.
func (p *Pipeline) readFleet() metrics.Stats {
	s := p.fleet.read()
	s.ClockSteps = p.clockSteps()
	p.mu.Lock()
	defer p.mu.Unlock()
	s.PPL, s.Port = p.cfg.PPL, p.cfg.Port
	if !p.started.IsZero() {
		s.Enabled, s.Cycle, s.CycleStart = !p.stopping, 1, p.started
	}
	return s
}

// Run logs until ctx is done or Config.Duration has passed: it begins a
// logging cycle (unless Config.StartDisabled), takes changes (enable,
// disable, set; see control.go) from the control socket, and at the end
// ends the cycle logging then: it drains every queued record and writes
// the disable line. It returns the summary of the last cycle. With
// AllNetNS it runs the fleet (runFleet). It may be called once.
func (p *Pipeline) Run(ctx context.Context) (*Summary, error) {
	p.mu.Lock()
	if p.ran || p.closed {
		p.mu.Unlock()
		return nil, errors.New("probe: pipeline already run or closed")
	}
	p.ran = true
	p.started = time.Now()
	p.mu.Unlock()
	p.watchClock()
	if p.fleet != nil {
		return p.runFleet(ctx)
	}
	cfg := &p.cfg

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Duration > 0 {
		var c2 context.CancelFunc
		runCtx, c2 = context.WithTimeout(runCtx, cfg.Duration)
		defer c2()
	}
	p.changeMu.Lock()
	if next := p.takeNext(); next != nil {
		if err := p.begin(next); err != nil {
			p.changeMu.Unlock()
			p.Close()
			return nil, err
		}
	} else {
		p.logf("logging disabled until siftr-probe ctl enable%s", p.controlHint())
	}
	p.mu.Lock()
	p.running = true
	p.mu.Unlock()
	p.changeMu.Unlock()

	// The helpers: the status line, log reopening, metrics.
	var wg sync.WaitGroup
	if cfg.StatusEvery > 0 {
		st := newStatus(cfg.Stderr, p.read)
		wg.Go(func() { st.run(runCtx, cfg.StatusEvery) })
	}
	if cfg.Reopen != nil {
		wg.Go(func() { p.reopenOn(runCtx, cfg.Reopen) })
	}
	msrv := p.serveMetrics(runCtx)
	if cfg.Started != nil {
		cfg.Started()
	}

	var srcErr error
	select {
	case <-runCtx.Done():
	case c := <-p.failed:
		srcErr = c.srcErr
	}
	// The end: no more changes, the cycle logging now ends as a disable
	// does (its source stops and delivers what it observed, the writer
	// drains its queue and writes the disable line), then the helpers and
	// the metrics stop.
	p.changeMu.Lock()
	p.mu.Lock()
	p.stopping, p.running = true, false
	c := p.cur
	p.mu.Unlock()
	if c != nil {
		c.end()
	}
	p.changeMu.Unlock()
	cancel()
	wg.Wait()
	p.stopMetrics(msrv)
	p.Close()
	sum := p.lastSummary()
	p.mu.Lock()
	werr, perr := p.werr, p.perr
	p.mu.Unlock()
	if srcErr != nil {
		return sum, srcErr
	}
	if werr != nil {
		return sum, werr
	}
	return sum, perr
}

// takeNext returns the cycle New opened, if it is still waiting.
func (p *Pipeline) takeNext() *cycle {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.next
	p.next = nil
	return c
}

// lastSummary is the summary of the last cycle, or one of no cycle.
func (p *Pipeline) lastSummary() *Summary {
	p.mu.Lock()
	c := p.last
	p.mu.Unlock()
	if c == nil {
		return &Summary{Start: p.started, End: time.Now(), LogFile: p.logFile(), PcapFile: p.cfg.Pcap, Stats: p.read()}
	}
	return c.summary(p)
}

// logFile is the log path in force.
func (p *Pipeline) logFile() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.LogFile
}

// logf writes a line about a change on Stderr, with the time.
func (p *Pipeline) logf(format string, a ...any) {
	fmt.Fprintf(p.cfg.Stderr, "siftr-probe: %s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

// writers are the run's logs open now: the cycle logging (none while
// disabled) or, with AllNetNS, the shared log or every followed
// namespace's.
func (p *Pipeline) writers() []*output.Writer {
	if f := p.fleet; f != nil {
		if f.shared != nil {
			return []*output.Writer{f.shared}
		}
		return f.writers()
	}
	p.mu.Lock()
	c := p.cur
	p.mu.Unlock()
	if c == nil {
		return nil
	}
	return []*output.Writer{c.out}
}

// stopMetrics lets a scrape in progress finish, then stops serving.
func (p *Pipeline) stopMetrics(msrv *metrics.Server) {
	if msrv == nil {
		return
	}
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	if err := msrv.Close(sctx); err != nil {
		fmt.Fprintf(p.cfg.Stderr, "siftr-probe: metrics server: %v\n", err)
	}
}

// reopenOn reopens the open logs (and the pcap file) for each value
// received on c, until ctx is done. While disabled no log is open: only
// the pcap file, which the run keeps open, is reopened.
func (p *Pipeline) reopenOn(ctx context.Context, c <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c:
			ws := p.writers()
			reopened := false
			for _, w := range ws {
				err := w.Reopen()
				if errors.Is(err, output.ErrClosed) {
					continue // its cycle ended meanwhile
				}
				reopened = true
				if err != nil {
					fmt.Fprintf(p.cfg.Stderr, "siftr-probe: reopen %s: %v\n", w.Path(), err)
				}
			}
			if !reopened && p.fleet == nil && p.pcap != nil {
				p.reopenPcap()
			}
		}
	}
}

// reopenPcap reopens the pcap file while no cycle logs; a cycle that began
// meanwhile is reopened as a whole instead. It holds changeMu, so that no
// cycle begins (and takes the file) while it runs.
func (p *Pipeline) reopenPcap() {
	p.changeMu.Lock()
	defer p.changeMu.Unlock()
	p.mu.Lock()
	c := p.cur
	p.mu.Unlock()
	err := output.ErrClosed
	if c != nil {
		err = c.out.Reopen()
	}
	if errors.Is(err, output.ErrClosed) {
		// No writer uses the file: every cycle's ended (p.cur is cleared
		// only once its writer is closed).
		err = p.pcap.Reopen()
	}
	if err != nil {
		fmt.Fprintf(p.cfg.Stderr, "siftr-probe: reopen %s: %v\n", p.cfg.Pcap, err)
	}
}

// serveMetrics starts the metrics server on the listener New bound, if any.
// /healthz fails once ctx is done or a log (or pcap file) write of the
// cycle logging failed; while disabled it is healthy.
func (p *Pipeline) serveMetrics(ctx context.Context) *metrics.Server {
	if p.metricsLn == nil {
		return nil
	}
	msrv := metrics.Serve(p.metricsLn, &metrics.Config{
		Read: p.read,
		Health: func() error {
			if ctx.Err() != nil {
				return errors.New("stopping")
			}
			for _, w := range p.writers() {
				if err := w.Err(); err != nil {
					return fmt.Errorf("log write failed: %v", err)
				}
				if err := w.PcapErr(); err != nil {
					return fmt.Errorf("pcap write failed: %v", err)
				}
			}
			return nil
		},
		Info: buildinfo.Get(),
	})
	p.metricsLn = nil // msrv owns it
	if p.cfg.MetricsListening != nil {
		p.cfg.MetricsListening(msrv.Addr())
	}
	return msrv
}

// unwrapOp drops the *net.OpError wrapper's repeated operation and address.
func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Err
	}
	return err
}

// explainLog turns an error opening the log file into a one-line
// SetupError, "cannot write log file PATH: REASON". The reason is the
// writer's explanation ("is a symbolic link; refusing to follow it", "its
// directory does not exist") if it gave one, else the system's; the
// *os.PathError inside, which repeats the path, is left out of the message.
func explainLog(path string, err error) error { return explainFile("log file", path, err) }

// explainFile is explainLog for a file named what ("log file", "pcap file").
func explainFile(what, path string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "output: ")
	var pe *os.PathError
	if errors.As(err, &pe) {
		msg = strings.TrimSuffix(msg, ": "+pe.Error())
	}
	reason := ""
	if _, rest, ok := strings.Cut(msg, path); ok {
		switch {
		case strings.HasPrefix(rest, ": "): // "cannot create log file PATH: its directory does not exist"
			reason = rest[2:]
		case strings.HasPrefix(rest, " "): // "log file PATH is a directory"
			reason = "it" + rest
		}
	}
	if reason == "" {
		reason = msg
		if pe != nil {
			reason = pe.Err.Error()
		}
	}
	return &SetupError{&explained{fmt.Sprintf("cannot write %s %s: %s", what, path, reason), err}}
}

// explained is an error with a message of its own, wrapping the original.
type explained struct {
	msg string
	err error
}

func (e *explained) Error() string { return e.msg }
func (e *explained) Unwrap() error { return e.err }

// sysVer is the running kernel's version as SIFTR's sysver.
func sysVer() uint32 {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return 0
	}
	return output.SysVer(unix.ByteSliceToString(u.Release[:]))
}

// engineConfig is the correlate.Config of cfg's engines, for sockets at origin.
func engineConfig(cfg *Config, origin *correlate.Origin) *correlate.Config {
	return &correlate.Config{PPL: cfg.PPL, Origin: origin,
		MaxFlows: cfg.MaxFlows, MaxUnverifiedFlows: cfg.MaxUnverifiedFlows, MaxFlowList: cfg.MaxFlowList}
}
