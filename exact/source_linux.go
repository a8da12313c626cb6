//go:build linux

package exact

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/vishvananda/netlink"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/monoclock"
	"github.com/siftr-probe/siftr-probe/internal/netns"
	"github.com/siftr-probe/siftr-probe/internal/rcu"
)

// ErrNoInterface is wrapped by the error Open returns when Config.Iface
// names no interface in the namespace.
var ErrNoInterface = errors.New("no such network interface")

const (
	// batchLen is the most records handed to the engine at once.
	batchLen = 256
	// pollEvery is how often the reader looks at the ring buffer when the
	// programs did not wake it, moves its watermark on and reads the
	// kernel's counters.
	pollEvery = 5 * time.Millisecond
	// wakeEvery is how often, at most, the programs wake the reader, per CPU.
	wakeEvery = time.Millisecond
	// watermarkLag is how far behind now an idle watermark stays: a record
	// reserved in the ring before now may still be being written.
	watermarkLag = time.Millisecond
	// idleHoldFor is how long after its packet, in wall time, an inbound
	// record waits for its confirmation once the ring is empty. holdFor
	// counts in packet time, which stands still when the traffic stops;
	// and a segment TCP does not handle on its own (coalesced with
	// another in the socket's backlog) gets no confirmation: without this,
	// such a record would hold every later one back until the next packet.
	idleHoldFor = 100 * time.Millisecond
)

// Source is the exact state source: eBPF programs at the interface's tc
// ingress and egress that read each segment's socket in the kernel at the
// segment, sample it as SIFTR does, and hand the sampled ones with their
// state to user space through a ring buffer. It meets correlate.Source
// with one producer. Open attaches the programs (counting starts then);
// Run reads the ring buffer; Close detaches them.
type Source struct {
	cfg   Config
	hz    uint32
	l2len uint8 // link-layer header bytes before IP; 0xff unknown
	objs  probeObjects
	hooks *hooks
	// confirm is the tcp_probe program's link: records of established
	// sockets get the state TCP met (see reader).
	confirm link.Link
	rd      *ringbuf.Reader

	// mu guards the settings: cfg.PPL, cfg.Port, slot, gen and base.
	mu sync.Mutex
	// slot is the settings slot in force (see bpf/probe.bpf.c), gen the
	// generation of its ppl setting.
	slot, gen uint32
	// base are the counters of each slot when it came into force: its
	// counts under the settings since then are the difference.
	base [2][2][numReasons]uint64

	closeOnce sync.Once
	detached  atomic.Bool
	// reported are the kernel's counts already handed to the engine.
	reported correlate.Counts
	rstats   atomic.Pointer[readerStats]
	lost     atomic.Uint64
	last     atomic.Pointer[[2][numReasons]uint64] // the kernel's counters, last read
}

// Open checks the privileges and the kernel, loads the programs and
// attaches them to cfg.Iface in cfg.NetNS. An *UnavailableError says that
// exact mode cannot run here (a missing privilege, a kernel without BTF or
// tc hooks, programs the kernel's verifier refuses); an error wrapping
// ErrNoInterface that the interface does not exist.
func Open(cfg *Config) (*Source, error) {
	c := *cfg
	if c.Iface == "" {
		return nil, errors.New("exact: config: no interface")
	}
	if c.PPL == 0 {
		c.PPL = 1
	}
	if c.RingBytes == 0 {
		c.RingBytes = DefaultRingBytes
	}
	if c.RingBytes < MinRingBytes || c.RingBytes&(c.RingBytes-1) != 0 || c.RingBytes > 1<<30 {
		return nil, fmt.Errorf("exact: config: ring buffer size %d is not a power of two from %d to 1G", c.RingBytes, MinRingBytes)
	}
	switch c.Attach {
	case AttachAuto, AttachTCX, AttachTC:
	default:
		return nil, fmt.Errorf("exact: config: unknown attach mode %q", c.Attach)
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	if err := checkKernel(); err != nil {
		return nil, err
	}
	hz, err := kernelHZ()
	if err != nil {
		return nil, &UnavailableError{Reason: "cannot convert the kernel's RTO to microseconds", Err: err}
	}
	s := &Source{cfg: c, hz: hz}

	spec, err := loadProbe()
	if err != nil {
		return nil, fmt.Errorf("exact: %w", err)
	}
	spec.Maps[probeMapEvents].MaxEntries = uint32(c.RingBytes)
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, loadError(err)
	}
	err = netns.Do(c.NetNS, func() error {
		lk, err := netlink.LinkByName(c.Iface)
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return fmt.Errorf("%w: %s", ErrNoInterface, c.Iface)
		}
		if err != nil {
			return fmt.Errorf("find interface %s: %w", c.Iface, err)
		}
		s.l2len = linkHeaderLen(lk.Attrs().EncapType)
		if err := s.configure(true); err != nil {
			return err
		}
		s.hooks, err = attach(c.Attach, lk.Attrs().Index, s.objs.SiftrIngress, s.objs.SiftrEgress)
		return err
	})
	if err != nil {
		s.objs.Close()
		if errors.Is(err, ebpf.ErrNotSupported) {
			return nil, &UnavailableError{Reason: "the kernel cannot attach tc programs (tcx or clsact with cls_bpf)", Err: err}
		}
		return nil, fmt.Errorf("exact: %w", err)
	}
	if s.confirm, err = link.AttachTracing(link.TracingOptions{Program: s.objs.SiftrTcp}); err != nil {
		s.Close()
		return nil, &UnavailableError{Reason: "the kernel cannot attach a program to the tcp_probe tracepoint (tp_btf, Linux 5.5+)", Err: err}
	}
	if s.rd, err = ringbuf.NewReader(s.objs.Events); err != nil {
		s.Close()
		return nil, fmt.Errorf("exact: ring buffer: %w", err)
	}
	return s, nil
}

