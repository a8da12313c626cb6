package output

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/tcp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const (
	afInet  = 2
	afInet6 = 10
)

// baseRecord is an established IPv4 connection seen on an outbound data segment.
func baseRecord() correlate.Record {
	return correlate.Record{
		Pkt: tcp.Packet{
			Time:       1700000000123456789,
			Src:        netip.MustParseAddrPort("10.0.0.1:40000"),
			Dst:        netip.MustParseAddrPort("10.0.0.2:5201"),
			Seq:        1000,
			Ack:        2000,
			PayloadLen: 1448,
			Window:     502,
			Flags:      tcp.FlagACK | tcp.FlagPSH,
			Dir:        tcp.DirOut,
		},
		Snap: &tcp.Snapshot{
			Time:   1700000000123556789,
			Status: tcp.Found,
			Family: afInet,
			State:  tcp.StateEstablished,
			Cookie: 0x1234_0000_abcd,
			RQueue: 0,
			WQueue: 70000,
			SndBuf: 2626560,
			RcvBuf: 131072,
			Cong:   [16]byte{'c', 'u', 'b', 'i', 'c'},
			Info: tcp.Info{
				State:        tcp.StateEstablished,
				CAState:      tcp.CAOpen,
				Options:      tcp.OptTimestamps | tcp.OptSACK | tcp.OptWScale,
				SndWScale:    7,
				RcvWScale:    9,
				RTO:          204000,
				SndMSS:       1448,
				RcvMSS:       536,
				Unacked:      40,
				RTT:          1234,
				RTTVar:       300,
				SndSsthresh:  30,
				SndCwnd:      42,
				TotalRetrans: 3,
				PacingRate:   123456789,
				BytesAcked:   987654321,
				NotsentBytes: 12000,
				MinRTT:       900,
				DeliveryRate: 55555555,
				Delivered:    700000,
				SndWnd:       3145728,
				RcvWnd:       65536,
			},
		},
	}
}

type namedRecord struct {
	name string
	rec  correlate.Record
}

// goldenRecords covers every way a field can be computed.
func goldenRecords() []namedRecord {
	var out []namedRecord
	add := func(name string, f func(r *correlate.Record)) {
		r := baseRecord()
		f(&r)
		out = append(out, namedRecord{name, r})
	}
	add("ipv4 outbound", func(r *correlate.Record) {})
	add("ipv4 inbound", func(r *correlate.Record) {
		r.Pkt.Dir = tcp.DirIn
		r.Pkt.Src, r.Pkt.Dst = r.Pkt.Dst, r.Pkt.Src
		r.Pkt.Flags = tcp.FlagACK
		r.Pkt.PayloadLen = 0
		r.Pkt.Time = 1700000000000042000 // leading zeros in usecs
	})
	add("ipv6", func(r *correlate.Record) {
		r.Pkt.Src = netip.MustParseAddrPort("[2001:db8::1]:40001")
		r.Pkt.Dst = netip.MustParseAddrPort("[2001:db8:0:0:1::2]:5201")
		r.Snap.Family = afInet6
	})
	add("ipv6 inbound", func(r *correlate.Record) {
		r.Pkt.Dir = tcp.DirIn
		r.Pkt.Src = netip.MustParseAddrPort("[fe80::1]:5201")
		r.Pkt.Dst = netip.MustParseAddrPort("[fe80::abcd:ef01]:40001")
		r.Snap.Family = afInet6
	})
	add("dual-stack socket, ipv4 flow", func(r *correlate.Record) {
		r.Pkt.Dir = tcp.DirIn
		r.Pkt.Src = netip.MustParseAddrPort("192.168.1.20:51000")
		r.Pkt.Dst = netip.MustParseAddrPort("192.168.1.1:5201")
		r.Snap.Family = afInet6
	})
	add("v4-mapped addresses are unmapped", func(r *correlate.Record) {
		r.Pkt.Src = netip.MustParseAddrPort("[::ffff:10.1.2.3]:5201")
		r.Pkt.Dst = netip.MustParseAddrPort("[::ffff:10.3.2.1]:40000")
		r.Snap.Family = afInet6
	})
	add("infinite ssthresh", func(r *correlate.Record) { r.Snap.Info.SndSsthresh = 0x7fffffff })
	add("infinite ssthresh above 0x7fffffff", func(r *correlate.Record) { r.Snap.Info.SndSsthresh = 0xffffffff })
	add("saturated ssthresh and cwnd", func(r *correlate.Record) {
		r.Snap.Info.SndSsthresh = 0x7ffffffe
		r.Snap.Info.SndCwnd = 3000000
		r.Snap.Info.SndMSS = 65495
	})
	add("window scale without OptWScale", func(r *correlate.Record) {
		r.Snap.Info.Options = tcp.OptSACK
		r.Snap.Info.SndWScale = 7
		r.Snap.Info.RcvWScale = 9
	})
	add("no options", func(r *correlate.Record) { r.Snap.Info.Options = 0 })
	add("ecn", func(r *correlate.Record) { r.Snap.Info.Options |= tcp.OptECN | tcp.OptECNSeen })
	add("recovery", func(r *correlate.Record) { r.Snap.Info.CAState = tcp.CARecovery })
	add("cwr", func(r *correlate.Record) { r.Snap.Info.CAState = tcp.CACWR })
	add("loss", func(r *correlate.Record) { r.Snap.Info.CAState = tcp.CALoss })
	add("disorder", func(r *correlate.Record) { r.Snap.Info.CAState = tcp.CADisorder })
	add("notsent above wqueue", func(r *correlate.Record) { r.Snap.Info.NotsentBytes = 80000 })
	add("zero cookie low bits", func(r *correlate.Record) { r.Snap.Cookie = 0x7_0000_0000 })
	add("syn-ack flags", func(r *correlate.Record) { r.Pkt.Flags = tcp.FlagSYN | tcp.FlagACK })
	add("no tcp flags", func(r *correlate.Record) { r.Pkt.Flags = 0 })
	add("all tcp flags", func(r *correlate.Record) { r.Pkt.Flags = 0xff })
	for s := range uint8(14) {
		add("state "+LinuxStateName(s), func(r *correlate.Record) {
			r.Snap.State = s
			r.Snap.Info.State = s
			if s == tcp.StateFinWait1 || s == tcp.StateLastAck {
				r.Pkt.Flags = tcp.FlagFIN | tcp.FlagACK
			}
		})
	}
	return out
}

