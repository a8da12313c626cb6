package tcp

import "net/netip"

// Query names one socket by the local socket's view of its 4-tuple.
// Both addresses must be of the same family (IPv4 or IPv6); an IPv4 query also
// finds a connection owned by a dual-stack AF_INET6 socket (v4-mapped).
type Query struct {
	Local, Remote netip.AddrPort
	// IfIndex is the interface the connection's packets cross, sent as the
	// request's idiag_if: sockets bound to a device (link-local IPv6 ones,
	// SO_BINDTODEVICE) are found only with it, and unbound sockets match any
	// value. 0 means none; a numeric or named zone on a link-local IPv6
	// address takes precedence.
	IfIndex uint32
}

// Status says what a lookup found.
type Status uint8

const (
	// NoSocket: the kernel has no socket for this 4-tuple (ENOENT, or it
	// answered with a LISTEN socket, which is what it does for an absent
	// 4-tuple on a listening port).
	NoSocket Status = iota
	// NotEstablished: a socket exists but is not yet established
	// (SYN_SENT, SYN_RECV) or gives no TCP state (TIME_WAIT, no tcp_info).
	NotEstablished
	// Found: an established (or later) socket with tcp_info; the snapshot is valid.
	Found
)

func (s Status) String() string {
	switch s {
	case Found:
		return "found"
	case NotEstablished:
		return "not-established"
	default:
		return "no-socket"
	}
}

// Source names a state source: how a snapshot was read.
type Source uint8

const (
	// SourceDiag: read with inet_diag after the packet was captured.
	SourceDiag Source = iota
	// SourceExact: read in the kernel at the packet, by eBPF programs.
	SourceExact
)

func (s Source) String() string {
	if s == SourceExact {
		return "exact"
	}
	return "diag"
}

// Linux TCP states (include/net/tcp_states.h).
const (
	StateEstablished = 1
	StateSynSent     = 2
	StateSynRecv     = 3
	StateFinWait1    = 4
	StateFinWait2    = 5
	StateTimeWait    = 6
	StateClose       = 7
	StateCloseWait   = 8
	StateLastAck     = 9
	StateListen      = 10
	StateClosing     = 11
	StateNewSynRecv  = 12
)

// Snapshot is one socket's state as the kernel reported it.
type Snapshot struct {
	// Time is when the state was read, in nanoseconds since the Unix epoch.
	// An inet_diag lookup takes it right after the request was sent (the
	// kernel answers synchronously inside sendmsg, so it is an upper bound);
	// a state read at the packet carries the packet's time.
	Time int64
	// Status is the outcome of the lookup; the fields below are valid only
	// when Status is Found (State, Cookie and Family also for NotEstablished).
	Status Status
	// Source is the state source that read the snapshot.
	Source Source
	// Family is the socket's family (unix.AF_INET or unix.AF_INET6); an IPv4
	// connection on a dual-stack socket reports AF_INET6.
	Family uint8
	// State is the Linux TCP state (StateEstablished...).
	State uint8
	// Shutdown is the INET_DIAG_SHUTDOWN bitmask (1 = RCV_SHUTDOWN, 2 = SEND_SHUTDOWN).
	Shutdown uint8
	// Cookie is the kernel's socket cookie, unique per socket for the kernel's uptime.
	Cookie uint64
	// RQueue is idiag_rqueue (rcv_nxt - copied_seq for established sockets).
	RQueue uint32
	// WQueue is idiag_wqueue (write_seq - snd_una).
	WQueue uint32
	// UID and Inode of the owning socket.
	UID, Inode uint32
	// SndBuf and RcvBuf are SK_MEMINFO_SNDBUF and SK_MEMINFO_RCVBUF.
	SndBuf, RcvBuf uint32
	// Cong is the congestion control algorithm name (INET_DIAG_CONG), NUL-padded.
	Cong [16]byte
	// InfoLen is how many bytes of tcp_info the kernel sent; fields beyond it are zero.
	InfoLen uint16
	// Info is the parsed tcp_info.
	Info Info
}

// CongName returns the congestion control name without padding.
func (s *Snapshot) CongName() string {
	n := 0
	for n < len(s.Cong) && s.Cong[n] != 0 {
		n++
	}
	return string(s.Cong[:n])
}

// tcp_info option bits (tcpi_options).
const (
	OptTimestamps = 1
	OptSACK       = 2
	OptWScale     = 4
	OptECN        = 8
	OptECNSeen    = 16
	OptSYNData    = 32
)

// TCP congestion avoidance states (tcpi_ca_state).
const (
	CAOpen     = 0
	CADisorder = 1
	CACWR      = 2
	CARecovery = 3
	CALoss     = 4
)

// Info mirrors Linux struct tcp_info (include/uapi/linux/tcp.h) up to
// tcpi_total_rto_time (Linux 6.7). Fields the kernel did not send are zero;
// Snapshot.InfoLen tells which were sent. Times are in microseconds unless noted.
type Info struct {
	State, CAState, Retransmits, Probes, Backoff, Options uint8
	SndWScale, RcvWScale                                  uint8 // the two nibbles of byte 6
	DeliveryRateAppLimited                                bool
	FastOpenClientFail                                    uint8

	RTO, ATO, SndMSS, RcvMSS                                 uint32
	Unacked, Sacked, Lost, Retrans, Fackets                  uint32
	LastDataSent, LastAckSent, LastDataRecv, LastAckRecv     uint32 // ms
	PMTU, RcvSsthresh, RTT, RTTVar, SndSsthresh, SndCwnd     uint32
	AdvMSS, Reordering, RcvRTT, RcvSpace, TotalRetrans       uint32
	PacingRate, MaxPacingRate, BytesAcked, BytesReceived     uint64 // rates in bytes/s
	SegsOut, SegsIn, NotsentBytes, MinRTT, DataSegsIn        uint32
	DataSegsOut                                              uint32
	DeliveryRate, BusyTime, RwndLimited, SndbufLimited       uint64
	Delivered, DeliveredCE                                   uint32
	BytesSent, BytesRetrans                                  uint64
	DSACKDups, ReordSeen, RcvOOOPack, SndWnd, RcvWnd, Rehash uint32
	TotalRTO, TotalRTORecoveries                             uint16
	TotalRTOTime                                             uint32 // ms
}
