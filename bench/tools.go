package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/internal/syncbuf"
)

// Children are started in their own process group (so that a Ctrl-C on the
// terminal reaches only the suite) and are tracked so that the suite stops
// them on the way out. No Pdeathsig: it fires when the forking OS thread
// exits, and the churn client's namespace threads do exit.
var children struct {
	sync.Mutex
	m map[*exec.Cmd]struct{}
}

func command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

func track(cmd *exec.Cmd, on bool) {
	children.Lock()
	defer children.Unlock()
	if children.m == nil {
		children.m = map[*exec.Cmd]struct{}{}
	}
	if on {
		children.m[cmd] = struct{}{}
	} else {
		delete(children.m, cmd)
	}
}

func start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	track(cmd, true)
	return nil
}

// killChildren kills every child still running (their process groups).
func killChildren() {
	children.Lock()
	defer children.Unlock()
	for cmd := range children.m {
		if cmd.Process != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	}
}

// runCtx runs cmd to completion, interrupting it when ctx ends.
func runCtx(ctx context.Context, cmd *exec.Cmd) error {
	if err := start(cmd); err != nil {
		return err
	}
	defer track(cmd, false)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return ctx.Err()
	}
}

// stopCmd sends SIGINT to cmd's process group and waits up to grace for it
// to exit, then kills it.
func stopCmd(cmd *exec.Cmd, grace time.Duration) error {
	defer track(cmd, false)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	done := make(chan error, 1)
	go func() {
		// Wait for the exit without reaping, so that a VmHWM watcher can
		// read /proc/PID until the very end, then reap.
		var info unix.Siginfo
		unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(grace):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("%s did not stop within %s after SIGINT; killed", filepath.Base(cmd.Path), grace)
	}
}

func cpuSeconds(ps *os.ProcessState) float64 {
	return (ps.UserTime() + ps.SystemTime()).Seconds()
}

// sysSeconds is the system part of cpuSeconds: the kernel's work in the
// process's syscalls, plus softirq work that ran while it was in the kernel.
func sysSeconds(ps *os.ProcessState) float64 { return ps.SystemTime().Seconds() }