func goldenHeader() *Header {
	return &Header{Time: time.Unix(1700000000, 5000), SysVer: SysVer("6.18.44-fc-v669"), IPMode: 6}
}

func goldenFooter() *Footer {
	return &Footer{
		Time: time.Unix(1700000123, 987654000),
		Counts: correlate.Counts{
			Packets:    [2]uint64{1000, 2000},
			SampledOut: [2]uint64{5, 6},
			SkipMalloc: [2]uint64{1, 2},
			SkipTCPCB:  [2]uint64{3, 4},
			SkipInPCB:  [2]uint64{5, 6},
		},
		Flows: []correlate.Flow{
			{Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.2:5201")},
			{Local: netip.MustParseAddrPort("[2001:db8::1]:40001"), Remote: netip.MustParseAddrPort("[2001:db8::1:0:2]:5201")},
			{Local: netip.MustParseAddrPort("[::ffff:192.168.1.1]:5201"), Remote: netip.MustParseAddrPort("[::ffff:192.168.1.20]:51000")},
		},
	}
}

func renderAll(f Format) []byte {
	var b []byte
	b = f.AppendHeader(b, goldenHeader())
	for _, nr := range goldenRecords() {
		r := nr.rec
		b = f.AppendRecord(b, &r)
	}
	b = AppendFooter(f, b, goldenFooter())
	b = AppendFooter(f, b, &Footer{Time: time.Unix(1700000124, 0)}) // no flows, no packets
	return b
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(gl), len(wl)) {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("%s line %d differs (-want +got):\n-%s\n+%s", path, i+1, w, g)
		}
	}
}

func TestGoldenSIFTR(t *testing.T) { checkGolden(t, "siftr.golden", renderAll(SIFTR())) }
func TestGoldenJSONL(t *testing.T) { checkGolden(t, "jsonl.golden", renderAll(JSONL())) }

