package probe

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/capture"
	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/diag"
	"github.com/siftr-probe/siftr-probe/exact"
	"github.com/siftr-probe/siftr-probe/internal/metrics"
	"github.com/siftr-probe/siftr-probe/internal/netns"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// source is a state source as the pipeline runs it: correlate's contract,
// plus its own counters for the summary, the status line and the metrics.
type source interface {
	correlate.Source
	// state names the source.
	state() tcp.Source
	// read adds the source's counters to s.
	read(s *metrics.Stats)
	// setPPL changes ppl while the source runs into e, and returns what
	// sampling did in the cycle until the change: every packet in it was
	// sampled with the old ppl, every later one with the new.
	setPPL(e *correlate.Engine, ppl uint32) (correlate.SampleCounts, error)
	// setPort changes the port filter while the source runs, and returns
	// the time of the change (ns since the Unix epoch): every packet of
	// the old port the source delivers is older.
	setPort(port uint16) (int64, error)
	// sampled returns what sampling did in the cycle so far.
	sampled(e *correlate.Engine) correlate.SampleCounts
}

// State source names (Config.State).
const (
	StateDiag  = "diag"
	StateExact = "exact"
	StateAuto  = "auto"
)

// openSource opens the state source cfg.State names; for "auto", exact
// mode where it can run, else diag mode, and it says which and why on
// cfg.Stderr.
func openSource(cfg *Config) (source, error) {
	switch cfg.State {
	case "", StateDiag:
		return openPacketSource(cfg)
	case StateExact:
		return openExactSource(cfg)
	case StateAuto:
		src, err := openExactSource(cfg)
		var ue *exact.UnavailableError
		if errors.As(err, &ue) {
			fmt.Fprintf(cfg.Stderr, "siftr-probe: state source: diag (AF_PACKET and inet_diag): exact mode %v\n", ue)
			return openPacketSource(cfg)
		}
		if err == nil {
			fmt.Fprintf(cfg.Stderr, "siftr-probe: state source: exact (eBPF at %s's tc ingress and egress, %s)\n", cfg.Iface, src.src.Stats().Attach)
		}
		return src, err
	}
	return nil, setupErr("unknown state source %q (want diag, exact or auto)", cfg.State)
}

// exactSource is exact mode: eBPF programs read each segment's socket in
// the kernel at the segment.
type exactSource struct {
	src *exact.Source
	// mu guards before: what sampling did under the settings before the
	// ones in force (exact.Source.Change counts per setting).
	mu     sync.Mutex
	before correlate.SampleCounts
}

func openExactSource(cfg *Config) (*exactSource, error) {
	src, err := exact.Open(&exact.Config{
		Iface:     cfg.Iface,
		Port:      cfg.Port,
		PPL:       cfg.PPL,
		NetNS:     cfg.NetNS,
		RingBytes: cfg.RingSize,
		Attach:    cfg.Attach,
	})
	switch ue := (*exact.UnavailableError)(nil); {
	case err == nil:
		return &exactSource{src: src}, nil
	case errors.As(err, &ue):
		return nil, &SetupError{fmt.Errorf("exact mode %w", ue)}
	case errors.Is(err, exact.ErrNoInterface):
		return nil, explainOpen(cfg, capture.ErrNoInterface)
	case errors.Is(err, os.ErrNotExist) && cfg.NetNS != "":
		return nil, setupErr("no such network namespace %s", cfg.NetNS)
	}
	return nil, &SetupError{err}
}

func (s *exactSource) Producers() int                                     { return s.src.Producers() }
func (s *exactSource) Run(ctx context.Context, e *correlate.Engine) error { return s.src.Run(ctx, e) }
func (s *exactSource) Close() error                                       { return s.src.Close() }
func (s *exactSource) state() tcp.Source                                  { return tcp.SourceExact }
func (s *exactSource) read(st *metrics.Stats)                             { st.Exact = s.src.Stats() }

func (s *exactSource) setPPL(_ *correlate.Engine, ppl uint32) (correlate.SampleCounts, error) {
	_, port := s.src.Settings()
	_, c, err := s.change(ppl, port)
	return c, err
}

func (s *exactSource) setPort(port uint16) (int64, error) {
	ppl, _ := s.src.Settings()
	at, _, err := s.change(ppl, port)
	return at, err
}

// change changes the programs' settings and returns the cycle's counts
// until then.
func (s *exactSource) change(ppl uint32, port uint16) (int64, correlate.SampleCounts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, c, err := s.src.Change(ppl, port)
	if err != nil {
		return 0, correlate.SampleCounts{}, err
	}
	s.before = addSampled(s.before, c)
	return at, s.before, nil
}

func (s *exactSource) sampled(*correlate.Engine) correlate.SampleCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return addSampled(s.before, s.src.Sampled())
}

// addSampled sums two SampleCounts field by field.
func addSampled(a, b correlate.SampleCounts) correlate.SampleCounts {
	for d := range 2 {
		a.Packets[d] += b.Packets[d]
		a.SampledOut[d] += b.SampledOut[d]
		a.Sampled[d] += b.Sampled[d]
	}
	return a
}

// packetSource is diag mode: AF_PACKET rings feed a correlate.Resolver,
// which reads each sampled packet's socket with one inet_diag client per
// ring, all in the configured network namespace.
type packetSource struct {
	capt  *capture.Capture
	diags []*diag.Client
	res   atomic.Pointer[correlate.Resolver] // set by Run, read by read
	// tap, if set (--pcap-all), also gets every ring block: the packets
	// for the pcap file, logged or not.
	tap packetTap
}

