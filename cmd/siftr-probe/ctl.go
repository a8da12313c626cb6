package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/ctl"
	"github.com/siftr-probe/siftr-probe/internal/probe"
)

const ctlHelp = `siftr-probe ctl: change a running probe, as SIFTR's sysctls do.

Usage:
  siftr-probe ctl [--control PATH] [--json] COMMAND

Commands:
  status            settings, enabled or not, uptime, the cycle's counters
  stats             the summary the probe prints at exit, for the cycle so far
  enable            begin a logging cycle: open the log, a new enable line,
                    counters and flow list from zero, capture starts
                    (net.inet.siftr.enabled=1)
  disable           end the cycle: capture stops, every queued record is
                    written, then the disable line, and the log is closed
                    (net.inet.siftr.enabled=0)
  set ppl N         log every N-th packet of each flow from the next packet
                    on; each flow counts afresh (net.inet.siftr.ppl)
  set port P        log TCP port P (0: all) from now on: the kernel filter
                    is swapped atomically, and no line of the old port is
                    written after this returns (net.inet.siftr.port_filter)
  set logfile PATH  switch the log to PATH, as SIGHUP does to a new path
                    (net.inet.siftr.logfile)

The probe serves its control socket with --control (default
/run/siftr-probe/ctl), for root and the user it runs as. Errors are one line;
exit status 0 done, 1 the change failed while running, 2 bad arguments, a
setting the probe refused (nothing changed) or no probe to talk to.
`

func runCtl(args []string, stdout, stderr io.Writer) int {
	fs := newQuietFlagSet("siftr-probe ctl")
	path := ctl.DefaultPath
	if v := os.Getenv(EnvName("control")); v != "" {
		path = v
	}
	var asJSON bool
	var timeout time.Duration
	fs.StringVar(&path, "control", path, "the probe's control socket, `PATH` (also from "+EnvName("control")+")")
	fs.BoolVar(&asJSON, "json", false, "print the probe's response as JSON (protocol version "+strconv.Itoa(ctl.Version)+")")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "wait at most `D` for the probe's answer (enable loads the state source, disable drains)")
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "siftr-probe ctl: %s\n", fmt.Sprintf(format, a...))
		if code == exitUsage {
			fmt.Fprintln(stderr, "run 'siftr-probe ctl --help' for usage")
		}
		return code
	}
	words, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, ctlHelp)
		fmt.Fprint(stdout, "\nFlags:\n")
		printFlags(stdout, fs, []string{"control", "json", "timeout"})
		fmt.Fprint(stdout, "  --help\n        print this help and exit\n")
		return exitOK
	}
	if err != nil {
		return fail(exitUsage, "%v", flagError(fs, err))
	}
	rq, err := ctlRequest(words)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	if path == "" {
		return fail(exitUsage, "--control needs a path")
	}
	if timeout <= 0 {
		return fail(exitUsage, "bad --timeout %s: must be more than 0", timeout)
	}
	c, err := ctl.Dial(path, 5*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "siftr-probe ctl: %v\n", err)
		return exitUsage
	}
	defer c.Close()
	r, err := c.Do(rq, timeout)
	if err != nil {
		fmt.Fprintf(stderr, "siftr-probe ctl: %v\n", err)
		return exitError
	}
	if asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
	}
	if !r.OK {
		if !asJSON {
			fmt.Fprintf(stderr, "siftr-probe ctl: %s: %s\n", strings.Join(words, " "), r.Error)
		}
		if r.Exit == exitUsage {
			return exitUsage
		}
		return exitError
	}
	if asJSON {
		return exitOK
	}
	switch rq.Cmd {
	case ctl.CmdStatus:
		printStatus(stdout, r.Status, path)
	case ctl.CmdStats:
		if r.Summary != "" {
			fmt.Fprint(stdout, r.Summary)
		} else {
			fmt.Fprintln(stdout, r.Message)
		}
	default:
		fmt.Fprintln(stdout, r.Message)
	}
	return exitOK
}

