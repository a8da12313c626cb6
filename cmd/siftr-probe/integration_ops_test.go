package main

// Integration tests of how the probe is operated: metrics and health
// checks, capturing in a namespace from outside it, JSON lines on stdout,
// log rotation.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/internal/syncbuf"
	"github.com/siftr-probe/siftr-probe/internal/traffic"
)

// liveProbe is a running command.
type liveProbe struct {
	t              *testing.T
	args           []string
	stdout, stderr syncbuf.Buffer
	cancel         context.CancelFunc
	done           chan int
}

// startProbe runs the command with args plus --status-interval on a
// goroutine, through wrap if it is not nil (to run it inside a network
// namespace), and waits until it captures: until its log (the --logfile of
// args, or stdout for "-") has the enable line.
func startProbe(t *testing.T, args []string, wrap func(func())) *liveProbe {
	t.Helper()
	i := slices.Index(args, "--logfile")
	if i < 0 || i+1 == len(args) {
		t.Fatalf("startProbe: no --logfile in %q", args)
	}
	logfile := args[i+1]
	p := &liveProbe{t: t, args: append(args, "--status-interval", "200ms"), done: make(chan int, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	if wrap == nil {
		wrap = func(f func()) { f() }
	}
	go wrap(func() { p.done <- run(ctx, p.args, &p.stdout, &p.stderr) })
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("siftr-probe %q did not stop", p.args)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var b []byte
		if logfile == "-" {
			b = []byte(p.stdout.String())
		} else {
			b, _ = os.ReadFile(logfile)
		}
		if bytes.Contains(b, []byte("enable_time_secs")) {
			return p
		}
		select {
		case code := <-p.done:
			p.done <- code
			t.Fatalf("siftr-probe %q exited %d before capturing: %s", p.args, code, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("siftr-probe %q did not start: %s", p.args, p.stderr.String())
		}
	}
}

// stop stops the probe as SIGINT would and checks that it exited 0.
func (p *liveProbe) stop() {
	p.t.Helper()
	p.cancel()
	code := <-p.done
	p.done <- code
	if code != exitOK {
		p.t.Fatalf("siftr-probe %q: exit %d: %s", p.args, code, p.stderr.String())
	}
}

var metricsLine = regexp.MustCompile(`metrics on http://(\S+)/metrics`)

// metricsAddr waits for the address the probe says it serves metrics on.
func (p *liveProbe) metricsAddr() string {
	p.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := metricsLine.FindStringSubmatch(p.stderr.String()); m != nil {
			return m[1]
		}
	}
	p.t.Fatalf("no metrics address on stderr: %s", p.stderr.String())
	return ""
}

// httpGet returns the status and body of GET url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// scrape reads /metrics at addr into a map from series (name and labels,
// as exposed) to value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	m := map[string]float64{}
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// logged is what the metrics say was logged or skipped, for ppl=1:
// packets - skipped per direction, and records.
func logged(m map[string]float64) (want, records float64) {
	for _, dir := range []string{"in", "out"} {
		want += m[`siftr_packets_total{direction="`+dir+`"}`]
		for _, r := range []string{"malloc", "tcpcb", "inpcb"} {
			want -= m[`siftr_skipped_packets_total{direction="`+dir+`",reason="`+r+`"}`]
		}
	}
	return want, m["siftr_records_total"]
}

// settle scrapes until the packet counts stopped moving and every counted
// packet is written or skipped, and returns that scrape.
func settle(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	prev := scrape(t, addr)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		m := scrape(t, addr)
		want, records := logged(m)
		if m[`siftr_packets_total{direction="in"}`] == prev[`siftr_packets_total{direction="in"}`] &&
			m[`siftr_packets_total{direction="out"}`] == prev[`siftr_packets_total{direction="out"}`] &&
			want == records {
			return m
		}
		prev = m
	}
	t.Fatalf("counts did not settle: %v", prev)
	return nil
}

func TestIntegrationMetrics(t *testing.T) { forEachState(t, testMetrics) }