var (
	enableKeys  = []string{"enable_time_secs", "enable_time_usecs", "siftrver", "sysname", "sysver", "ipmode"}
	disableKeys = []string{
		"disable_time_secs", "disable_time_usecs", "num_inbound_tcp_pkts", "num_outbound_tcp_pkts",
		"total_tcp_pkts", "num_inbound_skipped_pkts_malloc", "num_outbound_skipped_pkts_malloc",
		"num_inbound_skipped_pkts_tcpcb", "num_outbound_skipped_pkts_tcpcb",
		"num_inbound_skipped_pkts_inpcb", "num_outbound_skipped_pkts_inpcb",
		"total_skipped_tcp_pkts", "flow_list",
	}
	dataLine = regexp.MustCompile(`^[io],\d+\.\d{6},[0-9a-f.:]+,\d+,[0-9a-f.:]+,\d+(,\d+){21}$`)
)

// parseKV splits a tab-separated key=value line.
func parseKV(t *testing.T, line string) (keys []string, vals map[string]string) {
	t.Helper()
	vals = map[string]string{}
	for kv := range strings.SplitSeq(line, "\t") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("field %q has no '=' in %q", kv, line)
		}
		keys = append(keys, k)
		vals[k] = v
	}
	return keys, vals
}

func TestSIFTRShape(t *testing.T) {
	out := string(renderAll(SIFTR()))
	if !strings.HasSuffix(out, "\n") {
		t.Fatal("output does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	keys, vals := parseKV(t, lines[0])
	if !slices.Equal(keys, enableKeys) {
		t.Errorf("enable keys = %v, want %v", keys, enableKeys)
	}
	if vals["siftrver"] != "1.3.0" || vals["sysname"] != "Linux" || vals["sysver"] != "397868" ||
		vals["ipmode"] != "6" || vals["enable_time_usecs"] != "000005" {
		t.Errorf("enable values: %v", vals)
	}
	if len(vals["sysver"]) > 7 {
		t.Errorf("sysver %q longer than 7 characters", vals["sysver"])
	}
	recs := goldenRecords()
	data := lines[1 : 1+len(recs)]
	for i, l := range data {
		if n := strings.Count(l, ",") + 1; n != 27 {
			t.Errorf("%s: %d fields, want 27: %q", recs[i].name, n, l)
		}
		if !dataLine.MatchString(l) {
			t.Errorf("%s: line does not match the data line shape: %q", recs[i].name, l)
		}
	}
	for _, l := range lines[1+len(recs):] {
		keys, vals := parseKV(t, l)
		if !slices.Equal(keys, disableKeys) {
			t.Errorf("disable keys = %v, want %v", keys, disableKeys)
		}
		if fl := vals["flow_list"]; fl != "" && !strings.HasSuffix(fl, ",") {
			t.Errorf("flow_list %q does not end with a comma", fl)
		}
	}
	if len(lines) != 1+len(recs)+2 {
		t.Errorf("%d lines, want %d", len(lines), 1+len(recs)+2)
	}
}

func TestSIFTRDisableLine(t *testing.T) {
	got := string(AppendFooter(SIFTR(), nil, goldenFooter()))
	want := "disable_time_secs=1700000123\tdisable_time_usecs=987654\tnum_inbound_tcp_pkts=1000\t" +
		"num_outbound_tcp_pkts=2000\ttotal_tcp_pkts=3000\tnum_inbound_skipped_pkts_malloc=1\t" +
		"num_outbound_skipped_pkts_malloc=2\tnum_inbound_skipped_pkts_tcpcb=3\t" +
		"num_outbound_skipped_pkts_tcpcb=4\tnum_inbound_skipped_pkts_inpcb=5\t" +
		"num_outbound_skipped_pkts_inpcb=6\ttotal_skipped_tcp_pkts=21\t" +
		"flow_list=10.0.0.1;40000-10.0.0.2;5201,2001:db8::1;40001-2001:db8::1:0:2;5201," +
		"192.168.1.1;5201-192.168.1.20;51000,\n"
	if got != want {
		t.Errorf("disable line:\n got %q\nwant %q", got, want)
	}
}

func TestSIFTRDataLine(t *testing.T) {
	r := baseRecord()
	got := string(SIFTR().AppendRecord(nil, &r))
	want := "o,1700000000.123456,10.0.0.1,40000,10.0.0.2,5201,43440,60816,0,3145728,65536,7,9,4,1448,1234,1,992,204000,2626560,70000,131072,0,58000,0,43981,63\n"
	if got != want {
		t.Errorf("data line:\n got %q\nwant %q", got, want)
	}
	r.Pkt.Dir = tcp.DirIn
	got = string(SIFTR().AppendRecord(nil, &r))
	if !strings.HasPrefix(got, "i,1700000000.123456,10.0.0.2,5201,10.0.0.1,40000,") {
		t.Errorf("inbound line has the wrong local view: %q", got)
	}
}

// siftrFields returns the data line's fields 7..27 (the numbers after the 4-tuple).
func siftrFields(t *testing.T, line string) []uint64 {
	t.Helper()
	f := strings.Split(strings.TrimSuffix(line, "\n"), ",")
	var out []uint64
	for _, s := range f[6:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// siftrJSONKeys are the JSONL names of SIFTR data fields 7..27.
var siftrJSONKeys = []string{
	"snd_ssthresh", "snd_cwnd", "t_flags2", "snd_wnd", "rcv_wnd", "snd_scale", "rcv_scale",
	"conn_state", "mss", "srtt_us", "sack_enabled", "t_flags", "rto_us", "snd_buf_hiwater",
	"snd_buf_cc", "rcv_buf_hiwater", "rcv_buf_cc", "inflight_bytes", "t_segqlen", "flowid", "flowtype",
}

func TestJSONLMatchesSIFTR(t *testing.T) {
	for _, nr := range goldenRecords() {
		r := nr.rec
		line := SIFTR().AppendRecord(nil, &r)
		js := JSONL().AppendRecord(nil, &r)
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("%s: invalid JSON %q: %v", nr.name, js, err)
		}
		fields := siftrFields(t, string(line))
		for i, k := range siftrJSONKeys {
			if got := fmt.Sprint(m[k]); got != strconv.FormatUint(fields[i], 10) {
				t.Errorf("%s: %s = %s in JSONL, %d in SIFTR", nr.name, k, got, fields[i])
			}
		}
		f := strings.Split(string(line), ",")
		wantDir := map[string]string{"i": "in", "o": "out"}[f[0]]
		if m["direction"] != wantDir || fmt.Sprint(m["time"]) != f[1] || m["local_addr"] != f[2] ||
			fmt.Sprint(m["local_port"]) != f[3] || m["remote_addr"] != f[4] || fmt.Sprint(m["remote_port"]) != f[5] {
			t.Errorf("%s: JSONL %v disagrees with SIFTR %q", nr.name, m, line)
		}
		if m["type"] != "record" {
			t.Errorf("%s: type = %v", nr.name, m["type"])
		}
	}
}

// TestFormatsDoc checks that FORMATS.md documents exactly the JSONL keys.
func TestFormatsDoc(t *testing.T) {
	doc, err := os.ReadFile("FORMATS.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z0-9_]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	seen := map[string]bool{}
	for _, line := range bytes.Split(bytes.TrimSpace(renderAll(JSONL())), []byte("\n")) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("invalid JSON line %q: %v", line, err)
		}
		for k := range m {
			seen[k] = true
			if !documented[k] {
				t.Errorf("JSONL key %q is not documented in FORMATS.md", k)
			}
		}
	}
	for k := range documented {
		if !seen[k] && !strings.HasPrefix(k, "flow_list.") {
			t.Errorf("FORMATS.md documents %q, which no JSONL line has", k)
		}
	}
}

func TestJSONLHeaderFooter(t *testing.T) {
	var h map[string]any
	if err := json.Unmarshal(JSONL().AppendHeader(nil, goldenHeader()), &h); err != nil {
		t.Fatal(err)
	}
	if h["type"] != "enable" || h["sysname"] != "Linux" || h["siftrver"] != "1.3.0" || h["sysver"] != 397868.0 || h["enable_time_usecs"] != 5.0 {
		t.Errorf("enable object: %v", h)
	}
	var f struct {
		Type     string `json:"type"`
		Total    uint64 `json:"total_tcp_pkts"`
		Skipped  uint64 `json:"total_skipped_tcp_pkts"`
		FlowList []struct {
			LocalAddr  string `json:"local_addr"`
			LocalPort  uint16 `json:"local_port"`
			RemoteAddr string `json:"remote_addr"`
			RemotePort uint16 `json:"remote_port"`
		} `json:"flow_list"`
	}
	if err := json.Unmarshal(AppendFooter(JSONL(), nil, goldenFooter()), &f); err != nil {
		t.Fatal(err)
	}
	if f.Type != "disable" || f.Total != 3000 || f.Skipped != 21 || len(f.FlowList) != 3 ||
		f.FlowList[2].LocalAddr != "192.168.1.1" || f.FlowList[1].RemotePort != 5201 {
		t.Errorf("disable object: %+v", f)
	}
}

func TestJSONEscapesCong(t *testing.T) {
	r := baseRecord()
	copy(r.Snap.Cong[:], "a\"b\\c\x01\xff")
	var m map[string]any
	if err := json.Unmarshal(JSONL().AppendRecord(nil, &r), &m); err != nil {
		t.Fatal(err)
	}
	if m["cong"] != "a\"b\\c\x01\u00ff" {
		t.Errorf("cong = %q", m["cong"])
	}
}

func TestFreeBSDState(t *testing.T) {
	tests := []struct {
		linux uint8
		want  uint8
	}{
		{tcp.StateEstablished, 4}, {tcp.StateSynSent, 2}, {tcp.StateSynRecv, 3},
		{tcp.StateFinWait1, 6}, {tcp.StateFinWait2, 9}, {tcp.StateTimeWait, 10},
		{tcp.StateClose, 0}, {tcp.StateCloseWait, 5}, {tcp.StateLastAck, 8},
		{tcp.StateListen, 1}, {tcp.StateClosing, 7}, {tcp.StateNewSynRecv, 3},
		{0, 0}, {13, 0}, {255, 0},
	}
	for _, tt := range tests {
		if got := FreeBSDState(tt.linux); got != tt.want {
			t.Errorf("FreeBSDState(%d %s) = %d, want %d", tt.linux, LinuxStateName(tt.linux), got, tt.want)
		}
	}
}

func TestTFlags(t *testing.T) {
	tests := []struct {
		name    string
		options uint8
		ca      uint8
		state   uint8
		want    uint32
	}{
		{"none", 0, tcp.CAOpen, tcp.StateEstablished, 0},
		{"sack", tcp.OptSACK, tcp.CAOpen, tcp.StateEstablished, 0x200},
		{"wscale", tcp.OptWScale, tcp.CAOpen, tcp.StateEstablished, 0x60},
		{"timestamps", tcp.OptTimestamps, tcp.CAOpen, tcp.StateEstablished, 0x180},
		{"all options", tcp.OptSACK | tcp.OptWScale | tcp.OptTimestamps | tcp.OptECN, tcp.CAOpen, tcp.StateEstablished, 0x3e0},
		{"recovery", 0, tcp.CARecovery, tcp.StateEstablished, 0x20100000},
		{"cwr", 0, tcp.CACWR, tcp.StateEstablished, 0x20000000},
		{"disorder", 0, tcp.CADisorder, tcp.StateEstablished, 0},
		{"loss", 0, tcp.CALoss, tcp.StateEstablished, 0},
		{"fin_wait1", 0, tcp.CAOpen, tcp.StateFinWait1, 0x10},
		{"fin_wait2", 0, tcp.CAOpen, tcp.StateFinWait2, 0x10},
		{"closing", 0, tcp.CAOpen, tcp.StateClosing, 0x10},
		{"last_ack", 0, tcp.CAOpen, tcp.StateLastAck, 0x10},
		{"close_wait", 0, tcp.CAOpen, tcp.StateCloseWait, 0},
		{"recovery in last_ack", tcp.OptSACK, tcp.CARecovery, tcp.StateLastAck, 0x20100210},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := correlate.Record{Snap: &tcp.Snapshot{}}
			r.Snap.Info.Options = tt.options
			r.Snap.Info.CAState = tt.ca
			r.Snap.State = tt.state
			if got := TFlags(r.Snap); got != tt.want {
				t.Errorf("TFlags = %#x, want %#x", got, tt.want)
			}
		})
	}
}

