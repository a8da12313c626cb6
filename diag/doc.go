// Package diag looks up TCP sockets by their exact 4-tuple with
// NETLINK_SOCK_DIAG (inet_diag) and returns what the kernel knows about each:
// state, socket cookie, queues, owner, socket buffer sizes, congestion
// control algorithm, shutdown bits and struct tcp_info.
//
// Each query is an inet_diag_req_v2 request (SOCK_DIAG_BY_FAMILY, no dump)
// naming one socket by local and remote address and port. Up to
// Config.BatchSize requests go to the kernel in one sendmsg; the kernel
// answers every one of them inside that sendmsg, and the replies are read
// back with recvmmsg into buffers the Client owns, matched to their query by
// sequence number. A lookup costs the same however many sockets the host
// has, unlike a dump, which walks the whole socket table. Lookup does not
// allocate.
//
// What a reply means is decided from the socket's state (see Status):
// an absent 4-tuple on a port with a listener is answered with the LISTEN
// socket, which Lookup reports as NoSocket; TIME_WAIT sockets carry no
// tcp_info and are NotEstablished.
//
// IPv4 connections owned by a dual-stack AF_INET6 socket (a server listening
// on [::], as iperf3 does) are found by an IPv4 query: the kernel's lookup
// for AF_INET and for v4-mapped AF_INET6 requests is the same IPv4 hash
// lookup, and the reply reports Family AF_INET6. Queries with v4-mapped
// addresses are sent as AF_INET.
//
// struct tcp_info grows with kernel versions (104 bytes before Linux 4.x,
// 232 with 5.4, 248 with 6.7, 280 with 6.18). ParseTCPInfo reads it by the
// length the kernel sent and leaves what is missing zero;
// Snapshot.InfoLen says how much there was.
//
// The message encoding and parsing (msg.go, tcpinfo.go) is portable and
// tested on every platform; the Client exists only on Linux, and Open
// fails elsewhere.
//
// # Concurrency
//
// A Client's Lookup is not safe for concurrent use: give each goroutine its
// own Client. Client.Stats and Client.Close may be called from any
// goroutine; a Close during a Lookup makes it fail with net.ErrClosed, and
// the socket's descriptor is released only once the Lookup is out of its
// system call, so it is never reused under it.
//
// # Privileges
//
// None. inet_diag answers exact TCP lookups for sockets of every user: an
// unprivileged process (checked as user nobody on Linux 6.18) finds another
// user's socket with its cookie, tcp_info, congestion algorithm and memory
// counters. Only attributes this package does not ask for (socket mark,
// class id, BPF socket storage) need CAP_NET_ADMIN.
//
// Entering another network namespace (Config.NetNS) needs CAP_SYS_ADMIN.
// With CAP_NET_ADMIN, Open sizes the receive buffer past net.core.rmem_max
// (SO_RCVBUFFORCE); without it the buffer is capped there, so very large
// batches may overrun, which Lookup notices and repairs by asking again
// (Stats.Overruns, Stats.Resent).
//
// # Network namespaces
//
// Open creates the netlink socket in the network namespace of the calling
// thread, and the socket answers for that namespace for its whole life,
// whatever goroutine or thread uses it later. To watch another namespace,
// set Config.NetNS to its path, or call Open inside netns.Do. Use the same
// namespace as the packet capture: a 4-tuple means nothing across
// namespaces.
package diag
