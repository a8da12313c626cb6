// Package correlate joins captured packets with their sockets' TCP state.
//
// An Engine is the capture.Handler of a run. For each ring block it counts
// every packet per direction, finds the packet's flow (keyed by the local
// socket's 4-tuple, and by the socket cookie once known), advances the
// flow's packet counter and keeps the N-th, 2N-th, ... packet of each flow
// (SIFTR's pkts-per-log rule). The sampled packets of one block are grouped
// by socket, so that one inet_diag lookup serves all of them; each sampled
// packet with an established socket becomes one output.Record, and every
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
// looked up (lookups are the expensive part), so the counter advances for
// every packet of a 4-tuple, and a sampled packet without an established
// socket is skipped rather than passing its turn to the next packet.
// The counter is shared by the flow's packets in both directions and on all
// workers; packets processed at the same moment on two workers are counted
// in the order they are processed, not strictly in packet-time order.
//
// # Concurrency
//
// Block and Idle may be called concurrently for different workers, never
// concurrently for the same worker. Counts, Flows and Stats are safe for
// concurrent use. The package does no I/O of its own: lookups go through a
// Lookuper per worker and records to the Sink.
package correlate