func TestDerivedFields(t *testing.T) {
	r := correlate.Record{Snap: &tcp.Snapshot{}}
	r.Snap.Info.SndMSS = 1448
	r.Snap.Info.SndSsthresh = 0x7fffffff
	if got := SndSsthresh(r.Snap); got != 1073725440 {
		t.Errorf("infinite ssthresh = %d", got)
	}
	r.Snap.Info.SndSsthresh = 0x7ffffffe
	if got := SndSsthresh(r.Snap); got != 0xffffffff {
		t.Errorf("saturated ssthresh = %d", got)
	}
	r.Snap.Info.SndSsthresh = 10
	if got := SndSsthresh(r.Snap); got != 14480 {
		t.Errorf("ssthresh = %d", got)
	}
	r.Snap.Info.SndCwnd = 0xffffffff
	if got := SndCwnd(r.Snap); got != 0xffffffff {
		t.Errorf("saturated cwnd = %d", got)
	}
	r.Snap.Info.SndWScale, r.Snap.Info.RcvWScale = 7, 14
	if SndScale(r.Snap) != 0 || RcvScale(r.Snap) != 0 {
		t.Error("scales without OptWScale must be 0")
	}
	r.Snap.Info.Options = tcp.OptWScale
	if SndScale(r.Snap) != 7 || RcvScale(r.Snap) != 14 {
		t.Error("scales with OptWScale")
	}
	r.Snap.WQueue, r.Snap.Info.NotsentBytes = 100, 30
	if Inflight(r.Snap) != 70 {
		t.Errorf("Inflight = %d", Inflight(r.Snap))
	}
	r.Snap.Info.NotsentBytes = 130
	if Inflight(r.Snap) != 0 {
		t.Errorf("Inflight not clamped: %d", Inflight(r.Snap))
	}
	if TFlags2(r.Snap) != 0 {
		t.Error("t_flags2 without ECN")
	}
	r.Snap.Info.Options |= tcp.OptECN
	if TFlags2(r.Snap) != 0x20 {
		t.Error("t_flags2 with ECN")
	}
}