// hwmWatch follows a child's peak RSS (VmHWM in /proc/PID/status) until
// stop is called. The rusage ru_maxrss of a child cannot be used: Linux
// carries the parent's high-water mark over into the child at exec, so it
// reports the suite's own peak (a probe's --stats-file max_rss_bytes has the
// same flaw when its parent is large). VmHWM belongs to the child's own
// address space.
type hwmWatch struct {
	pid  int
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

func watchHWM(pid int) *hwmWatch {
	w := &hwmWatch{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if v := readHWM(pid); v > w.peak.Load() {
				w.peak.Store(v)
			}
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// end stops watching and returns the peak seen.
func (w *hwmWatch) end() uint64 {
	close(w.stop)
	<-w.done
	return w.peak.Load()
}

func readHWM(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(ln, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// probeReport is the part of the probe's --stats-file this suite reads.
type probeReport struct {
	Seconds float64 `json:"seconds"`
	Lines   uint64  `json:"lines"`
	Counts  struct {
		Packets, SampledOut, SkipMalloc, SkipTCPCB, SkipInPCB [2]uint64
	} `json:"counts"`
	Capture struct {
		Frames        uint64
		Packets       [2]uint64
		NotLocal      uint64
		KernelPackets uint64
		KernelDrops   uint64
		KernelFreezes uint64
	} `json:"capture"`
	Engine struct {
		ActiveFlows   int64
		FlowsCreated  uint64
		FlowsPruned   uint64
		FlowTableFull uint64
		SinkRejected  uint64
	} `json:"engine"`
	Resolve struct {
		Lookups      uint64
		Batches      uint64
		LookupErrors uint64
		HandoffFull  uint64
	} `json:"resolve"`
	State string `json:"state"`
	Exact struct {
		RunNanos, RunCount     uint64
		Confirmed, Unconfirmed uint64
	} `json:"exact"`
	Writer struct {
		Records, Rejected, Late uint64
	} `json:"writer"`
	StalenessNS     map[string]int64  `json:"staleness_ns"`
	LookupsPerBatch float64           `json:"lookups_per_batch"`
	Process         map[string]uint64 `json:"process"`
}

// logCheck is what reading the whole log with siftrlog found.
type logCheck struct {
	lines   [2]uint64 // data lines, inbound / outbound
	disable map[string]string
	runs    int
	ordered bool
}

// checkLog parses the log strictly with siftrlog, a chunk of lines at a
// time so that memory stays bounded for logs of millions of lines.
func checkLog(path string) (*logCheck, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	lc := &logCheck{ordered: true}
	br := bufio.NewReaderSize(f, 1<<20)
	var chunk bytes.Buffer
	var lastTime int64
	flush := func() error {
		l, err := siftrlog.Parse(&chunk)
		if err != nil {
			return err
		}
		chunk.Reset()
		lc.lines[0] += uint64(l.Count('i'))
		lc.lines[1] += uint64(l.Count('o'))
		lc.runs += len(l.Enable)
		if len(l.Disable) > 0 {
			lc.disable = l.Disable[len(l.Disable)-1]
		}
		for _, ln := range l.Lines {
			if ln.TimeUS < lastTime {
				lc.ordered = false
			}
			lastTime = ln.TimeUS
		}
		return nil
	}
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		chunk.Write(line)
		n++
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
		if n%65536 == 0 {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if lc.disable == nil {
		return nil, errors.New("no disable line")
	}
	return lc, nil
}

// identity checks the conservation identity per direction against the log
// (lines = packets - sampled out - skips) and the disable line.
func identity(r *probeReport, lc *logCheck) (bool, string) {
	var notes []string
	c := r.Counts
	for d, name := range []string{"in", "out"} {
		want := c.Packets[d] - c.SampledOut[d] - c.SkipMalloc[d] - c.SkipTCPCB[d] - c.SkipInPCB[d]
		if lc.lines[d] != want {
			notes = append(notes, fmt.Sprintf("%s: %d lines, packets-sampled-skipped = %d", name, lc.lines[d], want))
		}
	}
	du := func(k string) uint64 { v, _ := strconv.ParseUint(lc.disable[k], 10, 64); return v }
	if du("num_inbound_tcp_pkts") != c.Packets[0] || du("num_outbound_tcp_pkts") != c.Packets[1] {
		notes = append(notes, "disable line packet counts differ from the stats file")
	}
	skipped := c.SkipMalloc[0] + c.SkipMalloc[1] + c.SkipTCPCB[0] + c.SkipTCPCB[1] + c.SkipInPCB[0] + c.SkipInPCB[1]
	if du("total_skipped_tcp_pkts") != skipped {
		notes = append(notes, "disable line skip total differs from the stats file")
	}
	if lc.lines[0]+lc.lines[1] != r.Writer.Records {
		notes = append(notes, fmt.Sprintf("log has %d lines, writer says %d", lc.lines[0]+lc.lines[1], r.Writer.Records))
	}
	if lc.runs != 1 {
		notes = append(notes, fmt.Sprintf("%d enable lines", lc.runs))
	}
	return len(notes) == 0, strings.Join(notes, "; ")
}

// measurement is one tool's run in one scenario.
type measurement struct {
	Offered       uint64
	Captured      uint64
	Records       uint64
	KernelDrops   uint64
	QueueDrops    uint64 // SIFTR malloc skips: queue/handoff/table full, lookup errors
	HandoffFull   uint64 // of which: sampled packets the lookup side had no room for
	SinkRejected  uint64 // of which: records the writer's queue refused
	SkipTCPCB     uint64
	SkipInPCB     uint64
	SampledOut    uint64
	CPU           float64 // seconds, user+system
	SysCPU        float64 // seconds, system
	BPF           float64 // seconds the exact source's eBPF programs ran in the kernel
	Conns         uint64  // churn: connections made
	RSS           uint64
	StaleP50      float64 // ms
	StaleP99      float64
	StaleP999     float64
	LookupsBatch  float64
	Identity      bool
	IdentityNote  string
	Flows         int64
	FlowsCreated  uint64
	FlowTableFull uint64
	Snapshots     uint64  // ss: snapshots taken
	SockLines     uint64  // ss: socket entries printed over all snapshots
	Wall          float64 // seconds the tool ran
	Traffic       string  // what the generator reported
	Busy, Steal   float64 // machine-wide CPU busy and steal shares during the traffic
	Err           string
}

type tool interface {
	// begin starts capturing and returns when the tool is ready.
	begin(ctx context.Context) error
	// end stops it and fills in m.
	end(m *measurement) error
}

// probeTool runs the siftr-probe binary as its own process.
type probeTool struct {
	bin, dir, netnsPath, iface string
	args                       []string
	cpuprofile                 string
	cmd                        *exec.Cmd
	stderr                     bytes.Buffer
	started                    time.Time
	hwm                        *hwmWatch
}

func (p *probeTool) logPath() string   { return filepath.Join(p.dir, "probe.log") }
func (p *probeTool) statsPath() string { return filepath.Join(p.dir, "probe-stats.json") }

func (p *probeTool) begin(ctx context.Context) error {
	os.Remove(p.logPath())
	os.Remove(p.statsPath())
	args := []string{"--iface", p.iface, "--port", fmt.Sprint(port), "--netns", p.netnsPath,
		"--logfile", p.logPath(), "--stats-file", p.statsPath(), "--quiet"}
	if p.cpuprofile != "" {
		args = append(args, "--cpuprofile", p.cpuprofile)
	}
	args = append(args, p.args...)
	p.cmd = command(p.bin, args...)
	p.stderr.Reset()
	p.cmd.Stderr = &p.stderr
	if err := start(p.cmd); err != nil {
		return err
	}
	p.started = time.Now()
	p.hwm = watchHWM(p.cmd.Process.Pid)
	// The rings are open once the enable line is in the log.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if fi, err := os.Stat(p.logPath()); err == nil && fi.Size() > 0 {
			return nil
		}
		if p.cmd.ProcessState != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopCmd(p.cmd, 5*time.Second)
	p.hwm.end()
	return fmt.Errorf("siftr-probe did not start: %s", strings.TrimSpace(p.stderr.String()))
}

func (p *probeTool) end(m *measurement) error {
	err := stopCmd(p.cmd, 120*time.Second)
	m.RSS = p.hwm.end()
	m.Wall = time.Since(p.started).Seconds()
	if err != nil {
		return fmt.Errorf("siftr-probe: %v: %s", err, strings.TrimSpace(p.stderr.String()))
	}
	m.CPU, m.SysCPU = cpuSeconds(p.cmd.ProcessState), sysSeconds(p.cmd.ProcessState)
	b, err := os.ReadFile(p.statsPath())
	if err != nil {
		return err
	}
	var r probeReport
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("stats file: %w", err)
	}
	c := r.Counts
	m.Captured = c.Packets[0] + c.Packets[1]
	m.Records = r.Writer.Records
	m.KernelDrops = r.Capture.KernelDrops
	m.QueueDrops = c.SkipMalloc[0] + c.SkipMalloc[1]
	m.SkipTCPCB = c.SkipTCPCB[0] + c.SkipTCPCB[1]
	m.SkipInPCB = c.SkipInPCB[0] + c.SkipInPCB[1]
	m.SampledOut = c.SampledOut[0] + c.SampledOut[1]
	m.StaleP50 = float64(r.StalenessNS["p50"]) / 1e6
	m.StaleP99 = float64(r.StalenessNS["p99"]) / 1e6
	m.StaleP999 = float64(r.StalenessNS["p999"]) / 1e6
	m.LookupsBatch = r.LookupsPerBatch
	m.Flows = r.Engine.ActiveFlows
	m.FlowsCreated = r.Engine.FlowsCreated
	m.FlowTableFull = r.Engine.FlowTableFull
	m.HandoffFull, m.SinkRejected = r.Resolve.HandoffFull, r.Engine.SinkRejected
	m.BPF = float64(r.Exact.RunNanos) / 1e9
	lc, err := checkLog(p.logPath())
	if err != nil {
		m.IdentityNote = "log: " + err.Error()
	} else {
		m.Identity, m.IdentityNote = identity(&r, lc)
	}
	os.Remove(p.logPath())
	return nil
}

// tcpdumpTool runs tcpdump -w /dev/null in the namespace.
type tcpdumpTool struct {
	netnsPath, iface string
	cmd              *exec.Cmd
	stderr           *syncbuf.Buffer
	started          time.Time
	hwm              *hwmWatch
}

func (t *tcpdumpTool) begin(ctx context.Context) error {
	t.cmd = command("ip", "netns", "exec", nsName(t.netnsPath), "tcpdump", "-i", t.iface, "-w", "/dev/null",
		"-B", "8192", "-n", "tcp", "port", fmt.Sprint(port))
	t.stderr = &syncbuf.Buffer{}
	t.cmd.Stderr = t.stderr
	if err := start(t.cmd); err != nil {
		return err
	}
	t.started = time.Now()
	t.hwm = watchHWM(t.cmd.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(t.stderr.String(), "listening on") {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopCmd(t.cmd, 5*time.Second)
	t.hwm.end()
	return fmt.Errorf("tcpdump did not start: %s", t.stderr.String())
}

var (
	reCaptured = regexp.MustCompile(`(\d+) packets? captured`)
	reDropped  = regexp.MustCompile(`(\d+) packets? dropped by kernel`)
)

func (t *tcpdumpTool) end(m *measurement) error {
	err := stopCmd(t.cmd, 30*time.Second)
	m.RSS = t.hwm.end()
	m.Wall = time.Since(t.started).Seconds()
	if err != nil && t.cmd.ProcessState == nil {
		return err
	}
	m.CPU, m.SysCPU = cpuSeconds(t.cmd.ProcessState), sysSeconds(t.cmd.ProcessState)
	out := t.stderr.String()
	c, d := reCaptured.FindStringSubmatch(out), reDropped.FindStringSubmatch(out)
	if c == nil || d == nil {
		return fmt.Errorf("tcpdump summary not found: %q", out)
	}
	m.Captured, _ = strconv.ParseUint(c[1], 10, 64)
	m.KernelDrops, _ = strconv.ParseUint(d[1], 10, 64)
	return nil
}

// ssTool runs `ss -tin` on the flows in a loop, as fast as it goes.
type ssTool struct {
	netnsPath string
	filter    string
	stop      chan struct{}
	done      chan struct{}
	started   time.Time
	cpu, sys  float64
	snaps     uint64
	socks     uint64
	err       error
}

func (s *ssTool) begin(ctx context.Context) error {
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	s.started = time.Now()
	s.cpu, s.sys, s.snaps, s.socks, s.err = 0, 0, 0, 0, nil
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			default:
			}
			cmd := command("ss", "-N", nsName(s.netnsPath), "-tinH", s.filter)
			var out bytes.Buffer
			cmd.Stdout = &out
			if err := runCtx(ctx, cmd); err != nil {
				s.err = fmt.Errorf("ss: %w", err)
				return
			}
			s.cpu += cpuSeconds(cmd.ProcessState)
			s.sys += sysSeconds(cmd.ProcessState)
			s.snaps++
			// Each socket is a state line followed by an indented info line.
			for _, ln := range strings.Split(out.String(), "\n") {
				if ln != "" && ln[0] != ' ' && ln[0] != '\t' {
					s.socks++
				}
			}
		}
	}()
	return nil
}

func (s *ssTool) end(m *measurement) error {
	close(s.stop)
	<-s.done
	m.Wall = time.Since(s.started).Seconds()
	m.CPU, m.SysCPU, m.Snapshots, m.SockLines = s.cpu, s.sys, s.snaps, s.socks
	m.Records = s.socks
	return s.err
}
