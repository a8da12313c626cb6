package correlate

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// flowKey is the local socket's view of a 4-tuple.
type flowKey struct {
	local, remote netip.AddrPort
}

// flow is one connection: a 4-tuple, and once a lookup found it, its socket cookie.
type flow struct {
	key flowKey
	// seq orders flows by creation, for the disable line's flow list.
	seq uint64
	// count is the ppl counter: packets of this flow seen so far, both
	// directions, with its epoch and the dead bit (see advance).
	count atomic.Uint64
	// lastSeen is when the flow last had a packet, on the engine's
	// monotonic clock (Config.Clock), so that a step of the wall clock
	// neither ages nor rejuvenates flows; lastPkt is that packet's own
	// time. Both are updated when a packet's time is more than a
	// millisecond from lastPkt (either way), to keep the cache line quiet.
	lastSeen, lastPkt atomic.Int64
	// cookie is the socket cookie, 0 until a lookup found the socket.
	cookie atomic.Uint64
	// established is set once a lookup found the socket established or later:
	// such flows are listed in the disable line.
	established atomic.Bool
	// gone is set when a lookup found no socket after it had been established:
	// the pruner removes the flow.
	gone atomic.Bool
	// removed is set when the flow leaves the table; workers drop cached pointers to it.
	removed atomic.Bool
	// verified is set, under the flow's shard lock, once the flow holds a
	// place in the table's main budget (it was found established); until
	// then it counts in its shard's budget of unverified flows.
	verified bool
	// ends holds endIn/endOut for a FIN seen in that direction, and endRST.
	ends atomic.Uint32
}

const (
	endIn  = 1 << 0 // a FIN from the peer (tcp.DirIn)
	endOut = 1 << 1 // a FIN from the local socket (tcp.DirOut)
	endRST = 1 << 2
)

// sawEnd records a FIN or RST of the flow.
func (f *flow) sawEnd(p *tcp.Packet) {
	var b uint32
	if p.Flags&tcp.FlagRST != 0 {
		b |= endRST
	}
	if p.Flags&tcp.FlagFIN != 0 {
		b |= endIn << (p.Dir & 1)
	}
	f.ends.Or(b)
}

// ended reports whether the connection is over on the wire: FINs both ways, or a RST.
func (f *flow) ended() bool {
	e := f.ends.Load()
	return e&endRST != 0 || e&(endIn|endOut) == endIn|endOut
}

const shardBits = 6

// evictScan bounds the unverified flows looked at to make room for a new one.
const evictScan = 16

// flowTable is a bounded, sharded map of flows. Lookups of existing flows
// take a shard's read lock only.
//
// It has two budgets. A flow starts unverified: no lookup has found its
// socket established yet (a 4-tuple without a socket, such as a spoofed
// segment, never leaves that state). Each shard holds at most maxUnv of
// them, in creation order (unv); a new flow that finds its shard's budget
// used evicts the oldest one that is socketless or had no packet since it
// was last looked at (CLOCK: one that had gets a second chance), looking at
// up to evictScan of them once; if none can go (every one had packets since
// it was last looked at), the packet is refused (full).
// A flow found established moves to the main budget (max), where only
// pruning removes it; when that is used up it stays unverified.
type flowTable struct {
	max     int64        // main budget: flows found established
	clock   func() int64 // Config.Clock
	maxUnv  int          // unverified flows per shard
	active  atomic.Int64
	main    atomic.Int64 // flows in the main budget
	seq     atomic.Uint64
	shards  [1 << shardBits]shard
	unverif atomic.Int64 // unverified flows, all shards
	evicted atomic.Uint64

	// retired holds the names of established flows that left the table,
	// for the disable line; at most maxRetired of them.
	mu         sync.Mutex
	retired    []retiredFlow
	maxRetired int
	// retiredDropped counts established flows not kept in retired (full).
	retiredDropped atomic.Uint64
	created        atomic.Uint64
	pruned         atomic.Uint64
	full           atomic.Uint64

	// onRemove, if set (tests), is called with each flow that leaves.
	onRemove func(*flow)
}

// shard is one part of the flow table.
type shard struct {
	mu sync.RWMutex // guards m, nUnv and unv
	m  map[flowKey]*flow
	// nUnv counts the unverified flows in m; unv lists them oldest first
	// (a ring), with entries of flows that left the table or were
	// verified since, which are skipped.
	nUnv int
	unv  ring
	_    [64]byte // keep shards on separate cache lines
}

// unvEntry is an unverified flow and its ppl count when it was last looked
// at; fresh means never looked at yet (count is then 0: the flow's first
// packet was counted after it was listed).
type unvEntry struct {
	f     *flow
	count uint64
	fresh bool
}

