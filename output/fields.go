package output

import (
	"github.com/siftr-probe/siftr-probe/tcp"
)

// FreeBSD tcp_fsm.h states, the values of SIFTR's conn_state.
const (
	FreeBSDClosed      = 0
	FreeBSDListen      = 1
	FreeBSDSynSent     = 2
	FreeBSDSynReceived = 3
	FreeBSDEstablished = 4
	FreeBSDCloseWait   = 5
	FreeBSDFinWait1    = 6
	FreeBSDClosing     = 7
	FreeBSDLastAck     = 8
	FreeBSDFinWait2    = 9
	FreeBSDTimeWait    = 10
)

// FreeBSD tcp_var.h t_flags bits that SIFTR's t_flags column can show and
// that this package synthesizes from Linux facts.
const (
	TFSentFIN      = 0x00000010 // TF_SENTFIN
	TFReqScale     = 0x00000020 // TF_REQ_SCALE
	TFRcvdScale    = 0x00000040 // TF_RCVD_SCALE
	TFReqTstmp     = 0x00000080 // TF_REQ_TSTMP
	TFRcvdTstmp    = 0x00000100 // TF_RCVD_TSTMP
	TFSACKPermit   = 0x00000200 // TF_SACK_PERMIT
	TFFastRecovery = 0x00100000 // TF_FASTRECOVERY
	TFCongRecovery = 0x20000000 // TF_CONGRECOVERY
)

// TF2ECNPermit is FreeBSD's TF2_ECN_PERMIT, the only t_flags2 bit synthesized.
const TF2ECNPermit = 0x20

// FreeBSDInfiniteSsthresh is what FreeBSD's snd_ssthresh holds before the
// first loss (TCP_MAXWIN << TCP_MAX_WINSHIFT); Linux's infinite ssthresh is
// logged as this value.
const FreeBSDInfiniteSsthresh = 1073725440

// linuxInfiniteSsthresh is Linux's TCP_INFINITE_SSTHRESH, in segments.
const linuxInfiniteSsthresh = 0x7fffffff

// FlowType is SIFTR's flowtype column: M_HASHTYPE_OPAQUE, since the flowid is
// derived from the socket cookie rather than a RSS hash.
const FlowType = 63

var freeBSDState = [...]uint8{
	tcp.StateEstablished: FreeBSDEstablished,
	tcp.StateSynSent:     FreeBSDSynSent,
	tcp.StateSynRecv:     FreeBSDSynReceived,
	tcp.StateFinWait1:    FreeBSDFinWait1,
	tcp.StateFinWait2:    FreeBSDFinWait2,
	tcp.StateTimeWait:    FreeBSDTimeWait,
	tcp.StateClose:       FreeBSDClosed,
	tcp.StateCloseWait:   FreeBSDCloseWait,
	tcp.StateLastAck:     FreeBSDLastAck,
	tcp.StateListen:      FreeBSDListen,
	tcp.StateClosing:     FreeBSDClosing,
	tcp.StateNewSynRecv:  FreeBSDSynReceived,
}

// FreeBSDState maps a Linux TCP state (tcp.StateEstablished...) to the
// FreeBSD tcp_fsm.h number SIFTR logs. NEW_SYN_RECV maps to SYN_RECEIVED;
// an unknown state maps to CLOSED (0).
func FreeBSDState(linux uint8) uint8 {
	if int(linux) < len(freeBSDState) {
		return freeBSDState[linux]
	}
	return FreeBSDClosed
}

var linuxStateName = [...]string{
	0:                    "UNKNOWN",
	tcp.StateEstablished: "ESTABLISHED",
	tcp.StateSynSent:     "SYN_SENT",
	tcp.StateSynRecv:     "SYN_RECV",
	tcp.StateFinWait1:    "FIN_WAIT1",
	tcp.StateFinWait2:    "FIN_WAIT2",
	tcp.StateTimeWait:    "TIME_WAIT",
	tcp.StateClose:       "CLOSE",
	tcp.StateCloseWait:   "CLOSE_WAIT",
	tcp.StateLastAck:     "LAST_ACK",
	tcp.StateListen:      "LISTEN",
	tcp.StateClosing:     "CLOSING",
	tcp.StateNewSynRecv:  "NEW_SYN_RECV",
}

// LinuxStateName returns the kernel's name of a Linux TCP state
// ("ESTABLISHED", "FIN_WAIT1", ...), or "UNKNOWN".
func LinuxStateName(s uint8) string {
	if int(s) < len(linuxStateName) {
		return linuxStateName[s]
	}
	return "UNKNOWN"
}

var caStateName = [...]string{
	tcp.CAOpen:     "open",
	tcp.CADisorder: "disorder",
	tcp.CACWR:      "cwr",
	tcp.CARecovery: "recovery",
	tcp.CALoss:     "loss",
}

// CAStateName returns the name of a tcpi_ca_state value ("open", "disorder",
// "cwr", "recovery", "loss"), or "unknown".
func CAStateName(s uint8) string {
	if int(s) < len(caStateName) {
		return caStateName[s]
	}
	return "unknown"
}

