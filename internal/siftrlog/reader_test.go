package siftrlog_test

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/logtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/output"
	"github.com/siftr-probe/siftr-probe/tcp"
)

var start = time.Unix(1700000000, 5000)

// sample returns a few records of two flows (IPv4, IPv6) and the log
// written in format f.
func sample(t *testing.T, f output.Format) ([]*correlate.Record, []logtest.Flow, []byte) {
	t.Helper()
	flows := logtest.Flows(2)
	t0 := start.UnixNano() + 1000
	var recs []*correlate.Record
	for i := range 6 {
		dir := tcp.DirOut
		if i%3 == 2 {
			dir = tcp.DirIn
		}
		st := logtest.State{CwndSegs: uint32(10 + i), RTT: uint32(1000 + i), RTO: 201000, Inflight: uint32(1448 * i),
			SndWnd: 1 << 20, RcvWnd: 65536, TotalRetrans: uint32(i / 4), StalenessNS: int64(1000 * i)}
		if i >= 4 {
			st.SsthreshSegs = 12
			st.CAState = tcp.CARecovery
		}
		recs = append(recs, logtest.Record(flows[i%2], dir, t0+int64(i)*1234567, st))
	}
	var buf bytes.Buffer
	if err := logtest.Write(&buf, f, start, recs, flows, [2]uint64{2, 1}); err != nil {
		t.Fatal(err)
	}
	return recs, flows, buf.Bytes()
}

// TestReaderFormats reads the same records written as SIFTR text and as
// JSON lines: both give the same Line for each, and JSON adds its extras.
func TestReaderFormats(t *testing.T) {
	for _, name := range []string{output.NameSIFTR, output.NameJSONL} {
		t.Run(name, func(t *testing.T) {
			f, _ := output.FormatByName(name)
			recs, flows, log := sample(t, f)
			rd := siftrlog.NewReader(bytes.NewReader(log))
			var kinds []siftrlog.Kind
			i := 0
			for {
				err := rd.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("line %d: %v", rd.LineNumber(), err)
				}
				kinds = append(kinds, rd.Kind())
				switch rd.Kind() {
				case siftrlog.KindEnable:
					e := rd.Enable()
					if e.SysName != "Linux" || e.SiftrVer != "1.3.0" || e.SysVer != "397868" || e.TimeUS != start.UnixMicro() {
						t.Errorf("enable %+v", e)
					}
				case siftrlog.KindRecord:
					got := rd.Record()
					want := recs[i]
					wl := siftrlog.Line{Dir: want.Pkt.Dir.String()[0], TimeUS: want.Pkt.Time / 1000,
						Local: want.Pkt.Local(), Remote: want.Pkt.Remote()}
					wl.Num[siftrlog.FLPort] = uint64(wl.Local.Port())
					wl.Num[siftrlog.FFPort] = uint64(wl.Remote.Port())
					wl.Num[siftrlog.FSsthresh] = uint64(output.SndSsthresh(want.Snap))
					wl.Num[siftrlog.FCwnd] = uint64(output.SndCwnd(want.Snap))
					wl.Num[siftrlog.FSndWnd] = uint64(want.Snap.Info.SndWnd)
					wl.Num[siftrlog.FRcvWnd] = uint64(want.Snap.Info.RcvWnd)
					wl.Num[siftrlog.FSndScale], wl.Num[siftrlog.FRcvScale] = 7, 9
					wl.Num[siftrlog.FState] = 4
					wl.Num[siftrlog.FMSS] = 1448
					wl.Num[siftrlog.FSRTT] = uint64(want.Snap.Info.RTT)
					wl.Num[siftrlog.FSACK] = 1
					wl.Num[siftrlog.FFlags] = uint64(output.TFlags(want.Snap))
					wl.Num[siftrlog.FRTO] = 201000
					wl.Num[siftrlog.FSndBufHi] = 2 << 20
					wl.Num[siftrlog.FSndBufCC] = uint64(want.Snap.WQueue)
					wl.Num[siftrlog.FRcvBufHi] = 1 << 20
					wl.Num[siftrlog.FInflight] = uint64(output.Inflight(want.Snap))
					wl.Num[siftrlog.FFlowID] = uint64(output.FlowID(want.Snap))
					wl.Num[siftrlog.FFlowType] = 63
					if diff := cmp.Diff(wl, got.Line, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
						t.Errorf("record %d (-want +got):\n%s", i, diff)
					}
					if name == output.NameJSONL {
						wx := siftrlog.Extra{Has: siftrlog.HasTimeNS | siftrlog.HasStaleness | siftrlog.HasRetrans | siftrlog.HasCong | siftrlog.HasCAState | siftrlog.HasStateSource,
							StalenessNS: want.Staleness(), TotalRetrans: uint64(want.Snap.Info.TotalRetrans), Cong: "cubic", CAState: "open", StateSource: "diag"}
						if i >= 4 {
							wx.CAState = "recovery"
						}
						if diff := cmp.Diff(wx, got.Extra); diff != "" {
							t.Errorf("record %d extras (-want +got):\n%s", i, diff)
						}
						if got.TimeNS != want.Pkt.Time {
							t.Errorf("record %d: time_ns %d, want %d", i, got.TimeNS, want.Pkt.Time)
						}
					} else if got.Extra.Has != 0 || got.TimeNS != want.Pkt.Time/1000*1000 {
						t.Errorf("record %d: text has extras %+v, TimeNS %d", i, got.Extra, got.TimeNS)
					}
					i++
				case siftrlog.KindDisable:
					d := rd.Disable()
					if d.Packets != [2]uint64{2 + 2, 4 + 1} || d.TotalPackets != 9 || d.TotalSkipped != 3 || d.SkipTCPCB != [2]uint64{2, 1} {
						t.Errorf("disable counts %+v", d)
					}
					want := []siftrlog.FlowName{{flows[0].Local, flows[0].Remote}, {flows[1].Local, flows[1].Remote}}
					if diff := cmp.Diff(want, d.Flows, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
						t.Errorf("flows (-want +got):\n%s", diff)
					}
					if d.FlowList != "10.0.0.0;40000-10.9.0.1;5201,2001:db8::1;40001-2001:db8::9:1;5201," {
						t.Errorf("flow list %q", d.FlowList)
					}
				}
			}
			if i != len(recs) || len(kinds) != len(recs)+2 || kinds[0] != siftrlog.KindEnable || kinds[len(kinds)-1] != siftrlog.KindDisable {
				t.Errorf("kinds %v, %d records", kinds, i)
			}
			wantFormat := siftrlog.FormatText
			if name == output.NameJSONL {
				wantFormat = siftrlog.FormatJSONL
			}
			if rd.Format() != wantFormat {
				t.Errorf("format %v", rd.Format())
			}
		})
	}
}

