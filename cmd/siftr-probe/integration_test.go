package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
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

// TestMain lets a test re-execute this binary as the command itself (to run
// it as another user).
func TestMain(m *testing.M) {
	// No test serves the real default control socket: those that want one
	// pass --control.
	defaultControl = ""
	if os.Getenv("SIFTR_PROBE_TEST_AS_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// probeRun is one run of the command.
type probeRun struct {
	code           int
	stdout, stderr string
	log            *siftrlog.Log
}

// runProbe runs the command with args plus --logfile, waits until it
// captures (its log has the enable line), calls drive, stops it as SIGINT
// would and parses the log.
func runProbe(t *testing.T, args []string, drive func()) *probeRun {
	t.Helper()
	logfile := filepath.Join(t.TempDir(), "siftr.log")
	args = append(args, "--logfile", logfile, "--status-interval", "200ms")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, &stdout, &stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logfile)
		if bytes.Contains(b, []byte("enable_time_secs=")) {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("siftr-probe %q exited %d before capturing: %s", args, code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("siftr-probe %q did not start: %s", args, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	drive()
	time.Sleep(50 * time.Millisecond) // let the last packets reach the rings
	cancel()
	r := &probeRun{code: <-done, stdout: stdout.String(), stderr: stderr.String()}
	f, err := os.Open(logfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if r.log, err = siftrlog.Parse(f); err != nil {
		t.Fatalf("parse log: %v", err)
	}
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if len(r.log.Enable) != 1 || len(r.log.Disable) != 1 {
		t.Fatalf("%d enable and %d disable lines, want 1 and 1", len(r.log.Enable), len(r.log.Disable))
	}
	return r
}

// checkIdentity checks SIFTR's identity per direction with ppl=1:
// lines = packets - skipped.
func checkIdentity(t *testing.T, l *siftrlog.Log) {
	t.Helper()
	for _, d := range []struct {
		dir  byte
		name string
	}{{'i', "inbound"}, {'o', "outbound"}} {
		pk := l.Uint("num_" + d.name + "_tcp_pkts")
		sk := l.Uint("num_"+d.name+"_skipped_pkts_malloc") + l.Uint("num_"+d.name+"_skipped_pkts_tcpcb") + l.Uint("num_"+d.name+"_skipped_pkts_inpcb")
		if got := uint64(l.Count(d.dir)); got != pk-sk {
			t.Errorf("%s: %d lines, but %d packets - %d skipped = %d", d.name, got, pk, sk, pk-sk)
		}
	}
	if l.Uint("total_tcp_pkts") != l.Uint("num_inbound_tcp_pkts")+l.Uint("num_outbound_tcp_pkts") {
		t.Error("total_tcp_pkts is not inbound + outbound")
	}
	if !l.Ordered() {
		t.Error("data lines are not in timestamp order")
	}
}

// stateSources are the state sources the end-to-end tests run with: every
// test that logs traffic runs once with each, as a subtest of that name.
var stateSources = []string{"diag", "exact"}

// forEachState runs f as a subtest per state source.
func forEachState(t *testing.T, f func(t *testing.T, state string)) {
	for _, st := range stateSources {
		t.Run(st, func(t *testing.T) { f(t, st) })
	}
}

// minOut is the fewest outbound lines a transfer of n bytes gives. diag
// mode captures wire segments (1448 bytes with the lab's MTU and offloads
// off); exact mode sees TCP's own buffers at tc egress, which GSO makes up
// to 64 KB even with offloads off, as SIFTR sees a TSO burst once.
func minOut(state string, n int64) int {
	if state == "exact" {
		return int(n / (64 << 10))
	}
	return int(n / 2048)
}

// listen starts a discard server in host h.
func listen(t *testing.T, h *netlab.Host, addr string) *traffic.Server {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	s := traffic.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return s
}

// send makes one connection from host h to addr and sends n bytes.
func send(t *testing.T, h *netlab.Host, addr string, n int64) netip.AddrPort {
	t.Helper()
	var c net.Conn
	if err := h.Do(func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if _, err := traffic.Send(context.Background(), c, n); err != nil {
		t.Fatalf("send to %s: %v", addr, err)
	}
	return local
}

func TestIntegrationTransferV4V6(t *testing.T) { forEachState(t, testTransferV4V6) }

func testTransferV4V6(t *testing.T, state string) {
	// The rate limit keeps each connection established for a few hundred
	// milliseconds, so that most snapshots are of an established socket.
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "[::]:5201")
	listen(t, &lab.B, "[::]:5202")
	var c4, c6 netip.AddrPort
	r := runProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS, "--workers", "2"}, func() {
		c4 = send(t, &lab.A, "10.77.0.2:5201", 4<<20)
		c6 = send(t, &lab.A, "[fd77::2]:5201", 4<<20)
		send(t, &lab.A, "10.77.0.2:5202", 1<<20) // another port: not logged, not counted
	})
	l := r.log
	checkIdentity(t, l)
	want := map[netip.AddrPort]netip.AddrPort{
		c4: netip.MustParseAddrPort("10.77.0.2:5201"),
		c6: netip.MustParseAddrPort("[fd77::2]:5201"),
	}
	count := map[netip.AddrPort]map[byte]int{c4: {}, c6: {}}
	established := 0
	for i, ln := range l.Lines {
		remote, ok := want[ln.Local]
		if !ok || ln.Remote != remote {
			t.Fatalf("line %d: %s -> %s is not a logged flow's local view", i, ln.Local, ln.Remote)
		}
		count[ln.Local][ln.Dir]++
		// ESTABLISHED (4) or later: CLOSE_WAIT 5, FIN_WAIT_1 6, CLOSING 7, LAST_ACK 8, FIN_WAIT_2 9.
		if st := ln.Num[siftrlog.FState]; st < 4 || st > 9 {
			t.Fatalf("line %d: conn_state %d: SIFTR logs only established or later sockets", i, st)
		}
		if ln.Num[siftrlog.FState] == 4 {
			established++
		}
		for _, f := range []int{siftrlog.FCwnd, siftrlog.FSRTT, siftrlog.FRTO, siftrlog.FMSS, siftrlog.FFlowID, siftrlog.FSndBufHi, siftrlog.FRcvBufHi} {
			if ln.Num[f] == 0 {
				t.Fatalf("line %d: field %d is 0 in an established connection: %+v", i, f+1, ln)
			}
		}
		if ln.Num[siftrlog.FFlowType] != 63 {
			t.Fatalf("line %d: flowtype %d", i, ln.Num[siftrlog.FFlowType])
		}
		if mss := ln.Num[siftrlog.FMSS]; mss < 1000 || mss > 1460 {
			t.Fatalf("line %d: mss %d", i, mss)
		}
	}
	// After the client's FIN the rest of its send buffer drains in
	// FIN_WAIT_1, so not every line is in state 4.
	if established < len(l.Lines)/2 {
		t.Errorf("only %d of %d lines in state 4 (ESTABLISHED)", established, len(l.Lines))
	}
	for c, n := range count {
		// 4 MB at 1448 bytes a segment: about 2900 data segments out.
		if n['o'] < minOut(state, 4<<20) || n['i'] < 100 {
			t.Errorf("flow %s: %d outbound and %d inbound lines, want both directions logged", c, n['o'], n['i'])
		}
	}
	if len(l.Flows) != 2 {
		t.Errorf("flow_list %q, want the 2 flows on port 5201", l.Flows)
	}
	for _, f := range l.Flows {
		if strings.Contains(f, ";5202") {
			t.Errorf("flow_list has the port-5202 flow: %q", l.Flows)
		}
	}
	if !strings.Contains(r.stderr, "staleness p50") {
		t.Errorf("no status line on stderr: %q", r.stderr)
	}
	if !strings.Contains(r.stderr, "summary") {
		t.Errorf("no summary on stderr: %q", r.stderr)
	}
}

// TestIntegrationLinkLocal runs a transfer between IPv6 link-local
// addresses. Their sockets are bound to the interface, so the lookups must
// name it: without that every packet would be skipped as inpcb.
func TestIntegrationLinkLocal(t *testing.T) { forEachState(t, testLinkLocal) }

func testLinkLocal(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "[::]:5201")
	server := netip.AddrPortFrom(lab.B.LinkLocal, 5201)
	var client netip.AddrPort
	r := runProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS}, func() {
		client = send(t, &lab.A, fmt.Sprintf("[%s%%%s]:5201", lab.B.LinkLocal, lab.A.Iface), 1<<20)
	})
	l := r.log
	checkIdentity(t, l)
	client = netip.AddrPortFrom(client.Addr().WithZone(""), client.Port())
	if client.Addr() != lab.A.LinkLocal {
		t.Fatalf("client address %s, want %s", client.Addr(), lab.A.LinkLocal)
	}
	dirs := map[byte]int{}
	for i, ln := range l.Lines {
		if ln.Local != client || ln.Remote != server {
			t.Fatalf("line %d: %s -> %s, want %s -> %s", i, ln.Local, ln.Remote, client, server)
		}
		dirs[ln.Dir]++
	}
	if dirs['o'] < minOut(state, 1<<20) || dirs['i'] < 50 {
		t.Errorf("%d outbound and %d inbound lines for 1 MB, want both directions logged", dirs['o'], dirs['i'])
	}
	if in := l.Uint("num_outbound_skipped_pkts_inpcb") + l.Uint("num_inbound_skipped_pkts_inpcb"); in > 10 {
		t.Errorf("%d packets skipped as inpcb: link-local sockets not found", in)
	}
}

