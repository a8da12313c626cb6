package diag

import "github.com/siftr-probe/siftr-probe/tcp"

// Byte offsets of struct tcp_info fields (include/uapi/linux/tcp.h) and the
// kernel version that first sent each group. A field is read only when the
// kernel's tcp_info is long enough to hold it.
const (
	tcpInfoLenV1   = 104 // up to tcpi_total_retrans: 2.6 .. 3.x
	tcpInfoLen4_19 = 192 // up to tcpi_sndbuf_limited
	tcpInfoLen5_4  = 232 // up to tcpi_snd_wnd
	tcpInfoLen6_2  = 240 // up to tcpi_rehash (tcpi_rcv_wnd at 232)
	tcpInfoLen6_7  = 248 // up to tcpi_total_rto_time

	// SizeofTCPInfo is how many bytes of tcp_info tcp.Info holds.
	SizeofTCPInfo = tcpInfoLen6_7
)

// ParseTCPInfo parses a struct tcp_info of any length, as the kernel sent it
// (in host byte order), into info. Fields that b is too short to hold are
// set to zero; bytes past the fields tcp.Info knows are ignored. It returns
// the number of bytes it used, min(len(b), SizeofTCPInfo).
func ParseTCPInfo(b []byte, info *tcp.Info) int {
	return parseTCPInfo(b, info)
}

func parseTCPInfo(b []byte, info *tcp.Info) int {
	*info = tcp.Info{}
	n := min(len(b), SizeofTCPInfo)
	// Copy into a zeroed, full-size buffer so each field below is a plain
	// read at a constant offset; what the kernel did not send stays zero.
	var r [SizeofTCPInfo]byte
	copy(r[:], b[:n])
	if n == 0 {
		return 0
	}

	info.State = r[0]
	info.CAState = r[1]
	info.Retransmits = r[2]
	info.Probes = r[3]
	info.Backoff = r[4]
	info.Options = r[5]
	// __u8 tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4;
	info.SndWScale = r[6] & 0x0f
	info.RcvWScale = r[6] >> 4
	// __u8 tcpi_delivery_rate_app_limited:1, tcpi_fastopen_client_fail:2;
	info.DeliveryRateAppLimited = r[7]&0x01 != 0
	info.FastOpenClientFail = (r[7] >> 1) & 0x03

	u32 := func(off int) uint32 { return native.Uint32(r[off : off+4]) }
	u64 := func(off int) uint64 { return native.Uint64(r[off : off+8]) }
	u16 := func(off int) uint16 { return native.Uint16(r[off : off+2]) }

	info.RTO = u32(8)
	info.ATO = u32(12)
	info.SndMSS = u32(16)
	info.RcvMSS = u32(20)
	info.Unacked = u32(24)
	info.Sacked = u32(28)
	info.Lost = u32(32)
	info.Retrans = u32(36)
	info.Fackets = u32(40)
	info.LastDataSent = u32(44)
	info.LastAckSent = u32(48)
	info.LastDataRecv = u32(52)
	info.LastAckRecv = u32(56)
	info.PMTU = u32(60)
	info.RcvSsthresh = u32(64)
	info.RTT = u32(68)
	info.RTTVar = u32(72)
	info.SndSsthresh = u32(76)
	info.SndCwnd = u32(80)
	info.AdvMSS = u32(84)
	info.Reordering = u32(88)
	info.RcvRTT = u32(92)
	info.RcvSpace = u32(96)
	info.TotalRetrans = u32(100)
	info.PacingRate = u64(104)
	info.MaxPacingRate = u64(112)
	info.BytesAcked = u64(120)
	info.BytesReceived = u64(128)
	info.SegsOut = u32(136)
	info.SegsIn = u32(140)
	info.NotsentBytes = u32(144)
	info.MinRTT = u32(148)
	info.DataSegsIn = u32(152)
	info.DataSegsOut = u32(156)
	info.DeliveryRate = u64(160)
	info.BusyTime = u64(168)
	info.RwndLimited = u64(176)
	info.SndbufLimited = u64(184)
	info.Delivered = u32(192)
	info.DeliveredCE = u32(196)
	info.BytesSent = u64(200)
	info.BytesRetrans = u64(208)
	info.DSACKDups = u32(216)
	info.ReordSeen = u32(220)
	info.RcvOOOPack = u32(224)
	info.SndWnd = u32(228)
	info.RcvWnd = u32(232)
	info.Rehash = u32(236)
	info.TotalRTO = u16(240)
	info.TotalRTORecoveries = u16(242)
	info.TotalRTOTime = u32(244)
	return n
}
