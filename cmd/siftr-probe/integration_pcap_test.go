package main

// Integration tests of --pcap: the packets beside the records, in real
// traffic between network namespaces, with both state sources.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/pcaptest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/internal/syncbuf"
	"github.com/siftr-probe/siftr-probe/internal/traffic"
	"github.com/siftr-probe/siftr-probe/output"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// readPcapFile reads a pcap file the probe wrote with both pcapng readers
// and with tcpdump -r, which must print one line per packet. Without
// tcpdump the test skips, except under CI=true, where it fails.
func readPcapFile(t *testing.T, path, iface string) *pcaptest.File {
	t.Helper()
	f, err := pcaptest.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if f.IfName != iface || f.LinkType != 101 || f.IfFilter != "tcp port 5201" {
		t.Errorf("%s: interface %q, link type %d, filter %q", path, f.IfName, f.LinkType, f.IfFilter)
	}
	lines, err := pcaptest.Tcpdump(path)
	if errors.Is(err, exec.ErrNotFound) {
		if os.Getenv("CI") == "true" {
			t.Fatal("tcpdump is not installed (apt-get install tcpdump); under CI=true this test does not skip")
		}
		t.Skip("tcpdump is not installed (apt-get install tcpdump)")
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != len(f.Packets) {
		t.Errorf("%s: tcpdump printed %d lines for %d packets", path, len(lines), len(f.Packets))
	}
	for i, ln := range lines {
		if !strings.Contains(ln, " IP") || !strings.Contains(ln, "5201") {
			t.Errorf("%s: tcpdump line %d: %q", path, i, ln)
			break
		}
	}
	return f
}

// parseComment splits a packet comment into its keys.
func parseComment(t *testing.T, c string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, kv := range strings.Fields(c) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("comment %q: %q is not key=value", c, kv)
		}
		m[k] = v
	}
	return m
}

// packetKey describes a packet as both the log line and the pcap block
// must give it: time (µs), direction, the local socket's view, and the
// record's cwnd, ssthresh, srtt, flowid, state and state source.
func lineKey(ln *siftrlog.Line, state string) string {
	return fmt.Sprintf("%d %c %s %s cwnd=%d ssthresh=%d srtt=%d flowid=%d state=%d source=%s",
		ln.TimeUS, ln.Dir, ln.Local, ln.Remote, ln.Num[siftrlog.FCwnd], ln.Num[siftrlog.FSsthresh],
		ln.Num[siftrlog.FSRTT], ln.Num[siftrlog.FFlowID], ln.Num[siftrlog.FState], state)
}

var linuxStates = map[string]uint8{"ESTABLISHED": tcp.StateEstablished, "FIN_WAIT1": tcp.StateFinWait1, "FIN_WAIT2": tcp.StateFinWait2,
	"CLOSE_WAIT": tcp.StateCloseWait, "LAST_ACK": tcp.StateLastAck, "CLOSING": tcp.StateClosing}

func packetKey(t *testing.T, p *pcaptest.Packet) string {
	t.Helper()
	if len(p.Comments) != 1 {
		t.Fatalf("packet at %d: %d comments", p.Time, len(p.Comments))
	}
	c := parseComment(t, p.Comments[0])
	st, ok := linuxStates[c["tcp_state"]]
	if !ok {
		t.Fatalf("comment %q: tcp_state is not a logged state", p.Comments[0])
	}
	local, remote, dir := p.Src, p.Dst, byte('o')
	if p.Dir == tcp.DirIn {
		local, remote, dir = p.Dst, p.Src, 'i'
	}
	return fmt.Sprintf("%d %c %s %s cwnd=%s ssthresh=%s srtt=%s flowid=%s state=%d source=%s",
		p.Time/1000, dir, local, remote, c["snd_cwnd"], c["snd_ssthresh"], c["srtt_us"], c["flowid"],
		output.FreeBSDState(st), c["state_source"])
}