// freeBSDLog is a log as FreeBSD 14's siftr(4) writes it (hand-made:
// sysname=FreeBSD, t_maxseg 1460, a zero flowid, hash types other than 63).
const freeBSDLog = "enable_time_secs=1712345678\tenable_time_usecs=000123\tsiftrver=1.3.0\tsysname=FreeBSD\tsysver=1400097\tipmode=4\n" +
	"o,1712345678.100000,192.168.1.10,22,192.168.1.20,51234,1073725440,14600,0,65535,65535,6,6,4,1460,2250,1,1073742816,1200000,33304,0,66608,0,0,0,0,0\n" +
	"i,1712345678.200000,192.168.1.10,22,192.168.1.20,51234,1073725440,17520,0,65535,65535,6,6,4,1460,2250,1,1073742816,1200000,33304,1460,66608,0,1460,0,0,0\n" +
	"o,1712345679.000001,192.168.1.10,5001,192.168.1.30,40000,29200,43800,32,1049600,65700,6,6,4,1460,18000,1,538969056,230000,2097152,87600,1049600,0,43800,3,2881356813,2\n" +
	"disable_time_secs=1712345680\tdisable_time_usecs=500000\tnum_inbound_tcp_pkts=3\tnum_outbound_tcp_pkts=3\ttotal_tcp_pkts=6\tnum_inbound_skipped_pkts_malloc=0\tnum_outbound_skipped_pkts_malloc=0\tnum_inbound_skipped_pkts_tcpcb=1\tnum_outbound_skipped_pkts_tcpcb=1\tnum_inbound_skipped_pkts_inpcb=1\tnum_outbound_skipped_pkts_inpcb=0\ttotal_skipped_tcp_pkts=3\tflow_list=192.168.1.10;22-192.168.1.20;51234,192.168.1.10;5001-192.168.1.30;40000,\n"

func TestReaderFreeBSD(t *testing.T) {
	l, err := siftrlog.Parse(strings.NewReader(freeBSDLog))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Lines) != 3 || l.Enable[0]["sysname"] != "FreeBSD" || len(l.Flows) != 2 {
		t.Fatalf("%d lines, enable %v, flows %v", len(l.Lines), l.Enable, l.Flows)
	}
	ln := l.Lines[2]
	if ln.Num[siftrlog.FFlowID] != 2881356813 || ln.Num[siftrlog.FFlowType] != 2 || ln.Num[siftrlog.FSegQLen] != 3 ||
		ln.TimeUS != 1712345679000001 || ln.Local != netip.MustParseAddrPort("192.168.1.10:5001") {
		t.Errorf("line 3: %+v", ln)
	}
	if l.Uint("total_skipped_tcp_pkts") != 3 || l.Count('i') != 1 || !l.Ordered() {
		t.Errorf("skipped %d, inbound %d", l.Uint("total_skipped_tcp_pkts"), l.Count('i'))
	}
}

