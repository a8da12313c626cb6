package diag

// Config configures a Client. A nil *Config means the defaults.
type Config struct {
	// BatchSize is how many lookups go into one sendmsg; 0 means 64.
	// Open sizes the socket's receive buffer so that a full batch of
	// replies fits (with root the size is forced past net.core.rmem_max;
	// without it, it is capped there and large batches may overrun, which
	// Lookup handles by asking again for the lost replies).
	BatchSize int
	// NetNS is the path of a network namespace (/run/netns/NAME,
	// /proc/PID/ns/net) to open the socket in; "" means the namespace of
	// the calling thread. Entering another namespace needs CAP_SYS_ADMIN.
	NetNS string
}

// DefaultBatchSize is the batch size used when Config.BatchSize is 0.
const DefaultBatchSize = 64

// Stats counts a Client's work since Open. Every field only grows.
type Stats struct {
	// Lookups is the number of queries passed to Lookup.
	Lookups uint64
	// Batches is the number of request batches sent (one sendmsg each).
	Batches uint64
	// Found, NotEstablished and NoSocket count the outcomes.
	Found, NotEstablished, NoSocket uint64
	// ListenerReplies counts NoSocket outcomes where the kernel answered
	// with a LISTEN socket (an absent 4-tuple on a listening port).
	ListenerReplies uint64
	// Errors counts per-query kernel errors other than ENOENT (the query
	// is reported as NoSocket), queries that cannot name a socket
	// (invalid or mixed-family addresses), and malformed replies.
	Errors uint64
	// Overruns counts the times the kernel reported that replies were
	// dropped because the receive buffer was full (ENOBUFS); Resent counts
	// the queries asked again because their reply was lost.
	Overruns, Resent uint64
}