// checkPcapMatchesLog checks that the pcap file's packets with a comment
// are the log's data lines, one for one (in the same order when ordered).
func checkPcapMatchesLog(t *testing.T, f *pcaptest.File, l *siftrlog.Log, state string, ordered bool) {
	t.Helper()
	var got, want []string
	for i := range f.Packets {
		p := &f.Packets[i]
		if !p.HasDir {
			t.Fatalf("packet %d has no direction in epb_flags", i)
		}
		if p.Src.Addr().Is4() && !p.IPv4ChecksumOK {
			t.Fatalf("packet %d: bad IPv4 header checksum", i)
		}
		if p.PayloadLen == 0 && !p.TCPChecksumOK {
			t.Fatalf("packet %d: no payload, but a bad TCP checksum", i)
		}
		if len(p.Comments) > 0 {
			got = append(got, packetKey(t, p))
		}
	}
	for i := range l.Lines {
		want = append(want, lineKey(&l.Lines[i], state))
	}
	if !ordered {
		slices.Sort(got)
		slices.Sort(want)
	}
	if len(got) != len(want) {
		t.Fatalf("%d packets with a record's state, %d data lines", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("packet %d with state:\n  %s\nlog line:\n  %s", i, got[i], want[i])
		}
	}
}

// TestIntegrationPcap logs a transfer with --pcap: the file opens with both
// pcapng readers and tcpdump, has one packet per data line, in the log's
// order, each with its record's state as the comment.
func TestIntegrationPcap(t *testing.T) { forEachState(t, testPcap) }

func testPcap(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "[::]:5201")
	pcap := filepath.Join(t.TempDir(), "siftr.pcapng")
	r := runProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS, "--pcap", pcap}, func() {
		send(t, &lab.A, "10.77.0.2:5201", 1<<20)
		send(t, &lab.A, "[fd77::2]:5201", 1<<20)
	})
	checkIdentity(t, r.log)
	f := readPcapFile(t, pcap, lab.A.Iface)
	if len(f.Packets) != len(r.log.Lines) {
		t.Fatalf("%d packets, %d data lines", len(f.Packets), len(r.log.Lines))
	}
	checkPcapMatchesLog(t, f, r.log, state, true)
	var v4, v6, payload int
	for i := range f.Packets {
		p := &f.Packets[i]
		if p.Src.Addr().Is4() {
			v4++
		} else {
			v6++
		}
		if p.CapLen+p.PayloadLen != p.Len {
			t.Fatalf("packet %d: captured %d + payload %d != length %d", i, p.CapLen, p.PayloadLen, p.Len)
		}
		payload += p.PayloadLen
	}
	if v4 == 0 || v6 == 0 {
		t.Errorf("%d IPv4 and %d IPv6 packets, want both", v4, v6)
	}
	// Nearly all of the 2 MiB sent: diag mode skips the packets whose
	// socket is gone by their lookup (after the close).
	if payload < 9*(2<<20)/10 {
		t.Errorf("the packets carry %d bytes of payload, want nearly the 2 MiB sent", payload)
	}
	if !strings.Contains(r.stderr, "pcap: ") {
		t.Errorf("the summary says nothing of the pcap file: %s", r.stderr)
	}
}

// TestIntegrationPcapAll writes every captured packet (--pcap-all): in diag
// mode with --ppl 3, the file has every packet the disable line counts,
// the logged ones with their state; in exact mode (--ppl 1 only) every
// packet that reaches the probe is logged, so the file is the log's.
func TestIntegrationPcapAll(t *testing.T) { forEachState(t, testPcapAll) }

