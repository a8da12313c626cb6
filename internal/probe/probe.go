// Package probe wires the pipeline stages into one run: capture rings feed a
// correlate.Engine, which looks sockets up with one diag.Client per worker
// and hands records to an output.Writer. The command, the demo, the tests
// and the benchmarks all run the probe through Run.
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
	PcapAll     bool
	StatusEvery time.Duration // status line interval on Stderr; 0 = none
	Stdout      io.Writer     // for LogFile "-"; nil = os.Stdout
	Stderr      io.Writer     // status lines; nil = os.Stderr
	// Reopen, if set: each value received reopens the log file (SIGHUP, for logrotate).
	Reopen <-chan os.Signal
	// OnRecord, if set, sees every record as it is written, on the writer's goroutine.
	OnRecord func(*correlate.Record)
	// Started, if set, is called once the rings are capturing.
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
}

// SetupError is a problem found before capture started: unknown interface,
// missing privilege, unwritable log file, bad setting. Nothing was logged.
type SetupError struct{ Err error }

func (e *SetupError) Error() string { return e.Err.Error() }
func (e *SetupError) Unwrap() error { return e.Err }

func setupErr(format string, a ...any) error { return &SetupError{fmt.Errorf(format, a...)} }

// Summary is what a run did: the pipeline's counters at the end, and when
// and where it logged.
type Summary struct {
	Start, End time.Time
	LogFile    string
	PcapFile   string // "" without --pcap
	metrics.Stats
}

// Lines is the number of records written.
func (s *Summary) Lines() uint64 { return s.Writer.Records }

// Pipeline is one run: a state source feeding a correlate.Engine, which
// hands records to an output.Writer. New sets it up (everything that can
// fail before logging starts), Run logs until told to stop, Close releases
// what is left. The command, the demo, the tests and the benchmarks all run
// the probe through it.
type Pipeline struct {
	cfg       Config
	fleet     *fleet // with Config.AllNetNS; src and eng are then unused
	src       source
	out       *output.Writer
	eng       *correlate.Engine
	metricsLn net.Listener
	ran       bool
	closed    bool
	madePcap  bool // New created the pcap file and has not finished: Close removes it
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

// New opens the state source, the log and the metrics listener of a run.
// Nothing is logged yet. An error is a *SetupError.
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
	p := &Pipeline{cfg: cfg}
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
	src, err := openSource(&p.cfg)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.src = src
	pcap, err := p.openPcap()
	if err != nil {
		p.Close()
		return nil, err
	}
	p.out, err = output.OpenWriter(&output.WriterConfig{
		Pcap:     pcap,
		Path:     cfg.LogFile,
		Stdout:   cfg.Stdout,
		Format:   format,
		Workers:  p.src.Producers(),
		OnRecord: cfg.OnRecord,
		OnWarning: func(m string) {
			fmt.Fprintf(cfg.Stderr, "siftr-probe: %s %s\n", time.Now().Format("15:04:05"), m)
		},
	})
	if err != nil {
		p.Close()
		return nil, explainLog(cfg.LogFile, err)
	}
	if p.eng, err = correlate.NewEngine(&correlate.Config{PPL: cfg.PPL, Origin: originOf(cfg.NetNS)}, p.out, p.src.Producers()); err != nil {
		p.Close()
		return nil, &SetupError{err}
	}
	if ps, ok := p.src.(*packetSource); ok && cfg.Pcap != "" && cfg.PcapAll {
		ps.tap = p.out
	}
	p.madePcap = false // the run starts: the file stays
	return p, nil
}

// openPcap opens Config.Pcap, if set, for the writer.
func (p *Pipeline) openPcap() (*output.Pcap, error) {
	cfg := &p.cfg
	if cfg.Pcap == "" {
		return nil, nil
	}
	exact := p.src.state() == tcp.SourceExact
	if cfg.PcapAll && exact && cfg.PPL > 1 {
		return nil, setupErr("--pcap-all needs --ppl 1 in exact mode: its programs sample in the kernel, so the packets ppl leaves out never reach the probe")
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
		return nil, explainFile("pcap file", cfg.Pcap, err)
	}
	p.madePcap = lerr != nil
	return pc, nil
}