// idle reports whether e's flow, whose count is now c, had no packet since
// it was last looked at (or, fresh, none but its first).
func (e *unvEntry) idle(c uint64) bool {
	if e.fresh {
		return c&countMask <= 1
	}
	return c == e.count
}

// ring is a FIFO of unvEntry with a fixed capacity.
type ring struct {
	buf        []unvEntry
	head, size int
}

func (r *ring) push(e unvEntry) {
	r.buf[(r.head+r.size)%len(r.buf)] = e
	r.size++
}

func (r *ring) pop() unvEntry {
	e := r.buf[r.head]
	r.buf[r.head] = unvEntry{}
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	return e
}

// live reports whether e's flow is still an unverified flow of the table.
func (e *unvEntry) live() bool { return !e.f.removed.Load() && !e.f.verified }

// compact drops the entries of flows no longer unverified in the table.
func (r *ring) compact() {
	n := r.size
	for range n {
		if e := r.pop(); e.live() {
			r.push(e)
		}
	}
}

type retiredFlow struct {
	seq    uint64
	cookie uint64
	name   Flow
}

func (f *flow) retired() retiredFlow {
	return retiredFlow{f.seq, f.cookie.Load(), Flow{Local: f.key.local, Remote: f.key.remote}}
}

// newFlowTable returns a table of at most maxFlows flows found established and
// maxUnv unverified ones (split among the shards, at least minShardUnv
// each), remembering up to maxRetired retired ones for the flow list.
func newFlowTable(maxFlows, maxUnv, maxRetired int, clock func() int64) *flowTable {
	t := &flowTable{max: int64(maxFlows), maxUnv: max(maxUnv>>shardBits, minShardUnv), maxRetired: maxRetired, clock: clock}
	for i := range t.shards {
		t.shards[i].m = make(map[flowKey]*flow)
		// Twice the budget: entries of flows verified or removed since
		// are dropped when it fills (compact), so it never overflows.
		t.shards[i].unv.buf = make([]unvEntry, 2*t.maxUnv)
	}
	return t
}

// minShardUnv is the least unverified flows a shard may hold.
const minShardUnv = 8

func (k *flowKey) shard() int {
	l, r := k.local.Addr().As16(), k.remote.Addr().As16()
	h := uint32(k.local.Port())<<16 | uint32(k.remote.Port())
	h ^= binary.LittleEndian.Uint32(l[12:]) ^ binary.LittleEndian.Uint32(r[12:])
	h *= 0x9e3779b1
	return int(h >> (32 - shardBits))
}

// get returns the flow for k, creating it if needed. It returns nil when the
// table is full.
func (t *flowTable) get(k flowKey) *flow {
	s := &t.shards[k.shard()]
	s.mu.RLock()
	f := s.m[k]
	s.mu.RUnlock()
	if f != nil {
		return f
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f = s.m[k]; f != nil {
		return f
	}
	if !t.roomLocked(s) {
		t.full.Add(1)
		return nil
	}
	f = &flow{key: k, seq: t.seq.Add(1)}
	f.lastSeen.Store(t.clock())
	t.insertLocked(s, f)
	return f
}

// roomLocked makes room in shard s for a new unverified flow, evicting one
// if its budget is used, and reports whether there is room.
func (t *flowTable) roomLocked(s *shard) bool {
	// Each unverified flow has one entry in s.unv, and is looked at once:
	// one given a second chance is not evicted by the same call.
	for n := min(evictScan, s.nUnv); n > 0 && s.nUnv >= t.maxUnv && s.unv.size > 0; {
		e := s.unv.pop()
		if !e.live() {
			continue // verified or removed since it was listed
		}
		n--
		c := e.f.count.Load()
		switch {
		case (e.f.gone.Load() || e.idle(c)) && t.kill(e.f, c):
			t.removeLocked(s, e.f)
			t.evicted.Add(1)
		default:
			// It had packets since: a second chance.
			s.unv.push(unvEntry{f: e.f, count: e.f.count.Load()})
		}
	}
	return s.nUnv < t.maxUnv
}

// insertLocked adds a new unverified flow to shard s.
func (t *flowTable) insertLocked(s *shard, f *flow) {
	if s.unv.size == len(s.unv.buf) {
		s.unv.compact()
	}
	s.unv.push(unvEntry{f: f, fresh: true})
	s.nUnv++
	s.m[f.key] = f
	t.unverif.Add(1)
	t.active.Add(1)
	t.created.Add(1)
}

// kill marks f as leaving the table if no packet was counted in it since
// its count read c, and reports whether it did. The caller holds f's
// shard lock and removes f once kill succeeds; a packet counted meanwhile
// makes it fail, and f stays (it is not idle).
func (t *flowTable) kill(f *flow, c uint64) bool {
	return c&deadBit == 0 && f.count.CompareAndSwap(c, c|deadBit)
}

// removeLocked takes f, killed, out of shard s: its name is kept for the
// flow list if it was established.
func (t *flowTable) removeLocked(s *shard, f *flow) {
	delete(s.m, f.key)
	f.removed.Store(true)
	if f.verified {
		t.main.Add(-1)
	} else {
		s.nUnv--
		t.unverif.Add(-1)
	}
	t.active.Add(-1)
	t.pruned.Add(1)
	t.retire(f)
	if t.onRemove != nil {
		t.onRemove(f)
	}
}

// verify moves f, found established, to the main budget, if it is still in
// the table and the budget has room; otherwise it stays unverified.
func (t *flowTable) verify(f *flow) {
	s := &t.shards[f.key.shard()]
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.verified {
		return
	}
	if f.removed.Load() {
		// It left the table while its lookup ran: its name was not
		// kept then, as it was not known established.
		t.retire(f)
		return
	}
	if t.main.Add(1) > t.max {
		t.main.Add(-1)
		return
	}
	f.verified = true
	s.nUnv--
	t.unverif.Add(-1)
}

// replace swaps old, whose 4-tuple now belongs to a new socket, for a fresh
// flow with that socket's cookie. It returns the flow now in the table.
func (t *flowTable) replace(old *flow, cookie uint64) *flow {
	s := &t.shards[old.key.shard()]
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.m[old.key]; cur != old {
		if cur != nil {
			return cur
		}
		// old was pruned meanwhile; fall through and insert.
	} else {
		old.count.Or(deadBit) // its packets from now on count in the new flow
		t.removeLocked(s, old)
	}
	if !t.roomLocked(s) {
		t.full.Add(1)
		return old
	}
	f := &flow{key: old.key, seq: t.seq.Add(1)}
	f.cookie.Store(cookie)
	f.lastSeen.Store(old.lastSeen.Load())
	f.lastPkt.Store(old.lastPkt.Load())
	t.insertLocked(s, f)
	return f
}

// retire keeps an established flow's name for the disable line.
func (t *flowTable) retire(f *flow) {
	if !f.established.Load() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.retired) >= t.maxRetired {
		t.retiredDropped.Add(1)
		return
	}
	t.retired = append(t.retired, f.retired())
}