func testMetrics(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	logfile := filepath.Join(t.TempDir(), "siftr.log")
	p := startProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS,
		"--metrics-addr", "127.0.0.1:0", "--logfile", logfile}, nil)
	addr := p.metricsAddr()

	if code, body := httpGet(t, "http://"+addr+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz while running: %d %q, want 200 ok", code, body)
	}
	before := scrape(t, addr)
	if v := before[`siftr_packets_total{direction="out"}`]; v != 0 {
		t.Errorf("%v packets out before any traffic", v)
	}
	for _, s := range []string{
		`siftr_writer_queue_capacity_batches`, `siftr_snapshot_staleness_seconds_count`,
		`siftr_capture_ring_drops_total`, `go_goroutines`, `process_resident_memory_bytes`,
	} {
		if _, ok := before[s]; !ok {
			t.Errorf("/metrics has no %s", s)
		}
	}

	// Scrape while the transfer runs.
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		send(t, &lab.A, "10.77.0.2:5201", 4<<20) // about 350 ms at 100 Mbit/s
	}()
	time.Sleep(150 * time.Millisecond)
	during := scrape(t, addr)
	<-sent
	if v := during[`siftr_packets_total{direction="out"}`]; v <= 0 {
		t.Errorf("siftr_packets_total{direction=\"out\"} %v during the transfer, want > 0", v)
	}

	// After the traffic stopped, before the probe stops.
	after := settle(t, addr)
	if code, _ := httpGet(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz after the transfer: %d, want 200", code)
	}
	if after[`siftr_snapshot_staleness_seconds_count`] != after["siftr_records_total"] {
		t.Errorf("staleness count %v, records %v: every record has a staleness",
			after[`siftr_snapshot_staleness_seconds_count`], after["siftr_records_total"])
	}
	if after["siftr_flows_created_total"] < 1 {
		t.Errorf("siftr_flows_created_total %v, want the transfer's flow", after["siftr_flows_created_total"])
	}
	p.stop()

	if _, err := (&http.Client{Timeout: time.Second}).Get("http://" + addr + "/healthz"); err == nil {
		t.Error("metrics still served after the probe stopped")
	}
	l := parseLog(t, logfile)
	checkIdentity(t, l)
	for _, d := range []struct{ key, series string }{
		{"num_outbound_tcp_pkts", `siftr_packets_total{direction="out"}`},
		{"num_inbound_tcp_pkts", `siftr_packets_total{direction="in"}`},
		{"num_outbound_skipped_pkts_inpcb", `siftr_skipped_packets_total{direction="out",reason="inpcb"}`},
		{"num_inbound_skipped_pkts_tcpcb", `siftr_skipped_packets_total{direction="in",reason="tcpcb"}`},
	} {
		if got, want := after[d.series], float64(l.Uint(d.key)); got != want {
			t.Errorf("%s = %v at the end, but the disable line's %s = %v", d.series, got, d.key, want)
		}
	}
	if got, want := after["siftr_records_total"], float64(len(l.Lines)); got != want {
		t.Errorf("siftr_records_total %v, but %v data lines", got, want)
	}
	if after[`siftr_packets_total{direction="out"}`] < float64(minOut(state, 4<<20)) {
		t.Errorf("only %v packets out for 4 MB", after[`siftr_packets_total{direction="out"}`])
	}
}

// TestIntegrationMetricsAddrInUse: a busy metrics address is a set-up
// error, reported in one line before anything is captured.
func TestIntegrationMetricsAddrInUse(t *testing.T) {
	labtest.RequireRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	logfile := filepath.Join(t.TempDir(), "siftr.log")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--iface", "lo", "--metrics-addr", ln.Addr().String(), "--logfile", logfile}, &stdout, &stderr)
	msg := strings.TrimSpace(stderr.String())
	if code != exitUsage || !strings.Contains(msg, "address already in use") || strings.Contains(msg, "\n") {
		t.Errorf("exit %d, stderr %q; want exit 2 and one line saying the address is in use", code, msg)
	}
	if _, err := os.Stat(logfile); err == nil {
		t.Error("a log file was created")
	}
}