func TestSysVer(t *testing.T) {
	tests := []struct {
		in   string
		want uint32
	}{
		{"6.18.44-fc-v669", 397868},
		{"6.18.44", 397868},
		{"5.4.0-150-generic", 5<<16 + 4<<8},
		{"6.8", 6<<16 + 8<<8},
		{"6", 6 << 16},
		{"", 0},
		{"abc", 0},
		{"4.19.300", 4<<16 + 19<<8 + 255},
		{"6.1000.7", 6<<16 + 255<<8 + 7},
		{"999.999.999", 151<<16 + 255<<8 + 255},
		{"6.18.44+", 397868},
		{"6.18-rc1", 6<<16 + 18<<8},
	}
	for _, tt := range tests {
		got := SysVer(tt.in)
		if got != tt.want {
			t.Errorf("SysVer(%q) = %d, want %d", tt.in, got, tt.want)
		}
		if len(strconv.FormatUint(uint64(got), 10)) > 7 {
			t.Errorf("SysVer(%q) = %d has more than 7 digits", tt.in, got)
		}
	}
}

func TestFormatByName(t *testing.T) {
	for _, name := range []string{"siftr", "jsonl"} {
		if f, err := FormatByName(name); err != nil || f == nil {
			t.Errorf("FormatByName(%q) = %v, %v", name, f, err)
		}
	}
	if _, err := FormatByName("csv"); err == nil || !strings.Contains(err.Error(), "csv") {
		t.Errorf("FormatByName(csv) error = %v", err)
	}
}

