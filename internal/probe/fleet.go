package probe

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/clockstep"
	"github.com/siftr-probe/siftr-probe/internal/metrics"
	"github.com/siftr-probe/siftr-probe/internal/pods"
	"github.com/siftr-probe/siftr-probe/output"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// Fleet defaults: each followed namespace gets small rings of its own.
const (
	DefaultMaxNetNS   = 256
	fleetRingSize     = 512 << 10
	fleetIfacesPerNS  = 4 // producer slots kept per namespace in the shared log
	fleetDiscoverTick = time.Second
	fleetOpeners      = 2
	// Namespaces that went away leave their counts in the totals; the
	// breakdown keeps the last fleetEndedKept (up to twice as many) of
	// them, and the disable line's flow list the last fleetEndedFlows of
	// their flows (the others counted as FlowListDropped), so that a
	// host where pods come and go for weeks does not grow the probe.
	fleetEndedKept  = 1024
	fleetEndedFlows = 1 << 16
)

// unit is one interface of one network namespace, followed: a state
// source feeding an engine of its own, whose records go to the shared log
// (producer slots first..) or to a log of the namespace's own.
type unit struct {
	ns      netnsInfo
	iface   string
	origin  *correlate.Origin
	src     source
	eng     *correlate.Engine
	out     *output.Writer
	own     bool // out belongs to the unit (--log-per-netns)
	first   int
	cancel  context.CancelFunc
	stopped chan struct{} // closed once the source's Run returned, err set
	err     error
}

// slotSink hands an engine's producer p to the shared writer's slot first+p.
type slotSink struct {
	w     *output.Writer
	first int
}

func (s slotSink) Submit(p int, recs []correlate.Record, wm int64) bool {
	return s.w.Submit(s.first+p, recs, wm)
}
func (s slotSink) Advance(p int, wm int64) { s.w.Advance(s.first+p, wm) }

// fleet follows every network namespace of the host (Config.AllNetNS): it
// discovers them every second, starts a unit per matching interface of
// each new one, and drains and releases the units of one that went away,
// keeping its counts and flows for the disable line.
type fleet struct {
	cfg      *Config
	timeline *clockstep.Timeline // the run's (Pipeline.timeline)
	format   func() output.Format
	shared   *output.Writer // nil with a log per namespace
	header   *output.Header

	mu      sync.Mutex
	units   map[uint64]*followed // by namespace inode
	retired struct {
		counts correlate.Counts
		flows  []correlate.Flow
		stats  metrics.Stats // engine and source counters of units that ended
		netns  []metrics.NetNSStats
	}
	// skipped are the namespaces left out, and why. A namespace left out
	// for its name stays out; one without interfaces yet (a pod's, before
	// its network is set up) or beyond MaxNetNS is looked at again at
	// every discovery.
	skipped map[uint64]skip
	pods    *pods.Watcher              // nil without Config.NodeName
	warned  map[uint64]map[string]bool // messages printed, by namespace
	beyond  uint64                     // namespaces not followed because of MaxNetNS, now
	wg      sync.WaitGroup             // the units' goroutines
	// busy are the namespaces whose units are being opened, by starters
	// (at most fleetOpeners at once: an exact-mode unit's programs take the
	// verifier some 50-100 ms), so that discovery never waits for them.
	busy     map[uint64]bool
	opening  chan struct{}
	starters sync.WaitGroup
}

// netnsSelected reports whether a namespace passes --netns-include and
// --netns-exclude. A term is KEY=GLOB with KEY netns (its name, or its
// inode), iface (one of its interfaces), pod (NAMESPACE/NAME of its pod)
// or label (KEY=VALUE, one of its pod's labels; VALUE a glob).
func netnsSelected(cfg *Config, ns netnsInfo, ifaces []netnsIface, o *correlate.Origin, labels map[string]string) bool {
	match := func(terms []string) bool {
		for _, t := range terms {
			k, v, _ := strings.Cut(t, "=")
			switch k {
			case "netns":
				if globMatch(v, ns.Name) || globMatch(v, fmt.Sprint(ns.Inode)) {
					return true
				}
			case "iface":
				for _, i := range ifaces {
					if globMatch(v, i.Name) {
						return true
					}
				}
			case "pod":
				if o != nil && o.PodName != "" && globMatch(v, o.PodNamespace+"/"+o.PodName) {
					return true
				}
			case "label":
				lk, lv, _ := strings.Cut(v, "=")
				if l, ok := labels[lk]; ok && globMatch(lv, l) {
					return true
				}
			}
		}
		return false
	}
	if len(cfg.NetNSInclude) > 0 && !match(cfg.NetNSInclude) {
		return false
	}
	return !match(cfg.NetNSExclude)
}