// packetTap takes captured packets beside the records; *output.Writer
// implements it (SubmitPackets, AdvancePackets). Neither method blocks.
type packetTap interface {
	SubmitPackets(worker int, pkts []tcp.Packet, watermark int64) bool
	AdvancePackets(worker int, watermark int64)
}

// teeHandler hands each ring block to the tap, then to the resolver. The
// tap copies the block into its bounded queue (or counts it as dropped
// when the queue is full) and returns: it never waits.
type teeHandler struct {
	tap  packetTap
	next capture.Handler
}

func (h *teeHandler) Block(wi int, pkts []tcp.Packet, safe int64) {
	if len(pkts) > 0 {
		h.tap.SubmitPackets(wi, pkts, safe)
	}
	h.next.Block(wi, pkts, safe)
}

func (h *teeHandler) Idle(wi int, safe int64) {
	h.tap.AdvancePackets(wi, safe)
	h.next.Idle(wi, safe)
}

// openPacketSource opens the rings and the inet_diag clients; nothing is
// logged yet, but the rings start filling.
func openPacketSource(cfg *Config) (*packetSource, error) {
	s := &packetSource{}
	err := netns.Do(cfg.NetNS, func() error {
		var err error
		s.capt, err = capture.Open(&capture.Config{
			Iface:        cfg.Iface,
			Port:         cfg.Port,
			Workers:      cfg.Workers,
			BlockSize:    cfg.BlockSize,
			RingSize:     cfg.RingSize,
			BlockTimeout: cfg.BlockTimeout,
		})
		return err
	})
	if err == nil {
		s.diags, err = openDiags(cfg.NetNS, s.capt.Workers())
	}
	if err != nil {
		s.Close()
		return nil, explainOpen(cfg, err)
	}
	return s, nil
}

func (s *packetSource) Producers() int    { return s.capt.Workers() }
func (s *packetSource) state() tcp.Source { return tcp.SourceDiag }

// setPPL changes the engine's sampling: diag mode samples in user space.
func (s *packetSource) setPPL(e *correlate.Engine, ppl uint32) (correlate.SampleCounts, error) {
	return e.SetPPL(ppl), nil
}

// setPort swaps the rings' kernel filters (capture.SetPort).
func (s *packetSource) setPort(port uint16) (int64, error) { return s.capt.SetPort(port) }

func (s *packetSource) sampled(e *correlate.Engine) correlate.SampleCounts { return e.Sampled() }

// Run captures until ctx is done, then finishes the lookups of every
// packet the rings held at the stop.
func (s *packetSource) Run(ctx context.Context, e *correlate.Engine) error {
	readers := make([]correlate.StateReader, len(s.diags))
	for i, d := range s.diags {
		readers[i] = d
	}
	res, err := correlate.NewResolver(e, readers, uint32(s.capt.IfIndex()))
	if err != nil {
		return err
	}
	s.res.Store(res)
	var h capture.Handler = res
	if s.tap != nil {
		h = &teeHandler{tap: s.tap, next: res}
	}
	err = s.capt.Run(ctx, h)
	res.Close()
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	return nil
}

func (s *packetSource) Close() error {
	for _, d := range s.diags {
		d.Close()
	}
	if s.capt != nil {
		s.capt.Close()
	}
	return nil
}

func (s *packetSource) read(st *metrics.Stats) {
	st.Capture = s.capt.Stats()
	if res := s.res.Load(); res != nil {
		st.Resolve = res.Stats()
	}
	st.Diag = diag.Stats{}
	for _, d := range s.diags {
		st.Diag = addDiag(st.Diag, d.Stats())
	}
}

// openDiags opens n inet_diag clients in the network namespace at path (""
// = the caller's). The namespace is given to diag.Open, not only entered
// around it: the client also resolves the zones of link-local IPv6 queries
// (interface names) in it.
func openDiags(path string, n int) ([]*diag.Client, error) {
	var ds []*diag.Client
	for range n {
		d, err := diag.Open(&diag.Config{NetNS: path})
		if err != nil {
			for _, d := range ds {
				d.Close()
			}
			return nil, fmt.Errorf("open inet_diag socket: %w", err)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// explainOpen turns a capture/diag open error into a one-line SetupError.
func explainOpen(cfg *Config, err error) error {
	switch {
	case errors.Is(err, capture.ErrNoInterface):
		where := ""
		if cfg.NetNS != "" {
			where = " in network namespace " + cfg.NetNS
		}
		return setupErr("no such interface %q%s (list them with: ip link)", cfg.Iface, where)
	case errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EPERM):
		if cfg.NetNS != "" {
			return setupErr("permission denied: capturing in another network namespace needs CAP_NET_RAW and CAP_SYS_ADMIN (run as root): %v", err)
		}
		return setupErr("permission denied: capturing on %s needs CAP_NET_RAW (run as root, or: setcap cap_net_raw+ep siftr-probe): %v", cfg.Iface, err)
	case errors.Is(err, os.ErrNotExist) && cfg.NetNS != "":
		return setupErr("no such network namespace %s", cfg.NetNS)
	}
	return &SetupError{err}
}

// addDiag sums two clients' counters, field by field (TestAddDiag checks
// that no field of diag.Stats is left out).
func addDiag(a, b diag.Stats) diag.Stats {
	a.Lookups += b.Lookups
	a.Batches += b.Batches
	a.Found += b.Found
	a.NotEstablished += b.NotEstablished
	a.NoSocket += b.NoSocket
	a.ListenerReplies += b.ListenerReplies
	a.Errors += b.Errors
	a.Overruns += b.Overruns
	a.Resent += b.Resent
	return a
}
