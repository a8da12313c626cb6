package output

import (
	"github.com/siftr-probe/siftr-probe/diag"
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
	diag.StateEstablished: FreeBSDEstablished,
	diag.StateSynSent:     FreeBSDSynSent,
	diag.StateSynRecv:     FreeBSDSynReceived,
	diag.StateFinWait1:    FreeBSDFinWait1,
	diag.StateFinWait2:    FreeBSDFinWait2,
	diag.StateTimeWait:    FreeBSDTimeWait,
	diag.StateClose:       FreeBSDClosed,
	diag.StateCloseWait:   FreeBSDCloseWait,
	diag.StateLastAck:     FreeBSDLastAck,
	diag.StateListen:      FreeBSDListen,
	diag.StateClosing:     FreeBSDClosing,
	diag.StateNewSynRecv:  FreeBSDSynReceived,
}

// FreeBSDState maps a Linux TCP state (diag.StateEstablished...) to the
// FreeBSD tcp_fsm.h number SIFTR logs. NEW_SYN_RECV maps to SYN_RECEIVED;
// an unknown state maps to CLOSED (0).
func FreeBSDState(linux uint8) uint8 {
	if int(linux) < len(freeBSDState) {
		return freeBSDState[linux]
	}
	return FreeBSDClosed
}

var linuxStateName = [...]string{
	0:                     "UNKNOWN",
	diag.StateEstablished: "ESTABLISHED",
	diag.StateSynSent:     "SYN_SENT",
	diag.StateSynRecv:     "SYN_RECV",
	diag.StateFinWait1:    "FIN_WAIT1",
	diag.StateFinWait2:    "FIN_WAIT2",
	diag.StateTimeWait:    "TIME_WAIT",
	diag.StateClose:       "CLOSE",
	diag.StateCloseWait:   "CLOSE_WAIT",
	diag.StateLastAck:     "LAST_ACK",
	diag.StateListen:      "LISTEN",
	diag.StateClosing:     "CLOSING",
	diag.StateNewSynRecv:  "NEW_SYN_RECV",
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
	diag.CAOpen:     "open",
	diag.CADisorder: "disorder",
	diag.CACWR:      "cwr",
	diag.CARecovery: "recovery",
	diag.CALoss:     "loss",
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
func (r *Record) SndSsthresh() uint32 {
	if r.Snap.Info.SndSsthresh >= linuxInfiniteSsthresh {
		return FreeBSDInfiniteSsthresh
	}
	return satMul(r.Snap.Info.SndSsthresh, r.Snap.Info.SndMSS)
}

// SndCwnd is SIFTR's snd_cwnd in bytes: tcpi_snd_cwnd * tcpi_snd_mss,
// saturated at 2^32-1.
func (r *Record) SndCwnd() uint32 { return satMul(r.Snap.Info.SndCwnd, r.Snap.Info.SndMSS) }

// TFlags2 is SIFTR's t_flags2: TF2ECNPermit when ECN was negotiated, else 0.
func (r *Record) TFlags2() uint32 {
	if r.Snap.Info.Options&diag.OptECN != 0 {
		return TF2ECNPermit
	}
	return 0
}

// SndScale is SIFTR's snd_scale: tcpi_snd_wscale when window scaling is in
// use (TCPI_OPT_WSCALE), else 0.
func (r *Record) SndScale() uint8 {
	if r.Snap.Info.Options&diag.OptWScale != 0 {
		return r.Snap.Info.SndWScale
	}
	return 0
}

// RcvScale is SIFTR's rcv_scale: tcpi_rcv_wscale when window scaling is in
// use (TCPI_OPT_WSCALE), else 0.
func (r *Record) RcvScale() uint8 {
	if r.Snap.Info.Options&diag.OptWScale != 0 {
		return r.Snap.Info.RcvWScale
	}
	return 0
}

// ConnState is SIFTR's conn_state: the socket's state as a FreeBSD number.
func (r *Record) ConnState() uint8 { return FreeBSDState(r.Snap.State) }

// SACKEnabled is SIFTR's sack_enabled: 1 when SACK was negotiated, else 0.
func (r *Record) SACKEnabled() uint32 {
	if r.Snap.Info.Options&diag.OptSACK != 0 {
		return 1
	}
	return 0
}

// TFlags is SIFTR's t_flags, synthesized with FreeBSD bit values from what
// Linux reports: SACK_PERMIT (SACK negotiated), REQ_SCALE|RCVD_SCALE (window
// scaling), REQ_TSTMP|RCVD_TSTMP (timestamps), FASTRECOVERY|CONGRECOVERY
// (ca_state Recovery), CONGRECOVERY (ca_state CWR), SENTFIN (FIN_WAIT1,
// FIN_WAIT2, CLOSING, LAST_ACK). Other FreeBSD bits are never set.
func (r *Record) TFlags() uint32 {
	var f uint32
	o := r.Snap.Info.Options
	if o&diag.OptSACK != 0 {
		f |= TFSACKPermit
	}
	if o&diag.OptWScale != 0 {
		f |= TFReqScale | TFRcvdScale
	}
	if o&diag.OptTimestamps != 0 {
		f |= TFReqTstmp | TFRcvdTstmp
	}
	switch r.Snap.Info.CAState {
	case diag.CARecovery:
		f |= TFFastRecovery | TFCongRecovery
	case diag.CACWR:
		f |= TFCongRecovery
	}
	switch r.Snap.State {
	case diag.StateFinWait1, diag.StateFinWait2, diag.StateClosing, diag.StateLastAck:
		f |= TFSentFIN
	}
	return f
}

// Inflight is SIFTR's sent_inflight_bytes (snd_max - snd_una): idiag_wqueue
// minus tcpi_notsent_bytes, never below 0.
func (r *Record) Inflight() uint32 {
	if r.Snap.Info.NotsentBytes >= r.Snap.WQueue {
		return 0
	}
	return r.Snap.WQueue - r.Snap.Info.NotsentBytes
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