// TestIntegrationDualStackServer probes the server side, where an IPv4
// connection belongs to an AF_INET6 socket listening on [::].
func TestIntegrationDualStackServer(t *testing.T) { forEachState(t, testDualStackServer) }

func testDualStackServer(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "[::]:5201")
	var client netip.AddrPort
	r := runProbe(t, []string{"--state", state, "--iface", lab.B.Iface, "--port", "5201", "--netns", lab.B.NetNS}, func() {
		client = send(t, &lab.A, "10.77.0.2:5201", 2<<20)
	})
	checkIdentity(t, r.log)
	server := netip.MustParseAddrPort("10.77.0.2:5201")
	n := 0
	for _, ln := range r.log.Lines {
		if ln.Local != server || ln.Remote != client {
			t.Fatalf("line %+v: want the server's view %s -> %s, printed as IPv4", ln, server, client)
		}
		if ln.Num[siftrlog.FState] == 4 {
			n++
		}
	}
	if n < 50 {
		t.Errorf("%d established lines for the dual-stack server socket, want many", n)
	}
	// Packets that reach the probe after the connection closed find no
	// socket; they must be few. Many would mean the v4-mapped socket was
	// not found.
	if in, total := r.log.Uint("num_inbound_skipped_pkts_inpcb"), r.log.Uint("num_inbound_tcp_pkts"); in*20 > total {
		t.Errorf("%d of %d inbound packets found no socket: the v4-mapped socket was not found", in, total)
	}
}