func testPcapAll(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	pcap := filepath.Join(t.TempDir(), "all.pcapng")
	ppl := "3"
	if state == "exact" {
		ppl = "1"
	}
	r := runProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS,
		"--pcap", pcap, "--pcap-all", "--ppl", ppl, "--workers", "2"}, func() {
		send(t, &lab.A, "10.77.0.2:5201", 1<<20)
	})
	f := readPcapFile(t, pcap, lab.A.Iface)
	l := r.log
	total := l.Uint("total_tcp_pkts")
	if state == "exact" {
		// SIFTR's skips (the handshake, sockets not established) are
		// counted in the kernel and never reach the probe.
		if len(f.Packets) != len(l.Lines) {
			t.Errorf("%d packets, %d data lines", len(f.Packets), len(l.Lines))
		}
		if uint64(len(f.Packets)) != total-l.Uint("total_skipped_tcp_pkts") {
			t.Errorf("%d packets, %d counted - %d skipped", len(f.Packets), total, l.Uint("total_skipped_tcp_pkts"))
		}
	} else {
		if uint64(len(f.Packets)) != total {
			t.Errorf("%d packets in the pcap file, total_tcp_pkts %d", len(f.Packets), total)
		}
		var syn int
		for i := range f.Packets {
			if f.Packets[i].Flags&tcp.FlagSYN != 0 {
				syn++
				if len(f.Packets[i].Comments) != 0 {
					t.Errorf("a handshake segment has a record's state: %q", f.Packets[i].Comments)
				}
			}
		}
		if syn != 2 {
			t.Errorf("%d SYN segments, want the client's SYN and the SYN-ACK", syn)
		}
		if len(l.Lines) >= len(f.Packets)/2 {
			t.Errorf("%d data lines of %d packets at ppl 3", len(l.Lines), len(f.Packets))
		}
	}
	for i := 1; i < len(f.Packets); i++ {
		if f.Packets[i].Time < f.Packets[i-1].Time {
			t.Fatalf("packet %d is older than packet %d", i, i-1)
		}
	}
	checkPcapMatchesLog(t, f, l, state, false)
}

// TestIntegrationPcapSIGHUP rotates the log and the pcap file as
// logrotate does: both are reopened by one SIGHUP, each pcap file is a
// valid pcapng file on its own, and each has one packet per data line of
// the log file beside it.
func TestIntegrationPcapSIGHUP(t *testing.T) { forEachState(t, testPcapSIGHUP) }

func testPcapSIGHUP(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 50e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	dir := t.TempDir()
	logfile := filepath.Join(dir, "siftr.log")
	pcap := filepath.Join(dir, "siftr.pcapng")

	var c net.Conn
	if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", "10.77.0.2:5201"); return err }); err != nil {
		t.Fatal(err)
	}
	p := startProbe(t, []string{"--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS,
		"--logfile", logfile, "--pcap", pcap}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { traffic.Send(ctx, c, 0) })
	defer func() { cancel(); wg.Wait() }()

	time.Sleep(400 * time.Millisecond)
	for _, f := range []string{logfile, pcap} {
		if err := os.Rename(f, f+".1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err1 := os.Stat(logfile)
		_, err2 := os.Stat(pcap)
		if err1 == nil && err2 == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new log and pcap file after SIGHUP: %s", p.stderr.String())
		}
	}
	time.Sleep(400 * time.Millisecond)
	p.stop()

	var total int
	for _, name := range []string{".1", ""} {
		b, err := os.ReadFile(logfile + name)
		if err != nil {
			t.Fatal(err)
		}
		l, err := siftrlog.Parse(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("log%s: %v", name, err)
		}
		f := readPcapFile(t, pcap+name, lab.A.Iface)
		if len(f.Packets) < 50 {
			t.Errorf("pcap%s: %d packets: want traffic in both files", name, len(f.Packets))
		}
		if len(f.Packets) != len(l.Lines) {
			t.Fatalf("pcap%s: %d packets, its log %d data lines", name, len(f.Packets), len(l.Lines))
		}
		checkPcapMatchesLog(t, f, l, state, true)
		total += len(f.Packets)
	}
	if strings.Contains(p.stderr.String(), "reopen") {
		t.Errorf("stderr reports a reopen problem: %s", p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "pcap: "+strconv.Itoa(total)+" packets") {
		t.Errorf("the summary does not count the %d packets of both files: %s", total, p.stderr.String())
	}
}

