package probe

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/siftr-probe/siftr-probe/capture"
	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/output"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// establishedReader answers every lookup with an established socket.
type establishedReader struct{}

func (establishedReader) Lookup(qs []tcp.Query, out []tcp.Snapshot) error {
	for i := range qs {
		out[i] = tcp.Snapshot{Status: tcp.Found, State: tcp.StateEstablished, Cookie: uint64(qs[i].Remote.Port()),
			Info: tcp.Info{SndCwnd: 10, SndMSS: 1448, SndSsthresh: 0x7fffffff}}
	}
	return nil
}

// captureBlock is a ring block of 256 packets of 64 flows.
func captureBlock(t0 int64) []tcp.Packet {
	local := netip.MustParseAddrPort("10.77.0.1:5201")
	var b []tcp.Packet
	for i := range 256 {
		r := netip.AddrPortFrom(netip.MustParseAddr("10.77.0.2"), uint16(7000+i%64))
		b = append(b, tcp.Packet{Time: t0 + int64(i), Src: local, Dst: r, Seq: uint32(i), Flags: tcp.FlagACK, Dir: tcp.DirOut, PayloadLen: 1448})
	}
	return b
}

// newTeeBench returns a resolver behind a writer to /dev/null,
// and the handler the capture would call: the resolver alone, or with
// --pcap-all the tee that hands each block to the writer's pcap queue too.
func newTeeBench(tb testing.TB, ppl uint32, pcapAll bool) (capture.Handler, *correlate.Resolver, *output.Writer) {
	var pc *output.Pcap
	if pcapAll {
		var err error
		pc, err = output.OpenPcap(&output.PcapConfig{Path: filepath.Join(tb.TempDir(), "p.pcapng"), Iface: "x", All: true})
		if err != nil {
			tb.Fatal(err)
		}
	}
	w, err := output.OpenWriter(&output.WriterConfig{Path: os.DevNull, Workers: 1, Pcap: pc})
	if err != nil {
		tb.Fatal(err)
	}
	if err := w.Start(nil); err != nil {
		tb.Fatal(err)
	}
	eng, err := correlate.NewEngine(&correlate.Config{PPL: ppl}, w, 1)
	if err != nil {
		tb.Fatal(err)
	}
	res, err := correlate.NewResolver(eng, []correlate.StateReader{establishedReader{}}, 0)
	if err != nil {
		tb.Fatal(err)
	}
	var h capture.Handler = res
	if pcapAll {
		h = &teeHandler{tap: w, next: res}
	}
	return h, res, w
}

// TestTeeHandler checks that the tee hands every block and idle mark to
// both sides: every packet reaches the pcap file, and the log gets its
// records.
func TestTeeHandler(t *testing.T) {
	h, res, w := newTeeBench(t, 10, true)
	for i := range 10 {
		blk := captureBlock(int64(i+1) * 1000)
		h.Block(0, blk, blk[len(blk)-1].Time)
	}
	h.Idle(0, 1<<40)
	res.Close()
	if err := w.Close(nil); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	if st.Pcap.Packets != 2560 || st.Pcap.Stated != st.Records || st.Records != 256 || st.Pcap.Unmatched != 0 {
		t.Errorf("pcap %+v, records %d; want 2560 packets, 256 of them logged (ppl 10, 40 packets in each of 64 flows)", st.Pcap, st.Records)
	}
}

// BenchmarkHandlerBlock measures what the capture path pays per packet for
// a ring block of 256 packets (ppl 100, 64 flows, the lookups of the
// sampled ones included): the resolver alone, and with --pcap-all's tee,
// which also copies the block into the writer's pcap queue.
func BenchmarkHandlerBlock(b *testing.B) {
	for _, all := range []bool{false, true} {
		name := "resolver"
		if all {
			name = "tee-pcap-all"
		}
		b.Run(name, func(b *testing.B) {
			h, res, w := newTeeBench(b, 100, all)
			defer w.Close(nil)
			defer res.Close()
			t0 := int64(1)
			blk := captureBlock(t0)
			b.ReportAllocs()
			for b.Loop() {
				for i := range blk {
					blk[i].Time = t0
					t0++
				}
				h.Block(0, blk, t0-1)
				res.Flush()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(blk)), "ns/packet")
		})
	}
}