func TestTCPFlagsString(t *testing.T) {
	tests := map[uint8]string{
		0: "none", tcp.FlagSYN: "S", tcp.FlagSYN | tcp.FlagACK: "S.",
		tcp.FlagPSH | tcp.FlagACK: "P.", tcp.FlagFIN | tcp.FlagACK: "F.",
		tcp.FlagACK: ".", tcp.FlagRST: "R", 0xff: "FSRP.UEW",
	}
	for in, want := range tests {
		if got := string(AppendTCPFlags(nil, in)); got != want {
			t.Errorf("flags %#x = %q, want %q", in, got, want)
		}
	}
}

func TestSplitTime(t *testing.T) {
	tests := []struct{ ns, sec, usec int64 }{
		{0, 0, 0}, {1999, 0, 1}, {1_000_000_000, 1, 0}, {1_500_000_999, 1, 500000},
		{-1, -1, 999999}, {-1_000_000_000, -1, 0},
	}
	for _, tt := range tests {
		if s, u := splitTime(tt.ns); s != tt.sec || u != tt.usec {
			t.Errorf("splitTime(%d) = %d, %d; want %d, %d", tt.ns, s, u, tt.sec, tt.usec)
		}
	}
}

func TestAppendAllocs(t *testing.T) {
	recs := goldenRecords()
	buf := make([]byte, 0, 64<<10)
	for _, f := range []Format{SIFTR(), JSONL()} {
		n := testing.AllocsPerRun(100, func() {
			b := buf[:0]
			for i := range recs {
				b = f.AppendRecord(b, &recs[i].rec)
			}
		})
		if n != 0 {
			t.Errorf("%T.AppendRecord allocates %v times per run", f, n)
		}
	}
}

