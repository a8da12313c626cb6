//go:build linux

package diag

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	mdnetlink "github.com/mdlayher/netlink"
	vnetlink "github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/netns"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// benchConns are the numbers of live loopback connections (two sockets
// each) the lookup benchmarks run against: the cost of an exact lookup
// should not depend on them.
var benchConns = []int{100, 1000, 10000}

// fixture is a namespace holding n established loopback connections.
type fixture struct {
	ns string
	qs []tcp.Query // both ends of every connection
}

// newFixture builds a fresh lab with n connections, removed when b ends.
// The dialing ends live in a helper process (this test binary, running
// TestBenchDialHelper) so that neither process needs more than n file
// descriptors: RLIMIT_NOFILE's hard limit may not be raisable (no
// CAP_SYS_RESOURCE in a container).
func newFixture(b *testing.B, n int) *fixture {
	b.Helper()
	raiseNofile(b, n+1024)
	lab := labtest.NewT(b, netlab.Config{Name: "diagb"})
	f := &fixture{ns: lab.A.NetNS}
	ln := listen(b, f.ns, "tcp4", "127.0.0.1:0")
	laddr := ln.Addr().(*net.TCPAddr).AddrPort()

	accepted := make(chan []net.Conn, 1)
	go func() {
		conns := make([]net.Conn, 0, n)
		for range n {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			conns = append(conns, c)
		}
		accepted <- conns
	}()

	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchDialHelper$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("DIAG_BENCH_DIAL=%s,%d", laddr, n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	// Started from a thread in the namespace, the helper is in it too.
	if err := netns.Do(f.ns, cmd.Start); err != nil {
		b.Fatalf("start dial helper: %v", err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	var clients []netip.AddrPort
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if line == "READY" {
			break
		}
		if a, ok := strings.CutPrefix(line, "CONN "); ok {
			clients = append(clients, netip.MustParseAddrPort(a))
		}
	}
	if len(clients) != n {
		b.Fatalf("dial helper made %d of %d connections", len(clients), n)
	}
	servers := <-accepted
	if len(servers) != n {
		b.Fatalf("accepted %d of %d", len(servers), n)
	}
	b.Cleanup(func() {
		for _, c := range servers {
			c.Close()
		}
	})
	for i := range n {
		f.qs = append(f.qs, tcp.Query{Local: clients[i], Remote: laddr}, queryOf(servers[i]))
	}
	return f
}

// TestBenchDialHelper runs in the helper process of newFixture: it dials
// the connections, prints their local addresses and holds them until its
// standard input closes.
func TestBenchDialHelper(t *testing.T) {
	v := os.Getenv("DIAG_BENCH_DIAL")
	if v == "" {
		t.Skip("helper for the benchmarks")
	}
	addr, ns, _ := strings.Cut(v, ",")
	n, err := strconv.Atoi(ns)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(os.Stdout)
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(w, "CONN %s\n", c.LocalAddr())
	}
	fmt.Fprintln(w, "READY")
	w.Flush()
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	os.Exit(0)
}

func raiseNofile(b *testing.B, want int) {
	b.Helper()
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		b.Fatal(err)
	}
	if r.Cur >= uint64(want) {
		return
	}
	r.Cur = uint64(want)
	r.Max = max(r.Max, r.Cur)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		b.Fatalf("raise RLIMIT_NOFILE to %d: %v", want, err)
	}
}

// checkAllFound fails the benchmark unless every query is Found.
func checkAllFound(b *testing.B, c *Client, qs []tcp.Query) {
	b.Helper()
	out := make([]tcp.Snapshot, len(qs))
	if err := c.Lookup(qs, out); err != nil {
		b.Fatal(err)
	}
	for i, s := range out {
		if s.Status != tcp.Found {
			b.Fatalf("query %d %v: %v", i, qs[i], s.Status)
		}
	}
}

// BenchmarkLookupBatched: one op is one Lookup of 64 sockets (one sendmsg,
// one or a few recvmmsg), walking all the host's sockets in turn; ns/socket
// is the cost per socket.
func BenchmarkLookupBatched(b *testing.B) {
	benchBatched(b, func(qs []tcp.Query) func(i int) []tcp.Query {
		ring := append(append([]tcp.Query{}, qs...), qs[:DefaultBatchSize]...)
		return func(i int) []tcp.Query {
			start := (i * DefaultBatchSize) % len(qs)
			return ring[start : start+DefaultBatchSize]
		}
	})
}