func parseLog(t *testing.T, path string) *siftrlog.Log {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := siftrlog.Parse(f)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if len(l.Enable) != 1 || len(l.Disable) != 1 {
		t.Fatalf("%s: %d enable and %d disable lines, want 1 and 1", path, len(l.Enable), len(l.Disable))
	}
	return l
}

// TestIntegrationNetNSEquivalence probes one transfer twice at once: from
// the host's namespace with --netns, and from inside the namespace without
// it. Both must see the same packets and log the same lines.
func TestIntegrationNetNSEquivalence(t *testing.T) { forEachState(t, testNetNSEquivalence) }

func testNetNSEquivalence(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	// Connect before the probes start and close after they stop: then every
	// packet they see belongs to an established socket, and neither probe
	// can find the socket in a state the other did not (handshake, close).
	var c net.Conn
	if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", "10.77.0.2:5201"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	stampOnce(t)

	dir := t.TempDir()
	outside := filepath.Join(dir, "outside.log")
	inside := filepath.Join(dir, "inside.log")
	po := startProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS,
		"--metrics-addr", "127.0.0.1:0", "--logfile", outside}, nil)
	pi := startProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--logfile", inside}, func(f func()) {
		// run() on a thread inside the namespace: it opens its rings and
		// inet_diag sockets there, as a probe started in the namespace does.
		if err := lab.A.Do(func() error { f(); return nil }); err != nil {
			t.Errorf("enter the lab's namespace: %v", err)
		}
	})
	addr := po.metricsAddr()

	buf := make([]byte, 64<<10)
	for range 32 { // 2 MB, about 170 ms at 100 Mbit/s
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	settle(t, addr)
	time.Sleep(100 * time.Millisecond) // let the inside probe catch up too
	var wg sync.WaitGroup
	wg.Go(po.stop)
	wg.Go(pi.stop)
	wg.Wait()

	lo, li := parseLog(t, outside), parseLog(t, inside)
	checkIdentity(t, lo)
	checkIdentity(t, li)
	for _, k := range []string{"num_inbound_tcp_pkts", "num_outbound_tcp_pkts", "total_skipped_tcp_pkts"} {
		if lo.Uint(k) != li.Uint(k) {
			t.Errorf("%s: %d with --netns, %d inside the namespace", k, lo.Uint(k), li.Uint(k))
		}
	}
	if lo.Uint("num_outbound_tcp_pkts") < uint64(minOut(state, 2<<20)) {
		t.Errorf("only %d packets out for 2 MB", lo.Uint("num_outbound_tcp_pkts"))
	}
	// The lines of each flow and direction: their times, sorted.
	type key struct {
		dir           byte
		local, remote netip.AddrPort
	}
	times := func(l *siftrlog.Log) map[key][]int64 {
		m := map[key][]int64{}
		for _, ln := range l.Lines {
			k := key{ln.Dir, ln.Local, ln.Remote}
			m[k] = append(m[k], ln.TimeUS)
		}
		for _, ts := range m {
			slices.Sort(ts)
		}
		return m
	}
	to, ti := times(lo), times(li)
	if len(to) != len(ti) {
		t.Errorf("%d flow directions with --netns, %d inside", len(to), len(ti))
	}
	for k, a := range to {
		b := ti[k]
		if len(a) != len(b) {
			t.Errorf("%c %s -> %s: %d lines with --netns, %d inside", k.dir, k.local, k.remote, len(a), len(b))
			continue
		}
		// Outbound frames are stamped once for every tap (stampOnce), so
		// their times match exactly. Inbound frames from a veth peer keep
		// TCP's monotonic departure time, which taps ignore: each packet
		// socket reads the clock when the frame reaches it, one after the
		// other in the same softirq, microseconds apart.
		tol := int64(0)
		if k.dir == 'i' {
			tol = 1000
		}
		if state == "exact" {
			// Each probe's programs read the clock themselves, one
			// after the other on the packet's way through tc.
			tol = 1000
		}
		bad, worst := 0, int64(0)
		for i := range a {
			if d := abs(a[i] - b[i]); d > tol {
				bad++
				worst = max(worst, d)
			}
		}
		if bad > 0 {
			t.Errorf("%c %s -> %s: %d of %d line times differ by more than %dµs (up to %dµs)", k.dir, k.local, k.remote, bad, len(a), tol, worst)
		}
	}
	if !slices.Equal(lo.Flows, li.Flows) {
		t.Errorf("flow_list %q with --netns, %q inside", lo.Flows, li.Flows)
	}
}