// benchAppend formats the record next returns for its n-th call, over and over.
func benchAppend(b *testing.B, f Format, next func(n int) *correlate.Record) {
	buf := make([]byte, 0, 1<<20)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if len(buf) > 1<<20-4096 {
			buf = buf[:0]
		}
		buf = f.AppendRecord(buf, next(n))
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

// goldenCycle returns the golden records in turn: IPv4 out, IPv4 in, IPv6,
// each with a snapshot of its own.
func goldenCycle() func(n int) *correlate.Record {
	recs := goldenRecords()
	return func(n int) *correlate.Record { return &recs[n%3].rec }
}

func BenchmarkAppendSIFTR(b *testing.B) { benchAppend(b, SIFTR(), goldenCycle()) }
func BenchmarkAppendJSONL(b *testing.B) { benchAppend(b, JSONL(), goldenCycle()) }

// BenchmarkAppendSIFTRSharedSnapshot formats records that share one
// snapshot, as the packets one lookup served do at high packet rates: only
// the packet's fields (direction, time, addresses, ports) are formatted.
func BenchmarkAppendSIFTRSharedSnapshot(b *testing.B) {
	r := goldenRecords()[0].rec
	benchAppend(b, SIFTR(), func(int) *correlate.Record {
		r.Pkt.Time += 1000
		return &r
	})
}

func TestAppendUint(t *testing.T) {
	vals := []uint64{0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 65535, 1<<32 - 1, 1 << 32, 1e19 - 1, 1e19, 1<<64 - 1}
	for i := range 64 {
		vals = append(vals, 1<<i, 1<<i-1, 1<<i+1)
	}
	for i := range 20 {
		vals = append(vals, pow10[i], pow10[i]-1, pow10[i]+1)
	}
	for _, v := range vals {
		for _, prefix := range [][]byte{nil, []byte("ab"), make([]byte, 3, 4)} {
			want := strconv.AppendUint(slices.Clone(prefix), v, 10)
			if got := appendUint(slices.Clone(prefix), v); !bytes.Equal(got, want) {
				t.Errorf("appendUint(%q, %d) = %q, want %q", prefix, v, got, want)
			}
		}
	}
	for _, v := range []int64{0, -1, 1, -1234567, math.MinInt64, math.MaxInt64} {
		if got, want := string(appendInt(nil, v)), strconv.FormatInt(v, 10); got != want {
			t.Errorf("appendInt(%d) = %q, want %q", v, got, want)
		}
	}
}

// TestSIFTRStateCache checks that reusing the formatted state of the last
// snapshot never prints a stale one: one Format over a sequence of records
// that alternate, repeat and change snapshots prints what a fresh Format
// prints for each record alone.
func TestSIFTRStateCache(t *testing.T) {
	var seq []correlate.Record
	for _, nr := range goldenRecords() {
		seq = append(seq, nr.rec, nr.rec) // the same snapshot twice in a row
	}
	a, b := baseRecord(), baseRecord()
	b.Snap.Info.SndCwnd++ // one field differs
	c := a
	c.Pkt.Time += 1000 // same snapshot, another packet
	seq = append(seq, a, b, a, c, b)
	cached := SIFTR()
	for i := range seq {
		got := string(cached.AppendRecord(nil, &seq[i]))
		want := string(SIFTR().AppendRecord(nil, &seq[i]))
		if got != want {
			t.Fatalf("record %d: cached format printed\n%s\nwant\n%s", i, got, want)
		}
	}
}
