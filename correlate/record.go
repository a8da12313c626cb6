package correlate

import (
	"net/netip"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// Record is one logged packet: the packet as its source saw it and the state
// of its socket. Snap is never nil in a record, and a snapshot is never
// modified once records point to it; records may share one (all the packets
// one inet_diag lookup served do).
type Record struct {
	Pkt  tcp.Packet
	Snap *tcp.Snapshot
	// Origin is where the socket lives; nil when the engine was given none.
	Origin *Origin
}

// Origin says where a record's socket lives: its network namespace and,
// on Kubernetes, its pod. One value is shared by the records of an engine
// and never modified once records point to it.
type Origin struct {
	NetNS     uint64 // the network namespace's inode
	NetNSName string // its name under /run/netns, if it has one
	// The pod whose namespace it is, on Kubernetes; empty otherwise.
	PodNamespace, PodName, PodUID string
	// Container is the pod's container where it has just one.
	Container string
}

// Staleness is how long after the packet its socket state was read, in
// nanoseconds: 0 when the state was read at the packet.
func (r *Record) Staleness() int64 { return r.Snap.Time - r.Pkt.Time }

// Counts are the SIFTR totals for the disable line, per direction
// (index 0 = inbound, 1 = outbound, as tcp.DirIn / tcp.DirOut).
// The conservation identity, per direction: Packets = lines logged +
// SampledOut + SkipMalloc + SkipTCPCB + SkipInPCB.
type Counts struct {
	Packets    [2]uint64 // TCP packets on the port, seen with a local direction
	SampledOut [2]uint64 // not logged because of ppl sampling
	SkipMalloc [2]uint64 // dropped because a queue or the flow table was full
	SkipTCPCB  [2]uint64 // socket not established, or no TCP state
	SkipInPCB  [2]uint64 // no socket for the 4-tuple
}

// Totals returns total_tcp_pkts and total_skipped_tcp_pkts as SIFTR computes
// them: SampledOut is neither a packet kind nor a skip of its own.
func (c *Counts) Totals() (pkts, skipped uint64) {
	pkts = c.Packets[0] + c.Packets[1]
	skipped = c.SkipMalloc[0] + c.SkipMalloc[1] + c.SkipTCPCB[0] + c.SkipTCPCB[1] +
		c.SkipInPCB[0] + c.SkipInPCB[1]
	return pkts, skipped
}

// Flow names one flow for the disable line's flow_list, from the local socket's view.
type Flow struct {
	Local, Remote netip.AddrPort
}

// Sink takes records; *output.Writer implements it. Submit must not block:
// it returns false when it could not take the records. Every producer has a
// watermark: with Submit or Advance it promises that every record it submits
// later has Pkt.Time >= watermark.
type Sink interface {
	Submit(producer int, recs []Record, watermark int64) bool
	Advance(producer int, watermark int64)
}
