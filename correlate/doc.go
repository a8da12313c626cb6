// Package correlate turns packets and their sockets' TCP state into
// records, and accounts for every packet as SIFTR does.
//
// It has two parts. The Engine is the pure part, shared by every state
// source: it counts every packet per direction and reason, keeps the flow
// table (keyed by the local socket's 4-tuple, and by the socket cookie once
// known) and the flow list of the disable line, applies SIFTR's ppl rule
// (the N-th, 2N-th, ... packet of each flow) and its handshake
// classification, decides from a socket's state whether a packet becomes a
// Record, and hands records with a watermark to the Sink (the
// output.Writer), which orders records from all producers by packet time.
// It does no I/O and starts no goroutine of its own (Run only prunes).
//
// The Resolver is the part that gives packets without state their state:
// it takes ring blocks from the capture, has the Engine sample them, reads
// the sampled packets' sockets through a StateReader (diag.Client) on a
// goroutine per producer, grouped by socket so that one inet_diag lookup
// serves all the packets of a socket in a block, and has the Engine settle
// each packet. A source that reads the state at the packet (exact mode)
// needs no Resolver: it samples in the kernel, hands each sampled packet
// with its state to Engine.Stated and its own counts to Engine.Tally.
//
// A Source is the contract both meet; see Source.
//
// The conservation identity holds exactly, per direction:
//
//	packets = records + sampled out + skipped (malloc + tcpcb + inpcb)
//
// where records are those the sink accepted.
//
// # Differences from FreeBSD SIFTR (packets without state)
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
// lookup comes after and finds it established. A source that reads the
// state at the packet follows SIFTR exactly instead.
//
// The counter is shared by the flow's packets in both directions and on all
// producers; packets processed at the same moment by two producers are
// counted in the order they are processed, not strictly in packet-time order.
//
// # Flow table
//
// The table has two budgets. A flow starts unverified, in a small budget
// (Config.MaxUnverifiedFlows): no lookup has found its socket established
// yet. A 4-tuple without a socket (a spoofed or stray segment) stays so;
// with ppl > 1, so does a flow none of whose packets was sampled yet. A new
// flow that finds the budget used evicts the oldest unverified flow that
// has no socket or had no packet since it was last looked at (one that had
// gets a second chance); if none can go, its packet is refused and counted
// as a malloc skip and in Stats.FlowTableFull. A flow found established
// moves to the main budget (Config.MaxFlows), which a flood of 4-tuples
// without sockets cannot touch; past it, flows stay unverified.
//
// Flows leave the table when a lookup finds no socket (at the next prune),
// when they ended on the wire (FINs both ways, or a RST) or were never found
// established and had no packet for Config.ClosedTimeout, or when they had
// no packet for Config.IdleTimeout. A connection that comes back after a
// prune gets a new flow (its ppl counter restarts) but is listed once in the
// disable line. "No packet for" is measured on a monotonic clock
// (Config.Clock), not by packet times, which are wall-clock times and step
// with it. Counting a packet in a flow and taking the flow out of the
// table are each one atomic step on the flow's count word, so a packet is
// never counted in a flow that already left, and a flow that gets a
// packet while the pruner looks at it stays.
//
// # Concurrency
//
// Engine methods for different producers may run concurrently; the calls
// for one producer (Stated, and a Resolver's Block and Idle) must be
// sequential. Counts, Flows, Stats, Prune, SetPPL, PPL and Sampled are safe
// for concurrent use.
package correlate
