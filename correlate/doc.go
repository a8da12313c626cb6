// Package correlate joins captured packets with their sockets' TCP state.
//
// An Engine is the capture.Handler of a run. For each ring block it counts
// every packet per direction, finds the packet's flow (keyed by the local
// socket's 4-tuple, and by the socket cookie once known), advances the
// flow's packet counter and keeps the N-th, 2N-th, ... packet of each flow
// (SIFTR's pkts-per-log rule). The sampled packets of one block are grouped
// by socket, so that one inet_diag lookup serves all of them; each sampled
// packet with an established socket becomes one Record, and every
// other packet is counted under the reason it was not logged. Records go to
// a Sink (the output.Writer) together with a watermark that lets the writer
// order records from all workers by packet time.
//
// The conservation identity holds exactly, per direction:
//
//	packets = records + sampled out + skipped (malloc + tcpcb + inpcb)
//
// where records are those the sink accepted.
//
// # Differences from FreeBSD SIFTR
//
// SIFTR looks up the socket of every packet and advances the ppl counter
// only for packets of established sockets. Here only sampled packets are
// looked up (lookups are the expensive part). Segments with SYN set are
// classified by their flags alone, as SIFTR finds them at packet time
// (outbound SYN and inbound SYN-ACK: tcpcb, the socket is in SYN_SENT;
// inbound SYN and outbound SYN-ACK: inpcb, no connection socket yet), and do
// not advance the counter. Every other packet of a 4-tuple advances it, and a
// sampled packet without an established socket is skipped rather than
// passing its turn to the next packet. The one packet SIFTR counts
// differently is the server's first inbound ACK, which completes the
// handshake: FreeBSD sees it before the socket exists (inpcb), here the
// lookup comes after and finds it established.
//
// The counter is shared by the flow's packets in both directions and on all
// workers; packets processed at the same moment on two workers are counted
// in the order they are processed, not strictly in packet-time order.
//
// # Flow table
//
// The table is bounded (Config.MaxFlows; packets of new flows beyond it are
// malloc skips). Flows leave it when a lookup finds their socket gone, when
// they ended on the wire (FINs both ways, or a RST) and had no packet for
// Config.ClosedTimeout, or when they had no packet for Config.IdleTimeout. A
// connection that comes back after an idle prune gets a new flow (its ppl
// counter restarts) but is listed once in the disable line.
//
// # Concurrency
//
// Block and Idle may be called concurrently for different workers, never
// concurrently for the same worker. Counts, Flows and Stats are safe for
// concurrent use. The package does no I/O of its own: lookups go through a
// Lookuper per worker and records to the Sink.
package correlate
