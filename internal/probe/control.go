package probe

// Changing a run while it runs, as FreeBSD's sysctls change SIFTR:
// enable and disable (net.inet.siftr.enabled), ppl, port_filter and
// logfile. The control socket (package ctl) calls these; each change is
// said on Stderr with its time.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/ctl"
	"github.com/siftr-probe/siftr-probe/output"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// MaxPPL is the largest ppl.
const MaxPPL = 1 << 31

// portSyncTimeout bounds how long SetPort waits for the records of the
// old port to be written.
const portSyncTimeout = 5 * time.Second

// ErrStopping is returned by a change asked for while the run ends.
var ErrStopping = errors.New("the probe is stopping")

// listenControl makes the control socket; a socket that cannot be made is
// a set-up error, or with ControlOptional a warning.
func (p *Pipeline) listenControl() error {
	l, err := ctl.Listen(p.cfg.Control, &ctl.Config{
		Handler: p.handle,
		Refused: func(uid, pid int) {
			p.logf("control: refused a connection from uid %d (pid %d): only root and the probe's user may change it", uid, pid)
		},
	})
	if err != nil {
		if p.cfg.ControlOptional {
			fmt.Fprintf(p.cfg.Stderr, "siftr-probe: no control socket: %v (choose one with --control PATH; --control \"\" turns it off)\n", err)
			return nil
		}
		return &SetupError{err}
	}
	p.ctl = l
	return nil
}

// controlHint names the control socket for a message, if there is one.
func (p *Pipeline) controlHint() string {
	if p.ctl == nil {
		return " (but there is no control socket)"
	}
	return " on " + p.ctl.Path()
}

// ControlPath returns the control socket's path, or "" if there is none.
func (p *Pipeline) ControlPath() string {
	if p.ctl == nil {
		return ""
	}
	return p.ctl.Path()
}

// Enable begins a logging cycle, as SIFTR's enable: the log is opened, a
// new enable line written, the counters and the flow list start from zero
// and capture starts, with the settings in force. It reports false if a
// cycle was logging already (then nothing changes). An error that is a
// *SetupError means nothing was logged (the log or the source could not
// be opened).
func (p *Pipeline) Enable() (bool, error) {
	p.changeMu.Lock()
	defer p.changeMu.Unlock()
	p.mu.Lock()
	cur, stopping, cfg := p.cur, p.stopping, p.cfg
	p.mu.Unlock()
	switch {
	case stopping:
		return false, ErrStopping
	case cur != nil:
		return false, nil
	}
	c, err := p.openCycle(&cfg)
	if err != nil {
		return false, err
	}
	if err := p.begin(c); err != nil {
		return false, err
	}
	p.logf("enabled: cycle %d, ppl %d, port %s, logging to %s", c.n, cfg.PPL, portName(cfg.Port), c.out.Path())
	return true, nil
}

// Disable ends the cycle logging, as SIFTR's disable: capture stops,
// every queued record is written, then the disable line with the cycle's
// counts and flow list, and the log is closed. It returns the cycle's
// summary, or nil if none was logging. The error is the cycle's log write
// error, if it had one, or its source's.
func (p *Pipeline) Disable() (*Summary, error) {
	p.changeMu.Lock()
	defer p.changeMu.Unlock()
	p.mu.Lock()
	c, stopping := p.cur, p.stopping
	p.mu.Unlock()
	if stopping {
		return nil, ErrStopping
	}
	if c == nil {
		return nil, nil
	}
	c.end()
	sum := c.summary(p)
	total, skipped := sum.Counts.Totals()
	p.logf("disabled: cycle %d ended: %d packets, %d lines, %d sampled out, %d skipped, written to %s",
		c.n, total, sum.Writer.Records, sum2(sum.Counts.SampledOut), skipped, sum.LogFile)
	return sum, errors.Join(c.werr, c.perr, c.srcErr)
}