// loadError explains a failed load: the verifier's last words, or the
// missing kernel feature.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		last := ""
		for i := len(ve.Log) - 1; i >= 0; i-- {
			if l := strings.TrimSpace(ve.Log[i]); l != "" && !strings.HasPrefix(l, "processed ") {
				last = l
				break
			}
		}
		return &UnavailableError{Reason: "the kernel's verifier refused the programs (kernel too old? exact mode needs Linux 5.12 or later with BTF)", Err: errors.New(last)}
	}
	if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrPermission) {
		return &UnavailableError{Reason: "the kernel cannot load the programs", Err: err}
	}
	return fmt.Errorf("exact: load programs: %w", err)
}

// linkHeaderLen is how many bytes of link-layer header precede the IP
// header at the tc hooks of a device of this type (an ARPHRD name, as
// netlink reports it): Ethernet and loopback devices have a 14-byte
// header, tunnels none; 0xff for others, whose IP length is then not
// checked against the packet's.
func linkHeaderLen(encap string) uint8 {
	switch encap {
	case "ether", "loopback":
		return 14
	case "none", "ipip", "sit", "ip6tnl", "ipgre", "ip6gre", "tunnel", "tunnel6":
		return 0
	}
	return 0xff
}

// configure writes the settings in force, s.cfg's in the current slot;
// enabled false stops the programs from counting and writing anything. The
// caller holds s.mu, or is Open.
func (s *Source) configure(enabled bool) error {
	if err := s.objs.Settings.Put(s.slot, s.settings(enabled)); err != nil {
		return fmt.Errorf("exact: write settings: %w", err)
	}
	if err := s.objs.Slot.Put(uint32(0), s.slot); err != nil {
		return fmt.Errorf("exact: write settings slot: %w", err)
	}
	return nil
}

func (s *Source) settings(enabled bool) *probeConfig {
	cfg := &probeConfig{Ppl: s.cfg.PPL, Port: s.cfg.Port, L2len: s.l2len, WakeNs: uint32(wakeEvery), Gen: s.gen}
	if enabled {
		cfg.Enabled = 1
	}
	return cfg
}