// TestIntegrationPcapSetupErrors checks that the pcap file follows the log
// file's rules and that --pcap-all is refused where it cannot work, each
// with exit 2 and one line, and that a pcap file made for a run that did
// not start is removed.
func TestIntegrationPcapSetupErrors(t *testing.T) {
	labtest.RequireRoot(t)
	dir := t.TempDir()
	link := filepath.Join(dir, "link.pcapng")
	if err := os.Symlink(filepath.Join(dir, "target.pcapng"), link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.pcapng")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "siftr.log")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"symlink", []string{"--pcap", link}, "cannot write pcap file " + link + ": it is a symbolic link; refusing to follow it"},
		{"FIFO", []string{"--pcap", fifo}, "cannot write pcap file " + fifo + ": it is a named pipe (FIFO), not a regular file"},
		{"missing directory", []string{"--pcap", "/nonexistent/dir/p.pcapng"}, "cannot write pcap file /nonexistent/dir/p.pcapng: its directory does not exist"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append([]string{"--iface", "lo", "--logfile", log}, tc.args...), &stdout, &stderr)
		if code != exitUsage || stderr.String() != "siftr-probe: "+tc.want+"\n" {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 and %q", tc.name, code, stderr.String(), tc.want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "target.pcapng")); err == nil {
		t.Error("the symlink's target was created")
	}
	// --state auto that picks exact mode cannot give --pcap-all at ppl 10.
	made := filepath.Join(dir, "made.pcapng")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--iface", "lo", "--logfile", log, "--state", "auto", "--ppl", "10", "--pcap", made, "--pcap-all", "--duration", "500ms", "--quiet"}, &stdout, &stderr)
	if strings.Contains(stderr.String(), "state source: exact") {
		if code != exitUsage || !strings.Contains(stderr.String(), "--pcap-all needs --ppl 1 in exact mode") {
			t.Errorf("auto, exact, ppl 10: exit %d, stderr %q", code, stderr.String())
		}
		if _, err := os.Lstat(made); err == nil {
			t.Error("the pcap file made for a run that did not start was left behind")
		}
	} else {
		t.Logf("--state auto chose diag mode: %s", stderr.String())
	}
}

// TestIntegrationPcapDiskFull fills the pcap file's file system during a
// run: the log is not affected (complete, identity exact), the pcap file
// keeps whole blocks and stays readable, stderr says what was lost, and
// the run exits 1.
func TestIntegrationPcapDiskFull(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	pcap := filepath.Join(dir, "siftr.pcapng")
	logfile := filepath.Join(t.TempDir(), "siftr.log")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS, "--logfile", logfile, "--pcap", pcap, "--status-interval", "0"}, &stdout, &stderr)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(logfile); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("did not start: %s", stderr.String())
		}
	}
	send(t, &lab.A, "10.77.0.2:5201", 2<<20) // ~1500 blocks of about 100 bytes: more than 64 KB
	time.Sleep(50 * time.Millisecond)
	cancel()
	code := <-done
	msg := stderr.String()
	if code != exitError {
		t.Errorf("exit %d, want %d: %s", code, exitError, msg)
	}
	for _, want := range []string{"writing pcap file " + pcap, "no space left on device", "packets lost"} {
		if !strings.Contains(msg, want) {
			t.Errorf("stderr lacks %q:\n%s", want, msg)
		}
	}
	b, err := os.ReadFile(logfile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := siftrlog.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, l)
	f := readPcapFile(t, pcap, lab.A.Iface)
	if len(f.Packets) == 0 || len(f.Packets) >= len(l.Lines) {
		t.Fatalf("%d packets in the full pcap file, %d data lines", len(f.Packets), len(l.Lines))
	}
	// The file holds the first packets, those of the first data lines.
	l.Lines = l.Lines[:len(f.Packets)]
	checkPcapMatchesLog(t, f, l, "diag", true)
}

