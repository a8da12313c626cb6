package exact

import (
	"net/netip"
	"testing"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// TestDecode turns a record as the programs write it into a packet and a
// snapshot, and checks the fields that need converting.
func TestDecode(t *testing.T) {
	ev := probeEvent{
		TimeNs: 5_000_000_000, Id: 0x8000000000000007, Cookie: 0,
		Ipver: 6, Dir: 1, Family: 10, State: tcp.StateFinWait1,
		Sport: 40000, Dport: 5201, Seq: 1, Ack: 2, PayloadLen: 1448, Window: 501, Flags: tcp.FlagACK | tcp.FlagPSH,
		Rto: 51, SndCwnd: 10, SndSsthresh: 0x7fffffff, MssCache: 1448, SrttUs: 123, Options: tcp.OptSACK | tcp.OptWScale,
		SndWscale: 7, RcvWscale: 9, Wqueue: 3000, Notsent: 1000, Rqueue: 5, Sndbuf: 87040, Rcvbuf: 131072,
	}
	copy(ev.Saddr[:], netip.MustParseAddr("fd77::1").AsSlice())
	copy(ev.Daddr[:], netip.MustParseAddr("fd77::2").AsSlice())
	for i, c := range "cubic" {
		ev.Cong[i] = int8(c)
	}
	var p tcp.Packet
	var s tcp.Snapshot
	decode(&ev, 1_000_000_000_000, 250, &p, &s)
	if p.Time != 1_005_000_000_000 || s.Time != p.Time {
		t.Errorf("times %d, %d: want the monotonic time plus the offset, and the snapshot at the packet", p.Time, s.Time)
	}
	if p.Src != netip.MustParseAddrPort("[fd77::1]:40000") || p.Dst != netip.MustParseAddrPort("[fd77::2]:5201") || p.Dir != tcp.DirOut {
		t.Errorf("packet %+v", p)
	}
	if s.Info.RTO != 204000 {
		t.Errorf("rto %d µs from 51 jiffies at HZ 250, want 204000", s.Info.RTO)
	}
	if s.Status != tcp.Found || s.Source != tcp.SourceExact || s.Cookie != ev.Id || s.CongName() != "cubic" {
		t.Errorf("snapshot %+v", s)
	}
	if s.WQueue != 3000 || s.Info.NotsentBytes != 1000 || s.Info.SndWScale != 7 || s.Info.RcvWScale != 9 {
		t.Errorf("snapshot fields %+v", s)
	}
	ev.Ipver = 4
	copy(ev.Saddr[:], []byte{10, 77, 0, 1})
	decode(&ev, 0, 250, &p, &s)
	if p.Src.Addr() != netip.MustParseAddr("10.77.0.1") || !p.Src.Addr().Is4() {
		t.Errorf("IPv4 source %v, want 10.77.0.1 as a 4-byte address", p.Src)
	}
}

func TestJiffiesToUsecs(t *testing.T) {
	for _, tc := range []struct{ j, hz, want uint32 }{
		{50, 250, 200000}, {1, 1000, 1000}, {20, 100, 200000}, {3, 300, 10000}, {0, 250, 0}, {5, 0, 0},
	} {
		if got := jiffiesToUsecs(tc.j, tc.hz); got != tc.want {
			t.Errorf("jiffiesToUsecs(%d, %d) = %d, want %d", tc.j, tc.hz, got, tc.want)
		}
	}
}
