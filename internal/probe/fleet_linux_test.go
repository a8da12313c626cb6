//go:build linux

package probe

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/internal/syncbuf"
	"github.com/siftr-probe/siftr-probe/internal/traffic"
)

// fleetLab is one lab followed by an --all-netns run, and the client ports
// of the connections made in it.
type fleetLab struct {
	lab   *netlab.Lab
	srv   *traffic.Server
	mu    sync.Mutex
	ports map[uint16]bool
	done  sync.WaitGroup
	stop  chan struct{}
}

func startFleetLab(t *testing.T, name string) *fleetLab {
	t.Helper()
	lab, err := netlab.New(netlab.Config{Name: name, RateBitsPerSec: 50e6})
	if err != nil {
		t.Fatal(err)
	}
	l := &fleetLab{lab: lab, ports: map[uint16]bool{}, stop: make(chan struct{})}
	var ln net.Listener
	if err := lab.B.Do(func() (err error) { ln, err = net.Listen("tcp", "[::]:5201"); return err }); err != nil {
		lab.Close()
		t.Fatal(err)
	}
	l.srv = traffic.Serve(ln)
	return l
}

// send keeps making connections over IPv4 and IPv6 until stop.
func (l *fleetLab) send(t *testing.T) {
	l.done.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			addr := "10.77.0.2:5201"
			if i%2 == 1 {
				addr = "[fd77::2]:5201"
			}
			var c net.Conn
			if err := l.lab.A.Do(func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
				t.Errorf("dial %s: %v", addr, err)
				return
			}
			l.mu.Lock()
			l.ports[uint16(c.LocalAddr().(*net.TCPAddr).Port)] = true
			l.mu.Unlock()
			traffic.Send(context.Background(), c, 64<<10)
		}
	})
}

func (l *fleetLab) close() {
	close(l.stop)
	l.done.Wait()
	l.srv.Close()
	l.lab.Close()
}