// satMul returns a*b saturated at 2^32-1.
func satMul(a, b uint32) uint32 {
	p := uint64(a) * uint64(b)
	if p > 0xffffffff {
		return 0xffffffff
	}
	return uint32(p)
}

// SndSsthresh is SIFTR's snd_ssthresh in bytes: tcpi_snd_ssthresh *
// tcpi_snd_mss, saturated at 2^32-1; Linux's infinite ssthresh (>= 0x7fffffff
// segments) is FreeBSDInfiniteSsthresh.
func SndSsthresh(s *tcp.Snapshot) uint32 {
	if s.Info.SndSsthresh >= linuxInfiniteSsthresh {
		return FreeBSDInfiniteSsthresh
	}
	return satMul(s.Info.SndSsthresh, s.Info.SndMSS)
}

// SndCwnd is SIFTR's snd_cwnd in bytes: tcpi_snd_cwnd * tcpi_snd_mss,
// saturated at 2^32-1.
func SndCwnd(s *tcp.Snapshot) uint32 { return satMul(s.Info.SndCwnd, s.Info.SndMSS) }

// TFlags2 is SIFTR's t_flags2: TF2ECNPermit when ECN was negotiated, else 0.
func TFlags2(s *tcp.Snapshot) uint32 {
	if s.Info.Options&tcp.OptECN != 0 {
		return TF2ECNPermit
	}
	return 0
}

// SndScale is SIFTR's snd_scale: tcpi_snd_wscale when window scaling is in
// use (TCPI_OPT_WSCALE), else 0.
func SndScale(s *tcp.Snapshot) uint8 {
	if s.Info.Options&tcp.OptWScale != 0 {
		return s.Info.SndWScale
	}
	return 0
}

// RcvScale is SIFTR's rcv_scale: tcpi_rcv_wscale when window scaling is in
// use (TCPI_OPT_WSCALE), else 0.
func RcvScale(s *tcp.Snapshot) uint8 {
	if s.Info.Options&tcp.OptWScale != 0 {
		return s.Info.RcvWScale
	}
	return 0
}

// ConnState is SIFTR's conn_state: the socket's state as a FreeBSD number.
func ConnState(s *tcp.Snapshot) uint8 { return FreeBSDState(s.State) }

// SACKEnabled is SIFTR's sack_enabled: 1 when SACK was negotiated, else 0.
func SACKEnabled(s *tcp.Snapshot) uint32 {
	if s.Info.Options&tcp.OptSACK != 0 {
		return 1
	}
	return 0
}

// TFlags is SIFTR's t_flags, synthesized with FreeBSD bit values from what
// Linux reports: SACK_PERMIT (SACK negotiated), REQ_SCALE|RCVD_SCALE (window
// scaling), REQ_TSTMP|RCVD_TSTMP (timestamps), FASTRECOVERY|CONGRECOVERY
// (ca_state Recovery), CONGRECOVERY (ca_state CWR), SENTFIN (FIN_WAIT1,
// FIN_WAIT2, CLOSING, LAST_ACK). Other FreeBSD bits are never set.
func TFlags(s *tcp.Snapshot) uint32 {
	var f uint32
	o := s.Info.Options
	if o&tcp.OptSACK != 0 {
		f |= TFSACKPermit
	}
	if o&tcp.OptWScale != 0 {
		f |= TFReqScale | TFRcvdScale
	}
	if o&tcp.OptTimestamps != 0 {
		f |= TFReqTstmp | TFRcvdTstmp
	}
	switch s.Info.CAState {
	case tcp.CARecovery:
		f |= TFFastRecovery | TFCongRecovery
	case tcp.CACWR:
		f |= TFCongRecovery
	}
	switch s.State {
	case tcp.StateFinWait1, tcp.StateFinWait2, tcp.StateClosing, tcp.StateLastAck:
		f |= TFSentFIN
	}
	return f
}

// Inflight is SIFTR's sent_inflight_bytes (snd_max - snd_una): idiag_wqueue
// minus tcpi_notsent_bytes, never below 0.
func Inflight(s *tcp.Snapshot) uint32 {
	if s.Info.NotsentBytes >= s.WQueue {
		return 0
	}
	return s.WQueue - s.Info.NotsentBytes
}

// splitTime splits nanoseconds since the epoch into seconds and microseconds
// (0..999999), rounding toward minus infinity.
func splitTime(ns int64) (sec int64, usec int64) {
	sec = ns / 1e9
	rem := ns % 1e9
	if rem < 0 {
		sec--
		rem += 1e9
	}
	return sec, rem / 1e3
}

// FlowID is SIFTR's flowid: the low 32 bits of the socket cookie, forced
// non-zero (FreeBSD panics on a zero flowid).
func FlowID(s *tcp.Snapshot) uint32 {
	id := uint32(s.Cookie)
	if id == 0 {
		id = uint32(s.Cookie>>32) | 1
	}
	return id
}