// BenchmarkLookupBatchedHot is BenchmarkLookupBatched over the same 64
// sockets every time, with n connections on the host: the sockets a probe
// looks up are the active ones, which the stack keeps in the CPU caches.
// It separates what the socket count costs the lookup itself (nothing: an
// exact hash lookup) from cache misses on sockets nobody touched lately.
func BenchmarkLookupBatchedHot(b *testing.B) {
	benchBatched(b, func(qs []tcp.Query) func(i int) []tcp.Query {
		// Spread over the whole hash table, not the first connections made.
		hot := make([]tcp.Query, DefaultBatchSize)
		for i := range hot {
			hot[i] = qs[i*len(qs)/DefaultBatchSize]
		}
		return func(int) []tcp.Query { return hot }
	})
}

// benchBatched runs batched lookups against each fixture size; pick, given
// all the fixture's queries, returns the batch for the i-th op.
func benchBatched(b *testing.B, pick func(qs []tcp.Query) func(i int) []tcp.Query) {
	for _, n := range benchConns {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			f := newFixture(b, n)
			c := openT(b, &Config{NetNS: f.ns, BatchSize: DefaultBatchSize})
			checkAllFound(b, c, f.qs)
			batchOf := pick(f.qs)
			out := make([]tcp.Snapshot, DefaultBatchSize)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := c.Lookup(batchOf(i), out); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i*DefaultBatchSize), "ns/socket")
		})
	}
}

// BenchmarkLookupSingle: one exact lookup per sendmsg.
func BenchmarkLookupSingle(b *testing.B) {
	for _, n := range benchConns {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			f := newFixture(b, n)
			c := openT(b, &Config{NetNS: f.ns, BatchSize: 1})
			checkAllFound(b, c, f.qs)
			out := make([]tcp.Snapshot, 1)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := c.Lookup(f.qs[i%len(f.qs):i%len(f.qs)+1], out); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i), "ns/socket")
		})
	}
}

// BenchmarkLookupMdlayher: the same exact request with
// github.com/mdlayher/netlink's Conn.Execute, one socket per call, the reply
// parsed by this package.
func BenchmarkLookupMdlayher(b *testing.B) {
	for _, n := range benchConns {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			f := newFixture(b, n)
			nsh, err := vnetns.GetFromPath(f.ns)
			if err != nil {
				b.Fatal(err)
			}
			defer nsh.Close()
			conn, err := mdnetlink.Dial(unix.NETLINK_INET_DIAG, &mdnetlink.Config{NetNS: int(nsh)})
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			reqs := make([][]byte, len(f.qs))
			for i, q := range f.qs {
				r, _ := makeRequest(q)
				buf := make([]byte, requestLen)
				putRequest(buf, 0, &r)
				reqs[i] = buf[sizeofNlmsghdr:]
			}
			var s tcp.Snapshot
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				msgs, err := conn.Execute(mdnetlink.Message{
					Header: mdnetlink.Header{Type: sockDiagByFamily, Flags: mdnetlink.Request},
					Data:   reqs[i%len(reqs)],
				})
				if err != nil || len(msgs) != 1 {
					b.Fatalf("Execute: %d messages, %v", len(msgs), err)
				}
				if parseReply(uint16(msgs[0].Header.Type), msgs[0].Data, &s); s.Status != tcp.Found {
					b.Fatalf("status %v", s.Status)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i), "ns/socket")
		})
	}
}

// BenchmarkLookupVishvananda: github.com/vishvananda/netlink's SocketGet,
// its call for one socket by 4-tuple. It sends a dump filtered by the
// kernel on the ports (the kernel walks the socket table) and returns no
// tcp_info.
func BenchmarkLookupVishvananda(b *testing.B) {
	for _, n := range benchConns {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			f := newFixture(b, n)
			nsh, err := vnetns.GetFromPath(f.ns)
			if err != nil {
				b.Fatal(err)
			}
			defer nsh.Close()
			h, err := vnetlink.NewHandleAt(nsh, unix.NETLINK_INET_DIAG)
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			type pair struct{ l, r *net.TCPAddr }
			addrs := make([]pair, len(f.qs))
			for i, q := range f.qs {
				addrs[i] = pair{net.TCPAddrFromAddrPort(q.Local), net.TCPAddrFromAddrPort(q.Remote)}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p := addrs[i%len(addrs)]
				s, err := h.SocketGet(p.l, p.r)
				if err != nil {
					b.Fatalf("SocketGet: %v", err)
				}
				if s.ID.SourcePort != uint16(p.l.Port) {
					b.Fatalf("wrong socket %+v", s.ID)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i), "ns/socket")
		})
	}
}

// BenchmarkParseReply is the user-space part of one lookup: parsing a
// recorded reply with tcp_info.
func BenchmarkParseReply(b *testing.B) {
	d := readTestdata(b, "reply-established-v4.bin")
	var s tcp.Snapshot
	b.ReportAllocs()
	for b.Loop() {
		typ, _, payload, _, _ := nextMessage(d)
		parseReply(typ, payload, &s)
	}
	if s.Status != tcp.Found {
		b.Fatal(s.Status)
	}
}
