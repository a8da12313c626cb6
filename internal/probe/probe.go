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

	"github.com/siftr-probe/siftr-probe/capture"
	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/diag"
	"github.com/siftr-probe/siftr-probe/internal/buildinfo"
	"github.com/siftr-probe/siftr-probe/internal/metrics"
	"github.com/siftr-probe/siftr-probe/internal/netns"
	"github.com/siftr-probe/siftr-probe/output"
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
	StatusEvery  time.Duration // status line interval on Stderr; 0 = none
	Stdout       io.Writer     // for LogFile "-"; nil = os.Stdout
	Stderr       io.Writer     // status lines; nil = os.Stderr
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
}

// SetupError is a problem found before capture started: unknown interface,
// missing privilege, unwritable log file, bad setting. Nothing was logged.
type SetupError struct{ Err error }

func (e *SetupError) Error() string { return e.Err.Error() }
func (e *SetupError) Unwrap() error { return e.Err }

func setupErr(format string, a ...any) error { return &SetupError{fmt.Errorf(format, a...)} }

// Summary is what a run did.
type Summary struct {
	Start, End time.Time
	Counts     correlate.Counts
	Capture    capture.Stats
	Engine     correlate.Stats
	Writer     output.WriterStats
	Diag       diag.Stats
	LogFile    string
}

// Lines is the number of records written.
func (s *Summary) Lines() uint64 { return s.Writer.Records }

