// Package fidelity measures how often records carry the TCP state the
// kernel had at their packet, against the kernel's own tcp:tcp_probe
// tracepoint: it fires at the top of tcp_rcv_established() for each inbound
// segment of an established socket, before TCP processes it, and reports
// snd_cwnd, ssthresh, snd_wnd and srtt then: SIFTR's inbound semantics.
//
// A Trace collects the tracepoint's events for one port in a tracefs
// instance of its own (as root); Compare matches inbound records to them
// and counts the fields that agree. The tests and the benchmarks use it.
//
// # Matching
//
// Records that carry their skb's address (exact mode) are matched by it:
// the trace prints skbaddr unhashed (tracefs option hash-ptr off), and a
// record's event is the first one with its address after it, before the
// address is reused by a later record. Records of segments the kernel
// coalesced into another skb have no event of their own and are not
// matched.
//
// Other records (diag mode) are matched by order. Records and events of
// one socket are both in arrival order. A segment
// that waits in the socket's backlog (the application owns the socket) is
// coalesced there with the segments that follow it, and the tracepoint
// fires once for all of them, with their total payload length and the last
// one's ACK: every record of such a run is compared with that one event,
// since TCP processed none of them in between. A run is delimited by
// payload length (data segments) or by the ACK number (pure ACKs: the
// segment an event is for acknowledged exactly what the next event's
// snd_una says). Records of a run that cannot be delimited (a lost event,
// an old ACK) are not matched and not counted.
//
// ssthresh is compared by the tracepoint's rule: it reports
// tcp_current_ssthresh(), that is max(snd_ssthresh, 3/4 cwnd) unless the
// socket is in cwnd reduction (CWR or Recovery), not the raw snd_ssthresh
// that SIFTR and tcp_info carry.
package fidelity

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// Event is one tcp:tcp_probe event.
type Event struct {
	Time          int64 // CLOCK_MONOTONIC, ns (µs resolution)
	Local, Remote netip.AddrPort
	DataLen       uint32
	SndNxt        uint32
	SndUna        uint32
	Cwnd          uint32 // segments
	Ssthresh      uint32 // segments, tcp_current_ssthresh()
	SndWnd        uint32
	SRTT          uint32 // µs
	SkbAddr       uint64 // the skb's address (tracefs option hash-ptr off)
}

// Record is what Compare needs of an inbound record.
type Record struct {
	Time          int64  // Unix ns
	Skb           uint64 // the skb's address, where the source knows it
	Local, Remote netip.AddrPort
	Ack           uint32
	PayloadLen    uint32
	Cwnd          uint32 // segments
	Ssthresh      uint32 // segments, raw snd_ssthresh
	CAState       uint8
	SndWnd        uint32
	SRTT          uint32 // µs
}

// FromRecord returns what Compare needs of r, and whether r is inbound.
func FromRecord(r *correlate.Record) (Record, bool) {
	p, s := &r.Pkt, r.Snap
	return Record{
		Time: p.Time, Skb: p.Skb, Local: unmap(p.Local()), Remote: unmap(p.Remote()), Ack: p.Ack, PayloadLen: p.PayloadLen,
		Cwnd: s.Info.SndCwnd, Ssthresh: s.Info.SndSsthresh, CAState: s.Info.CAState,
		SndWnd: s.Info.SndWnd, SRTT: s.Info.RTT,
	}, p.Dir == tcp.DirIn
}

// ReadJSONL reads the inbound records of a JSON lines log.
func ReadJSONL(r io.Reader) ([]Record, error) {
	var out []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for n := 1; sc.Scan(); n++ {
		// Keys as output/FORMATS.md documents them.
		var o struct {
			Type            string `json:"type"`
			Direction       string `json:"direction"`
			TimeNS          int64  `json:"time_ns"`
			LocalAddr       string `json:"local_addr"`
			LocalPort       uint16 `json:"local_port"`
			RemoteAddr      string `json:"remote_addr"`
			RemotePort      uint16 `json:"remote_port"`
			Ack             uint32 `json:"ack"`
			PayloadLen      uint32 `json:"payload_len"`
			SndCwndSegs     uint32 `json:"snd_cwnd_segs"`
			SndSsthreshSegs uint32 `json:"snd_ssthresh_segs"`
			CAState         string `json:"ca_state"`
			SndWnd          uint32 `json:"snd_wnd"`
			SrttUs          uint32 `json:"srtt_us"`
		}
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if o.Type != "record" || o.Direction != "in" {
			continue
		}
		la, err1 := netip.ParseAddr(o.LocalAddr)
		ra, err2 := netip.ParseAddr(o.RemoteAddr)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("line %d: bad address", n)
		}
		out = append(out, Record{
			Time: o.TimeNS, Local: netip.AddrPortFrom(la, o.LocalPort), Remote: netip.AddrPortFrom(ra, o.RemotePort),
			Ack: o.Ack, PayloadLen: o.PayloadLen, Cwnd: o.SndCwndSegs, Ssthresh: o.SndSsthreshSegs,
			CAState: caState(o.CAState), SndWnd: o.SndWnd, SRTT: o.SrttUs,
		})
	}
	return out, sc.Err()
}