// TestReaderMalformed: each bad line is a LineError naming its line, and
// reading goes on after it.
func TestReaderMalformed(t *testing.T) {
	good := "o,1700000000.000001,10.0.0.1,40000,10.0.0.2,5201,1073725440,14480,0,64512,933888,10,10,4,1448,23,1,992,204000,69120,0,1519002,0,0,0,476312,63"
	bad := []struct{ line, reason string }{
		{"x" + good[1:], "bad direction"},
		{strings.Replace(good, ".000001", ".0001", 1), "bad time"},
		{strings.Replace(good, "10.0.0.2", "10.0.0.256", 1), "bad address"},
		{strings.Replace(good, "fe80", "", 1) + ",5", "more than 27 fields"},
		{good[:strings.LastIndex(good, ",")], "26 fields, want 27"},
		{strings.Replace(good, ",14480,", ",14x80,", 1), "field 8: not a number"},
		{strings.Replace(good, ",14480,", ",,", 1), "field 8: empty"},
		{strings.Replace(good, ",14480,", ",4294967296,", 1), "field 8: out of range"},
		{strings.Replace(good, ",40000,", ",70000,", 1), "bad port"},
		{"enable_time_secs=1\tenable_time_usecs=000000", "2 tab-separated fields, want 6"},
		{`{"type":"record"}`, "a JSON object in a SIFTR text log"},
		{"", "empty line"},
	}
	var in strings.Builder
	in.WriteString(good + "\n")
	for _, b := range bad {
		in.WriteString(b.line + "\n")
		in.WriteString(good + "\n")
	}
	in.WriteString(good[:40]) // cut short
	rd := siftrlog.NewReader(strings.NewReader(in.String()))
	var reasons []string
	var lines []int64
	records := 0
	for {
		err := rd.Next()
		if err == io.EOF {
			break
		}
		var le *siftrlog.LineError
		if errors.As(err, &le) {
			reasons = append(reasons, le.Reason)
			lines = append(lines, le.Line)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		records++
	}
	if records != len(bad)+1 {
		t.Errorf("%d good records, want %d", records, len(bad)+1)
	}
	want := []string{}
	wantLines := []int64{}
	for i, b := range bad {
		want = append(want, b.reason)
		wantLines = append(wantLines, int64(2+2*i))
	}
	want = append(want, "no newline at the end of the input: the line was cut short")
	wantLines = append(wantLines, int64(2*len(bad)+2))
	if diff := cmp.Diff(want, reasons); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantLines, lines); diff != "" {
		t.Errorf("line numbers (-want +got):\n%s", diff)
	}
}

func TestReaderJSONMalformed(t *testing.T) {
	_, _, log := sample(t, output.JSONL())
	lines := strings.SplitAfter(string(log), "\n")
	rec := lines[1]
	bad := []struct{ line, reason string }{
		{strings.Replace(rec, `"snd_cwnd":`, `"snd_cwnd_x":`, 1), "no snd_cwnd"},
		{strings.Replace(rec, `"direction":"out"`, `"direction":"up"`, 1), "bad direction"},
		{strings.Replace(rec, `"snd_cwnd":14480`, `"snd_cwnd":-1`, 1), "snd_cwnd: not an unsigned integer"},
		{strings.Replace(rec, `"type":"record"`, `"type":"other"`, 1), `unknown type "other"`},
		{rec[:len(rec)-2] + "\n", "unterminated object"},
		{rec[:len(rec)-3] + "\n", "missing value"},
		{"o,1,2\n", "not a JSON object in a JSON lines log"},
	}
	var in strings.Builder
	in.WriteString(lines[0])
	for _, b := range bad {
		in.WriteString(b.line)
	}
	in.WriteString(rec)
	rd := siftrlog.NewReader(strings.NewReader(in.String()))
	var reasons []string
	n := 0
	for {
		err := rd.Next()
		if err == io.EOF {
			break
		}
		var le *siftrlog.LineError
		if errors.As(err, &le) {
			reasons = append(reasons, le.Reason)
		} else if err != nil {
			t.Fatal(err)
		} else {
			n++
		}
	}
	var want []string
	for _, b := range bad {
		want = append(want, b.reason)
	}
	if diff := cmp.Diff(want, reasons); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
	if n != 2 {
		t.Errorf("%d good lines, want the enable line and one record", n)
	}
}

