package output

import (
	"net/netip"

	"github.com/siftr-probe/siftr-probe/capture"
	"github.com/siftr-probe/siftr-probe/diag"
)

// Record is one logged packet: the packet as captured and the state of its
// socket as read shortly after. All the packets one lookup served share its
// snapshot: Snap is never nil in a record, and a snapshot is never modified
// once records point to it.
type Record struct {
	Pkt  capture.Packet
	Snap *diag.Snapshot
}

// Staleness is how long after the packet its socket state was read, in nanoseconds.
func (r *Record) Staleness() int64 { return r.Snap.Time - r.Pkt.Time }

// FlowID is SIFTR's flowid for this record: the low 32 bits of the socket
// cookie, forced non-zero (FreeBSD panics on a zero flowid).
func (r *Record) FlowID() uint32 {
	id := uint32(r.Snap.Cookie)
	if id == 0 {
		id = uint32(r.Snap.Cookie>>32) | 1
	}
	return id
}

// Counts are the SIFTR totals for the disable line, per direction
// (index 0 = inbound, 1 = outbound, as capture.DirIn / capture.DirOut).
// The conservation identity, per direction: Packets = lines logged +
// SampledOut + SkipMalloc + SkipTCPCB + SkipInPCB.
type Counts struct {
	Packets    [2]uint64 // TCP packets on the port, seen with a local direction
	SampledOut [2]uint64 // not logged because of ppl sampling
	SkipMalloc [2]uint64 // dropped because a queue or the flow table was full
	SkipTCPCB  [2]uint64 // socket not established, or no TCP state
	SkipInPCB  [2]uint64 // no socket for the 4-tuple
}

// Flow names one flow for the disable line's flow_list, from the local socket's view.
type Flow struct {
	Local, Remote netip.AddrPort
}