// waitFollowed waits until the probe follows both hosts of every lab.
func waitFollowed(t *testing.T, p *Pipeline, labs ...*fleetLab) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		live := map[string]bool{}
		for _, n := range p.read().NetNS {
			live[n.Origin.NetNSName] = live[n.Origin.NetNSName] || !n.Ended
		}
		missing := 0
		for _, l := range labs {
			for _, h := range []*netlab.Host{&l.lab.A, &l.lab.B} {
				if !live[filepath.Base(h.NetNS)] {
					missing++
				}
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d namespaces not followed within 20 s", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestIntegrationAllNetNS follows every namespace while labs come and go:
// three labs with IPv4 and IPv6 traffic, one removed while its traffic
// flows, one added later. Every connection is logged under the namespace
// it belongs to, the identity holds per namespace and in total, and once
// the run is over nothing it opened is left.
func TestIntegrationAllNetNS(t *testing.T) {
	for _, st := range []string{StateDiag, StateExact} {
		t.Run(st, func(t *testing.T) { testAllNetNS(t, st) })
	}
}

func testAllNetNS(t *testing.T, state string) {
	labtest.RequireRoot(t)
	prefix := fmt.Sprintf("fl%d%s", os.Getpid()%10000, state[:1])
	fds0, gor0 := openFDs(t), runtime.NumGoroutine()

	var stderr syncbuf.Buffer
	defer func() {
		if t.Failed() {
			t.Logf("the probe's messages:\n%s", stderr.String())
		}
	}()
	var mu sync.Mutex
	byNS := map[string][]correlate.Record{} // records by namespace name
	started := make(chan struct{})
	logfile := filepath.Join(t.TempDir(), "fleet.log")
	p, err := New(Config{
		AllNetNS: true, NetNSInclude: []string{"netns=" + prefix + "*"}, Port: 5201, State: state,
		LogFile: logfile, Stderr: &stderr, StatusEvery: time.Hour, Started: func() { close(started) },
		OnRecord: func(r *correlate.Record) {
			mu.Lock()
			defer mu.Unlock()
			if r.Origin == nil {
				byNS[""] = append(byNS[""], *r)
				return
			}
			byNS[r.Origin.NetNSName] = append(byNS[r.Origin.NetNSName], *r)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *Summary, 1)
	go func() {
		sum, err := p.Run(ctx)
		if err != nil {
			t.Error(err)
		}
		done <- sum
	}()
	<-started

	labs := []*fleetLab{startFleetLab(t, prefix+"x"), startFleetLab(t, prefix+"y"), startFleetLab(t, prefix+"z")}
	waitFollowed(t, p, labs...)
	for _, l := range labs {
		l.send(t)
	}
	time.Sleep(1500 * time.Millisecond)
	labs[1].close() // goes away while its traffic flows (stopped just before)
	late := startFleetLab(t, prefix+"w")
	waitFollowed(t, p, late)
	late.send(t)
	labs = append(labs, late)
	time.Sleep(1500 * time.Millisecond)
	for _, i := range []int{0, 2, 3} {
		labs[i].close()
	}
	cancel()
	sum := <-done

	mu.Lock()
	defer mu.Unlock()
	// Attribution: a record of a lab's client side is one of that lab's
	// connections (the labs share their addresses: only the namespace
	// tells them apart).
	for _, l := range labs {
		for _, side := range []*netlab.Host{&l.lab.A, &l.lab.B} {
			name := filepath.Base(side.NetNS)
			recs := byNS[name]
			if len(recs) < 50 {
				t.Errorf("%s: %d records, want its traffic logged", name, len(recs))
			}
			for _, r := range recs {
				local := r.Pkt.Local()
				client := local.Port()
				if side == &l.lab.B {
					client = r.Pkt.Remote().Port()
				}
				if !l.ports[client] {
					t.Fatalf("%s: record %s -> %s is not one of its connections", name, local, r.Pkt.Remote())
				}
				if a := local.Addr().Unmap(); a != netip.MustParseAddr("10.77.0.1") && a != netip.MustParseAddr("10.77.0.2") &&
					a != netip.MustParseAddr("fd77::1") && a != netip.MustParseAddr("fd77::2") {
					t.Fatalf("%s: record with local address %s", name, a)
				}
			}
		}
	}
	// The identity, per namespace (ppl 1: lines = packets - skipped) and in total.
	seen := map[string]bool{}
	for _, n := range sum.NetNS {
		name := n.Origin.NetNSName
		seen[name] = true
		var lines [2]uint64
		for _, r := range byNS[name] {
			lines[r.Pkt.Dir]++
		}
		c := n.Counts
		for d := range 2 {
			if want := c.Packets[d] - c.SkipMalloc[d] - c.SkipTCPCB[d] - c.SkipInPCB[d] - c.SampledOut[d]; lines[d] != want {
				t.Errorf("%s direction %d: %d records, packets - skips = %d", name, d, lines[d], want)
			}
		}
	}
	for _, l := range labs {
		for _, h := range []*netlab.Host{&l.lab.A, &l.lab.B} {
			if name := filepath.Base(h.NetNS); !seen[name] {
				t.Errorf("%s not in the per-namespace counts", name)
			}
		}
	}
	f, err := os.Open(logfile)
	if err != nil {
		t.Fatal(err)
	}
	lg, err := siftrlog.Parse(f)
	f.Close()
	if err != nil {
		t.Fatalf("the shared log: %v", err)
	}
	if got, want := uint64(len(lg.Lines)), lg.Uint("total_tcp_pkts")-lg.Uint("total_skipped_tcp_pkts"); got != want {
		t.Errorf("shared log: %d lines, total packets - skipped = %d", got, want)
	}
	if !lg.Ordered() {
		t.Error("the shared log's lines are not in time order")
	}
	if strings.Contains(strings.Join(lg.Flows, ","), "0.0.0.0") {
		t.Errorf("flow list %q", lg.Flows)
	}
	// Nothing left: the namespaces' fds, the rings, the goroutines.
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) > fds0 || runtime.NumGoroutine() > gor0+2 {
		if time.Now().After(deadline) {
			ents, _ := os.ReadDir("/proc/self/fd")
			for _, e := range ents {
				l, _ := os.Readlink("/proc/self/fd/" + e.Name())
				t.Logf("fd %s -> %s", e.Name(), l)
			}
			t.Errorf("after the run: %d fds (%d before), %d goroutines (%d before)", openFDs(t), fds0, runtime.NumGoroutine(), gor0)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIntegrationLogPerNetNS gives each followed namespace's interface a
// SIFTR log of its own, each whole (enable line, data, disable line) with
// the identity of its own counts.
func TestIntegrationLogPerNetNS(t *testing.T) {
	labtest.RequireRoot(t)
	prefix := fmt.Sprintf("fn%d", os.Getpid()%10000)
	dir := t.TempDir()
	started := make(chan struct{})
	p, err := New(Config{
		AllNetNS: true, NetNSInclude: []string{"netns=" + prefix + "*"}, Port: 5201,
		LogPerNetNS: dir, Stderr: io.Discard, Started: func() { close(started) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := p.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	<-started
	l := startFleetLab(t, prefix)
	waitFollowed(t, p, l)
	l.send(t)
	time.Sleep(time.Second)
	l.close()
	cancel()
	<-done
	for _, h := range []*netlab.Host{&l.lab.A, &l.lab.B} {
		path := filepath.Join(dir, filepath.Base(h.NetNS)+"-"+h.Iface+".log")
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		lg, err := siftrlog.Parse(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if got, want := uint64(len(lg.Lines)), lg.Uint("total_tcp_pkts")-lg.Uint("total_skipped_tcp_pkts"); got < 50 || got != want {
			t.Errorf("%s: %d lines, total packets - skipped = %d (want 50 or more)", path, got, want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("%d logs in %s, want 2", len(ents), dir)
	}
}
