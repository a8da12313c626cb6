//go:build linux

package fidelity

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/probe"
	"github.com/siftr-probe/siftr-probe/internal/traffic"
)

// TestIntegrationExactMatchesTheKernel runs an unlimited transfer over a
// veth pair (offloads off) with the probe on the sender, and compares each
// inbound record with the tcp:tcp_probe event of its segment: in exact mode
// cwnd, ssthresh, snd_wnd and srtt are the kernel's in at least 99% of the
// matched records, over IPv4 and IPv6. diag mode's figures are logged for
// comparison (they are far lower at this rate; see bench/).
func TestIntegrationExactMatchesTheKernel(t *testing.T) {
	for _, tc := range []struct{ name, state, server string }{
		{"exact/ipv4", probe.StateExact, "10.77.0.2:5201"},
		{"exact/ipv6", probe.StateExact, "[fd77::2]:5201"},
		{"diag/ipv4", probe.StateDiag, "10.77.0.2:5201"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := measure(t, tc.state, tc.server)
			t.Logf("%s: %v", tc.name, &res)
			if res.Matched < res.Records/3 || res.Matched < 1000 {
				t.Fatalf("only %d of %d records matched: the matching is broken", res.Matched, res.Records)
			}
			if tc.state != probe.StateExact {
				return
			}
			for _, f := range []struct {
				name string
				n    int
			}{{"cwnd", res.Cwnd}, {"ssthresh", res.Ssthresh}, {"snd_wnd", res.SndWnd}, {"srtt", res.SRTT}} {
				if pct := res.Pct(f.n); pct < 99 {
					t.Errorf("%s equals the kernel's in %.2f%% of %d matched records, want at least 99%%", f.name, pct, res.Matched)
				}
			}
		})
	}
}

// measure runs one second of unlimited traffic to server with the probe on
// the sender in state mode, and compares its inbound records with the
// tracepoint.
func measure(t *testing.T, state, server string) Result {
	t.Helper()
	recs, evs, off := measureRaw(t, state, server)
	return Compare(recs, evs, off)
}

func measureRaw(t *testing.T, state, server string) ([]Record, []Event, int64) {
	t.Helper()
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	var ln net.Listener
	if err := lab.B.Do(func() (err error) { ln, err = net.Listen("tcp", server); return err }); err != nil {
		t.Fatal(err)
	}
	srv := traffic.Serve(ln)
	defer srv.Close()

	var mu sync.Mutex
	var recs []Record
	started := make(chan struct{})
	p, err := probe.New(probe.Config{
		Started: func() { close(started) },
		Iface:   lab.A.Iface, Port: 5201, NetNS: lab.A.NetNS, State: state,
		LogFile: "-", Stdout: discard{}, Stderr: discard{},
		OnRecord: func(r *correlate.Record) {
			if rec, in := FromRecord(r); in {
				mu.Lock()
				recs = append(recs, rec)
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tr, err := StartTrace(5201, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		sum, err := p.Run(ctx)
		if sum != nil && state == probe.StateExact {
			t.Logf("exact source: %+v", sum.Exact)
		}
		done <- err
	}()
	<-started
	var c net.Conn
	if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", server); return err }); err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithTimeout(context.Background(), time.Second)
	traffic.Send(tctx, c, 0)
	tcancel()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	evs, lost, err := tr.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if lost > 0 {
		t.Fatalf("the trace buffer lost %d events", lost)
	}
	return recs, evs, tr.Offset
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
