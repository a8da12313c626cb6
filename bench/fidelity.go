package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/fidelity"
	"github.com/siftr-probe/siftr-probe/internal/probe"
)

// fidelityCase is one traffic pattern whose records are checked against
// the kernel's tcp:tcp_probe events.
type fidelityCase struct {
	name     string
	side     string // "A" sender, "B" receiver
	parallel int
}

var fidelityCases = []fidelityCase{
	{"1 flow, sender", "A", 1},
	{"1 flow, receiver", "B", 1},
	{"64 flows, sender", "A", 64},
}

// fidelityResult is one case in one state source, over the runs.
type fidelityResult struct {
	c     fidelityCase
	state string
	runs  []fidelity.Result
	lost  uint64 // trace events the buffer lost, over the runs
	err   string
}

// runFidelity runs every case with both state sources in turn, the probe
// in this process (records keep their skb addresses in exact mode, so they
// are matched to their events by address; diag records by order), with
// unlimited traffic, offloads off, ppl 1.
func runFidelity(ctx context.Context, o *options) []fidelityResult {
	var out []fidelityResult
	d := time.Duration(o.seconds * float64(time.Second))
	for _, c := range fidelityCases {
		logf("fidelity: %s", c.name)
		res := map[string]*fidelityResult{}
		for _, st := range []string{probe.StateDiag, probe.StateExact} {
			res[st] = &fidelityResult{c: c, state: st}
		}
		err := func() error {
			lab, err := newBenchLab(true)
			if err != nil {
				return err
			}
			defer lab.Close()
			if err := lab.startServer(o.useIperf, false); err != nil {
				return err
			}
			for r := range o.runs {
				for _, st := range []string{probe.StateDiag, probe.StateExact} {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					fr, lost, err := fidelityRun(ctx, o, lab, c, st, d)
					if err != nil {
						logf("  run %d %-5s error: %v", r+1, st, err)
						res[st].err = err.Error()
						continue
					}
					logf("  run %d %-5s %v", r+1, st, &fr)
					res[st].runs = append(res[st].runs, fr)
					res[st].lost += lost
				}
			}
			return nil
		}()
		for _, st := range []string{probe.StateDiag, probe.StateExact} {
			if err != nil {
				res[st].err = err.Error()
			}
			out = append(out, *res[st])
		}
	}
	return out
}

// fidelityRun is one measurement.
func fidelityRun(ctx context.Context, o *options, lab *benchLab, c fidelityCase, state string, d time.Duration) (fidelity.Result, uint64, error) {
	h := &lab.A
	if c.side == "B" {
		h = &lab.B
	}
	var (
		mu      sync.Mutex
		recs    []fidelity.Record
		started = make(chan struct{})
	)
	p, err := probe.New(probe.Config{
		Iface: h.Iface, Port: port, NetNS: h.NetNS, State: state,
		LogFile: "-", Stdout: io.Discard, Stderr: io.Discard,
		Started: func() { close(started) },
		OnRecord: func(r *correlate.Record) {
			if rec, in := fidelity.FromRecord(r); in {
				mu.Lock()
				recs = append(recs, rec)
				mu.Unlock()
			}
		},
	})
	if err != nil {
		return fidelity.Result{}, 0, err
	}
	defer p.Close()
	tr, err := fidelity.StartTrace(port, 128<<10)
	if err != nil {
		return fidelity.Result{}, 0, err
	}
	defer tr.Close()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := p.Run(rctx); done <- err }()
	<-started
	_, berr := lab.bulk(ctx, o.useIperf, c.parallel, d)
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		return fidelity.Result{}, 0, err
	}
	if berr != nil {
		return fidelity.Result{}, 0, fmt.Errorf("traffic: %w", berr)
	}
	evs, lost, err := tr.Stop()
	if err != nil {
		return fidelity.Result{}, 0, err
	}
	return fidelity.Compare(recs, evs, tr.Offset), lost, nil
}