func TestIntegrationPPL(t *testing.T) { forEachState(t, testPPL) }

func testPPL(t *testing.T, state string) {
	const ppl = 7
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	r := runProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS, "--ppl", fmt.Sprint(ppl)}, func() {
		send(t, &lab.A, "10.77.0.2:5201", 2<<20)
	})
	l := r.log
	total := l.Uint("total_tcp_pkts")
	skipped := l.Uint("total_skipped_tcp_pkts")
	// One flow, seen from the client: the SYN and SYN-ACK are skipped
	// (tcpcb: SYN_SENT) without counting; of the other n packets, the
	// floor(n/ppl) sampled ones are each logged or skipped.
	const handshake = 2
	if got := l.Uint("num_outbound_skipped_pkts_tcpcb") + l.Uint("num_inbound_skipped_pkts_tcpcb"); got < handshake {
		t.Errorf("tcpcb skips %d, want at least the %d handshake segments", got, handshake)
	}
	if state == "exact" {
		// The programs see each packet's socket, as SIFTR does: packets
		// skipped for their socket (tcpcb, inpcb) do not count, every
		// other packet does, and every ppl-th counted one is logged (or,
		// with the ring buffer full, a malloc skip).
		tcpcb := l.Uint("num_outbound_skipped_pkts_tcpcb") + l.Uint("num_inbound_skipped_pkts_tcpcb")
		inpcb := l.Uint("num_outbound_skipped_pkts_inpcb") + l.Uint("num_inbound_skipped_pkts_inpcb")
		malloc := skipped - tcpcb - inpcb
		n := total - tcpcb - inpcb
		if got, want := uint64(len(l.Lines))+malloc, n/ppl; got != want {
			t.Errorf("ppl=%d: %d lines + %d malloc = %d, want floor(%d counted/%d) = %d", ppl, len(l.Lines), malloc, got, n, ppl, want)
		}
	} else {
		n := total - handshake
		if got, want := uint64(len(l.Lines))+skipped, n/ppl+handshake; got != want {
			t.Errorf("ppl=%d: %d lines + %d skipped = %d, want floor(%d/%d) + %d = %d", ppl, len(l.Lines), skipped, got, n, ppl, handshake, want)
		}
	}
	if len(l.Lines) < minOut(state, 2<<20)/ppl {
		t.Errorf("only %d lines", len(l.Lines))
	}
	if !l.Ordered() {
		t.Error("lines out of order")
	}
}

