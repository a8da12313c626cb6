// Package capture reads TCP packet headers from a network interface with
// AF_PACKET TPACKET_V3 rings and decodes them in place.
//
// Open creates one ring per worker (by default one per online CPU), each an
// AF_PACKET socket bound to the interface and joined in a PACKET_FANOUT_CPU
// group with a group id the kernel picks, so packets handled by one CPU
// always land in the same ring. A classic BPF filter in the kernel keeps
// IPv4 and IPv6 TCP segments (on Config.Port if set) and copies only their
// headers into the ring: up to the end of the TCP header, however long the
// IPv4 options or the IPv6 extension header chain (up to 8 headers; the
// filter walks it), or the first 256 bytes where user space walks the
// headers (VLAN tags in the frame). Run reads each ring on its own goroutine,
// decodes every frame of a retired block into a reused []Packet (timestamp,
// direction from sll_pkttype, addresses, ports, seq, ack, flags, window,
// payload length) and passes the block to a Handler. Frames that are not
// delivered are counted by reason in Stats. Reading allocates nothing per
// packet or per block.
//
// Frames the IP stack drops before TCP are not delivered, since no socket
// state belongs to them: the decoder checks what IP checks (header
// checksum, lengths against the frame) and counts failures as Malformed.
//
// The source is split by concern: ring.go is the portable API, block.go the
// portable block walk (tested everywhere on synthetic blocks),
// ring_linux.go the set-up, run_linux.go the run, stop and drain lifecycle,
// live_linux.go the checks that tell a downed interface from a removed one.
//
// DecodeEthernet and DecodeIP are the decoders the rings use; they are pure
// functions, portable, and usable on their own (on pcap files, in tests).
//
// # Concurrency
//
// A Handler's methods are called from the worker goroutines: never
// concurrently for the same worker, concurrently for different workers.
// Packets of one TCP connection may reach different workers when the kernel
// handles them on different CPUs (both directions of a flow usually do).
// Within a worker, blocks and the packets in them are in ring order.
// Capture.Stats, Capture.Workers and Capture.Close are safe for concurrent
// use, also while Run is running.
//
// # Timestamps and ordering
//
// Packet.Time is the kernel's software timestamp (CLOCK_REALTIME) of the
// frame. The kernel hands a block to user space when it is full or when
// Config.BlockTimeout has passed since it was opened, so a packet reaches
// the Handler up to about two block timeouts after its timestamp (plus any
// time the worker spends in the Handler). Handler.Block and Handler.Idle
// give each worker's lower bound for its later packets, so that callers can
// merge workers in time order; both rest on one assumption, that a frame
// reaches its ring within StampLag of its timestamp (RPS steering and a
// CPU's backlog can reorder a ring's frames by about that). Across rings
// timestamps interleave.
//
// On a loopback device every packet is seen twice: once as DirOut (the
// sending socket's) and once as DirIn (the receiving socket's).
//
// # VLANs
//
// Frames are decoded from their Ethernet header on Ethernet and loopback
// devices, and from the network header on other link types. A VLAN tag the
// driver moved out of the frame (VLAN offload, the usual case on receive)
// is seen in the ring's tp_vlan_tci: a received frame tagged with an id none
// of the interface's VLAN devices has (read from /proc/net/vlan/config at
// Open) is one the stack drops, and is counted in Stats.VLAN, as is a
// received frame with a tag still in it (stacked VLANs: the stack takes the
// outer tag out first). A tag still in a sent frame (transmit without
// offload) is skipped, up to two 802.1Q/802.1ad tags; more are Malformed.
// The VLAN id is not reported: capture on the VLAN device to separate
// VLANs.
//
// # Privileges
//
// Open needs CAP_NET_RAW in the user namespace that owns the network
// namespace it runs in. Without it Open returns an error for which
// errors.Is(err, os.ErrPermission) is true.
//
// # Network namespaces
//
// Open creates its sockets, and looks up Config.Iface, in the network
// namespace of the calling thread. To capture in another namespace, call
// Open inside netns.Do (internal/netns); the rings stay in that namespace
// and Run may then be called from any goroutine.
package capture
