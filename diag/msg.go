package diag

import (
	"encoding/binary"
	"net/netip"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// Netlink and sock_diag constants (include/uapi/linux/netlink.h,
// sock_diag.h, inet_diag.h). They are spelled out here rather than taken
// from golang.org/x/sys/unix so that the encoder and the parser build and
// run (and are fuzzed) on every platform.
const (
	nlmsgError       = 0x2
	nlmsgDone        = 0x3
	nlmFRequest      = 0x1
	sockDiagByFamily = 20

	afInet     = 2
	afInet6    = 10
	ipprotoTCP = 6

	inetDiagInfo      = 2
	inetDiagCong      = 4
	inetDiagSKMeminfo = 7
	inetDiagShutdown  = 8

	// extMask asks for INET_DIAG_INFO, INET_DIAG_CONG and
	// INET_DIAG_SKMEMINFO (bit n-1 asks for attribute n).
	// INET_DIAG_SHUTDOWN is always sent.
	extMask = 1<<(inetDiagInfo-1) | 1<<(inetDiagCong-1) | 1<<(inetDiagSKMeminfo-1)

	// allStates selects sockets in any TCP state.
	allStates = 0xffffffff
	// noCookie is INET_DIAG_NOCOOKIE: do not check the socket cookie.
	noCookie = ^uint32(0)

	skMeminfoRcvbuf = 1
	skMeminfoSndbuf = 3

	nlaTypeMask = 0x3fff // clears NLA_F_NESTED and NLA_F_NET_BYTEORDER
)

// Sizes and offsets of the kernel structures this package reads and writes.
// msg_test.go checks them against the mirrors below with unsafe.Sizeof and
// unsafe.Offsetof.
const (
	sizeofNlmsghdr = 16
	sizeofNlmsgerr = 4 + sizeofNlmsghdr // errno + the request's header (NETLINK_CAP_ACK)
	sizeofSockID   = 48
	sizeofReqV2    = 56
	sizeofDiagMsg  = 72
	sizeofNlattr   = 4

	// requestLen is one complete request: nlmsghdr + inet_diag_req_v2.
	requestLen = sizeofNlmsghdr + sizeofReqV2

	// Offsets inside inet_diag_sockid.
	offSockIDSport  = 0
	offSockIDDport  = 2
	offSockIDSrc    = 4
	offSockIDDst    = 20
	offSockIDIf     = 36
	offSockIDCookie = 40

	// Offsets inside inet_diag_req_v2.
	offReqFamily   = 0
	offReqProtocol = 1
	offReqExt      = 2
	offReqStates   = 4
	offReqID       = 8

	// Offsets inside inet_diag_msg.
	offMsgFamily = 0
	offMsgState  = 1
	offMsgID     = 4
	offMsgRQueue = 56
	offMsgWQueue = 60
	offMsgUID    = 64
	offMsgInode  = 68
)

// Mirrors of the kernel structures, for the layout tests only: the encoder
// and parser work on bytes at the offsets above.
type (
	nlmsghdr struct {
		Len   uint32
		Type  uint16
		Flags uint16
		Seq   uint32
		Pid   uint32
	}
	inetDiagSockID struct {
		Sport  [2]byte // big-endian
		Dport  [2]byte // big-endian
		Src    [4]uint32
		Dst    [4]uint32
		If     uint32
		Cookie [2]uint32
	}
	inetDiagReqV2 struct {
		Family   uint8
		Protocol uint8
		Ext      uint8
		Pad      uint8
		States   uint32
		ID       inetDiagSockID
	}
	inetDiagMsg struct {
		Family  uint8
		State   uint8
		Timer   uint8
		Retrans uint8
		ID      inetDiagSockID
		Expires uint32
		RQueue  uint32
		WQueue  uint32
		UID     uint32
		Inode   uint32
	}
)

// native is the byte order of everything in these messages except ports
// (and addresses, which are byte strings).
var native = binary.NativeEndian

// request is a Query turned into what goes on the wire.
type request struct {
	family       uint8
	ifindex      uint32
	lport, rport uint16
	local        [16]byte
	remote       [16]byte
}

// makeRequest resolves the address family of q. IPv4 and v4-mapped IPv6
// addresses are asked as AF_INET (the kernel looks those up in the IPv4
// tables in both cases, and that is where dual-stack AF_INET6 sockets
// carrying IPv4 connections are hashed too). ok is false when q cannot name a
// socket: an invalid address, or one IPv4 and one (non-mapped) IPv6 address.
// ifindex is the numeric zone of a link-local IPv6 address if there is one,
// else q.IfIndex; the caller resolves zone names.
func makeRequest(q tcp.Query) (r request, ok bool) {
	l, rm := q.Local.Addr(), q.Remote.Addr()
	if !l.IsValid() || !rm.IsValid() {
		return r, false
	}
	l4, r4 := l.Unmap(), rm.Unmap()
	r.lport, r.rport = q.Local.Port(), q.Remote.Port()
	r.ifindex = q.IfIndex
	switch {
	case l4.Is4() && r4.Is4():
		r.family = afInet
		a, b := l4.As4(), r4.As4()
		copy(r.local[:4], a[:])
		copy(r.remote[:4], b[:])
	case l.Is6() && rm.Is6() && !l4.Is4() && !r4.Is4():
		r.family = afInet6
		r.local, r.remote = l.As16(), rm.As16()
		if z := numericZone(l); z != 0 {
			r.ifindex = z
		} else if z := numericZone(rm); z != 0 {
			r.ifindex = z
		}
	default:
		return r, false
	}
	return r, true
}

// numericZone returns a decimal zone ("fe80::1%3") as an interface index,
// or 0.
func numericZone(a netip.Addr) uint32 {
	z := a.Zone()
	if z == "" || len(z) > 10 {
		return 0
	}
	var n uint64
	for i := 0; i < len(z); i++ {
		c := z[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint64(c-'0')
	}
	if n > 0xffffffff {
		return 0
	}
	return uint32(n)
}

// putRequest writes one SOCK_DIAG_BY_FAMILY request (nlmsghdr +
// inet_diag_req_v2, requestLen bytes) for r into b. b must be at least
// requestLen long; every byte of b[:requestLen] is written.
func putRequest(b []byte, seq uint32, r *request) {
	b = b[:requestLen]
	native.PutUint32(b[0:4], requestLen)
	native.PutUint16(b[4:6], sockDiagByFamily)
	native.PutUint16(b[6:8], nlmFRequest)
	native.PutUint32(b[8:12], seq)
	native.PutUint32(b[12:16], 0)

	req := b[sizeofNlmsghdr:]
	req[offReqFamily] = r.family
	req[offReqProtocol] = ipprotoTCP
	req[offReqExt] = extMask
	req[3] = 0
	native.PutUint32(req[offReqStates:], allStates)

	id := req[offReqID:]
	binary.BigEndian.PutUint16(id[offSockIDSport:], r.lport)
	binary.BigEndian.PutUint16(id[offSockIDDport:], r.rport)
	copy(id[offSockIDSrc:offSockIDSrc+16], r.local[:])
	copy(id[offSockIDDst:offSockIDDst+16], r.remote[:])
	native.PutUint32(id[offSockIDIf:], r.ifindex)
	native.PutUint32(id[offSockIDCookie:], noCookie)
	native.PutUint32(id[offSockIDCookie+4:], noCookie)
}

// nlAlign rounds n up to the netlink alignment (4).
func nlAlign(n int) int { return (n + 3) &^ 3 }

// nextMessage splits the first netlink message off a datagram. It returns
// the message's header fields, its payload and the rest of the datagram. ok
// is false when b holds no complete header. A message whose length runs
// past the end of b (a truncated read) is clipped to b.
func nextMessage(b []byte) (typ uint16, seq uint32, payload, rest []byte, ok bool) {
	if len(b) < sizeofNlmsghdr {
		return 0, 0, nil, nil, false
	}
	l := int(native.Uint32(b[0:4]))
	if l < sizeofNlmsghdr {
		return 0, 0, nil, nil, false
	}
	typ = native.Uint16(b[4:6])
	seq = native.Uint32(b[8:12])
	if l > len(b) {
		l = len(b)
	}
	payload = b[sizeofNlmsghdr:l]
	if a := nlAlign(l); a < len(b) {
		rest = b[a:]
	}
	return typ, seq, payload, rest, true
}

// Reply kinds returned by parseReply.
const (
	replyOther = iota // not a reply to a lookup (NLMSG_DONE, NLMSG_NOOP, ...)
	replySocket
	replyError
)

// parseError reads the errno of an NLMSG_ERROR payload (a positive number;
// 0 is an acknowledgement). ok is false when the payload is too short.
func parseError(payload []byte) (errno int32, ok bool) {
	if len(payload) < 4 {
		return 0, false
	}
	return -int32(native.Uint32(payload[0:4])), true
}

// parseSocket fills s from the payload of a SOCK_DIAG_BY_FAMILY reply
// (inet_diag_msg followed by attributes) and sets s.Status from the
// socket's state. s.Time is kept; every other field of s is overwritten.
// ok is false when the payload is too short to hold inet_diag_msg.
func parseSocket(payload []byte, s *tcp.Snapshot) (ok bool) {
	t := s.Time
	*s = tcp.Snapshot{Time: t}
	if len(payload) < sizeofDiagMsg {
		return false
	}
	m := payload[:sizeofDiagMsg]
	s.Family = m[offMsgFamily]
	s.State = m[offMsgState]
	id := m[offMsgID : offMsgID+sizeofSockID]
	s.Cookie = uint64(native.Uint32(id[offSockIDCookie:])) |
		uint64(native.Uint32(id[offSockIDCookie+4:]))<<32
	s.RQueue = native.Uint32(m[offMsgRQueue:])
	s.WQueue = native.Uint32(m[offMsgWQueue:])
	s.UID = native.Uint32(m[offMsgUID:])
	s.Inode = native.Uint32(m[offMsgInode:])

	hasInfo := false
	attrs := payload[sizeofDiagMsg:]
	for len(attrs) >= sizeofNlattr {
		l := int(native.Uint16(attrs[0:2]))
		typ := native.Uint16(attrs[2:4]) & nlaTypeMask
		if l < sizeofNlattr || l > len(attrs) {
			break
		}
		v := attrs[sizeofNlattr:l]
		switch typ {
		case inetDiagInfo:
			hasInfo = true
			s.InfoLen = uint16(min(len(v), 0xffff))
			parseTCPInfo(v, &s.Info)
		case inetDiagCong:
			for i := 0; i < len(v) && i < len(s.Cong) && v[i] != 0; i++ {
				s.Cong[i] = v[i]
			}
		case inetDiagSKMeminfo:
			if len(v) >= 4*(skMeminfoRcvbuf+1) {
				s.RcvBuf = native.Uint32(v[4*skMeminfoRcvbuf:])
			}
			if len(v) >= 4*(skMeminfoSndbuf+1) {
				s.SndBuf = native.Uint32(v[4*skMeminfoSndbuf:])
			}
		case inetDiagShutdown:
			if len(v) >= 1 {
				s.Shutdown = v[0]
			}
		}
		a := nlAlign(l)
		if a >= len(attrs) {
			break
		}
		attrs = attrs[a:]
	}
	s.Status = statusOf(s.State, hasInfo)
	if s.Status == tcp.NoSocket {
		// A listener answered for an absent 4-tuple: nothing here
		// describes the queried connection.
		*s = tcp.Snapshot{Time: t}
	}
	return true
}

// statusOf maps a reply's TCP state, and whether it carried tcp_info, to a
// lookup outcome.
func statusOf(state uint8, hasInfo bool) tcp.Status {
	switch state {
	case tcp.StateListen:
		// The kernel falls back to the listener when the 4-tuple has
		// no socket of its own.
		return tcp.NoSocket
	case tcp.StateSynSent, tcp.StateSynRecv, tcp.StateNewSynRecv, tcp.StateTimeWait:
		return tcp.NotEstablished
	}
	if !hasInfo {
		return tcp.NotEstablished
	}
	return tcp.Found
}

// parseReply parses one netlink message (header and payload, as split by
// nextMessage) into s when it answers a lookup. kind says what it was; for
// replyError, errno is the positive error number. A malformed reply
// (too short for its type) is reported as replyError with errno -1.
func parseReply(typ uint16, payload []byte, s *tcp.Snapshot) (kind int, errno int32) {
	switch typ {
	case sockDiagByFamily:
		if !parseSocket(payload, s) {
			return replyError, -1
		}
		return replySocket, 0
	case nlmsgError:
		e, ok := parseError(payload)
		if !ok {
			return replyError, -1
		}
		return replyError, e
	}
	return replyOther, 0
}