// selectsByIfaceOrPod reports whether a selector names interfaces or pods
// (which may change while a namespace lives).
func selectsByIfaceOrPod(cfg *Config) bool {
	for _, t := range append(append([]string(nil), cfg.NetNSInclude...), cfg.NetNSExclude...) {
		if strings.HasPrefix(t, "iface=") || strings.HasPrefix(t, "pod=") || strings.HasPrefix(t, "label=") {
			return true
		}
	}
	return false
}

// originFor is a namespace's origin: its inode and name, and its pod if
// pods are watched and one of addrs is a pod's; and that pod's labels
// (shared: read only).
func (f *fleet) originFor(ns netnsInfo, addrs []netip.Addr) (*correlate.Origin, map[string]string) {
	o := &correlate.Origin{NetNS: ns.Inode, NetNSName: ns.Name}
	if f.pods == nil {
		return o, nil
	}
	pod, ok := f.pods.Lookup(addrs)
	if ok {
		o.PodNamespace, o.PodName, o.PodUID, o.Container = pod.Namespace, pod.Name, pod.UID, pod.Container
	}
	return o, pod.Labels
}

// relabel looks every followed namespace's pod up again (the pods
// changed): records from now on carry the new identity.
func (f *fleet) relabel() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fl := range f.units {
		o, _ := f.originFor(fl.ns, fl.addrs)
		if *o == *fl.origin {
			continue
		}
		fl.origin = o
		for _, u := range fl.units {
			u.origin = o
			u.eng.SetOrigin(o)
		}
		if f.cfg.StatusEvery > 0 && o.PodName != "" {
			fmt.Fprintf(f.cfg.Stderr, "siftr-probe: %s is pod %s/%s\n", nsLabel(fl.ns), o.PodNamespace, o.PodName)
		}
	}
}

func globMatch(pattern, s string) bool {
	ok, _ := filepath.Match(pattern, s)
	return ok && s != ""
}

type skip struct {
	why   string
	name  string // the namespace's name when it was left out
	final bool
	fails int       // sources that failed to open, in a row
	next  time.Time // not looked at again before
}

// followed is a namespace being followed: held open (the process whose
// /proc path found it may exit) until the last of its units has stopped.
type followed struct {
	ns     netnsInfo
	fd     *os.File
	path   string            // /proc/self/fd/N: opens the held namespace
	origin *correlate.Origin // replaced, never modified, when its pod changes
	addrs  []netip.Addr      // its interfaces' addresses, for the pod lookup
	units  []*unit
	seen   int // discoveries since its interfaces were last listed
}

// fleetIfaceRecheck is how many discoveries pass between two listings of a
// followed namespace's interfaces (a container's interface may be added
// or renamed after its namespace appeared).
const fleetIfaceRecheck = 5