// Run captures until ctx is done or cfg.Duration has passed, then drains
// every queued record, writes the disable line and returns what it did.
// An error before capture started is a *SetupError.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if cfg.Iface == "" {
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

	// Bind the metrics address first: a busy port is a set-up error, found
	// before any ring is opened.
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return nil, setupErr("cannot serve metrics on %s: %w", cfg.MetricsAddr, unwrapOp(err))
		}
	}

	var (
		capt  *capture.Capture
		diags []*diag.Client
	)
	closeAll := func() {
		for _, d := range diags {
			d.Close()
		}
		if capt != nil {
			capt.Close()
		}
		if metricsLn != nil {
			metricsLn.Close()
			metricsLn = nil
		}
	}
	err = netns.Do(cfg.NetNS, func() error {
		var err error
		capt, err = capture.Open(&capture.Config{
			Iface:        cfg.Iface,
			Port:         cfg.Port,
			Workers:      cfg.Workers,
			BlockSize:    cfg.BlockSize,
			RingSize:     cfg.RingSize,
			BlockTimeout: cfg.BlockTimeout,
		})
		return err
	})
	if err == nil {
		diags, err = openDiags(cfg.NetNS, capt.Workers())
	}
	if err != nil {
		closeAll()
		return nil, explainOpen(cfg, err)
	}

	w, err := output.OpenWriter(&output.WriterConfig{
		Path:     cfg.LogFile,
		Stdout:   cfg.Stdout,
		Format:   format,
		Workers:  capt.Workers(),
		OnRecord: cfg.OnRecord,
	})
	if err != nil {
		closeAll()
		return nil, explainLog(cfg.LogFile, err)
	}
	lookupers := make([]correlate.Lookuper, len(diags))
	for i, d := range diags {
		lookupers[i] = d
	}
	eng, err := correlate.New(&correlate.Config{PPL: cfg.PPL, IfIndex: uint32(capt.IfIndex())}, w, lookupers)
	if err != nil {
		closeAll()
		w.Close(nil)
		return nil, &SetupError{err}
	}
	defer eng.Close()

	sum := &Summary{Start: time.Now(), LogFile: cfg.LogFile}
	if err := w.Start(&output.Header{Time: sum.Start, SysVer: sysVer(), IPMode: 6}); err != nil {
		closeAll()
		w.Close(nil)
		return nil, explainLog(cfg.LogFile, err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Duration > 0 {
		var c2 context.CancelFunc
		runCtx, c2 = context.WithTimeout(runCtx, cfg.Duration)
		defer c2()
	}
	var wg sync.WaitGroup
	wg.Go(func() { eng.Run(runCtx) })
	if cfg.StatusEvery > 0 {
		st := newStatus(cfg.Stderr, capt, eng, w)
		wg.Go(func() { st.run(runCtx, cfg.StatusEvery) })
	}
	if cfg.Reopen != nil {
		wg.Go(func() {
			for {
				select {
				case <-runCtx.Done():
					return
				case <-cfg.Reopen:
					if err := w.Reopen(); err != nil {
						fmt.Fprintf(cfg.Stderr, "siftr-probe: reopen %s: %v\n", cfg.LogFile, err)
					}
				}
			}
		})
	}
	var msrv *metrics.Server
	if metricsLn != nil {
		msrv = metrics.Serve(metricsLn, &metrics.Config{
			Read: func() metrics.Stats {
				s := metrics.Stats{Counts: eng.Counts(), Engine: eng.Stats(), Capture: capt.Stats(), Writer: w.Stats()}
				for _, d := range diags {
					s.Diag = addDiag(s.Diag, d.Stats())
				}
				return s
			},
			Health: func() error {
				if runCtx.Err() != nil {
					return errors.New("stopping")
				}
				if err := w.Err(); err != nil {
					return fmt.Errorf("log write failed: %v", err)
				}
				return nil
			},
			Info: buildinfo.Get(),
		})
		metricsLn = nil // msrv owns it
		if cfg.MetricsListening != nil {
			cfg.MetricsListening(msrv.Addr())
		}
	}
	if cfg.Started != nil {
		cfg.Started()
	}
	capErr := capt.Run(runCtx, eng)
	cancel()
	wg.Wait()
	// Capture has stopped; finish the lookups of what it handed over.
	eng.Close()

	// Capture has stopped and every block was handled: the counts are final.
	werr := w.Close(func() *output.Footer {
		return &output.Footer{Time: time.Now(), Counts: eng.Counts(), Flows: eng.Flows()}
	})
	sum.End = time.Now()
	sum.Counts = eng.Counts()
	sum.Capture = capt.Stats()
	sum.Engine = eng.Stats()
	sum.Writer = w.Stats()
	for _, d := range diags {
		sum.Diag = addDiag(sum.Diag, d.Stats())
	}
	if msrv != nil {
		// Let a scrape in progress finish, then stop serving: the stats
		// it reads are gone with the rings.
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := msrv.Close(sctx); err != nil {
			fmt.Fprintf(cfg.Stderr, "siftr-probe: metrics server: %v\n", err)
		}
		scancel()
	}
	closeAll()
	if capErr != nil {
		return sum, fmt.Errorf("capture: %w", capErr)
	}
	if werr != nil {
		return sum, fmt.Errorf("writing %s: %w", cfg.LogFile, werr)
	}
	return sum, nil
}

// openDiags opens n inet_diag clients in the network namespace at path (""
// = the caller's). The namespace is given to diag.Open, not only entered
// around it: the client also resolves the zones of link-local IPv6 queries
// (interface names) in it.
func openDiags(path string, n int) ([]*diag.Client, error) {
	var ds []*diag.Client
	for range n {
		d, err := diag.Open(&diag.Config{NetNS: path})
		if err != nil {
			for _, d := range ds {
				d.Close()
			}
			return nil, fmt.Errorf("open inet_diag socket: %w", err)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// explainOpen turns a capture/diag open error into a one-line SetupError.
func explainOpen(cfg Config, err error) error {
	switch {
	case errors.Is(err, capture.ErrNoInterface):
		where := ""
		if cfg.NetNS != "" {
			where = " in network namespace " + cfg.NetNS
		}
		return setupErr("no such interface %q%s (list them with: ip link)", cfg.Iface, where)
	case errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EPERM):
		if cfg.NetNS != "" {
			return setupErr("permission denied: capturing in another network namespace needs CAP_NET_RAW and CAP_SYS_ADMIN (run as root): %v", err)
		}
		return setupErr("permission denied: capturing on %s needs CAP_NET_RAW (run as root, or: setcap cap_net_raw+ep siftr-probe): %v", cfg.Iface, err)
	case errors.Is(err, os.ErrNotExist) && cfg.NetNS != "":
		return setupErr("no such network namespace %s", cfg.NetNS)
	}
	return &SetupError{err}
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
func explainLog(path string, err error) error {
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
	return &SetupError{&explained{fmt.Sprintf("cannot write log file %s: %s", path, reason), err}}
}

// explained is an error with a message of its own, wrapping the original.
type explained struct {
	msg string
	err error
}

func (e *explained) Error() string { return e.msg }
func (e *explained) Unwrap() error { return e.err }

// addDiag sums two clients' counters, field by field (TestAddDiag checks
// that no field of diag.Stats is left out).
func addDiag(a, b diag.Stats) diag.Stats {
	a.Lookups += b.Lookups
	a.Batches += b.Batches
	a.Found += b.Found
	a.NotEstablished += b.NotEstablished
	a.NoSocket += b.NoSocket
	a.ListenerReplies += b.ListenerReplies
	a.Errors += b.Errors
	a.V4MappedRetries += b.V4MappedRetries
	a.Overruns += b.Overruns
	a.Resent += b.Resent
	return a
}

// sysVer is the running kernel's version as SIFTR's sysver.
func sysVer() uint32 {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return 0
	}
	return output.SysVer(unix.ByteSliceToString(u.Release[:]))
}