// stampOnce makes the kernel timestamp every packet once, for all its
// packet sockets, while the test runs. By default (no socket asked for
// receive timestamps) each AF_PACKET socket reads the clock itself when the
// packet reaches it, and two probes see the same packet about a
// microsecond apart. A socket with SO_TIMESTAMP turns on the kernel-wide
// netstamp_needed switch: frames are then stamped once, on receive and in
// dev_queue_xmit_nit, and every tap copies that stamp.
func stampOnce(t *testing.T) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TIMESTAMP, 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the switch is flipped by a work item
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// formatKeys returns the keys FORMATS.md documents for a jsonl object type,
// in order.
func formatKeys(t *testing.T, typ string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "output", "FORMATS.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n### "+typ+"\n")
	if !ok {
		t.Fatalf("FORMATS.md has no %q section", typ)
	}
	rest, _, _ = strings.Cut(rest, "\n#")
	keys := []string{}
	if typ != "enable" {
		keys = append(keys, "type") // documented once, in the enable table
	}
	row := regexp.MustCompile("^\\| `([a-z_0-9]+)` \\|")
	for line := range strings.Lines(rest) {
		if m := row.FindStringSubmatch(line); m != nil {
			keys = append(keys, m[1])
		}
	}
	if len(keys) < 5 {
		t.Fatalf("FORMATS.md: only %q for %s", keys, typ)
	}
	return keys
}

// objectKeys returns the top-level keys of a JSON object, in order.
func objectKeys(line []byte) ([]string, error) {
	d := json.NewDecoder(bytes.NewReader(line))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not an object: %v", err)
	}
	var keys []string
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

func TestIntegrationJSONL(t *testing.T) { forEachState(t, testJSONL) }