// discover finds the namespaces and starts and stops units to follow them.
func (f *fleet) discover(ctx context.Context) {
	found, err := discoverNetNS("/proc")
	if err != nil {
		fmt.Fprintf(f.cfg.Stderr, "siftr-probe: discover network namespaces: %v\n", err)
		return
	}
	f.mu.Lock()
	var gone []uint64
	for ino := range f.units {
		if _, ok := found[ino]; !ok && !f.busy[ino] {
			gone = append(gone, ino)
		}
	}
	for ino := range f.skipped {
		if _, ok := found[ino]; !ok {
			delete(f.skipped, ino)
		}
	}
	for ino := range f.warned {
		if _, ok := found[ino]; !ok {
			delete(f.warned, ino)
		}
	}
	f.beyond = 0
	f.mu.Unlock()
	for _, ino := range gone {
		f.stopNetNS(ino, true)
	}
	inos := make([]uint64, 0, len(found))
	for ino := range found {
		inos = append(inos, ino)
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
	for _, ino := range inos {
		if ctx.Err() != nil {
			return
		}
		ns := found[ino]
		f.mu.Lock()
		fl := f.units[ino]
		sk, skipped := f.skipped[ino]
		n := len(f.units) + len(f.busy)
		busy := f.busy[ino]
		nu := 0
		if fl != nil {
			nu = len(fl.units)
		}
		f.mu.Unlock()
		switch {
		case busy:
			continue
		case fl != nil:
			if fl.seen++; fl.seen >= fleetIfaceRecheck && nu < fleetIfacesPerNS {
				fl.seen = 0
				f.startBusy(ino, func() { f.addUnits(ctx, fl) })
			}
			continue
		case skipped && sk.final && sk.name == ns.Name:
			continue
		case skipped && time.Now().Before(sk.next):
			continue
		case n >= f.cfg.MaxNetNS:
			f.mu.Lock()
			f.beyond++
			f.mu.Unlock()
			if !skipped || sk.why != whyBeyond {
				fmt.Fprintf(f.cfg.Stderr, "siftr-probe: %s not followed: already following --max-netns %d namespaces\n", nsLabel(ns), f.cfg.MaxNetNS)
			}
			f.setSkip(ino, skip{why: whyBeyond})
			continue
		}
		f.startBusy(ino, func() { f.startNetNS(ctx, ns) })
	}
}

// startBusy runs open in a starter of its own, the namespace marked busy
// until it returns.
func (f *fleet) startBusy(ino uint64, open func()) {
	f.mu.Lock()
	f.busy[ino] = true
	f.mu.Unlock()
	f.starters.Go(func() {
		f.opening <- struct{}{}
		defer func() { <-f.opening }()
		open()
		f.mu.Lock()
		delete(f.busy, ino)
		f.mu.Unlock()
	})
}

const whyBeyond = "beyond --max-netns"

// warnOnce prints a message about a namespace the first time it comes up
// while the namespace lives (a source that fails to open is tried again
// every second).
func (f *fleet) warnOnce(ns netnsInfo, msg string) {
	f.mu.Lock()
	seen := f.warned[ns.Inode][msg]
	if !seen {
		if f.warned[ns.Inode] == nil {
			f.warned[ns.Inode] = map[string]bool{}
		}
		f.warned[ns.Inode][msg] = true
	}
	f.mu.Unlock()
	if !seen {
		fmt.Fprintf(f.cfg.Stderr, "siftr-probe: %s\n", msg)
	}
}

func (f *fleet) setSkip(ino uint64, s skip) {
	f.mu.Lock()
	f.skipped[ino] = s
	f.mu.Unlock()
}

// nsLabel names a namespace in messages.
func nsLabel(ns netnsInfo) string {
	if ns.Name != "" {
		return fmt.Sprintf("network namespace %s (inode %d)", ns.Name, ns.Inode)
	}
	return fmt.Sprintf("network namespace %d (%s)", ns.Inode, ns.Path)
}

// startNetNS starts following a namespace: a unit per matching interface.
func (f *fleet) startNetNS(ctx context.Context, ns netnsInfo) {
	if ctx.Err() != nil {
		return
	}
	fd, err := os.Open(ns.Path)
	if err != nil {
		return // gone already
	}
	// A /proc path is the namespace of a thread group leader at the time
	// it was read: the thread may have moved since. Follow what was opened
	// only if it is the namespace that was found.
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fd.Fd()), &st); err != nil || st.Ino != ns.Inode {
		fd.Close()
		return
	}
	fl := &followed{ns: ns, fd: fd, path: fmt.Sprintf("/proc/self/fd/%d", fd.Fd())}
	ifaces, err := netnsIfaces(fl.path, f.cfg.Iface)
	for _, ifc := range ifaces {
		fl.addrs = append(fl.addrs, ifc.Addrs...)
	}
	var labels map[string]string
	fl.origin, labels = f.originFor(ns, fl.addrs)
	if err != nil || len(ifaces) == 0 || !netnsSelected(f.cfg, ns, ifaces, fl.origin, labels) {
		s := skip{why: "no interface to capture on", name: ns.Name}
		switch {
		case err != nil:
			s.why = err.Error()
		case len(ifaces) > 0:
			// Final when the verdict does not depend on the interfaces.
			s.why = "not selected by --netns-include / --netns-exclude"
			s.final = !netnsSelected(f.cfg, ns, nil, fl.origin, nil) && !selectsByIfaceOrPod(f.cfg)
		}
		fd.Close()
		f.setSkip(ns.Inode, s)
		return
	}
	f.startUnits(ctx, fl, ifaces)
	if len(fl.units) == 0 {
		fd.Close()
		// Tried again after 2, 4, 8 .. 64 s.
		f.mu.Lock()
		fails := f.skipped[ns.Inode].fails + 1
		f.skipped[ns.Inode] = skip{why: "could not open a source", name: ns.Name, fails: fails,
			next: time.Now().Add(time.Second << min(fails, 6))}
		f.mu.Unlock()
		return
	}
	f.mu.Lock()
	delete(f.skipped, ns.Inode)
	f.units[ns.Inode] = fl
	f.mu.Unlock()
	if f.pods != nil {
		f.relabel() // the pods may have changed while it opened
	}
}