// prune removes flows whose socket is gone, ended or unverified flows with
// no packet since closedBefore and flows with no packet since idleBefore
// (monotonic times in ns, as flow.lastSeen). A flow that gets a packet
// while it is looked at stays.
func (t *flowTable) prune(idleBefore, closedBefore int64) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, f := range s.m {
			// The count first: a packet counted after this read fails
			// the kill; one counted before it stored lastSeen first.
			c := f.count.Load()
			last := f.lastSeen.Load()
			if (f.gone.Load() || last < idleBefore || (last < closedBefore && (f.ended() || !f.verified))) && t.kill(f, c) {
				t.removeLocked(s, f)
			}
		}
		s.mu.Unlock()
	}
}

// names lists every connection that was established, from retired flows
// and active ones, in the order they were created. A connection whose flow
// was pruned while idle and created again (same 4-tuple, same socket cookie)
// is listed once; a reused 4-tuple with a new socket is listed again.
func (t *flowTable) names() []Flow {
	t.mu.Lock()
	// Room for the live flows too, so that the list is allocated once
	// (more may arrive meanwhile; append makes room then).
	all := make([]retiredFlow, len(t.retired), len(t.retired)+int(max(t.active.Load(), 0)))
	copy(all, t.retired)
	t.mu.Unlock()
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		for _, f := range s.m {
			if f.established.Load() {
				all = append(all, f.retired())
			}
		}
		s.mu.RUnlock()
	}
	// A connection is listed once, at its first entry (a flow pruned and
	// seen again is retired twice): sort by connection, then by entry,
	// keep each connection's first, and restore the order of entry. No
	// map: the list can hold hundreds of thousands of flows.
	slices.SortFunc(all, func(a, b retiredFlow) int {
		return cmp.Or(compareFlows(a.name, b.name), cmp.Compare(a.cookie, b.cookie), cmp.Compare(a.seq, b.seq))
	})
	all = slices.CompactFunc(all, func(a, b retiredFlow) bool { return a.name == b.name && a.cookie == b.cookie })
	slices.SortFunc(all, func(a, b retiredFlow) int { return cmp.Compare(a.seq, b.seq) })
	names := make([]Flow, len(all))
	for i := range all {
		names[i] = all[i].name
	}
	return names
}

func compareFlows(a, b Flow) int {
	return cmp.Or(a.Local.Addr().Compare(b.Local.Addr()), cmp.Compare(a.Local.Port(), b.Local.Port()),
		a.Remote.Addr().Compare(b.Remote.Addr()), cmp.Compare(a.Remote.Port(), b.Remote.Port()))
}