func testJSONL(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "[::]:5201")
	p := startProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS,
		"--format", "jsonl", "--logfile", "-"}, nil)
	c4 := send(t, &lab.A, "10.77.0.2:5201", 1<<20)
	c6 := send(t, &lab.A, "[fd77::2]:5201", 1<<20)
	time.Sleep(50 * time.Millisecond)
	p.stop()

	want := map[string][]string{}
	for _, typ := range []string{"enable", "record", "disable"} {
		want[typ] = formatKeys(t, typ)
	}
	type object struct {
		Type      string           `json:"type"`
		Direction string           `json:"direction"`
		Time      json.Number      `json:"time"`
		TimeNS    int64            `json:"time_ns"`
		LocalAddr string           `json:"local_addr"`
		LocalPort uint16           `json:"local_port"`
		SnapNS    int64            `json:"snapshot_time_ns"`
		StaleNS   int64            `json:"staleness_ns"`
		Source    string           `json:"state_source"`
		FlowList  []map[string]any `json:"flow_list"`
	}
	var (
		types   []string
		objs    []object
		raw     []map[string]json.Number
		records = map[string]uint64{}
		lastNS  int64
	)
	sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		var o object
		if err := json.Unmarshal(line, &o); err != nil {
			t.Fatalf("stdout line %d is not JSON: %v: %s", n, err, line)
		}
		keys, err := objectKeys(line)
		if err != nil {
			t.Fatalf("line %d: %v", n, err)
		}
		if !slices.Equal(keys, want[o.Type]) {
			t.Fatalf("line %d (%s) keys\n%q\nwant, as FORMATS.md documents them,\n%q", n, o.Type, keys, want[o.Type])
		}
		types = append(types, o.Type)
		objs = append(objs, o)
		if o.Type != "record" {
			m := map[string]json.Number{}
			d := json.NewDecoder(bytes.NewReader(line))
			d.UseNumber()
			var all map[string]any
			if err := d.Decode(&all); err != nil {
				t.Fatal(err)
			}
			for k, v := range all {
				if num, ok := v.(json.Number); ok {
					m[k] = num
				}
			}
			raw = append(raw, m)
			continue
		}
		if o.Direction != "in" && o.Direction != "out" {
			t.Fatalf("line %d: direction %q", n, o.Direction)
		}
		records[o.Direction]++
		if o.SnapNS < o.TimeNS {
			t.Fatalf("line %d: snapshot_time_ns %d before time_ns %d", n, o.SnapNS, o.TimeNS)
		}
		if o.StaleNS != o.SnapNS-o.TimeNS {
			t.Fatalf("line %d: staleness_ns %d, want %d - %d", n, o.StaleNS, o.SnapNS, o.TimeNS)
		}
		if o.Source != state || (state == "exact" && o.StaleNS != 0) {
			t.Fatalf("line %d: state_source %q, staleness %d ns: want %q (and 0 in exact mode)", n, o.Source, o.StaleNS, state)
		}
		if want := fmt.Sprintf("%d.%06d", o.TimeNS/1e9, o.TimeNS%1e9/1e3); o.Time.String() != want {
			t.Fatalf("line %d: time %s, want %s from time_ns %d", n, o.Time, want, o.TimeNS)
		}
		if o.TimeNS < lastNS {
			t.Fatalf("line %d: time_ns %d before the previous line's %d", n, o.TimeNS, lastNS)
		}
		lastNS = o.TimeNS
		if lp := netip.AddrPortFrom(netip.MustParseAddr(o.LocalAddr), o.LocalPort); lp != c4 && lp != c6 {
			t.Fatalf("line %d: local %s is neither client %s nor %s", n, lp, c4, c6)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(types) < 3 || types[0] != "enable" || types[len(types)-1] != "disable" ||
		slices.Contains(types[1:len(types)-1], "enable") || slices.Contains(types[1:len(types)-1], "disable") {
		t.Fatalf("want an enable object, records and a disable object; got %d objects, first %q, last %q",
			len(types), types[0], types[len(types)-1])
	}
	if objs[0].Source != state {
		t.Errorf("enable object's state_source %q, want %q", objs[0].Source, state)
	}
	dis := raw[len(raw)-1]
	u := func(k string) uint64 {
		v, err := strconv.ParseUint(dis[k].String(), 10, 64)
		if err != nil {
			t.Fatalf("disable %s: %v", k, err)
		}
		return v
	}
	for _, d := range []struct{ dir, name string }{{"in", "inbound"}, {"out", "outbound"}} {
		pk := u("num_" + d.name + "_tcp_pkts")
		sk := u("num_"+d.name+"_skipped_pkts_malloc") + u("num_"+d.name+"_skipped_pkts_tcpcb") + u("num_"+d.name+"_skipped_pkts_inpcb")
		if records[d.dir] != pk-sk {
			t.Errorf("%s: %d records, but %d packets - %d skipped = %d", d.name, records[d.dir], pk, sk, pk-sk)
		}
	}
	if u("total_tcp_pkts") != u("num_inbound_tcp_pkts")+u("num_outbound_tcp_pkts") {
		t.Error("total_tcp_pkts is not inbound + outbound")
	}
	if records["out"] < uint64(minOut(state, 1<<20)) || records["in"] < 50 {
		t.Errorf("records %v: want both directions of two 1 MB transfers", records)
	}
	if fl := objs[len(objs)-1].FlowList; len(fl) != 2 {
		t.Errorf("flow_list %v, want the 2 flows", fl)
	}
}

