package correlate

import "context"

// A Source is where records come from: it observes the packets of a port
// and gets their sockets' state, and delivers both to an Engine, which
// accounts every packet and hands the records to its Sink. Two sources
// meet this contract: capture with diag (AF_PACKET rings, then a Resolver
// reading each sampled packet's socket through inet_diag) and exact (eBPF
// programs reading the socket in the kernel at the packet).
//
// The Engine must be made for Producers() producers. Run delivers through
// the Engine (Stated or a Resolver, Tally, Submit, Advance) until ctx is
// done, then everything the source observed up to then, and returns; the
// Engine's counts are final once Run has returned. Every producer reports
// a watermark regularly, also while idle, so that the Sink can order
// records by time. Close releases what the source holds (rings, programs,
// sockets); it is idempotent and may be called without Run.
type Source interface {
	Producers() int
	Run(ctx context.Context, e *Engine) error
	Close() error
}