// Change sets the programs' ppl (0 means 1) and port filter while they
// run. It returns the time of the change (ns since the Unix epoch): every
// segment counted under the old settings was seen before it, and every
// record of the old port the probe reads has an earlier time. It also
// returns what sampling did under the old settings, final: the packets
// they counted, sampled out and wrote. A change of ppl restarts every
// socket's count, so that a socket with n segments between two changes
// has floor(n/ppl) of them written.
//
// The new settings go to the slot not in force, the programs are switched
// to it, and Change waits for an RCU grace period (package rcu): programs
// that read the old settings have all finished, and their counts, kept per
// slot, are complete. It is safe for concurrent use with Run and Stats.
func (s *Source) Change(ppl uint32, port uint16) (int64, correlate.SampleCounts, error) {
	if ppl == 0 {
		ppl = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.detached.Load() {
		return 0, correlate.SampleCounts{}, errors.New("exact: change settings: programs detached")
	}
	next := 1 - s.slot
	// Nothing counts under the slot not in force: its counters now are
	// the base of the next period.
	nb, err := s.readSlot(next)
	if err != nil {
		return 0, correlate.SampleCounts{}, err
	}
	old := s.cfg
	s.cfg.PPL, s.cfg.Port = ppl, port
	gen := s.gen
	if ppl != old.PPL {
		gen++
	}
	cfg := &probeConfig{Ppl: ppl, Port: port, L2len: s.l2len, WakeNs: uint32(wakeEvery), Gen: gen, Enabled: 1}
	if err := s.objs.Settings.Put(next, cfg); err != nil {
		s.cfg = old
		return 0, correlate.SampleCounts{}, fmt.Errorf("exact: write settings: %w", err)
	}
	if err := s.objs.Slot.Put(uint32(0), next); err != nil {
		s.cfg = old
		return 0, correlate.SampleCounts{}, fmt.Errorf("exact: write settings slot: %w", err)
	}
	rcu.Synchronize()
	at := time.Now().UnixNano()
	prev := s.slot
	s.slot, s.gen, s.base[next] = next, gen, nb
	k, err := s.readSlot(prev)
	if err != nil {
		return at, correlate.SampleCounts{}, err
	}
	var c correlate.SampleCounts
	for d := range 2 {
		b := &s.base[prev][d]
		c.Packets[d] = k[d][reasonPackets] - b[reasonPackets]
		c.SampledOut[d] = k[d][reasonSampledOut] - b[reasonSampledOut]
		c.Sampled[d] = k[d][reasonRecords] - b[reasonRecords]
	}
	return at, c, nil
}

// Sampled returns what sampling did under the settings in force so far,
// as Change returns it for a period that ended.
func (s *Source) Sampled() correlate.SampleCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	var c correlate.SampleCounts
	k, err := s.readSlot(s.slot)
	if err != nil {
		return c
	}
	for d := range 2 {
		b := &s.base[s.slot][d]
		c.Packets[d] = k[d][reasonPackets] - b[reasonPackets]
		c.SampledOut[d] = k[d][reasonSampledOut] - b[reasonSampledOut]
		c.Sampled[d] = k[d][reasonRecords] - b[reasonRecords]
	}
	return c
}

// Producers implements correlate.Source: one ring buffer, one producer.
func (s *Source) Producers() int { return 1 }

// Run reads records from the ring buffer and hands them to e until ctx is
// done; then it stops the programs, reads what they wrote before they
// stopped, and hands e the kernel's final counts.
//
// The programs wake it at most every wakeEvery per CPU; otherwise it reads
// every pollEvery, and hands the engine what it read.
func (s *Source) Run(ctx context.Context, e *correlate.Engine) error {
	if s.rd == nil {
		return errors.New("exact: source closed")
	}
	r := newReader(e, s.hz, monoclock.Offset())
	defer s.publish(r)
	var (
		rec       ringbuf.Record
		lastClock = time.Now()
		stopping  = false
	)
	for {
		if !stopping && ctx.Err() != nil {
			// Stop the programs, then read everything they wrote.
			stopping = true
			s.stop()
		}
		if stopping {
			s.rd.SetDeadline(time.Now().Add(-time.Second))
		} else {
			s.rd.SetDeadline(time.Now().Add(pollEvery))
		}
		r.followClock()
		// Read until the ring is empty and the deadline has passed.
		var err error
		for {
			if err = s.rd.ReadInto(&rec); err != nil {
				break
			}
			if len(rec.RawSample) < int(unsafe.Sizeof(probeEvent{})) {
				s.lost.Add(1) // cannot happen: the kernel writes whole events
				continue
			}
			r.event((*probeEvent)(unsafe.Pointer(&rec.RawSample[0])))
			if len(r.recs) >= batchLen {
				r.flush(0)
				r.followClock()
			}
		}
		now := time.Now()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded) && !stopping:
			// By packet time: the reader may be behind the ring. The ring
			// is empty now, so also by wall time, with a wider margin
			// (idleHoldFor).
			r.expire(max(r.newest-holdFor, now.Add(-idleHoldFor).UnixNano()))
			r.flush(now.Add(-watermarkLag).UnixNano())
			s.tally(e)
			s.publish(r)
			if now.Sub(lastClock) >= time.Second {
				r.setOffset(monoclock.Offset())
				lastClock = now
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
			r.releaseAll()
			r.flush(0)
			s.tally(e)
			s.finish(e, r)
			return nil
		default:
			s.stop()
			r.releaseAll()
			r.flush(0)
			s.tally(e)
			s.finish(e, r)
			return fmt.Errorf("exact: read ring buffer: %w", err)
		}
	}
}

// publish makes the reader's counts visible to Stats.
func (s *Source) publish(r *reader) {
	st := r.stats
	s.rstats.Store(&st)
}

