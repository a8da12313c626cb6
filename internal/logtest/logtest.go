// Package logtest writes siftr-probe logs for tests and benchmarks: records
// made by hand, formatted by the output package exactly as the probe
// formats them, and a synthetic multi-flow log of any length. Only tests
// and benchmarks import it.
package logtest

import (
	"bufio"
	"io"
	"net/netip"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/output"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// Flow is one connection of a generated log.
type Flow struct {
	Local, Remote netip.AddrPort
	Cookie        uint64 // flowid = low 32 bits (never 0)
	Cong          string // "cubic" if empty
}

// FlowID is the SIFTR flowid the probe writes for f.
func (f Flow) FlowID() uint32 {
	r := correlate.Record{Snap: &tcp.Snapshot{Cookie: f.Cookie}}
	return output.FlowID(r.Snap)
}

// State is the socket state of one record. Windows and buffers in bytes,
// times in µs; SsthreshSegs 0 means infinite (no loss yet).
type State struct {
	CwndSegs, SsthreshSegs uint32
	MSS                    uint32 // 1448 if 0
	RTT, RTO               uint32
	Inflight               uint32 // bytes sent and not acknowledged
	SndWnd, RcvWnd         uint32
	TotalRetrans           uint32
	CAState                uint8 // tcp.CAOpen ...
	StalenessNS            int64
}

// Record makes the record of a packet of f in direction dir (tcp.DirIn
// or DirOut) at time t (ns since the epoch) with state s.
func Record(f Flow, dir tcp.Direction, t int64, s State) *correlate.Record {
	mss := s.MSS
	if mss == 0 {
		mss = 1448
	}
	ss := s.SsthreshSegs
	if ss == 0 {
		ss = 0x7fffffff
	}
	cong := f.Cong
	if cong == "" {
		cong = "cubic"
	}
	var c [16]byte
	copy(c[:], cong)
	p := tcp.Packet{Time: t, Dir: dir, Flags: tcp.FlagACK, Window: 500, Seq: 1, Ack: 1}
	if dir == tcp.DirOut {
		p.Src, p.Dst = f.Local, f.Remote
		p.PayloadLen = mss
		p.Flags |= tcp.FlagPSH
	} else {
		p.Src, p.Dst = f.Remote, f.Local
	}
	family := uint8(2)
	if f.Local.Addr().Is6() {
		family = 10
	}
	return &correlate.Record{Pkt: p, Snap: &tcp.Snapshot{
		Time: t + s.StalenessNS, Status: tcp.Found, Family: family, State: tcp.StateEstablished,
		Cookie: f.Cookie, WQueue: s.Inflight + 1000, SndBuf: 2 << 20, RcvBuf: 1 << 20, Cong: c,
		Info: tcp.Info{
			State: tcp.StateEstablished, CAState: s.CAState,
			Options:   tcp.OptTimestamps | tcp.OptSACK | tcp.OptWScale,
			SndWScale: 7, RcvWScale: 9, RTO: s.RTO, SndMSS: mss, RcvMSS: 536,
			RTT: s.RTT, RTTVar: s.RTT / 4, SndSsthresh: ss, SndCwnd: s.CwndSegs,
			TotalRetrans: s.TotalRetrans, NotsentBytes: 1000, SndWnd: s.SndWnd, RcvWnd: s.RcvWnd,
		},
	}}
}

// Header returns an enable line's contents for a run started at t.
func Header(t time.Time) *output.Header {
	return &output.Header{Time: t, SysVer: output.SysVer("6.18.44"), IPMode: 6}
}

// Footer returns the disable line for records logged with ppl 1 and the
// given extra skipped packets per direction (as tcpcb skips): the
// conservation identity holds exactly.
func Footer(t time.Time, recs []*correlate.Record, flows []Flow, skipped [2]uint64) *output.Footer {
	ft := &output.Footer{Time: t}
	for _, r := range recs {
		ft.Counts.Packets[r.Pkt.Dir]++
	}
	for d := range 2 {
		ft.Counts.Packets[d] += skipped[d]
		ft.Counts.SkipTCPCB[d] = skipped[d]
	}
	for _, f := range flows {
		ft.Flows = append(ft.Flows, correlate.Flow{Local: f.Local, Remote: f.Remote})
	}
	return ft
}

// Write writes a whole run: enable line at start, recs, disable line.
func Write(w io.Writer, f output.Format, start time.Time, recs []*correlate.Record, flows []Flow, skipped [2]uint64) error {
	bw := bufio.NewWriter(w)
	buf := f.AppendHeader(nil, Header(start))
	for _, r := range recs {
		buf = f.AppendRecord(buf, r)
		if len(buf) > 1<<16 {
			if _, err := bw.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	end := start.Add(time.Hour)
	if len(recs) > 0 {
		end = time.Unix(0, recs[len(recs)-1].Pkt.Time+1e6)
	}
	buf = output.AppendFooter(f, buf, Footer(end, recs, flows, skipped))
	if _, err := bw.Write(buf); err != nil {
		return err
	}
	return bw.Flush()
}

// Flows returns n distinct flows: IPv4 for even i, IPv6 for odd i.
func Flows(n int) []Flow {
	out := make([]Flow, n)
	for i := range out {
		if i%2 == 0 {
			out[i] = Flow{
				Local:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(40000+i)),
				Remote: netip.MustParseAddrPort("10.9.0.1:5201"),
			}
		} else {
			out[i] = Flow{
				Local:  netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}), uint16(40000+i)),
				Remote: netip.MustParseAddrPort("[2001:db8::9:1]:5201"),
			}
		}
		out[i].Cookie = 0x5000_0000_0000 + uint64(i)*7919 + 1
		if i%3 == 2 {
			out[i].Cong = "bbr"
		}
	}
	return out
}

// Synthetic calls emit for n records of len(flows) interleaved bulk
// transfers starting at start: two outbound data segments per inbound ACK,
// 10 µs apart; cwnd grows in slow start to 400 segments, then follows a
// sawtooth (ssthresh finite) with a retransmission at each drop; srtt
// follows the queue. Each record has a snapshot of its own.
func Synthetic(flows []Flow, n int, start time.Time, emit func(*correlate.Record)) {
	type st struct {
		cwnd, ss, retrans uint32
	}
	state := make([]st, len(flows))
	for i := range state {
		state[i].cwnd = 10
	}
	t := start.UnixNano()
	for i := 0; i < n; i++ {
		fi := (i / 3) % len(flows)
		f := flows[fi]
		s := &state[fi]
		dir := tcp.DirOut
		if i%3 == 2 {
			dir = tcp.DirIn
			switch {
			case s.ss == 0 && s.cwnd < 400:
				s.cwnd++
			case s.ss == 0:
				s.ss, s.cwnd = 200, 200
				s.retrans++
			case s.cwnd < 500:
				if i%9 == 2 {
					s.cwnd++
				}
			default:
				s.ss, s.cwnd = s.cwnd*7/10, s.cwnd*7/10
				s.retrans++
			}
		}
		r := Record(f, dir, t, State{CwndSegs: s.cwnd, SsthreshSegs: s.ss, RTT: 1000 + s.cwnd*20,
			RTO: 201000 + s.cwnd*80, Inflight: s.cwnd * 1448 * 9 / 10, SndWnd: 3 << 20, RcvWnd: 64 << 10,
			TotalRetrans: s.retrans, StalenessNS: 50000 + int64(i%7)*10000})
		emit(r)
		t += 10000
	}
}