// TestIntegrationLoopback captures on lo, where each packet is seen twice:
// sent by one local socket and received by another.
func TestIntegrationLoopback(t *testing.T) { forEachState(t, testLoopback) }

func testLoopback(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{})
	listen(t, &lab.A, "127.0.0.1:5201")
	var client netip.AddrPort
	r := runProbe(t, []string{"--state", state, "--iface", "lo", "--port", "5201", "--netns", lab.A.NetNS}, func() {
		// Paced, so that the sockets live long enough to be looked up:
		// on lo a whole bulk transfer takes under a millisecond.
		var c net.Conn
		if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", "127.0.0.1:5201"); return err }); err != nil {
			t.Fatal(err)
		}
		client = c.LocalAddr().(*net.TCPAddr).AddrPort()
		for range 60 {
			if _, err := c.Write(make([]byte, 16<<10)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		traffic.Send(context.Background(), c, 1)
	})
	l := r.log
	checkIdentity(t, l)
	server := netip.MustParseAddrPort("127.0.0.1:5201")
	views := map[string]int{}
	for _, ln := range l.Lines {
		switch {
		case ln.Local == client && ln.Remote == server:
			views[fmt.Sprintf("client %c", ln.Dir)]++
		case ln.Local == server && ln.Remote == client:
			views[fmt.Sprintf("server %c", ln.Dir)]++
		default:
			t.Fatalf("unexpected flow %s -> %s", ln.Local, ln.Remote)
		}
	}
	for _, v := range []string{"client o", "client i", "server o", "server i"} {
		if views[v] == 0 {
			t.Errorf("no %s lines: %v", v, views)
		}
	}
	t.Logf("disable line: %v", l.Disable)
	if in, out := l.Uint("num_inbound_tcp_pkts"), l.Uint("num_outbound_tcp_pkts"); in != out {
		t.Errorf("on lo every packet is seen once out and once in: in %d, out %d", in, out)
	}
	if len(l.Flows) != 2 {
		t.Errorf("flow_list %q, want both sockets", l.Flows)
	}
}

// TestIntegrationGracefulStop stops the probe in the middle of a transfer:
// every record counted is written before the disable line.
func TestIntegrationGracefulStop(t *testing.T) { forEachState(t, testGracefulStop) }