// Close releases what the pipeline holds: the source, the log (closed
// without a disable line if Run never wrote one) and the metrics listener.
// It is idempotent.
func (p *Pipeline) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	if p.src != nil {
		p.src.Close()
	}
	if p.out != nil && !p.ran {
		p.out.Close(nil)
	}
	if p.madePcap {
		os.Remove(p.cfg.Pcap)
		p.madePcap = false
	}
	if p.metricsLn != nil {
		p.metricsLn.Close()
	}
	return nil
}

// read is one reading of every counter of the pipeline: the summary, the
// status line and the metrics are all built from it.
func (p *Pipeline) read() metrics.Stats {
	if p.fleet != nil {
		return p.fleet.read()
	}
	s := metrics.Stats{State: p.src.state().String(), Counts: p.eng.Counts(), Engine: p.eng.Stats(), Writer: p.out.Stats()}
	p.src.read(&s)
	return s
}

// Run writes the enable line and logs until ctx is done or Config.Duration
// has passed, then drains every queued record, writes the disable line and
// returns what it did. It may be called once.
func (p *Pipeline) Run(ctx context.Context) (*Summary, error) {
	if p.ran || p.closed {
		return nil, errors.New("probe: pipeline already run or closed")
	}
	p.ran = true
	if p.fleet != nil {
		return p.runFleet(ctx)
	}
	cfg := &p.cfg
	sum := &Summary{Start: time.Now(), LogFile: cfg.LogFile, PcapFile: cfg.Pcap}
	if err := p.out.Start(&output.Header{Time: sum.Start, SysVer: sysVer(), IPMode: 6, StateSource: p.src.state()}); err != nil {
		p.out.Close(nil)
		return nil, explainLog(cfg.LogFile, err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Duration > 0 {
		var c2 context.CancelFunc
		runCtx, c2 = context.WithTimeout(runCtx, cfg.Duration)
		defer c2()
	}
	// The helpers: the flow table's pruner, the status line, log reopening.
	var wg sync.WaitGroup
	wg.Go(func() { p.eng.Run(runCtx) })
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

	// The shutdown order: the source stops and delivers what it observed
	// (the engine's counts are then final), the helpers stop, the writer
	// drains its queue and writes the disable line, then metrics stop.
	srcErr := p.src.Run(runCtx, p.eng)
	cancel()
	wg.Wait()
	werr := p.out.Close(func() *output.Footer {
		return &output.Footer{Time: time.Now(), Counts: p.eng.Counts(), Flows: p.eng.Flows()}
	})
	sum.End = time.Now()
	sum.Stats = p.read()
	p.stopMetrics(msrv)
	p.Close()
	if srcErr != nil {
		return sum, srcErr
	}
	if werr != nil {
		return sum, fmt.Errorf("writing %s: %w", cfg.LogFile, werr)
	}
	if perr := p.out.PcapErr(); perr != nil {
		return sum, fmt.Errorf("writing pcap file %s: %w (%d packets lost)", cfg.Pcap, perr, sum.Writer.Pcap.Lost)
	}
	return sum, nil
}

// writers are the run's logs: the one log, or every followed namespace's.
func (p *Pipeline) writers() []*output.Writer {
	if p.fleet == nil || p.fleet.shared != nil {
		return []*output.Writer{p.out}
	}
	return p.fleet.writers()
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

// reopenOn reopens the log file for each value received on c, until ctx is done.
func (p *Pipeline) reopenOn(ctx context.Context, c <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c:
			for _, w := range p.writers() {
				if err := w.Reopen(); err != nil {
					fmt.Fprintf(p.cfg.Stderr, "siftr-probe: reopen %s: %v\n", p.cfg.LogFile, err)
				}
			}
		}
	}
}

// serveMetrics starts the metrics server on the listener New bound, if any.
// /healthz fails once ctx is done or a log write failed.
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
			}
			if err := p.out.PcapErr(); err != nil {
				return fmt.Errorf("pcap write failed: %v", err)
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
