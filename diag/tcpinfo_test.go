package diag

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// tcpInfoFields is struct tcp_info's layout (include/uapi/linux/tcp.h) for
// the fields that are whole bytes or words.
var tcpInfoFields = []struct {
	name      string
	off, size int
}{
	{"State", 0, 1}, {"CAState", 1, 1}, {"Retransmits", 2, 1}, {"Probes", 3, 1},
	{"Backoff", 4, 1}, {"Options", 5, 1},
	{"RTO", 8, 4}, {"ATO", 12, 4}, {"SndMSS", 16, 4}, {"RcvMSS", 20, 4},
	{"Unacked", 24, 4}, {"Sacked", 28, 4}, {"Lost", 32, 4}, {"Retrans", 36, 4},
	{"Fackets", 40, 4}, {"LastDataSent", 44, 4}, {"LastAckSent", 48, 4},
	{"LastDataRecv", 52, 4}, {"LastAckRecv", 56, 4}, {"PMTU", 60, 4},
	{"RcvSsthresh", 64, 4}, {"RTT", 68, 4}, {"RTTVar", 72, 4}, {"SndSsthresh", 76, 4},
	{"SndCwnd", 80, 4}, {"AdvMSS", 84, 4}, {"Reordering", 88, 4}, {"RcvRTT", 92, 4},
	{"RcvSpace", 96, 4}, {"TotalRetrans", 100, 4},
	{"PacingRate", 104, 8}, {"MaxPacingRate", 112, 8}, {"BytesAcked", 120, 8},
	{"BytesReceived", 128, 8}, {"SegsOut", 136, 4}, {"SegsIn", 140, 4},
	{"NotsentBytes", 144, 4}, {"MinRTT", 148, 4}, {"DataSegsIn", 152, 4},
	{"DataSegsOut", 156, 4}, {"DeliveryRate", 160, 8}, {"BusyTime", 168, 8},
	{"RwndLimited", 176, 8}, {"SndbufLimited", 184, 8}, {"Delivered", 192, 4},
	{"DeliveredCE", 196, 4}, {"BytesSent", 200, 8}, {"BytesRetrans", 208, 8},
	{"DSACKDups", 216, 4}, {"ReordSeen", 220, 4}, {"RcvOOOPack", 224, 4},
	{"SndWnd", 228, 4}, {"RcvWnd", 232, 4}, {"Rehash", 236, 4},
	{"TotalRTO", 240, 2}, {"TotalRTORecoveries", 242, 2}, {"TotalRTOTime", 244, 4},
}

func fieldValue(info *tcp.Info, name string) uint64 {
	v := reflect.ValueOf(info).Elem().FieldByName(name)
	return v.Uint()
}

// Every field is read from its own offset, with its own width.
func TestParseTCPInfoOffsets(t *testing.T) {
	b := make([]byte, 300)
	for _, f := range tcpInfoFields {
		for i := 0; i < f.size; i++ {
			b[f.off+i] = byte(f.off + i + 1)
		}
	}
	var info tcp.Info
	if n := ParseTCPInfo(b, &info); n != SizeofTCPInfo {
		t.Errorf("used %d bytes, want %d", n, SizeofTCPInfo)
	}
	for _, f := range tcpInfoFields {
		var want uint64
		for i := f.size - 1; i >= 0; i-- {
			want = want<<8 | uint64(b[f.off+i])
		}
		if native.Uint16([]byte{1, 0}) != 1 { // big-endian host
			want = 0
			for i := 0; i < f.size; i++ {
				want = want<<8 | uint64(b[f.off+i])
			}
		}
		if got := fieldValue(&info, f.name); got != want {
			t.Errorf("%s = %#x, want %#x", f.name, got, want)
		}
	}
}