// TestReaderJSONExtras: state_source and ppl are read when present, and
// escaped strings are unescaped.
func TestReaderJSONExtras(t *testing.T) {
	in := `{"type":"enable","enable_time_secs":1700000000,"enable_time_usecs":5,"siftrver":"1.3.0","sysname":"Linux","sysver":397868,"ipmode":6,"state_source":"exact","ppl":1}` + "\n" +
		`{"type":"record","direction":"in","time":1700000000.000042,"local_addr":"10.0.0.1","local_port":40000,"remote_addr":"10.0.0.2","remote_port":5201,"snd_ssthresh":1,"snd_cwnd":2,"t_flags2":0,"snd_wnd":3,"rcv_wnd":4,"snd_scale":7,"rcv_scale":9,"conn_state":4,"mss":1448,"srtt_us":5,"sack_enabled":1,"t_flags":992,"rto_us":6,"snd_buf_hiwater":7,"snd_buf_cc":8,"rcv_buf_hiwater":9,"rcv_buf_cc":0,"inflight_bytes":10,"t_segqlen":0,"flowid":11,"flowtype":63,"cong":"cu\"b\u0069c","state_source":"diag","future_key":[1,{"a":"]"}]}` + "\n"
	rd := siftrlog.NewReader(strings.NewReader(in))
	if err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	if e := rd.Enable(); e.StateSource != "exact" || e.PPL != 1 {
		t.Errorf("enable %+v", e)
	}
	if err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	r := rd.Record()
	if r.Extra.Cong != `cu"bic` || r.Extra.StateSource != "diag" || r.TimeNS != 1700000000000042000 || r.Num[siftrlog.FFlowID] != 11 {
		t.Errorf("record %+v", r)
	}
	fs := rd.JSONFields()
	if last := fs[len(fs)-1]; string(last.Key) != "future_key" || last.Kind != siftrlog.JSONArray || string(last.Value) != `[1,{"a":"]"}]` {
		t.Errorf("last field %q %v %q", last.Key, last.Kind, last.Value)
	}
}

func TestDecompress(t *testing.T) {
	_, _, log := sample(t, output.SIFTR())
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(log[:100])
	gw.Close()
	gw = gzip.NewWriter(&gz) // a second member, as `cat a.gz b.gz` makes
	gw.Write(log[100:])
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(log)
	zw.Close()
	for _, c := range []struct {
		in   []byte
		want siftrlog.Compression
	}{{log, siftrlog.Plain}, {gz.Bytes(), siftrlog.Gzip}, {zs.Bytes(), siftrlog.Zstd}} {
		r, kind, err := siftrlog.Decompress(bytes.NewReader(c.in))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || kind != c.want || !bytes.Equal(got, log) {
			t.Errorf("%v: %v, %d bytes, want %d", c.want, err, len(got), len(log))
		}
	}
}

func TestOpenErrors(t *testing.T) {
	_, err := siftrlog.Open(t.TempDir()+"/nope.log", nil)
	if err == nil || !strings.HasSuffix(err.Error(), "nope.log: no such file") {
		t.Errorf("error %v", err)
	}
	_, err = siftrlog.Open(t.TempDir(), nil)
	if err == nil || !strings.HasSuffix(err.Error(), ": is a directory") {
		t.Errorf("error %v", err)
	}
}

// FuzzReader feeds arbitrary bytes: the reader never panics, and every
// record it accepts has a direction and an address.
func FuzzReader(f *testing.F) {
	f.Add([]byte(freeBSDLog))
	f.Add([]byte(`{"type":"enable","enable_time_secs":1,"enable_time_usecs":2}` + "\n" + `{"type":"disable","disable_time_secs":1,"disable_time_usecs":2,"flow_list":[{"local_addr":"::1","local_port":1,"remote_addr":"::2","remote_port":2}]}` + "\n"))
	f.Add([]byte("o,1.000000,::1,1,::2,2,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21\n"))
	f.Add([]byte(`{"type":"record","cong":"\ud83d\ude00\u00","x":[[[{"y":"\"]"}]]]}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := siftrlog.NewReader(bytes.NewReader(data))
		for range 10000 {
			err := rd.Next()
			if err == io.EOF {
				return
			}
			var le *siftrlog.LineError
			if err != nil && !errors.As(err, &le) {
				t.Fatalf("not a line error: %v", err)
			}
			if err == nil && rd.Kind() == siftrlog.KindRecord {
				r := rd.Record()
				if (r.Dir != 'i' && r.Dir != 'o') || !r.Local.Addr().IsValid() || !r.Remote.Addr().IsValid() {
					t.Fatalf("accepted record %+v", r)
				}
			}
		}
	})
}