// addUnits starts units on the interfaces of a followed namespace that
// have appeared since it was last looked at.
func (f *fleet) addUnits(ctx context.Context, fl *followed) {
	ifaces, err := netnsIfaces(fl.path, f.cfg.Iface)
	if err != nil {
		return
	}
	var fresh []netnsIface
	for _, ifc := range ifaces {
		if !slices.ContainsFunc(fl.units, func(u *unit) bool { return u.iface == ifc.Name }) {
			fresh = append(fresh, ifc)
		}
	}
	f.startUnits(ctx, fl, fresh)
}

// startUnits opens and starts a unit for each interface, as long as the
// namespace has fewer than fleetIfacesPerNS. Only discovery changes
// fl.units; it does so under f.mu, for the readers.
func (f *fleet) startUnits(ctx context.Context, fl *followed, ifaces []netnsIface) {
	var started []*unit
	for _, ifc := range ifaces {
		if len(fl.units)+len(started) >= fleetIfacesPerNS || ctx.Err() != nil {
			break
		}
		f.mu.Lock()
		origin := fl.origin
		f.mu.Unlock()
		u, err := f.openUnit(fl.ns, fl.path, ifc.Name, origin)
		if err != nil {
			f.warnOnce(fl.ns, fmt.Sprintf("%s, %s: %v", nsLabel(fl.ns), ifc.Name, err))
			continue
		}
		started = append(started, u)
		// Run at once: its slots hold the shared log back until it does.
		uctx, cancel := context.WithCancel(ctx)
		u.cancel = cancel
		f.wg.Go(func() {
			var pw sync.WaitGroup
			pw.Go(func() { u.eng.Run(uctx) })
			u.err = u.src.Run(uctx, u.eng)
			cancel()
			pw.Wait()
			close(u.stopped)
		})
	}
	f.mu.Lock()
	fl.units = append(fl.units, started...)
	f.mu.Unlock()
	if f.cfg.StatusEvery > 0 && len(started) > 0 {
		fmt.Fprintf(f.cfg.Stderr, "siftr-probe: following %s on %s\n", nsLabel(fl.ns), unitIfaces(started))
	}
}

func unitIfaces(us []*unit) string {
	var s []string
	for _, u := range us {
		s = append(s, u.iface)
	}
	return strings.Join(s, ", ")
}

// openUnit opens a unit's source, engine and, with a log per namespace,
// its log.
func (f *fleet) openUnit(ns netnsInfo, path, iface string, origin *correlate.Origin) (*unit, error) {
	cfg := *f.cfg
	cfg.NetNS, cfg.Iface = path, iface
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	if cfg.RingSize == 0 {
		cfg.RingSize = fleetRingSize
	}
	// In the shared log, the unit's slots hold the output back from before
	// its source opens: no packet it captures can be older than a line
	// already written. Slots for every worker are taken, the unused ones
	// given back once the source says how many it has.
	want := max(cfg.Workers, 1)
	first := 0
	if f.shared != nil {
		var err error
		if first, err = f.shared.Reserve(want, time.Now().UnixNano()); err != nil {
			return nil, err
		}
	}
	src, err := openSource(&cfg)
	if err != nil {
		if f.shared != nil {
			f.shared.Release(first, want)
		}
		return nil, err
	}
	u := &unit{ns: ns, iface: iface, origin: origin, src: src, stopped: make(chan struct{})}
	var sink correlate.Sink
	if f.shared != nil {
		if n := src.Producers(); n < want {
			f.shared.Release(first+n, want-n)
		} else if n > want {
			f.shared.Release(first, want)
			src.Close()
			return nil, fmt.Errorf("source has %d producers, %d slots taken", n, want)
		}
		u.out, u.first = f.shared, first
		sink = slotSink{f.shared, first}
	} else {
		name := ns.Name
		if name == "" {
			name = fmt.Sprint(ns.Inode)
		}
		logPath := filepath.Join(f.cfg.LogPerNetNS, name+"-"+iface+".log")
		w, err := output.OpenWriter(&output.WriterConfig{Path: logPath, Format: f.format(), Workers: src.Producers(), OnRecord: f.cfg.OnRecord, Timeline: f.timeline})
		if err != nil {
			src.Close()
			return nil, explainLog(logPath, err)
		}
		h := *f.header
		h.Time = time.Now()
		h.StateSource = src.state()
		if err := w.Start(&h); err != nil {
			w.Close(nil)
			src.Close()
			return nil, err
		}
		u.out, u.own = w, true
		sink = w
	}
	u.eng, err = correlate.NewEngine(engineConfig(&cfg, origin), sink, src.Producers())
	if err != nil {
		u.release()
		return nil, err
	}
	return u, nil
}

