package exact

import (
	"fmt"
	"net/netip"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// Defaults and limits of Config.
const (
	// DefaultRingBytes is the BPF ring buffer's default size: about 60k
	// records, 100 ms at 600k records/s.
	DefaultRingBytes = 16 << 20
	// MinRingBytes is the smallest ring buffer (one page holds 14 records).
	MinRingBytes = 4 << 10
)

// Attach modes (Config.Attach).
const (
	AttachAuto = ""    // tcx where the kernel has it (6.6+), else clsact
	AttachTCX  = "tcx" // bpf_link-based tc hooks, owned by the process
	AttachTC   = "tc"  // a clsact qdisc and cls_bpf filters, removed at Close
)

// Config configures Open.
type Config struct {
	// Iface is the interface whose ingress and egress the programs attach
	// to, in NetNS (required).
	Iface string
	// Port keeps only TCP segments with this source or destination port;
	// 0 keeps all TCP.
	Port uint16
	// PPL writes every PPL-th segment of each socket (SIFTR's ppl); 0 means 1.
	PPL uint32
	// NetNS is the network namespace (a path, as /var/run/netns/NAME or
	// /proc/PID/ns/net) of the interface and the sockets; "" = the caller's.
	NetNS string
	// RingBytes is the size of the BPF ring buffer records reach user space
	// through: a power of two, at least MinRingBytes. 0 means DefaultRingBytes.
	RingBytes int
	// Attach is AttachAuto, AttachTCX or AttachTC.
	Attach string
}

// Stats are the exact source's own counters, beyond the SIFTR counts it
// hands to the engine.
type Stats struct {
	// Attach is how the programs are attached: "tcx" or "tc".
	Attach string
	// Records is the number of records read from the ring buffer.
	Records uint64
	// RingFull counts segments not written because the ring buffer (or
	// the kernel's per-socket storage) was full, per direction; they are
	// malloc skips.
	RingFull [2]uint64
	// NotLocal counts inbound segments on the port not for this host
	// (forwarded, broadcast, VLAN-tagged for another device), per direction.
	NotLocal [2]uint64
	// Malformed counts inbound segments the IP layer would drop (bad header
	// checksum, lengths that do not fit), per direction.
	Malformed [2]uint64
	// Lost counts records the kernel wrote that never reached user space
	// (it should stay 0); they are malloc skips.
	Lost uint64
	// Confirmed counts inbound records given the state TCP met at the
	// segment (tcp_probe), Unconfirmed those logged with the state tc read
	// because no confirmation came (segments TCP processed outside
	// tcp_rcv_established, or dropped); StrayConfirms confirmations that
	// matched no record, ConfirmsLost those the ring buffer had no room for.
	Confirmed, Unconfirmed, StrayConfirms, ConfirmsLost uint64
	// RunNanos and RunCount are the programs' run time and runs in the
	// kernel, from its BPF statistics (kernel.bpf_stats_enabled=1; else 0).
	RunNanos, RunCount uint64
}

// UnavailableError says why exact mode cannot run here: a missing
// privilege or a kernel that lacks what the programs need. With --state
// auto the probe falls back to diag mode on it.
type UnavailableError struct {
	Reason string
	Err    error
}

func (e *UnavailableError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Reason, e.Err)
	}
	return e.Reason
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// The counter reasons of struct tally in bpf/probe.bpf.c.
const (
	reasonPackets = iota
	reasonSampledOut
	reasonMalloc
	reasonTCPCB
	reasonInPCB
	reasonRecords
	reasonNotLocal
	reasonMalformed
	reasonConfirms
	numReasons
)

// decode turns one ring buffer record into the packet and the snapshot of
// its socket at it. offset converts the kernel's monotonic time to Unix
// time; hz converts jiffies to microseconds.
func decode(ev *probeEvent, offset int64, hz uint32, p *tcp.Packet, s *tcp.Snapshot) {
	t := int64(ev.TimeNs) + offset
	var src, dst netip.Addr
	if ev.Ipver == 4 {
		src = netip.AddrFrom4([4]byte(ev.Saddr[:4]))
		dst = netip.AddrFrom4([4]byte(ev.Daddr[:4]))
	} else {
		src = netip.AddrFrom16(ev.Saddr)
		dst = netip.AddrFrom16(ev.Daddr)
	}
	*p = tcp.Packet{
		Time:       t,
		Src:        netip.AddrPortFrom(src, ev.Sport),
		Dst:        netip.AddrPortFrom(dst, ev.Dport),
		Seq:        ev.Seq,
		Ack:        ev.Ack,
		PayloadLen: ev.PayloadLen,
		Window:     ev.Window,
		Flags:      ev.Flags,
		Dir:        tcp.Direction(ev.Dir & 1),
		Skb:        ev.Skb,
	}
	*s = tcp.Snapshot{
		Time:   t,
		Status: tcp.Found,
		Source: tcp.SourceExact,
		Family: ev.Family,
		State:  ev.State,
		Cookie: ev.Id,
		RQueue: ev.Rqueue,
		WQueue: ev.Wqueue,
		SndBuf: ev.Sndbuf,
		RcvBuf: ev.Rcvbuf,
		Info: tcp.Info{
			State:         ev.State,
			CAState:       ev.CaState,
			Retransmits:   ev.Retransmits,
			Probes:        ev.Probes,
			Backoff:       ev.Backoff,
			Options:       ev.Options,
			SndWScale:     ev.SndWscale,
			RcvWScale:     ev.RcvWscale,
			RTO:           jiffiesToUsecs(ev.Rto, hz),
			SndMSS:        ev.MssCache,
			Unacked:       ev.PacketsOut,
			Sacked:        ev.SackedOut,
			Lost:          ev.LostOut,
			Retrans:       ev.RetransOut,
			RcvSsthresh:   ev.RcvSsthresh,
			RTT:           ev.SrttUs,
			RTTVar:        ev.RttvarUs,
			SndSsthresh:   ev.SndSsthresh,
			SndCwnd:       ev.SndCwnd,
			AdvMSS:        uint32(ev.Advmss),
			Reordering:    ev.Reordering,
			TotalRetrans:  ev.TotalRetrans,
			PacingRate:    ev.PacingRate,
			BytesAcked:    ev.BytesAcked,
			BytesReceived: ev.BytesReceived,
			SegsOut:       ev.SegsOut,
			SegsIn:        ev.SegsIn,
			NotsentBytes:  ev.Notsent,
			MinRTT:        ev.MinRtt,
			DataSegsIn:    ev.DataSegsIn,
			DataSegsOut:   ev.DataSegsOut,
			DeliveryRate:  ev.DeliveryRate,
			Delivered:     ev.Delivered,
			DeliveredCE:   ev.DeliveredCe,
			BytesSent:     ev.BytesSent,
			BytesRetrans:  ev.BytesRetrans,
			DSACKDups:     ev.DsackDups,
			ReordSeen:     ev.ReordSeen,
			RcvOOOPack:    ev.RcvOoopack,
			SndWnd:        ev.SndWnd,
			RcvWnd:        ev.RcvWnd,
		},
	}
	for i, c := range ev.Cong {
		s.Cong[i] = byte(c)
	}
}

// jiffiesToUsecs converts as the kernel's jiffies_to_usecs does for HZ
// values that divide a million (100, 250, 1000) and, within a microsecond,
// for the others (300, 1024).
func jiffiesToUsecs(j, hz uint32) uint32 {
	if hz == 0 {
		return 0
	}
	return uint32(uint64(j) * 1000000 / uint64(hz))
}