// stop disables the programs and detaches them; once it returns, no
// program runs any more (detaching waits for running ones to finish).
func (s *Source) stop() {
	s.mu.Lock()
	s.configure(false)
	s.mu.Unlock()
	s.detach()
}

func (s *Source) detach() error {
	if s.detached.Swap(true) {
		return nil
	}
	var err error
	if s.hooks != nil {
		err = netns.Do(s.cfg.NetNS, s.hooks.detach)
	}
	if s.confirm != nil {
		err = errors.Join(err, s.confirm.Close())
	}
	return err
}

// finish counts records the kernel wrote but Run never read as malloc
// skips, so that the identity holds even then.
func (s *Source) finish(e *correlate.Engine, r *reader) {
	k := s.last.Load()
	if k == nil {
		return
	}
	var lost correlate.Counts
	for d := range 2 {
		if written, read := k[d][reasonRecords], r.stats.read[d]; written > read {
			lost.SkipMalloc[d] = written - read
			s.lost.Add(written - read)
		}
	}
	e.Tally(0, &lost)
}

// tally reads the kernel's counters and hands the engine what changed.
func (s *Source) tally(e *correlate.Engine) {
	k, err := s.readCounters()
	if err != nil {
		return
	}
	s.last.Store(&k)
	var now correlate.Counts
	for d := range 2 {
		now.Packets[d] = k[d][reasonPackets]
		now.SampledOut[d] = k[d][reasonSampledOut]
		now.SkipMalloc[d] = k[d][reasonMalloc]
		now.SkipTCPCB[d] = k[d][reasonTCPCB]
		now.SkipInPCB[d] = k[d][reasonInPCB]
	}
	delta := now
	r := &s.reported
	for d := range 2 {
		delta.Packets[d] -= r.Packets[d]
		delta.SampledOut[d] -= r.SampledOut[d]
		delta.SkipMalloc[d] -= r.SkipMalloc[d]
		delta.SkipTCPCB[d] -= r.SkipTCPCB[d]
		delta.SkipInPCB[d] -= r.SkipInPCB[d]
	}
	s.reported = now
	e.Tally(0, &delta)
}

// readCounters sums the programs' per-CPU counters of both settings slots.
func (s *Source) readCounters() ([2][numReasons]uint64, error) {
	var sum [2][numReasons]uint64
	for slot := range uint32(2) {
		k, err := s.readSlot(slot)
		if err != nil {
			return sum, err
		}
		for d := range 2 {
			for r := range numReasons {
				sum[d][r] += k[d][r]
			}
		}
	}
	return sum, nil
}

// readSlot sums the per-CPU counters of one settings slot.
func (s *Source) readSlot(slot uint32) ([2][numReasons]uint64, error) {
	var sum [2][numReasons]uint64
	var per []probeTally
	if err := s.objs.Counters.Lookup(slot, &per); err != nil {
		return sum, fmt.Errorf("exact: read counters: %w", err)
	}
	for _, t := range per {
		for d := range 2 {
			for r := range numReasons {
				sum[d][r] += t.N[d][r]
			}
		}
	}
	return sum, nil
}

// Settings returns the ppl and port filter in force.
func (s *Source) Settings() (ppl uint32, port uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.PPL, s.cfg.Port
}

// Stats returns the source's counters. It is safe for concurrent use.
func (s *Source) Stats() Stats {
	st := Stats{Lost: s.lost.Load()}
	if r := s.rstats.Load(); r != nil {
		st.Records = r.read[0] + r.read[1]
		st.Confirmed, st.Unconfirmed, st.StrayConfirms = r.confirmed, r.unconfirmed, r.stray
	}
	if s.hooks != nil {
		st.Attach = s.hooks.mode
	}
	if k := s.last.Load(); k != nil {
		for d := range 2 {
			st.RingFull[d] = k[d][reasonMalloc]
			st.NotLocal[d] = k[d][reasonNotLocal]
			st.Malformed[d] = k[d][reasonMalformed]
		}
		st.ConfirmsLost = k[1][reasonConfirms]
	}
	for _, p := range []*ebpf.Program{s.objs.SiftrIngress, s.objs.SiftrEgress, s.objs.SiftrTcp} {
		if p == nil {
			continue
		}
		if ps, err := p.Stats(); err == nil {
			st.RunNanos += uint64(ps.Runtime)
			st.RunCount += ps.RunCount
		}
	}
	return st
}

// Close detaches the programs and releases them, the maps and the ring
// buffer. It is idempotent.
func (s *Source) Close() error {
	var err error
	s.closeOnce.Do(func() {
		err = s.detach()
		if s.rd != nil {
			s.rd.Close()
		}
		s.objs.Close()
	})
	return err
}