// ctlRequest turns the command words into a request, checking values as
// the main command checks its flags.
func ctlRequest(words []string) (*ctl.Request, error) {
	if len(words) == 0 {
		return nil, errors.New("no command (status, stats, enable, disable or set)")
	}
	rq := &ctl.Request{Cmd: words[0]}
	switch words[0] {
	case ctl.CmdStatus, ctl.CmdStats, ctl.CmdEnable, ctl.CmdDisable:
		if len(words) > 1 {
			return nil, fmt.Errorf("%s takes no argument (got %q)", words[0], words[1])
		}
		return rq, nil
	case ctl.CmdSet:
	default:
		return nil, fmt.Errorf("unknown command %q (want status, stats, enable, disable or set)", words[0])
	}
	if len(words) < 2 {
		return nil, errors.New("set what? set ppl N, set port P or set logfile PATH")
	}
	rq.Name = words[1]
	if len(words) != 3 {
		return nil, fmt.Errorf("set %s needs one value", rq.Name)
	}
	rq.Value = words[2]
	switch rq.Name {
	case ctl.SetPPL:
		n, err := strconv.ParseInt(rq.Value, 10, 64)
		switch {
		case err != nil:
			return nil, fmt.Errorf("bad ppl %q: not a whole number", rq.Value)
		case n < 1:
			return nil, fmt.Errorf("bad ppl %d: must be 1 (every packet) or more", n)
		case n > probe.MaxPPL:
			return nil, fmt.Errorf("bad ppl %d: must be at most %d", n, probe.MaxPPL)
		}
		rq.Value = strconv.FormatInt(n, 10)
	case ctl.SetPort:
		n, err := strconv.ParseInt(rq.Value, 10, 64)
		switch {
		case err != nil:
			return nil, fmt.Errorf("bad port %q: not a whole number", rq.Value)
		case n < 0 || n > 65535:
			return nil, fmt.Errorf("bad port %d: must be 0 (all) to 65535", n)
		}
		rq.Value = strconv.FormatInt(n, 10)
	case ctl.SetLogFile:
		if rq.Value == "" {
			return nil, errors.New("set logfile needs a path (- for standard output)")
		}
		if rq.Value != "-" {
			// The probe resolves paths in its own working directory.
			abs, err := filepath.Abs(rq.Value)
			if err != nil {
				return nil, fmt.Errorf("bad logfile %q: %v", rq.Value, err)
			}
			rq.Value = abs
		}
	default:
		return nil, fmt.Errorf("cannot set %q (want ppl, port or logfile)", rq.Name)
	}
	return rq, nil
}

// printStatus prints a status for people.
func printStatus(w io.Writer, s *ctl.Status, path string) {
	if s == nil {
		return
	}
	row := func(k, format string, a ...any) { fmt.Fprintf(w, "%-12s %s\n", k, fmt.Sprintf(format, a...)) }
	since := func(t time.Time) string {
		return fmt.Sprintf("%s, %s ago", t.Format("2006-01-02 15:04:05"), time.Since(t).Round(100*time.Millisecond))
	}
	port := "all"
	if s.Port != 0 {
		port = strconv.Itoa(int(s.Port))
	}
	switch {
	case s.Enabled:
		row("logging", "enabled: cycle %d since %s", s.Cycle, since(s.CycleStart))
	case s.Cycle > 0:
		row("logging", "disabled: cycle %d ran from %s to %s", s.Cycle, s.CycleStart.Format("15:04:05"), s.CycleEnd.Format("15:04:05"))
	default:
		row("logging", "disabled: no cycle yet")
	}
	row("ppl", "%d", s.PPL)
	row("port", "%s", port)
	row("logfile", "%s (%s)", s.LogFile, s.Format)
	where := s.Iface
	if s.NetNS != "" {
		where += " in " + s.NetNS
	}
	row("state", "%s on %s", s.State, where)
	row("uptime", "%s (since %s)", time.Duration(s.Uptime*float64(time.Second)).Round(100*time.Millisecond), s.Started.Format("2006-01-02 15:04:05"))
	row("control", "%s", path)
	if c := s.Counts; c != nil {
		of := ""
		if !s.Enabled {
			of = " (last cycle)"
		}
		sum := func(a [2]uint64) uint64 { return a[0] + a[1] }
		row("packets", "%d (in %d, out %d)%s", sum(c.Packets), c.Packets[0], c.Packets[1], of)
		row("lines", "%d", c.Lines)
		row("sampled out", "%d", sum(c.SampledOut))
		row("skipped", "%d (no socket %d, not established %d, %s)",
			sum(c.SkipMalloc)+sum(c.SkipTCPCB)+sum(c.SkipInPCB), sum(c.SkipInPCB), sum(c.SkipTCPCB),
			probe.MallocBreakdown(sum(c.SkipMalloc), c.FlowTableFull, c.QueueFull))
		row("flows", "%d active", c.Flows)
	}
}