func TestParseTCPInfoBitfields(t *testing.T) {
	tests := []struct {
		b6, b7       byte
		snd, rcv     uint8
		appLimited   bool
		fastOpenFail uint8
	}{
		{0x00, 0x00, 0, 0, false, 0},
		{0x97, 0x00, 7, 9, false, 0},
		{0x0e, 0x01, 14, 0, true, 0},
		{0xe0, 0x06, 0, 14, false, 3},
		{0x21, 0x05, 1, 2, true, 2},
	}
	for _, tt := range tests {
		b := make([]byte, 8)
		b[6], b[7] = tt.b6, tt.b7
		var info tcp.Info
		ParseTCPInfo(b, &info)
		if info.SndWScale != tt.snd || info.RcvWScale != tt.rcv || info.DeliveryRateAppLimited != tt.appLimited || info.FastOpenClientFail != tt.fastOpenFail {
			t.Errorf("bytes %#x %#x: snd %d rcv %d applimited %v tfo %d; want %d %d %v %d",
				tt.b6, tt.b7, info.SndWScale, info.RcvWScale, info.DeliveryRateAppLimited, info.FastOpenClientFail,
				tt.snd, tt.rcv, tt.appLimited, tt.fastOpenFail)
		}
	}
}

// tcp_info as sent by this kernel and cut to the lengths older kernels send:
// the fields each length holds parse the same, the others are zero.
func TestParseTCPInfoLengths(t *testing.T) {
	full := readTestdata(t, "tcpinfo-280.bin")
	var ref tcp.Info
	ParseTCPInfo(full, &ref)
	if ref.SndMSS == 0 || ref.RTT == 0 || ref.SndWnd == 0 || ref.RcvWnd == 0 || ref.BytesAcked == 0 {
		t.Fatalf("recorded tcp_info looks empty: %+v", ref)
	}
	for _, n := range []int{tcpInfoLenV1, tcpInfoLen4_19, tcpInfoLen5_4, tcpInfoLen6_2, tcpInfoLen6_7, 280} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			b := readTestdata(t, fmt.Sprintf("tcpinfo-%d.bin", n))
			if len(b) != n {
				t.Fatalf("file holds %d bytes", len(b))
			}
			var got tcp.Info
			ParseTCPInfo(b, &got)
			want := ref
			for _, f := range tcpInfoFields {
				if f.off+f.size > n {
					reflect.ValueOf(&want).Elem().FieldByName(f.name).SetUint(0)
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			switch {
			case n < tcpInfoLen5_4 && got.SndWnd != 0:
				t.Error("SndWnd set from a pre-5.4 layout")
			case n < tcpInfoLen6_2 && got.RcvWnd != 0:
				t.Error("RcvWnd set from a pre-6.2 layout")
			case n < tcpInfoLen6_7 && got.TotalRTOTime != 0:
				t.Error("TotalRTOTime set from a pre-6.7 layout")
			}
		})
	}
	// And inside a whole reply: cut the INFO attribute of a recorded reply.
	for _, n := range []int{0, 7, tcpInfoLenV1, tcpInfoLen5_4} {
		d := readTestdata(t, "reply-established-v4.bin")
		d = cutInfo(t, d, n)
		typ, _, payload, _, _ := nextMessage(d)
		var s tcp.Snapshot
		parseReply(typ, payload, &s)
		if int(s.InfoLen) != n || s.Status != tcp.Found || s.CongName() == "" || s.SndBuf == 0 {
			t.Errorf("info cut to %d: InfoLen %d status %v cong %q sndbuf %d", n, s.InfoLen, s.Status, s.CongName(), s.SndBuf)
		}
	}
}

// cutInfo returns a copy of reply d with its INET_DIAG_INFO attribute cut to
// n bytes (lengths fixed up).
func cutInfo(t *testing.T, d []byte, n int) []byte {
	t.Helper()
	off := sizeofNlmsghdr + sizeofDiagMsg
	out := append([]byte{}, d[:off]...)
	attrs := d[off:]
	for len(attrs) >= sizeofNlattr {
		l := int(native.Uint16(attrs[0:2]))
		a := attrs[:l]
		if native.Uint16(attrs[2:4]) == inetDiagInfo {
			a = append([]byte{}, attrs[:sizeofNlattr+n]...)
			native.PutUint16(a[0:2], uint16(sizeofNlattr+n))
		}
		out = append(out, a...)
		for len(out)%4 != 0 {
			out = append(out, 0)
		}
		if nlAlign(l) >= len(attrs) {
			break
		}
		attrs = attrs[nlAlign(l):]
	}
	native.PutUint32(out[0:4], uint32(len(out)))
	return out
}