// release frees what a unit holds once its source has stopped: its log
// (with its disable line) or its producer slots, and its source.
func (u *unit) release() {
	if u.own {
		u.out.Close(func() *output.Footer {
			return &output.Footer{Time: time.Now(), Counts: u.eng.Counts(), Flows: u.eng.Flows()}
		})
	} else if u.out != nil {
		u.out.Release(u.first, u.src.Producers())
	}
	u.src.Close()
}

// stopNetNS stops the units of a namespace that went away, or of every
// namespace at the end of the run: their sources deliver what they
// observed, their counts and flows are kept, and the namespace is let go.
func (f *fleet) stopNetNS(ino uint64, gone bool) {
	f.mu.Lock()
	fl := f.units[ino]
	f.mu.Unlock()
	if fl == nil {
		return
	}
	for _, u := range fl.units {
		u.cancel()
		<-u.stopped
		if u.err != nil {
			fmt.Fprintf(f.cfg.Stderr, "siftr-probe: %s, %s: %v\n", nsLabel(u.ns), u.iface, u.err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range fl.units {
		var st metrics.Stats
		u.read(&st)
		addCounts(&f.retired.counts, st.Counts)
		addStats(&f.retired.stats, &st)
		var dropped int
		f.retired.flows, dropped = keepLast(append(f.retired.flows, u.eng.Flows()...), fleetEndedFlows)
		f.retired.stats.Engine.FlowListDropped += uint64(dropped)
		f.retired.netns, _ = keepLast(append(f.retired.netns, u.netnsStats(&st, gone)), fleetEndedKept)
		u.release()
	}
	fl.fd.Close()
	delete(f.units, ino)
	if f.cfg.StatusEvery > 0 && gone {
		fmt.Fprintf(f.cfg.Stderr, "siftr-probe: %s went away: drained and released\n", nsLabel(fl.ns))
	}
}

// keepLast trims s to its last n elements once it has grown to twice n
// (so that trimming costs O(1) amortized), and says how many it dropped.
func keepLast[T any](s []T, n int) ([]T, int) {
	if len(s) < 2*n {
		return s, 0
	}
	d := len(s) - n
	return append(s[:0], s[d:]...), d
}

// read adds a unit's engine and source counters to s.
func (u *unit) read(s *metrics.Stats) {
	s.Counts = u.eng.Counts()
	s.Engine = u.eng.Stats()
	u.src.read(s)
}

func (u *unit) netnsStats(s *metrics.Stats, ended bool) metrics.NetNSStats {
	return metrics.NetNSStats{Origin: *u.origin, Iface: u.iface, Counts: s.Counts, Ended: ended}
}

// run discovers namespaces every second until ctx is done, then stops
// every unit.
func (f *fleet) run(ctx context.Context) {
	if f.pods != nil {
		f.waitPods(ctx)
	}
	t := time.NewTicker(fleetDiscoverTick)
	defer t.Stop()
	f.discover(ctx)
	for {
		select {
		case <-ctx.Done():
			f.starters.Wait() // their units see ctx done and stop at once
			f.mu.Lock()
			inos := make([]uint64, 0, len(f.units))
			for ino := range f.units {
				inos = append(inos, ino)
			}
			f.mu.Unlock()
			for _, ino := range inos {
				f.stopNetNS(ino, false)
			}
			f.wg.Wait()
			return
		case <-t.C:
			f.discover(ctx)
		}
	}
}

// fleetPodsWait is how long the first discovery waits for the pods to be
// known, so that the first records already carry them.
const fleetPodsWait = 10 * time.Second

// waitPods waits until the pod watcher has synced, or fleetPodsWait.
func (f *fleet) waitPods(ctx context.Context) {
	deadline := time.Now().Add(fleetPodsWait)
	for !f.pods.Synced() {
		if ctx.Err() != nil {
			return
		}
		if time.Now().After(deadline) {
			why := ""
			if st := f.pods.Stats(); st.LastError != "" {
				why = ": " + st.LastError
			}
			fmt.Fprintf(f.cfg.Stderr, "siftr-probe: the pods of node %s are not known yet%s; namespaces are followed without them until they are\n", f.cfg.NodeName, why)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// read is the pipeline's reading in fleet mode: the units' counters and
// those of units that ended, summed, with the per-namespace breakdown.
func (f *fleet) read() metrics.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.retired.stats
	s.Counts = f.retired.counts
	s.NetNS = append([]metrics.NetNSStats(nil), f.retired.netns...)
	for _, fl := range f.units {
		for _, u := range fl.units {
			var st metrics.Stats
			u.read(&st)
			addCounts(&s.Counts, st.Counts)
			addStats(&s, &st)
			s.NetNS = append(s.NetNS, u.netnsStats(&st, false))
		}
	}
	s.NetNSBeyondMax = f.beyond
	s.State = tcpSourceOf(f.cfg.State).String()
	if f.pods != nil {
		ps := f.pods.Stats()
		s.Pods = &metrics.PodStats{Known: ps.Pods, Synced: ps.Synced, Lists: ps.Lists, Watches: ps.Watches, Errors: ps.Errors}
	}
	if f.shared != nil {
		s.Writer = f.shared.Stats()
	}
	return s
}

// flows lists the flows of every unit, ended ones first.
func (f *fleet) flows() []correlate.Flow {
	f.mu.Lock()
	defer f.mu.Unlock()
	flows := append([]correlate.Flow(nil), f.retired.flows...)
	for _, fl := range f.units {
		for _, u := range fl.units {
			flows = append(flows, u.eng.Flows()...)
		}
	}
	return flows
}

// addCounts adds b to a.
func addCounts(a *correlate.Counts, b correlate.Counts) {
	for d := range 2 {
		a.Packets[d] += b.Packets[d]
		a.SampledOut[d] += b.SampledOut[d]
		a.SkipMalloc[d] += b.SkipMalloc[d]
		a.SkipTCPCB[d] += b.SkipTCPCB[d]
		a.SkipInPCB[d] += b.SkipInPCB[d]
	}
}

// addStats adds b's engine and source counters to a (not Counts).
func addStats(a, b *metrics.Stats) {
	a.State = b.State
	a.Engine.ActiveFlows += b.Engine.ActiveFlows
	a.Engine.FlowsCreated += b.Engine.FlowsCreated
	a.Engine.UnverifiedFlows += b.Engine.UnverifiedFlows
	a.Engine.FlowsPruned += b.Engine.FlowsPruned
	a.Engine.FlowsEvicted += b.Engine.FlowsEvicted
	a.Engine.FlowTableFull += b.Engine.FlowTableFull
	a.Engine.FlowListDropped += b.Engine.FlowListDropped
	a.Engine.SinkRejected += b.Engine.SinkRejected
	a.Engine.CookieReuses += b.Engine.CookieReuses
	a.Resolve.Lookups += b.Resolve.Lookups
	a.Resolve.Batches += b.Resolve.Batches
	a.Resolve.LookupErrors += b.Resolve.LookupErrors
	a.Resolve.HandoffFull += b.Resolve.HandoffFull
	a.Diag = addDiag(a.Diag, b.Diag)
	a.Capture.Frames += b.Capture.Frames
	a.Capture.Packets[0] += b.Capture.Packets[0]
	a.Capture.Packets[1] += b.Capture.Packets[1]
	a.Capture.NotLocal += b.Capture.NotLocal
	a.Capture.Truncated += b.Capture.Truncated
	a.Capture.Malformed += b.Capture.Malformed
	a.Capture.Filtered += b.Capture.Filtered
	a.Capture.VLAN += b.Capture.VLAN
	a.Capture.KernelPackets += b.Capture.KernelPackets
	a.Capture.KernelDrops += b.Capture.KernelDrops
	a.Capture.KernelFreezes += b.Capture.KernelFreezes
	a.Capture.KernelStatsErrors += b.Capture.KernelStatsErrors
	a.Capture.DrainLeft += b.Capture.DrainLeft
	x, y := &a.Exact, &b.Exact
	if x.Attach == "" {
		x.Attach = y.Attach
	}
	x.Records += y.Records
	for d := range 2 {
		x.RingFull[d] += y.RingFull[d]
		x.NotLocal[d] += y.NotLocal[d]
		x.Malformed[d] += y.Malformed[d]
	}
	x.Lost += y.Lost
	x.Confirmed += y.Confirmed
	x.Unconfirmed += y.Unconfirmed
	x.StrayConfirms += y.StrayConfirms
	x.ConfirmsLost += y.ConfirmsLost
	x.RunNanos += y.RunNanos
	x.RunCount += y.RunCount
}

// originOf is where the sockets of a single-namespace run live: the
// namespace at path ("" = this process's).
func originOf(path string) *correlate.Origin {
	if path == "" {
		path = "/proc/self/ns/net"
	}
	ino, err := nsInode(path)
	if err != nil {
		return nil
	}
	o := &correlate.Origin{NetNS: ino}
	for _, dir := range netnsDirs {
		if filepath.Dir(path) == dir {
			o.NetNSName = filepath.Base(path)
		}
	}
	return o
}

// newFleet sets up a run that follows every namespace: the shared log (or
// the directory of per-namespace logs). Sources open as namespaces are
// found.
func (p *Pipeline) newFleet(format output.Format) (*Pipeline, error) {
	cfg := &p.cfg
	if cfg.NetNS != "" {
		p.Close()
		return nil, setupErr("--all-netns and --netns exclude each other")
	}
	if cfg.Pcap != "" {
		p.Close()
		return nil, setupErr("--pcap does not go with --all-netns yet (a pcapng file describes the interfaces of one namespace): capture a namespace with --netns NAME --pcap FILE")
	}
	if cfg.MaxNetNS <= 0 {
		cfg.MaxNetNS = DefaultMaxNetNS
	}
	if cfg.State == StateAuto {
		// Exact mode loads its programs once per followed interface, a
		// tcp_probe program among them that every TCP segment of the host
		// then runs once per namespace: measured with 200 namespaces (go
		// run ./bench -fleet 100), 0.64 s/s of eBPF time and 28 s to
		// follow them all. Until the namespaces share one set of programs,
		// auto means diag here; --state exact still asks for it.
		cfg.State = StateDiag
		fmt.Fprintln(cfg.Stderr, "siftr-probe: state source: diag (with --all-netns, auto means diag: exact mode would load its programs once per namespace; ask for it with --state exact)")
	}
	if _, err := filepath.Match(cfg.Iface, ""); err != nil {
		p.Close()
		return nil, setupErr("bad --iface pattern %q: %v", cfg.Iface, err)
	}
	for _, t := range append(append([]string(nil), cfg.NetNSInclude...), cfg.NetNSExclude...) {
		k, v, ok := strings.Cut(t, "=")
		switch {
		case !ok || v == "":
			p.Close()
			return nil, setupErr("bad namespace selector %q: want netns=GLOB, iface=GLOB, pod=NAMESPACE/NAME or label=KEY=VALUE", t)
		case k != "netns" && k != "iface" && k != "pod" && k != "label":
			p.Close()
			return nil, setupErr("bad namespace selector %q: unknown key %q (want netns, iface, pod or label)", t, k)
		case (k == "pod" || k == "label") && cfg.NodeName == "":
			p.Close()
			return nil, setupErr("namespace selector %q needs --node-name (pods are known from the Kubernetes API server)", t)
		case k == "pod" && !strings.Contains(v, "/"):
			p.Close()
			return nil, setupErr("bad namespace selector %q: want pod=NAMESPACE/NAME (globs allowed, as pod=default/web-*)", t)
		case k == "label" && !strings.Contains(v, "="):
			p.Close()
			return nil, setupErr("bad namespace selector %q: want label=KEY=VALUE (the value a glob, as label=app=web*)", t)
		}
	}
	f := &fleet{cfg: cfg, timeline: &p.timeline, units: map[uint64]*followed{}, busy: map[uint64]bool{}, warned: map[uint64]map[string]bool{}, opening: make(chan struct{}, fleetOpeners), skipped: map[uint64]skip{},
		header: &output.Header{SysVer: sysVer(), IPMode: 6}}
	if cfg.NodeName != "" {
		w, err := pods.New(pods.Config{NodeName: cfg.NodeName, Kubeconfig: cfg.Kubeconfig})
		if err != nil {
			p.Close()
			return nil, setupErr("pod identity (--node-name %s): %v", cfg.NodeName, err)
		}
		f.pods = w
		w.OnChange(f.relabel)
	} else if cfg.Kubeconfig != "" {
		p.Close()
		return nil, setupErr("--kubeconfig needs --node-name (the node whose pods label the namespaces)")
	}
	name := cfg.Format
	f.format = func() output.Format { fm, _ := output.FormatByName(name); return fm }
	if cfg.LogPerNetNS != "" {
		if fi, err := os.Stat(cfg.LogPerNetNS); err != nil || !fi.IsDir() {
			p.Close()
			return nil, setupErr("--log-per-netns %s: not a directory", cfg.LogPerNetNS)
		}
	} else {
		workers := max(cfg.Workers, 1)
		w, err := output.OpenWriter(&output.WriterConfig{
			Path: cfg.LogFile, Stdout: cfg.Stdout, Format: format, OnRecord: cfg.OnRecord,
			Workers: cfg.MaxNetNS * fleetIfacesPerNS * workers, Slots: true, Timeline: f.timeline,
			OnWarning: func(m string) {
				fmt.Fprintf(cfg.Stderr, "siftr-probe: %s %s\n", time.Now().Format("15:04:05"), m)
			},
		})
		if err != nil {
			p.Close()
			return nil, explainLog(cfg.LogFile, err)
		}
		f.shared = w
	}
	p.fleet = f
	return p, nil
}

// runFleet is Run with Config.AllNetNS.
func (p *Pipeline) runFleet(ctx context.Context) (*Summary, error) {
	cfg := &p.cfg
	f := p.fleet
	// One cycle, from Run to the end: its start is Run's.
	sum := &Summary{Start: p.started, LogFile: cfg.LogFile, Cycle: 1}
	if cfg.LogPerNetNS != "" {
		sum.LogFile = cfg.LogPerNetNS
	}
	state := tcpSourceOf(cfg.State)
	f.header.StateSource = state
	if f.shared != nil {
		h := *f.header
		h.Time = sum.Start
		if err := f.shared.Start(&h); err != nil {
			f.shared.Close(nil)
			return nil, explainLog(cfg.LogFile, err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Duration > 0 {
		var c2 context.CancelFunc
		runCtx, c2 = context.WithTimeout(runCtx, cfg.Duration)
		defer c2()
	}
	var wg sync.WaitGroup
	if cfg.StatusEvery > 0 {
		st := newStatus(cfg.Stderr, p.read)
		wg.Go(func() { st.run(runCtx, cfg.StatusEvery) })
	}
	if cfg.Reopen != nil {
		wg.Go(func() { p.reopenOn(runCtx, cfg.Reopen) })
	}
	if f.pods != nil {
		wg.Go(func() { f.pods.Run(runCtx) })
	}
	msrv := p.serveMetrics(runCtx)
	if cfg.Started != nil {
		cfg.Started()
	}
	f.run(runCtx) // returns once every unit has stopped and delivered
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	cancel()
	wg.Wait()
	var werr error
	if f.shared != nil {
		werr = f.shared.Close(func() *output.Footer {
			s := f.read()
			return &output.Footer{Time: time.Now(), Counts: s.Counts, Flows: f.flows()}
		})
	}
	sum.End = time.Now()
	sum.Stats = p.read()
	p.stopMetrics(msrv)
	p.Close()
	if werr != nil {
		return sum, fmt.Errorf("writing %s: %w", cfg.LogFile, werr)
	}
	return sum, nil
}

// tcpSourceOf is the state source a run's records will say (auto may
// still fall back to diag in a namespace).
func tcpSourceOf(state string) tcp.Source {
	if state == StateExact {
		return tcp.SourceExact
	}
	return tcp.SourceDiag
}

// writers are the logs of the followed namespaces (--log-per-netns).
func (f *fleet) writers() []*output.Writer {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ws []*output.Writer
	for _, fl := range f.units {
		for _, u := range fl.units {
			ws = append(ws, u.out)
		}
	}
	return ws
}