func caState(s string) uint8 {
	switch s {
	case "disorder":
		return tcp.CADisorder
	case "cwr":
		return tcp.CACWR
	case "recovery":
		return tcp.CARecovery
	case "loss":
		return tcp.CALoss
	}
	return tcp.CAOpen
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Result counts the matched records and the fields that agree.
type Result struct {
	Events                       int // tracepoint events
	MatchedEvents                int // events matched to records
	Records                      int // inbound records
	Matched                      int // records matched to an event
	Cwnd, Ssthresh, SndWnd, SRTT int // matched records whose field equals the kernel's
}

// Pct is part's share of Matched, in percent.
func (r *Result) Pct(part int) float64 {
	if r.Matched == 0 {
		return 0
	}
	return 100 * float64(part) / float64(r.Matched)
}

func (r *Result) String() string {
	return fmt.Sprintf("%d of %d inbound records matched to %d of %d events: cwnd %.1f%%, ssthresh %.1f%%, snd_wnd %.1f%%, srtt %.1f%%",
		r.Matched, r.Records, r.MatchedEvents, r.Events, r.Pct(r.Cwnd), r.Pct(r.Ssthresh), r.Pct(r.SndWnd), r.Pct(r.SRTT))
}

// CurrentSsthresh is what tcp:tcp_probe reports for a socket with this raw
// snd_ssthresh, cwnd and ca_state: tcp_current_ssthresh().
func CurrentSsthresh(ssthresh, cwnd uint32, caState uint8) uint32 {
	if caState == tcp.CACWR || caState == tcp.CARecovery {
		return ssthresh
	}
	return max(ssthresh, cwnd>>1+cwnd>>2)
}

// maxRun bounds the records a run may span when its end is searched.
const maxRun = 256

// Compare matches recs (inbound records, any order) to events (any order);
// offset converts an event's monotonic time to Unix time. See the package
// doc for the rules.
func Compare(recs []Record, events []Event, offset int64) Result {
	if len(recs) > 0 && recs[0].Skb != 0 {
		return compareBySkb(recs, events, offset)
	}
	type key struct{ l, r netip.AddrPort }
	res := Result{Events: len(events), Records: len(recs)}
	byFlow := map[key][]Record{}
	for _, r := range recs {
		k := key{r.Local, r.Remote}
		byFlow[k] = append(byFlow[k], r)
	}
	evFlow := map[key][]Event{}
	for _, e := range events {
		k := key{e.Local, e.Remote}
		evFlow[k] = append(evFlow[k], e)
	}
	for k, rs := range byFlow {
		slices.SortStableFunc(rs, func(a, b Record) int { return cmp.Compare(a.Time, b.Time) })
		es := evFlow[k]
		slices.SortStableFunc(es, func(a, b Event) int { return cmp.Compare(a.Time, b.Time) })
		i := 0
		for j := range es {
			e := &es[j]
			t := e.Time + offset
			// The event's run starts at the first record from i on (all
			// of them older than the event) from which it can be
			// delimited; records skipped on the way had no event.
			for a := i; a < len(rs) && a < i+maxRun && rs[a].Time <= t+slack; a++ {
				end, ok := runEnd(rs, a, t, e, es, j)
				if !ok {
					continue
				}
				res.MatchedEvents++
				for k := a; k <= end; k++ {
					res.add(&rs[k], e)
				}
				i = end + 1
				break
			}
		}
	}
	return res
}

// compareBySkb matches records to events by skb address.
func compareBySkb(recs []Record, events []Event, offset int64) Result {
	res := Result{Events: len(events), Records: len(recs)}
	rs := slices.Clone(recs)
	slices.SortStableFunc(rs, func(a, b Record) int { return cmp.Compare(a.Time, b.Time) })
	byAddr := map[uint64][]int{} // event indexes by address, in time order
	es := slices.Clone(events)
	slices.SortStableFunc(es, func(a, b Event) int { return cmp.Compare(a.Time, b.Time) })
	for i := range es {
		byAddr[es[i].SkbAddr] = append(byAddr[es[i].SkbAddr], i)
	}
	// The time each record's address is next used by a record.
	next := make([]int64, len(rs))
	seen := map[uint64]int64{}
	for i := len(rs) - 1; i >= 0; i-- {
		t, ok := seen[rs[i].Skb]
		if !ok {
			t = 1<<63 - 1
		}
		next[i] = t
		seen[rs[i].Skb] = rs[i].Time
	}
	used := map[int]bool{}
	for i := range rs {
		r := &rs[i]
		for _, j := range byAddr[r.Skb] {
			t := es[j].Time + offset
			if t < r.Time-slack || used[j] || es[j].Local != r.Local || es[j].Remote != r.Remote {
				continue
			}
			if t < next[i] {
				used[j] = true
				res.MatchedEvents++
				res.add(r, &es[j])
			}
			break
		}
	}
	return res
}

// add counts one matched record.
func (res *Result) add(r *Record, e *Event) {
	res.Matched++
	if r.Cwnd == e.Cwnd {
		res.Cwnd++
	}
	if CurrentSsthresh(r.Ssthresh, r.Cwnd, r.CAState) == e.Ssthresh {
		res.Ssthresh++
	}
	if r.SndWnd == e.SndWnd {
		res.SndWnd++
	}
	if r.SRTT == e.SRTT {
		res.SRTT++
	}
}

// slack is how much later than its event a record's time may be: the
// trace prints microseconds, and the two offsets to Unix time are read
// apart.
const slack = 5_000 // 5 µs

// runEnd finds the last record of the run that event j of es, at Unix
// time t, is for, starting at record i: by payload for data, by ACK number
// for pure ACKs. Every record of a run arrived before its event.
func runEnd(rs []Record, i int, t int64, e *Event, es []Event, j int) (int, bool) {
	if e.DataLen > 0 {
		var sum uint32
		for k := i; k < len(rs) && k < i+maxRun && rs[k].Time <= t+slack; k++ {
			sum += rs[k].PayloadLen
			if sum == e.DataLen {
				return k, true
			}
			if sum > e.DataLen {
				return 0, false
			}
		}
		return 0, false
	}
	if rs[i].PayloadLen != 0 {
		return 0, false
	}
	if j+1 >= len(es) {
		return i, true // the last event: one segment
	}
	ack := es[j+1].SndUna
	for k := i; k < len(rs) && k < i+maxRun && rs[k].Time <= t+slack; k++ {
		if rs[k].PayloadLen != 0 {
			return 0, false
		}
		if rs[k].Ack == ack {
			return k, true
		}
	}
	return 0, false
}

// parseEvent parses one line of a tracefs "trace" file, as the tracepoint
// prints it: "... 1234.567890: tcp_probe: family=AF_INET src=A:P dest=B:Q
// mark=0x0 data_len=0 snd_nxt=0x... snd_una=0x... snd_cwnd=10 ssthresh=7
// snd_wnd=65535 srtt=123 rcv_wnd=65536 sock_cookie=... skbaddr=... skaddr=...".
func parseEvent(line string) (Event, bool) {
	head, rest, ok := strings.Cut(line, ": tcp_probe: ")
	if !ok {
		return Event{}, false
	}
	var e Event
	ts := head[strings.LastIndexByte(head, ' ')+1:]
	sec, frac, ok := strings.Cut(ts, ".")
	s, err1 := strconv.ParseInt(sec, 10, 64)
	f, err2 := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return Event{}, false
	}
	e.Time = s*1e9 + f
	for _, kv := range strings.Fields(rest) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch k {
		case "src", "dest":
			ap, err := netip.ParseAddrPort(v)
			if err != nil {
				return Event{}, false
			}
			if k == "src" {
				e.Local = unmap(ap)
			} else {
				e.Remote = unmap(ap)
			}
		case "data_len":
			e.DataLen = parseU32(v)
		case "snd_nxt":
			e.SndNxt = parseU32(v)
		case "snd_una":
			e.SndUna = parseU32(v)
		case "snd_cwnd":
			e.Cwnd = parseU32(v)
		case "ssthresh":
			e.Ssthresh = parseU32(v)
		case "snd_wnd":
			e.SndWnd = parseU32(v)
		case "srtt":
			e.SRTT = parseU32(v)
		case "skbaddr":
			e.SkbAddr, _ = strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 64)
		}
	}
	return e, e.Local.IsValid() && e.Remote.IsValid()
}

func parseU32(v string) uint32 {
	n, _ := strconv.ParseUint(v, 0, 32)
	return uint32(n)
}
