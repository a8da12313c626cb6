package probe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/metrics"
	"github.com/siftr-probe/siftr-probe/output"
)

// cycle is one logging cycle, SIFTR's enable to disable: a state source,
// an engine and a writer of its own, so that counts and flows start from
// zero at each enable, as siftr_manage_ops does, and the log is opened at
// the enable and closed after the disable line.
type cycle struct {
	n   int // 1 for the first cycle of the run
	src source
	out *output.Writer
	eng *correlate.Engine

	start time.Time // when the source opened: the enable line's time
	stop  context.CancelFunc
	done  chan struct{} // closed once the cycle ended

	// Written before done is closed, under Pipeline.mu.
	ended  bool
	endAt  time.Time
	srcErr error // the source's error, if it failed
	werr   error // the log's first write error
	perr   error // the pcap file's first write error

	// statsMu guards released and final: readers hold it while they read
	// the source's counters, so that it is not released under them.
	statsMu  sync.RWMutex
	released bool          // the source is closed: final holds the counters
	final    metrics.Stats // the counters at the end
}

// openCycle opens the state source, the log and the engine of a cycle with
// cfg's settings, and the run's pcap file (Config.Pcap) if it is not open
// yet: the cycles' writers write it in turn. Nothing is logged yet, but
// the source counts packets already. An error is a *SetupError.
func (p *Pipeline) openCycle(cfg *Config) (*cycle, error) {
	format, err := output.FormatByName(cfg.Format)
	if err != nil {
		return nil, &SetupError{err}
	}
	// The cycle counts from the moment its source opens: its enable line
	// has that time, so that no record is older than it.
	c := &cycle{start: time.Now()}
	if c.src, err = openSource(cfg); err != nil {
		return nil, err
	}
	if cfg.Pcap != "" && p.pcap == nil {
		if err := p.openPcap(cfg, c.src.state()); err != nil {
			c.src.Close()
			return nil, err
		}
	}
	c.out, err = output.OpenWriter(&output.WriterConfig{
		Pcap:     p.pcap,
		KeepPcap: true, // the run's: Pipeline.Close closes it
		Path:     cfg.LogFile,
		Stdout:   cfg.Stdout,
		Format:   format,
		Workers:  c.src.Producers(),
		OnRecord: cfg.OnRecord,
		Timeline: &p.timeline,
		OnWarning: func(m string) {
			fmt.Fprintf(cfg.Stderr, "siftr-probe: %s %s\n", time.Now().Format("15:04:05"), m)
		},
	})
	if err != nil {
		c.src.Close()
		return nil, explainLog(cfg.LogFile, err)
	}
	if c.eng, err = correlate.NewEngine(engineConfig(cfg, originOf(cfg.NetNS)), c.out, c.src.Producers()); err != nil {
		c.close()
		return nil, &SetupError{err}
	}
	if ps, ok := c.src.(*packetSource); ok && p.pcap != nil && cfg.PcapAll {
		ps.tap = c.out // --pcap-all: every ring block to the pcap file too
	}
	return c, nil
}

// close releases a cycle that never began: its source, and its log,
// closed without a line.
func (c *cycle) close() {
	c.src.Close()
	c.out.Close(nil)
}

