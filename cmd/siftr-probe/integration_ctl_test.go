package main

// Integration tests of siftr-probe ctl: logging cycles, ppl, port and log
// file changed while the probe runs, in both state sources, and the
// control socket's permissions.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/ctl"
	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/internal/syncbuf"
	"github.com/siftr-probe/siftr-probe/internal/traffic"
)

// ctlProbe is a probe running with a control socket.
type ctlProbe struct {
	t              *testing.T
	sock           string
	stdout, stderr syncbuf.Buffer
	cancel         context.CancelFunc
	done           chan int
}

// startCtlProbe runs the command with args plus a control socket in a
// temporary directory and waits until the socket answers.
func startCtlProbe(t *testing.T, args ...string) *ctlProbe {
	t.Helper()
	p := &ctlProbe{t: t, sock: filepath.Join(t.TempDir(), "ctl"), done: make(chan int, 1)}
	args = append(args, "--control", p.sock, "--status-interval", "200ms")
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- run(ctx, args, &p.stdout, &p.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("siftr-probe %q did not stop", args)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := ctl.Dial(p.sock, time.Second); err == nil {
			r, err := c.Do(&ctl.Request{Cmd: ctl.CmdStatus}, time.Second)
			c.Close()
			if err == nil && r.OK {
				return p
			}
		}
		select {
		case code := <-p.done:
			p.done <- code
			t.Fatalf("siftr-probe %q exited %d: %s", args, code, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("siftr-probe %q: no control socket: %s", args, p.stderr.String())
		}
	}
}

// ctl runs siftr-probe ctl with words on the probe's socket; it fails the
// test unless the exit status is want.
func (p *ctlProbe) ctl(want int, words ...string) string {
	p.t.Helper()
	var stdout, stderr bytes.Buffer
	code := runCtl(append([]string{"--control", p.sock}, words...), &stdout, &stderr)
	if code != want {
		p.t.Fatalf("siftr-probe ctl %q: exit %d, want %d: %s%s", words, code, want, stdout.String(), stderr.String())
	}
	return stdout.String() + stderr.String()
}

// do sends one request and returns the response, which must be ok.
func (p *ctlProbe) do(rq *ctl.Request) *ctl.Response {
	p.t.Helper()
	c, err := ctl.Dial(p.sock, time.Second)
	if err != nil {
		p.t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Do(rq, 30*time.Second)
	if err != nil {
		p.t.Fatal(err)
	}
	if !r.OK {
		p.t.Fatalf("%+v: %s", rq, r.Error)
	}
	return r
}

func (p *ctlProbe) status() *ctl.Status { return p.do(&ctl.Request{Cmd: ctl.CmdStatus}).Status }

// stop stops the probe as SIGINT would and checks that it exited 0.
func (p *ctlProbe) stop() {
	p.t.Helper()
	p.cancel()
	code := <-p.done
	p.done <- code
	if code != exitOK {
		p.t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
}

// section is one run of a log: its enable line, data lines and disable line.
type section struct {
	enable, disable map[string]string
	lines           []siftrlog.Line
	flows           []string
}

func (s *section) uint(key string) uint64 {
	v, _ := strconv.ParseUint(s.disable[key], 10, 64)
	return v
}

// sections reads a log with the strict reader and splits it at its enable
// lines. A file that starts without an enable line (the second file of a
// switch) gets a first section without one.
func sections(t *testing.T, path string) []*section {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := siftrlog.Parse(bytes.NewReader(b)); err != nil {
		t.Fatalf("%s: the strict reader fails: %v", path, err)
	}
	var out []*section
	rd := siftrlog.NewReader(bytes.NewReader(b))
	cur := &section{}
	for {
		err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		switch rd.Kind() {
		case siftrlog.KindEnable:
			if cur.enable != nil || cur.lines != nil || cur.disable != nil {
				out = append(out, cur)
			}
			cur = &section{enable: map[string]string{}}
			for _, kv := range rd.Enable().Fields {
				cur.enable[kv.Key] = kv.Value
			}
		case siftrlog.KindRecord:
			cur.lines = append(cur.lines, rd.Record().Line)
		case siftrlog.KindDisable:
			d := rd.Disable()
			cur.disable = map[string]string{}
			for _, kv := range d.Fields {
				cur.disable[kv.Key] = kv.Value
			}
			if d.FlowList != "" {
				cur.flows = strings.Split(strings.TrimSuffix(d.FlowList, ","), ",")
			}
		}
	}
	if cur.enable != nil || cur.lines != nil || cur.disable != nil {
		out = append(out, cur)
	}
	return out
}

// checkSection checks a section's identity for ppl 1 (lines = packets -
// skipped, per direction) and its time order.
func checkSection(t *testing.T, name string, s *section) {
	t.Helper()
	var lines [2]uint64
	for _, ln := range s.lines {
		if ln.Dir == 'o' {
			lines[1]++
		} else {
			lines[0]++
		}
	}
	for d, dir := range []string{"inbound", "outbound"} {
		pk := s.uint("num_" + dir + "_tcp_pkts")
		sk := s.uint("num_"+dir+"_skipped_pkts_malloc") + s.uint("num_"+dir+"_skipped_pkts_tcpcb") + s.uint("num_"+dir+"_skipped_pkts_inpcb")
		if lines[d] != pk-sk {
			t.Errorf("%s: %s: %d lines, but %d packets - %d skipped = %d", name, dir, lines[d], pk, sk, pk-sk)
		}
	}
	for i := 1; i < len(s.lines); i++ {
		if s.lines[i].TimeUS < s.lines[i-1].TimeUS {
			t.Errorf("%s: data lines out of time order at %d", name, i)
			break
		}
	}
}

// stream makes one connection from lab host A to addr and sends on it
// until the test's cleanup or stop is called; the connection is up when
// stream returns.
func stream(t *testing.T, lab *netlab.Lab, addr string) (local netip.AddrPort, stop func()) {
	t.Helper()
	var c net.Conn
	if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { traffic.Send(ctx, c, 0) })
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait(); c.Close() }) }
	t.Cleanup(stop)
	return c.LocalAddr().(*net.TCPAddr).AddrPort(), stop
}