// TestIntegrationSIGHUPReopen rotates the log as logrotate does: rename it,
// send SIGHUP. The old file ends where the new one starts; together they
// are one complete log.
func TestIntegrationSIGHUPReopen(t *testing.T) { forEachState(t, testSIGHUPReopen) }

func testSIGHUPReopen(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 50e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	dir := t.TempDir()
	logfile := filepath.Join(dir, "siftr.log")
	rotated := logfile + ".1"

	var c net.Conn
	if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", "10.77.0.2:5201"); return err }); err != nil {
		t.Fatal(err)
	}
	p := startProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS, "--logfile", logfile}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { traffic.Send(ctx, c, 0) })
	defer func() { cancel(); wg.Wait() }()

	time.Sleep(400 * time.Millisecond)
	if err := os.Rename(logfile, rotated); err != nil {
		t.Fatal(err)
	}
	// run() has signal.Notify'd SIGHUP: the signal reopens, it does not kill.
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(logfile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new log file after SIGHUP: %s", p.stderr.String())
		}
	}
	time.Sleep(400 * time.Millisecond) // traffic goes on into the new file
	p.stop()                           // while packets flow

	old, err := os.ReadFile(rotated)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadFile(logfile)
	if err != nil {
		t.Fatal(err)
	}
	lold, err := siftrlog.Parse(bytes.NewReader(old))
	if err != nil {
		t.Fatalf("rotated log: %v", err)
	}
	lcur, err := siftrlog.Parse(bytes.NewReader(cur))
	if err != nil {
		t.Fatalf("new log: %v", err)
	}
	if len(lold.Enable) != 1 || len(lold.Disable) != 0 {
		t.Errorf("rotated log: %d enable and %d disable lines, want 1 and 0", len(lold.Enable), len(lold.Disable))
	}
	if len(lcur.Enable) != 0 || len(lcur.Disable) != 1 {
		t.Errorf("new log: %d enable and %d disable lines, want 0 and 1", len(lcur.Enable), len(lcur.Disable))
	}
	if len(lold.Lines) < 50 || len(lcur.Lines) < 50 {
		t.Errorf("%d lines before and %d after the reopen: want traffic logged into both", len(lold.Lines), len(lcur.Lines))
	}
	union, err := siftrlog.Parse(io.MultiReader(bytes.NewReader(old), bytes.NewReader(cur)))
	if err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, union)
	if strings.Contains(p.stderr.String(), "reopen") {
		t.Errorf("stderr reports a reopen problem: %s", p.stderr.String())
	}
}

// TestIntegrationHealthzWriteError fills the log's file system during a
// run: /healthz turns 503 and says why, and the metrics count the errors.
func TestIntegrationHealthzWriteError(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	p := startProbe(t, []string{"--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS,
		"--metrics-addr", "127.0.0.1:0", "--logfile", filepath.Join(dir, "siftr.log")}, nil)
	addr := p.metricsAddr()
	if code, _ := httpGet(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz before the disk is full: %d", code)
	}
	send(t, &lab.A, "10.77.0.2:5201", 2<<20) // far more than 64 KB of log
	var code int
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if code, body = httpGet(t, "http://"+addr+"/healthz"); code != http.StatusOK {
			break
		}
	}
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no space left on device") {
		t.Errorf("/healthz with the disk full: %d %q, want 503 and the write error", code, body)
	}
	m := scrape(t, addr)
	if m["siftr_writer_write_errors_total"] == 0 || m["siftr_writer_lost_records_total"] == 0 {
		t.Errorf("write errors %v, lost records %v: want both counted",
			m["siftr_writer_write_errors_total"], m["siftr_writer_lost_records_total"])
	}
	p.cancel()
	exit := <-p.done
	p.done <- exit // for the cleanup
	if exit != exitError {
		t.Errorf("exit %d, want %d: %s", exit, exitError, p.stderr.String())
	}
}