// begin writes c's enable line and starts it: its source delivers to its
// engine until c.end. The caller holds p.changeMu. On error nothing was
// logged and c is released.
func (p *Pipeline) begin(c *cycle) error {
	if err := c.out.Start(&output.Header{Time: c.start, SysVer: sysVer(), IPMode: 6, StateSource: c.src.state()}); err != nil {
		path := c.out.Path()
		c.out.Close(nil)
		c.src.Close()
		return explainLog(path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stop, c.done = cancel, make(chan struct{})
	p.mu.Lock()
	p.cycles++
	c.n = p.cycles
	p.cur, p.last = c, c
	p.mu.Unlock()
	go p.run(ctx, c)
	return nil
}

// run is a cycle from its enable line to its disable line. The shutdown
// order: the source stops and delivers what it observed (the engine's
// counts are then final), the pruner stops, the writer drains its queue
// and writes the disable line, then the source is released.
func (p *Pipeline) run(ctx context.Context, c *cycle) {
	var wg sync.WaitGroup
	wg.Go(func() { c.eng.Run(ctx) })
	srcErr := c.src.Run(ctx, c.eng)
	failed := ctx.Err() == nil // the source stopped by itself
	c.stop()
	wg.Wait()
	path := c.out.Path()
	werr := c.out.Close(func() *output.Footer {
		return &output.Footer{Time: time.Now(), Counts: c.eng.Counts(), Flows: c.eng.Flows()}
	})
	c.statsMu.Lock()
	c.final, c.released = c.read(), true
	c.src.Close()
	c.statsMu.Unlock()
	if werr != nil {
		werr = fmt.Errorf("writing %s: %w", path, werr)
	}
	perr := c.out.PcapErr()
	if perr != nil {
		perr = fmt.Errorf("writing pcap file %s: %w (%d packets lost)", p.cfg.Pcap, perr, c.final.Writer.Pcap.Lost)
	}
	if failed && srcErr == nil {
		srcErr = fmt.Errorf("the state source stopped")
	}
	p.mu.Lock()
	c.ended, c.endAt, c.srcErr, c.werr, c.perr = true, time.Now(), srcErr, werr, perr
	if p.cur == c {
		p.cur = nil
	}
	if werr != nil && p.werr == nil {
		p.werr = werr
	}
	if perr != nil && p.perr == nil {
		p.perr = perr
	}
	p.mu.Unlock()
	close(c.done)
	if failed {
		select {
		case p.failed <- c:
		default:
		}
	}
}

// end stops c and waits until its disable line is written.
func (c *cycle) end() {
	c.stop()
	<-c.done
}

// whileOpen runs f, which changes c's source, unless the source is
// released (the cycle ended by itself meanwhile); it holds the source open
// while f runs.
func (c *cycle) whileOpen(f func() error) error {
	c.statsMu.RLock()
	defer c.statsMu.RUnlock()
	if c.released {
		return errors.New("the logging cycle ended")
	}
	return f()
}

// stats reads every counter of c: live while its source is open, the
// final ones after.
func (c *cycle) stats() metrics.Stats {
	c.statsMu.RLock()
	defer c.statsMu.RUnlock()
	if c.released {
		return c.final
	}
	return c.read()
}

// read reads every counter of c, live. The caller holds statsMu.
func (c *cycle) read() metrics.Stats {
	s := metrics.Stats{
		State:   c.src.state().String(),
		Counts:  c.eng.Counts(),
		Engine:  c.eng.Stats(),
		Writer:  c.out.Stats(),
		Sampled: c.src.sampled(c.eng),
	}
	c.src.read(&s)
	return s
}

// summary is c's summary: final once it ended, so far while it runs.
func (c *cycle) summary(p *Pipeline) *Summary {
	s := &Summary{Start: c.start, LogFile: c.out.Path(), PcapFile: p.cfg.Pcap, Cycle: c.n}
	p.mu.Lock()
	ended, end := c.ended, c.endAt
	p.mu.Unlock()
	if !ended {
		end = time.Now()
	}
	s.End = end
	s.Stats = p.readCycle(c)
	return s
}

// readCycle reads c's counters with the settings in force (the final ones
// once it ended).
func (p *Pipeline) readCycle(c *cycle) metrics.Stats {
	p.mu.Lock()
	st := metrics.Stats{Enabled: p.cur != nil, PPL: p.cfg.PPL, Port: p.cfg.Port, Cycle: p.cycles}
	p.mu.Unlock()
	s := c.stats()
	s.Enabled, s.PPL, s.Port, s.Cycle, s.CycleStart = st.Enabled, st.PPL, st.Port, st.Cycle, c.start
	s.ClockSteps = p.clockSteps()
	return s
}