func usec(t time.Time) int64 { return t.UnixNano() / 1000 }

func TestIntegrationCtlCycles(t *testing.T) { forEachState(t, testCtlCycles) }

// testCtlCycles: three enable/disable cycles during one transfer give
// three well-formed SIFTR sections, each with its own counts (its
// identity exact), its own flow list and only lines from its own time;
// nothing is logged before the first enable (--start-disabled) nor between
// cycles.
func testCtlCycles(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	logfile := filepath.Join(t.TempDir(), "siftr.log")
	p := startCtlProbe(t, "--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS,
		"--logfile", logfile, "--start-disabled", "--metrics-addr", "127.0.0.1:0")
	var addr []string
	for deadline := time.Now().Add(5 * time.Second); addr == nil; time.Sleep(10 * time.Millisecond) {
		if addr = metricsLine.FindStringSubmatch(p.stderr.String()); addr == nil && time.Now().After(deadline) {
			t.Fatalf("no metrics address: %s", p.stderr.String())
		}
	}
	if s := p.status(); s.Enabled || s.Cycle != 0 || s.Counts != nil {
		t.Errorf("started disabled: status %+v", s)
	}
	if m := scrape(t, addr[1]); m["siftr_enabled"] != 0 || m["siftr_cycles_total"] != 0 || m["siftr_port_filter"] != 5201 {
		t.Errorf("metrics while disabled: enabled %v cycles %v port %v", m["siftr_enabled"], m["siftr_cycles_total"], m["siftr_port_filter"])
	}
	client, stop := stream(t, lab, "10.77.0.2:5201")
	time.Sleep(200 * time.Millisecond)
	if b, _ := os.ReadFile(logfile); len(b) != 0 {
		t.Fatalf("logged while started disabled: %q", b)
	}
	type span struct{ from, to time.Time }
	var spans []span
	for i := range 3 {
		from := time.Now()
		if out := p.ctl(exitOK, "enable"); !strings.Contains(out, "enabled") {
			t.Errorf("enable: %q", out)
		}
		enableTook := time.Since(from)
		if out := p.ctl(exitOK, "enable"); !strings.Contains(out, "already enabled") {
			t.Errorf("second enable: %q", out)
		}
		time.Sleep(250 * time.Millisecond)
		if i == 1 {
			m := scrape(t, addr[1])
			if m["siftr_enabled"] != 1 || m["siftr_cycles_total"] != 2 || m[`siftr_packets_total{direction="out"}`] == 0 {
				t.Errorf("metrics in cycle 2: enabled %v cycles %v packets out %v", m["siftr_enabled"], m["siftr_cycles_total"], m[`siftr_packets_total{direction="out"}`])
			}
			if s := p.status(); !s.Enabled || s.Cycle != 2 || s.Counts == nil || s.Counts.Lines == 0 {
				t.Errorf("status in cycle 2: %+v", s)
			}
			if out := p.ctl(exitOK, "stats"); !strings.Contains(out, "summary of cycle 2:") {
				t.Errorf("stats in cycle 2: %q", out)
			}
		}
		began := time.Now()
		out := p.ctl(exitOK, "disable")
		to := time.Now()
		t.Logf("cycle %d: enable took %v, disable %v", i+1, enableTook, to.Sub(began))
		if !strings.Contains(out, "disabled: cycle "+strconv.Itoa(i+1)+" ended") {
			t.Errorf("disable: %q", out)
		}
		spans = append(spans, span{from, to})
		// Between cycles nothing is captured: the log does not grow.
		size := fileSize(t, logfile)
		time.Sleep(150 * time.Millisecond)
		if got := fileSize(t, logfile); got != size {
			t.Errorf("after disable %d the log grew from %d to %d bytes", i+1, size, got)
		}
	}
	if out := p.ctl(exitOK, "disable"); !strings.Contains(out, "already disabled") {
		t.Errorf("disable while disabled: %q", out)
	}
	if m := scrape(t, addr[1]); m["siftr_enabled"] != 0 || m["siftr_cycles_total"] != 3 {
		t.Errorf("metrics after: enabled %v cycles %v", m["siftr_enabled"], m["siftr_cycles_total"])
	}
	stop()
	p.stop()

	secs := sections(t, logfile)
	if len(secs) != 3 {
		t.Fatalf("%d sections, want 3", len(secs))
	}
	flow := client.String()
	for i, s := range secs {
		name := "cycle " + strconv.Itoa(i+1)
		if s.enable == nil || s.disable == nil {
			t.Fatalf("%s: enable line %v, disable line %v", name, s.enable != nil, s.disable != nil)
		}
		checkSection(t, name, s)
		if len(s.lines) < 100 {
			t.Errorf("%s: %d lines", name, len(s.lines))
		}
		if len(s.flows) != 1 || !strings.Contains(strings.ReplaceAll(s.flows[0], ";", ":"), strings.ReplaceAll(flow, "-", "")) {
			t.Errorf("%s: flow list %q, want the one connection %s", name, s.flows, flow)
		}
		// Every line is of a packet of this cycle: after its enable (the
		// time its source opened; exact mode's times are converted from
		// the monotonic clock: allow a millisecond), before its disable.
		en, _ := strconv.ParseInt(s.enable["enable_time_secs"], 10, 64)
		enu, _ := strconv.ParseInt(s.enable["enable_time_usecs"], 10, 64)
		di, _ := strconv.ParseInt(s.disable["disable_time_secs"], 10, 64)
		diu, _ := strconv.ParseInt(s.disable["disable_time_usecs"], 10, 64)
		lo, hi := en*1e6+enu, di*1e6+diu
		if lo < usec(spans[i].from)-1 || hi > usec(spans[i].to) {
			t.Errorf("%s: enable %d and disable %d not within the ctl commands' %d..%d", name, lo, hi, usec(spans[i].from), usec(spans[i].to))
		}
		for _, ln := range s.lines {
			if ln.TimeUS < lo-1000 || ln.TimeUS > hi {
				t.Errorf("%s: a line at %d, outside the cycle %d..%d", name, ln.TimeUS, lo, hi)
				break
			}
		}
	}
	if !strings.Contains(p.stderr.String(), "enabled: cycle 3") || !strings.Contains(p.stderr.String(), "disabled: cycle 3 ended") {
		t.Errorf("stderr does not log the changes: %s", p.stderr.String())
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestIntegrationCtlPPL(t *testing.T) { forEachState(t, testCtlPPL) }

// testCtlPPL sets ppl from 1 to 10 and back during a transfer: every
// packet is counted once (the identity is exact with the sampled-out
// count), and each segment of the run keeps floor(its packets/ppl) of the
// flow's packets, all of which are data lines.
func testCtlPPL(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	// Connected before the probe starts and closed after it stopped: every
	// packet it sees is of an established socket.
	_, stop := stream(t, lab, "10.77.0.2:5201")
	logfile := filepath.Join(t.TempDir(), "siftr.log")
	p := startCtlProbe(t, "--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS, "--logfile", logfile)
	time.Sleep(300 * time.Millisecond)
	a := p.do(&ctl.Request{Cmd: ctl.CmdSet, Name: ctl.SetPPL, Value: "10"}).Change
	time.Sleep(300 * time.Millisecond)
	b := p.do(&ctl.Request{Cmd: ctl.CmdSet, Name: ctl.SetPPL, Value: "1"}).Change
	time.Sleep(300 * time.Millisecond)
	p.ctl(exitOK, "disable")
	end := p.status()
	stop()
	p.stop()
	if a.Before == nil || b.Before == nil || end.Counts == nil {
		t.Fatalf("no counts: %+v %+v %+v", a, b, end)
	}
	if a.Old != "1" || a.New != "10" || b.Old != "10" || b.New != "1" || end.PPL != 1 {
		t.Errorf("changes %+v, %+v; ppl at the end %d", a, b, end.PPL)
	}
	secs := sections(t, logfile)
	if len(secs) != 1 {
		t.Fatalf("%d sections, want 1", len(secs))
	}
	s := secs[0]
	sum := func(x [2]uint64) uint64 { return x[0] + x[1] }
	// The identity, per direction, with the sampled-out count.
	var lines [2]uint64
	for _, ln := range s.lines {
		if ln.Dir == 'o' {
			lines[1]++
		} else {
			lines[0]++
		}
	}
	for d, dir := range []string{"inbound", "outbound"} {
		pk := s.uint("num_" + dir + "_tcp_pkts")
		sk := s.uint("num_"+dir+"_skipped_pkts_malloc") + s.uint("num_"+dir+"_skipped_pkts_tcpcb") + s.uint("num_"+dir+"_skipped_pkts_inpcb")
		if got := lines[d] + end.Counts.SampledOut[d] + sk; got != pk {
			t.Errorf("%s: %d lines + %d sampled out + %d skipped = %d, want the %d packets", dir, lines[d], end.Counts.SampledOut[d], sk, got, pk)
		}
		if end.Counts.Packets[d] != pk {
			t.Errorf("%s: status says %d packets, the disable line %d", dir, end.Counts.Packets[d], pk)
		}
	}
	// The segments: 1, then 10, then 1.
	type seg struct{ packets, out, kept, ppl uint64 }
	segs := []seg{
		{sum(a.Before.Packets), sum(a.Before.SampledOut), sum(a.Before.Sampled), 1},
		{sum(b.Before.Packets) - sum(a.Before.Packets), sum(b.Before.SampledOut) - sum(a.Before.SampledOut), sum(b.Before.Sampled) - sum(a.Before.Sampled), 10},
		{sum(end.Counts.Packets) - sum(b.Before.Packets), sum(end.Counts.SampledOut) - sum(b.Before.SampledOut), sum(end.Counts.Sampled) - sum(b.Before.Sampled), 1},
	}
	var kept uint64
	for i, g := range segs {
		t.Logf("segment %d (ppl %d): %d packets, %d sampled out, %d kept", i+1, g.ppl, g.packets, g.out, g.kept)
		if g.kept != (g.kept+g.out)/g.ppl || g.kept == 0 {
			t.Errorf("segment %d (ppl %d): %d kept of %d counted: want floor(%d/%d) = %d", i+1, g.ppl, g.kept, g.kept+g.out, g.kept+g.out, g.ppl, (g.kept+g.out)/g.ppl)
		}
		kept += g.kept
	}
	if segs[1].out < 9*segs[1].kept {
		t.Errorf("segment 2: %d sampled out for %d kept", segs[1].out, segs[1].kept)
	}
	if n := uint64(len(s.lines)); n != kept {
		t.Errorf("%d data lines, want the %d packets the three segments kept", n, kept)
	}
	if !strings.Contains(p.stderr.String(), "ppl 1 -> 10 (cycle 1, after ") || !strings.Contains(p.stderr.String(), "ppl 10 -> 1") {
		t.Errorf("stderr does not log the changes: %s", p.stderr.String())
	}
}

func TestIntegrationCtlPort(t *testing.T) { forEachState(t, testCtlPort) }

// testCtlPort moves the port filter from one busy port to another: no
// line of the old port is written after the change returns, the new
// port's lines start within a block timeout of it, and the identity holds
// across the change.
func testCtlPort(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 200e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	listen(t, &lab.B, "10.77.0.2:5202")
	_, stopA := stream(t, lab, "10.77.0.2:5201")
	_, stopB := stream(t, lab, "10.77.0.2:5202")
	logfile := filepath.Join(t.TempDir(), "siftr.log")
	p := startCtlProbe(t, "--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS, "--logfile", logfile)
	time.Sleep(300 * time.Millisecond)
	call := time.Now()
	out := p.ctl(exitOK, "set", "port", "5202")
	ret := time.Now()
	size := fileSize(t, logfile)
	if !strings.Contains(out, "port 5201 -> 5202") {
		t.Errorf("set port: %q", out)
	}
	time.Sleep(300 * time.Millisecond)
	p.ctl(exitOK, "disable")
	stopA()
	stopB()
	p.stop()
	t.Logf("set port took %v", ret.Sub(call))

	b, err := os.ReadFile(logfile)
	if err != nil {
		t.Fatal(err)
	}
	// What was appended after the change returned: port 5202 only.
	tail := b[size:]
	var oldAfter, newAfter int
	rd := siftrlog.NewReader(bytes.NewReader(tail))
	for rd.Next() == nil {
		if rd.Kind() != siftrlog.KindRecord {
			continue
		}
		switch rd.Record().Line.Remote.Port() {
		case 5201:
			oldAfter++
		case 5202:
			newAfter++
		}
	}
	if oldAfter != 0 {
		t.Errorf("%d lines of the old port were written after set port returned", oldAfter)
	}
	if newAfter == 0 {
		t.Error("no line of the new port after the change")
	}
	secs := sections(t, logfile)
	if len(secs) != 1 {
		t.Fatalf("%d sections, want 1", len(secs))
	}
	checkSection(t, "the cycle", secs[0])
	var first int64 = -1
	var old int
	for _, ln := range secs[0].lines {
		switch ln.Remote.Port() {
		case 5201:
			old++
			if ln.TimeUS >= usec(ret) {
				t.Errorf("a line of the old port at %d, after the change returned at %d", ln.TimeUS, usec(ret))
			}
		case 5202:
			if first < 0 {
				first = ln.TimeUS
			}
		default:
			t.Errorf("a line of port %d", ln.Remote.Port())
		}
	}
	if old < 100 {
		t.Errorf("%d lines of the old port before the change", old)
	}
	// The new port's lines start at the swap: within one block timeout
	// (1 ms) of the change returning, and not before it was asked for.
	if first < usec(call) || first > usec(ret)+1000 {
		t.Errorf("the new port's first line at %d, want it from the call (%d) to 1 ms after the return (%d)", first, usec(call), usec(ret))
	}
	if len(secs[0].flows) != 2 {
		t.Errorf("flow list %q, want the flows of both ports", secs[0].flows)
	}
}

func TestIntegrationCtlLogfile(t *testing.T) { forEachState(t, testCtlLogfile) }

// testCtlLogfile switches the log to a new file while enabled, as SIGHUP
// does to a new path, and refuses a path it cannot use.
func testCtlLogfile(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	_, stop := stream(t, lab, "10.77.0.2:5201")
	dir := t.TempDir()
	first, second := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	p := startCtlProbe(t, "--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS, "--logfile", first)
	time.Sleep(200 * time.Millisecond)
	os.Symlink(filepath.Join(dir, "target"), filepath.Join(dir, "link.log"))
	if out := p.ctl(exitUsage, "set", "logfile", filepath.Join(dir, "link.log")); !strings.Contains(out, "symbolic link") {
		t.Errorf("set logfile to a symlink: %q", out)
	}
	p.ctl(exitOK, "set", "logfile", second)
	if s := p.status(); s.LogFile != second {
		t.Errorf("status logfile %q, want %q", s.LogFile, second)
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	p.stop()
	a, b := sections(t, first), sections(t, second)
	if len(a) != 1 || len(b) != 1 || a[0].enable == nil || a[0].disable != nil || b[0].enable != nil || b[0].disable == nil {
		t.Fatalf("want an enable line and no disable line in the first file, the other way round in the second: %d and %d sections", len(a), len(b))
	}
	if len(a[0].lines) == 0 || len(b[0].lines) == 0 {
		t.Errorf("%d and %d lines: want lines in both files", len(a[0].lines), len(b[0].lines))
	}
	// The disable line counts the whole cycle, both files together.
	whole := &section{enable: a[0].enable, disable: b[0].disable, lines: append(a[0].lines, b[0].lines...)}
	checkSection(t, "both files", whole)
	if _, err := os.Lstat(filepath.Join(dir, "target")); err == nil {
		t.Error("the symlink's target was created")
	}
}

// TestIntegrationCtlSocket checks the control socket's rules: a stale
// socket of a killed run is replaced, a live one or a symlink is refused,
// another user is refused, and a default path that cannot be made is only
// a warning.
func TestIntegrationCtlSocket(t *testing.T) {
	labtest.RequireRoot(t)
	dir := t.TempDir()
	log := func(name string) string { return filepath.Join(dir, name) }

	// A stale socket: a probe killed with SIGKILL leaves it behind.
	stale := filepath.Join(dir, "stale", "ctl")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	killed := exec.Command(exe, "--iface", "lo", "--port", "5999", "--logfile", log("killed.log"), "--control", stale, "--quiet")
	killed.Env = append(os.Environ(), "SIFTR_PROBE_TEST_AS_MAIN=1")
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := ctl.Dial(stale, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			killed.Process.Kill()
			t.Fatal("the probe to kill did not serve its socket")
		}
	}
	killed.Process.Kill()
	killed.Wait()
	if _, err := ctl.Dial(stale, time.Second); err == nil || !strings.Contains(err.Error(), "nothing listens") {
		t.Fatalf("after SIGKILL: %v, want the socket left behind with nothing listening", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--iface", "lo", "--port", "5999", "--logfile", log("a.log"), "--control", stale, "--quiet"}, io.Discard, &stderr)
	}()
	var out string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var so, se bytes.Buffer
		if runCtl([]string{"--control", stale, "status"}, &so, &se) == exitOK {
			out = so.String()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stale socket was not replaced: %s %s", se.String(), stderr.String())
		}
	}
	if !strings.Contains(out, "logging      enabled: cycle 1") || !strings.Contains(out, "port         5999") {
		t.Errorf("status:\n%s", out)
	}
	fi, err := os.Lstat(stale)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket %v %v, want a socket with mode 0600", fi.Mode(), err)
	}

	// A second probe on the same socket is refused, in one line.
	var so, se bytes.Buffer
	if code := run(context.Background(), []string{"--iface", "lo", "--logfile", log("b.log"), "--control", stale}, &so, &se); code != exitUsage ||
		!strings.Contains(se.String(), "is in use by a running process") || strings.Count(strings.TrimSpace(se.String()), "\n") != 0 {
		t.Errorf("second probe on the socket: exit %d: %q", code, se.String())
	}

	// Another user: mode 0600 keeps them out, and the peer check too.
	shared := copyTestBinary(t)
	for _, dirOf := range []string{dir, filepath.Dir(stale), filepath.Dir(dir)} {
		os.Chmod(dirOf, 0o755)
	}
	asNobody := func() (int, string) {
		cmd := exec.Command(shared, "ctl", "--control", stale, "enable")
		cmd.Env = append(os.Environ(), "SIFTR_PROBE_TEST_AS_MAIN=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		b, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(b)
		}
		return 0, string(b)
	}
	if code, out := asNobody(); code != exitUsage || !strings.Contains(out, "permission denied") {
		t.Errorf("as nobody: exit %d: %q, want 2 and permission denied", code, out)
	}
	os.Chmod(stale, 0o666)
	if code, out := asNobody(); code != exitUsage || !strings.Contains(out, "permission denied: uid 65534 may not control this probe") {
		t.Errorf("as nobody through a mode-0666 socket: exit %d: %q, want the peer check's refusal", code, out)
	}
	for deadline := time.Now().Add(2 * time.Second); !strings.Contains(stderr.String(), "refused a connection from uid 65534"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("the refusal is not on the probe's stderr: %s", stderr.String())
			break
		}
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after the probe stopped: %v", err)
	}

	// A symlink at the socket path is refused, and its target not made.
	link := filepath.Join(dir, "link")
	os.Symlink(filepath.Join(dir, "target"), link)
	so.Reset()
	se.Reset()
	if code := run(context.Background(), []string{"--iface", "lo", "--logfile", log("c.log"), "--control", link}, &so, &se); code != exitUsage ||
		!strings.Contains(se.String(), "is a symbolic link; refusing to follow it") {
		t.Errorf("symlinked control socket: exit %d: %q", code, se.String())
	}
	if _, err := os.Lstat(filepath.Join(dir, "target")); err == nil {
		t.Error("the symlink's target was made")
	}

	// The default path, not asked for, that cannot be made: a warning.
	defaultControl = "/dev/null/ctl"
	defer func() { defaultControl = "" }()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	se.Reset()
	if code := run(ctx2, []string{"--iface", "lo", "--port", "5999", "--logfile", log("d.log"), "--quiet"}, &so, &se); code != exitOK ||
		!strings.Contains(se.String(), "no control socket: ") {
		t.Errorf("unusable default control path: exit %d: %q, want 0 and a warning", code, se.String())
	}
	// Asked for, it is an error.
	se.Reset()
	if code := run(context.Background(), []string{"--iface", "lo", "--logfile", log("e.log"), "--control", "/dev/null/ctl"}, &so, &se); code != exitUsage {
		t.Errorf("unusable --control: exit %d: %q, want 2", code, se.String())
	}
}

// copyTestBinary copies the test binary where another user can run it.
func copyTestBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "siftr-ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "siftr-probe.test")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCtlUsageErrors: bad arguments to siftr-probe ctl are one line (and
// the pointer to --help), exit 2, without a probe to talk to.
func TestCtlUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"reboot"}, `unknown command "reboot"`},
		{[]string{"status", "now"}, "status takes no argument"},
		{[]string{"set"}, "set what?"},
		{[]string{"set", "ppl"}, "set ppl needs one value"},
		{[]string{"set", "ppl", "0"}, "bad ppl 0: must be 1 (every packet) or more"},
		{[]string{"set", "ppl", "x"}, `bad ppl "x": not a whole number`},
		{[]string{"set", "ppl", "4294967296"}, "bad ppl 4294967296: must be at most 2147483648"},
		{[]string{"set", "port", "65536"}, "bad port 65536: must be 0 (all) to 65535"},
		{[]string{"set", "cwnd", "1"}, `cannot set "cwnd"`},
		{[]string{"--timeout", "0", "status"}, "bad --timeout"},
		{[]string{"--nosuch", "status"}, "unknown flag --nosuch"},
	} {
		var stdout, stderr bytes.Buffer
		code := runCtl(tc.args, &stdout, &stderr)
		want := "siftr-probe ctl: " + tc.want
		if code != exitUsage || !strings.HasPrefix(stderr.String(), want) || strings.Count(stderr.String(), "\n") != 2 {
			t.Errorf("ctl %q: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), want)
		}
	}
	// No probe: one line, exit 2.
	var stdout, stderr bytes.Buffer
	path := filepath.Join(t.TempDir(), "ctl")
	if code := runCtl([]string{"--control", path, "status"}, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "no control socket at "+path) || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("no probe: exit %d, %q", code, stderr.String())
	}
	stdout.Reset()
	if code := runCtl([]string{"--help"}, &stdout, &stderr); code != exitOK || !strings.Contains(stdout.String(), "set logfile PATH") {
		t.Errorf("--help: exit %d, %q", code, stdout.String())
	}
	// The request a command line makes.
	rq, err := ctlRequest([]string{"set", "logfile", "rel.log"})
	if err != nil || !filepath.IsAbs(rq.Value) {
		t.Errorf("set logfile rel.log: %+v %v, want an absolute path", rq, err)
	}
	b, _ := json.Marshal(rq)
	if !strings.Contains(string(b), `"cmd":"set","name":"logfile"`) {
		t.Errorf("request %s", b)
	}
}