// SetPPL sets ppl (1 to MaxPPL), as SIFTR's net.inet.siftr.ppl. While a
// cycle logs, the next packets counted are sampled with it: the change
// falls between two packets (diag mode: between two ring blocks of each
// ring; exact mode: the programs switch settings at once), no packet is
// counted twice or left out, and each flow's count starts again, so that
// a flow with n packets until the next change logs floor(n/ppl) of them.
// The Change says how many packets the cycle had counted before.
func (p *Pipeline) SetPPL(ppl uint32) (*ctl.Change, error) {
	if ppl < 1 || ppl > MaxPPL {
		return nil, setupErr("bad ppl %d: must be 1 (every packet) to %d", ppl, MaxPPL)
	}
	if ppl > 1 && p.cfg.PcapAll && p.pcap != nil && p.state == tcp.SourceExact {
		return nil, setupErr("--pcap-all needs ppl 1 in exact mode: its programs sample in the kernel, so the packets ppl leaves out never reach the probe")
	}
	p.changeMu.Lock()
	defer p.changeMu.Unlock()
	p.mu.Lock()
	c, old := p.cur, p.cfg.PPL
	p.mu.Unlock()
	ch := &ctl.Change{Name: ctl.SetPPL, Old: strconv.Itoa(int(old)), New: strconv.Itoa(int(ppl))}
	if c != nil && ppl != old {
		var before correlate.SampleCounts
		err := c.whileOpen(func() (err error) {
			before, err = c.src.setPPL(c.eng, ppl)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("set ppl: %w", err)
		}
		ch.Before = sampleCounts(before)
	}
	ch.Time = time.Now()
	p.mu.Lock()
	p.cfg.PPL = ppl
	p.mu.Unlock()
	p.logf("ppl %d -> %d%s", old, ppl, changeWhere(c, ch))
	return ch, nil
}

// SetPort sets the TCP port logged (0: all), as SIFTR's
// net.inet.siftr.port_filter. While a cycle logs, the kernel's filter is
// swapped atomically (diag mode: each ring's socket filter, keeping both
// ports on every ring before the new one alone; exact mode: the programs'
// settings), and SetPort returns once every record of the old port
// captured before the change is in the log: none is written after it
// returns, and every packet of the new port from the swap on is counted.
// The old port's packets still in a ring at the change are logged before
// it returns (they were captured before it); any captured after it, which
// the kernel's filter left to user space, are counted as filtered frames,
// not packets.
func (p *Pipeline) SetPort(port uint16) (*ctl.Change, error) {
	p.changeMu.Lock()
	defer p.changeMu.Unlock()
	p.mu.Lock()
	c, old := p.cur, p.cfg.Port
	p.mu.Unlock()
	ch := &ctl.Change{Name: ctl.SetPort, Old: strconv.Itoa(int(old)), New: strconv.Itoa(int(port))}
	var syncErr error
	if c != nil && port != old {
		var at int64
		err := c.whileOpen(func() (err error) {
			at, err = c.src.setPort(port)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("set port: %w", err)
		}
		p.mu.Lock()
		p.cfg.Port = port
		p.mu.Unlock()
		// Wait for the old port's records, all before at, to be written.
		// Exact mode's record times come from the monotonic clock: allow
		// for the conversion.
		ctx, cancel := context.WithTimeout(context.Background(), portSyncTimeout)
		syncErr = c.out.Sync(ctx, at+int64(time.Millisecond))
		cancel()
	}
	ch.Time = time.Now()
	p.mu.Lock()
	p.cfg.Port = port
	p.mu.Unlock()
	p.logf("port %s -> %s%s", portName(old), portName(port), changeWhere(c, nil))
	if syncErr != nil {
		return ch, fmt.Errorf("port changed to %s, but the records of port %s captured before the change were not all written within %s: some may follow", portName(port), portName(old), portSyncTimeout)
	}
	return ch, nil
}

// SetLogFile switches the log to path ("-": standard output), as SIFTR's
// net.inet.siftr.logfile: while a cycle logs, as a SIGHUP does to a new
// path (the lines buffered go to the old file, which is closed once the
// new one is open; nothing is written at the switch, so the old file ends
// without a disable line and the new one starts without an enable line).
// While disabled the path is opened to check it (with the log's rules:
// created if missing, never a symlink or FIFO, not locked by another
// probe) and used at the next enable. A path that cannot be used is a
// *SetupError and changes nothing.
func (p *Pipeline) SetLogFile(path string) (*ctl.Change, error) {
	if path == "" {
		return nil, setupErr("--logfile needs a path (- for standard output)")
	}
	if p.pcap != nil && path != "-" && samePath(path, p.cfg.Pcap) {
		// Opening it would find it locked, by this very probe.
		return nil, setupErr("%s is the pcap file (--pcap): give the log a path of its own", path)
	}
	p.changeMu.Lock()
	defer p.changeMu.Unlock()
	p.mu.Lock()
	c, old := p.cur, p.cfg.LogFile
	p.mu.Unlock()
	ch := &ctl.Change{Name: ctl.SetLogFile, Old: old, New: path}
	if c != nil {
		if err := c.out.SetPath(path); err != nil {
			return nil, explainLog(path, err)
		}
	} else if path != "-" {
		w, err := output.OpenWriter(&output.WriterConfig{Path: path, Workers: 1})
		if err != nil {
			return nil, explainLog(path, err)
		}
		w.Close(nil) // never started: nothing written
	}
	ch.Time = time.Now()
	p.mu.Lock()
	p.cfg.LogFile = path
	p.mu.Unlock()
	p.logf("logfile %s -> %s%s", old, path, changeWhere(c, nil))
	return ch, nil
}

// samePath reports whether two paths name one file: the same absolute
// path, or existing files that are the same.
func samePath(a, b string) bool {
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

// Status says what the run is doing: the settings, whether a cycle logs,
// and the counts of the current cycle (or, while disabled, the last one).
func (p *Pipeline) Status() *ctl.Status {
	s := p.read()
	p.mu.Lock()
	st := &ctl.Status{
		Enabled: s.Enabled, State: s.State, Iface: p.cfg.Iface, NetNS: p.cfg.NetNS,
		PPL: s.PPL, Port: s.Port, LogFile: p.cfg.LogFile, Format: p.cfg.Format,
		Started: p.started, Cycle: s.Cycle, CycleStart: s.CycleStart,
	}
	if c := p.last; c != nil {
		if c.ended {
			st.CycleEnd = c.endAt
		}
		if !c.ended {
			st.LogFile = c.out.Path()
		}
	}
	p.mu.Unlock()
	if !st.Started.IsZero() {
		st.Uptime = time.Since(st.Started).Seconds()
	}
	if s.Cycle > 0 {
		st.Counts = &ctl.Counts{
			Packets: s.Counts.Packets, SampledOut: s.Counts.SampledOut, Sampled: s.Sampled.Sampled,
			SkipMalloc: s.Counts.SkipMalloc, SkipTCPCB: s.Counts.SkipTCPCB, SkipInPCB: s.Counts.SkipInPCB,
			FlowTableFull: s.Engine.FlowTableFull, QueueFull: s.Engine.SinkRejected,
			Lines: s.Writer.Records, Flows: s.Engine.ActiveFlows,
		}
	}
	return st
}

// CycleSummary is the summary of the current cycle so far or, while
// disabled, of the last one; nil before the first.
func (p *Pipeline) CycleSummary() *Summary {
	p.mu.Lock()
	c := p.last
	p.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.summary(p)
}

// handle answers a control request (ctl.Handler).
func (p *Pipeline) handle(rq *ctl.Request) *ctl.Response {
	p.mu.Lock()
	running := p.running
	p.mu.Unlock()
	if !running {
		return ctl.Errorf(ctl.ExitFailed, "the probe is starting or stopping; try again")
	}
	r := &ctl.Response{}
	var err error
	switch rq.Cmd {
	case ctl.CmdStatus:
	case ctl.CmdStats:
		if sum := p.CycleSummary(); sum != nil {
			r.Summary = sum.text()
		} else {
			r.Message = "no logging cycle yet"
		}
	case ctl.CmdEnable:
		var began bool
		if began, err = p.Enable(); err == nil {
			r.Message = "enabled"
			if !began {
				r.Message = "already enabled"
			}
		}
	case ctl.CmdDisable:
		var sum *Summary
		sum, err = p.Disable()
		switch {
		case sum == nil && err == nil:
			r.Message = "already disabled"
		case sum != nil:
			r.Message = fmt.Sprintf("disabled: cycle %d ended, its disable line written to %s", sum.Cycle, sum.LogFile)
			r.Summary = sum.text()
		}
	case ctl.CmdSet:
		r.Change, err = p.set(rq.Name, rq.Value)
		if r.Change != nil {
			r.Message = fmt.Sprintf("%s %s -> %s", r.Change.Name, r.Change.Old, r.Change.New)
		}
	}
	r.Status = p.Status()
	if err != nil {
		r.Error = oneLine(err.Error())
		r.Exit = ctl.ExitFailed
		var se *SetupError
		if errors.As(err, &se) {
			r.Exit = ctl.ExitUsage
		}
	}
	return r
}

// set parses a set request's value and makes the change.
func (p *Pipeline) set(name, value string) (*ctl.Change, error) {
	switch name {
	case ctl.SetPPL:
		n, err := strconv.ParseUint(value, 10, 64)
		if err != nil || n < 1 || n > MaxPPL {
			return nil, setupErr("bad ppl %q: must be a whole number from 1 (every packet) to %d", value, MaxPPL)
		}
		return p.SetPPL(uint32(n))
	case ctl.SetPort:
		n, err := strconv.ParseUint(value, 10, 16)
		if err != nil {
			return nil, setupErr("bad port %q: must be 0 (all) to 65535", value)
		}
		return p.SetPort(uint16(n))
	case ctl.SetLogFile:
		return p.SetLogFile(value)
	}
	return nil, setupErr("cannot set %q", name)
}

// text is the summary as Print writes it.
func (s *Summary) text() string {
	var b bytes.Buffer
	s.Print(&b)
	return b.String()
}

func sampleCounts(c correlate.SampleCounts) *ctl.Counts {
	return &ctl.Counts{Packets: c.Packets, SampledOut: c.SampledOut, Sampled: c.Sampled}
}

// changeWhere says, for the stderr line of a change, where it fell.
func changeWhere(c *cycle, ch *ctl.Change) string {
	switch {
	case c == nil:
		return " (logging disabled: for the next enable)"
	case ch != nil && ch.Before != nil:
		return fmt.Sprintf(" (cycle %d, after %d packets)", c.n, sum2(ch.Before.Packets))
	}
	return fmt.Sprintf(" (cycle %d)", c.n)
}

func portName(port uint16) string {
	if port == 0 {
		return "all"
	}
	return strconv.Itoa(int(port))
}

// oneLine keeps the first line of msg.
func oneLine(msg string) string {
	if i := bytes.IndexByte([]byte(msg), '\n'); i >= 0 {
		return msg[:i]
	}
	return msg
}
