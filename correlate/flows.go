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
	// count is the ppl counter: packets of this flow seen so far, both directions.
	count atomic.Uint64
	// lastSeen is the newest packet time (ns) seen, approximately (it is
	// updated at most once a millisecond to keep the cache line quiet).
	lastSeen atomic.Int64
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

// flowTable is a bounded, sharded map of flows. Lookups of existing flows
// take a shard's read lock only.
type flowTable struct {
	max    int64
	active atomic.Int64
	seq    atomic.Uint64
	shards [1 << shardBits]struct {
		mu sync.RWMutex // guards m
		m  map[flowKey]*flow
		_  [40]byte // keep shards on separate cache lines
	}

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
}

type retiredFlow struct {
	seq    uint64
	cookie uint64
	name   Flow
}

func (f *flow) retired() retiredFlow {
	return retiredFlow{f.seq, f.cookie.Load(), Flow{Local: f.key.local, Remote: f.key.remote}}
}

func newFlowTable(max, maxRetired int) *flowTable {
	t := &flowTable{max: int64(max), maxRetired: maxRetired}
	for i := range t.shards {
		t.shards[i].m = make(map[flowKey]*flow)
	}
	return t
}

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
	if t.active.Add(1) > t.max {
		t.active.Add(-1)
		t.full.Add(1)
		return nil
	}
	f = &flow{key: k, seq: t.seq.Add(1)}
	s.m[k] = f
	t.created.Add(1)
	return f
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
		if t.active.Add(1) > t.max {
			t.active.Add(-1)
			t.full.Add(1)
			return old
		}
	} else {
		old.removed.Store(true)
		t.retire(old)
		t.pruned.Add(1)
	}
	f := &flow{key: old.key, seq: t.seq.Add(1)}
	f.cookie.Store(cookie)
	f.lastSeen.Store(old.lastSeen.Load())
	s.m[old.key] = f
	t.created.Add(1)
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

// prune removes flows whose socket is gone, ended flows with no packet
// since closedBefore and flows with no packet since idleBefore (times in ns).
func (t *flowTable) prune(idleBefore, closedBefore int64) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, f := range s.m {
			last := f.lastSeen.Load()
			if f.gone.Load() || last < idleBefore || (last < closedBefore && f.ended()) {
				delete(s.m, k)
				f.removed.Store(true)
				t.active.Add(-1)
				t.pruned.Add(1)
				t.retire(f)
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
	all := slices.Clone(t.retired)
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
	slices.SortFunc(all, func(a, b retiredFlow) int { return cmp.Compare(a.seq, b.seq) })
	type conn struct {
		name   Flow
		cookie uint64
	}
	listed := make(map[conn]bool, len(all))
	names := make([]Flow, 0, len(all))
	for _, r := range all {
		c := conn{r.name, r.cookie}
		if listed[c] {
			continue
		}
		listed[c] = true
		names = append(names, r.name)
	}
	return names
}