func testGracefulStop(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 200e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); wg.Wait() }()
	r := runProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS}, func() {
		var c net.Conn
		if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", "10.77.0.2:5201"); return err }); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { traffic.Send(ctx, c, 0) })
		time.Sleep(700 * time.Millisecond) // stop while packets flow
	})
	checkIdentity(t, r.log)
	if len(r.log.Lines) < 1000 {
		t.Errorf("%d lines", len(r.log.Lines))
	}
}

func TestIntegrationSetupErrors(t *testing.T) {
	labtest.RequireRoot(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown interface", []string{"--iface", "nosuch0", "--logfile", filepath.Join(dir, "a.log")}, `no such interface "nosuch0"`},
		{"log in a missing directory", []string{"--iface", "lo", "--logfile", "/nonexistent/dir/siftr.log"}, "cannot write log file /nonexistent/dir/siftr.log"},
		{"log is a directory", []string{"--iface", "lo", "--logfile", dir}, "cannot write log file"},
		{"missing namespace", []string{"--iface", "lo", "--netns", "/run/netns/nosuch-siftr", "--logfile", filepath.Join(dir, "b.log")}, "network namespace"},
		{"full disk", []string{"--iface", "lo", "--logfile", "/dev/full"}, "no space left on device"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 and %q", tc.name, code, stderr.String(), tc.want)
		}
		if n := strings.Count(strings.TrimSpace(stderr.String()), "\n"); n != 0 {
			t.Errorf("%s: error is %d lines, want one: %q", tc.name, n+1, stderr.String())
		}
	}
	// A symlinked log file is refused: it could redirect root's writes.
	link := filepath.Join(dir, "link.log")
	os.Symlink(filepath.Join(dir, "target.log"), link)
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--iface", "lo", "--logfile", link}, &stdout, &stderr); code != exitUsage {
		t.Errorf("symlinked log: exit %d (%s), want 2", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "target.log")); err == nil {
		t.Error("the symlink's target was created")
	}
}

// TestIntegrationNoPrivilege runs the command as an unprivileged user.
func TestIntegrationNoPrivilege(t *testing.T) {
	labtest.RequireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Copy the test binary where the unprivileged user can run it.
	dir, err := os.MkdirTemp("", "siftr-noprivilege")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(dir, "siftr-probe.test")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		state string
		want  []string
	}{
		{"diag", []string{"CAP_NET_RAW"}},
		{"exact", []string{"exact mode needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"}},
		// auto says why it falls back to diag, which then needs CAP_NET_RAW.
		{"auto", []string{"state source: diag", "needs CAP_BPF", "CAP_NET_RAW"}},
	} {
		cmd := exec.Command(exe, "--state", tc.state, "--iface", "lo", "--logfile", filepath.Join(dir, "x.log"))
		cmd.Env = append(os.Environ(), "SIFTR_PROBE_TEST_AS_MAIN=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != exitUsage {
			t.Fatalf("--state %s as nobody: err %v, output %q; want exit status 2", tc.state, err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("--state %s as nobody: %q, want it to say %q", tc.state, out, w)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "x.log")); err == nil {
			t.Errorf("--state %s: a log file was created although nothing could be captured", tc.state)
		}
	}
}

// TestIntegrationDiskFull fills the log's file system during a run: the run
// fails with exit status 1 and says how many records were lost.
func TestIntegrationDiskFull(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	logfile := filepath.Join(dir, "siftr.log")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS, "--logfile", logfile}, &stdout, &stderr)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(logfile); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("did not start: %s", stderr.String())
		}
	}
	send(t, &lab.A, "10.77.0.2:5201", 2<<20) // ~1500 records: far more than 64 KB
	cancel()
	if code := <-done; code != exitError {
		t.Errorf("exit %d, want %d", code, exitError)
	}
	msg := stderr.String()
	for _, want := range []string{"no space left on device", "records lost"} {
		if !strings.Contains(msg, want) {
			t.Errorf("stderr lacks %q:\n%s", want, msg)
		}
	}
}