// TestIntegrationPcapCycles logs two cycles (siftr-probe ctl enable and
// disable) with --pcap --pcap-all: the pcap file is the run's, opened once,
// so it holds both cycles' packets in one section, nothing from between
// them, and its logged packets are the two sections' data lines. In exact
// mode with --pcap-all, set ppl above 1 is refused.
func TestIntegrationPcapCycles(t *testing.T) { forEachState(t, testPcapCycles) }

func testPcapCycles(t *testing.T, state string) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 100e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	dir := t.TempDir()
	logfile, pcap := filepath.Join(dir, "siftr.log"), filepath.Join(dir, "siftr.pcapng")
	p := startCtlProbe(t, "--state", state, "--iface", lab.A.Iface, "--port", "5201", "--netns", lab.A.NetNS,
		"--logfile", logfile, "--pcap", pcap, "--pcap-all", "--start-disabled")
	_, stop := stream(t, lab, "10.77.0.2:5201")
	for i := range 2 {
		p.ctl(exitOK, "enable")
		time.Sleep(200 * time.Millisecond)
		if i == 1 && state == "exact" {
			if out := p.ctl(exitUsage, "set", "ppl", "10"); !strings.Contains(out, "--pcap-all needs ppl 1 in exact mode") {
				t.Errorf("set ppl 10 in exact mode with --pcap-all: %q", out)
			}
		}
		p.ctl(exitOK, "disable")
		size := fileSize(t, pcap)
		time.Sleep(150 * time.Millisecond)
		if got := fileSize(t, pcap); got != size {
			t.Errorf("after disable %d the pcap file grew from %d to %d bytes", i+1, size, got)
		}
	}
	stop()
	p.stop()

	secs := sections(t, logfile)
	if len(secs) != 2 {
		t.Fatalf("%d sections, want 2", len(secs))
	}
	f := readPcapFile(t, pcap, lab.A.Iface)
	var total, skipped, lines uint64
	for _, s := range secs {
		total += s.uint("total_tcp_pkts")
		skipped += s.uint("total_skipped_tcp_pkts")
		lines += uint64(len(s.lines))
		// No packet of the file is from between the two cycles.
		en, _ := strconv.ParseInt(s.enable["enable_time_secs"], 10, 64)
		enu, _ := strconv.ParseInt(s.enable["enable_time_usecs"], 10, 64)
		dis, _ := strconv.ParseInt(s.disable["disable_time_secs"], 10, 64)
		disu, _ := strconv.ParseInt(s.disable["disable_time_usecs"], 10, 64)
		from, to := (en*1e6+enu-1000)*1000, (dis*1e6+disu)*1000
		var in int
		for i := range f.Packets {
			if f.Packets[i].Time >= from && f.Packets[i].Time <= to {
				in++
			}
		}
		if in == 0 {
			t.Errorf("no packet of the pcap file is in the cycle from %d to %d", from, to)
		}
	}
	want := total
	if state == "exact" {
		want = total - skipped // SIFTR's skips never reach the probe
	}
	if uint64(len(f.Packets)) != want || lines == 0 {
		t.Errorf("%d packets in the pcap file, want %d (the two cycles' total_tcp_pkts %d, skipped %d; %d lines)",
			len(f.Packets), want, total, skipped, lines)
	}
	for i := 1; i < len(f.Packets); i++ {
		if f.Packets[i].Time < f.Packets[i-1].Time {
			t.Fatalf("packet %d is older than packet %d", i, i-1)
		}
	}
	l, err := siftrlog.Parse(bytes.NewReader(mustRead(t, logfile)))
	if err != nil {
		t.Fatal(err)
	}
	checkPcapMatchesLog(t, f, l, state, false)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
