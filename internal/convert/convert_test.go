package convert

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/logtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/output"
)

var start = time.Unix(1700000000, 0)

func writeLog(t *testing.T, dir, name string, f output.Format, n int) string {
	t.Helper()
	flows := logtest.Flows(3)
	var recs []*correlate.Record
	logtest.Synthetic(flows, n, start, func(r *correlate.Record) { recs = append(recs, r) })
	var buf bytes.Buffer
	if err := logtest.Write(&buf, f, start, recs, flows, [2]uint64{1, 1}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	os.WriteFile(p, buf.Bytes(), 0o644)
	return p
}

// readParquet returns the file's column names, rows (as the Go values of
// each column, nil for null) and key-value metadata.
func readParquet(t *testing.T, path string) ([]string, [][]any, map[string]string) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	st, _ := fh.Stat()
	pf, err := parquet.OpenFile(fh, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var kinds []parquet.Node
	for _, f := range pf.Schema().Fields() {
		names = append(names, f.Name())
		kinds = append(kinds, f)
	}
	meta := map[string]string{}
	for _, kv := range pf.Metadata().KeyValueMetadata {
		meta[kv.Key] = kv.Value
	}
	rd := parquet.NewReader(pf)
	defer rd.Close()
	var rows [][]any
	buf := make([]parquet.Row, 100)
	for {
		n, err := rd.ReadRows(buf)
		for _, r := range buf[:n] {
			vals := make([]any, len(names))
			for _, v := range r {
				c := v.Column()
				if v.IsNull() {
					continue
				}
				typ := kinds[c].Type()
				switch {
				case typ.Kind() == parquet.ByteArray:
					vals[c] = string(v.ByteArray())
				case typ.Kind() == parquet.Double:
					vals[c] = v.Double()
				case isUnsigned(typ):
					if typ.Kind() == parquet.Int32 {
						vals[c] = uint64(uint32(v.Int32()))
					} else {
						vals[c] = uint64(v.Int64())
					}
				case typ.Kind() == parquet.Int64:
					vals[c] = v.Int64()
				default:
					vals[c] = v.String()
				}
			}
			rows = append(rows, vals)
		}
		if err != nil {
			break
		}
	}
	return names, rows, meta
}

func isUnsigned(typ parquet.Type) bool {
	lt := typ.LogicalType()
	if lt == nil {
		return false
	}
	it, ok := lt.Value.(*format.IntType)
	return ok && !it.IsSigned
}

// TestParquetJSON converts JSON lines and compares every value of every
// row with the log's line, decoded by encoding/json.
func TestParquetJSON(t *testing.T) {
	dir := t.TempDir()
	in := writeLog(t, dir, "a.jsonl", output.JSONL(), 2500)
	out := filepath.Join(dir, "a.parquet")
	res, err := Convert(Config{Paths: []string{in}, To: "parquet", Out: out, RowGroupRows: 700})
	if err != nil {
		t.Fatal(err)
	}
	names, rows, meta := readParquet(t, out)
	if res.Rows != 2500 || len(rows) != 2500 || res.Dropped != 0 {
		t.Fatalf("%d rows written, %d read, %d dropped", res.Rows, len(rows), res.Dropped)
	}
	f, _ := os.Open(in)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	i := 0
	for sc.Scan() {
		d := json.NewDecoder(strings.NewReader(sc.Text()))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		if m["type"] != "record" {
			continue
		}
		if len(m) != len(names)+1 {
			t.Fatalf("line has %d keys, file %d columns", len(m), len(names))
		}
		for c, name := range names {
			want := m[name]
			got := rows[i][c]
			var ok bool
			switch w := want.(type) {
			case string:
				ok = got == w
			case json.Number:
				switch g := got.(type) {
				case float64:
					wf, _ := w.Float64()
					ok = g == wf
				case int64:
					ok = strconv.FormatInt(g, 10) == w.String()
				case uint64:
					ok = strconv.FormatUint(g, 10) == w.String()
				}
			}
			if !ok {
				t.Fatalf("row %d column %s: %v (%T), want %v", i, name, got, got, want)
			}
		}
		i++
	}
	if names[0] != "direction" || names[1] != "time" || names[len(names)-1] != "delivered" {
		t.Errorf("columns not in the log's key order: %v", names)
	}
	var flows []map[string]any
	json.Unmarshal([]byte(meta["siftr.flows"]), &flows)
	var sections []map[string]any
	json.Unmarshal([]byte(meta["siftr.sections"]), &sections)
	if meta["siftr.format"] != "jsonl" || len(flows) != 3 || len(sections) != 1 ||
		sections[0]["enable"].(map[string]any)["sysname"] != "Linux" || sections[0]["rows"].(float64) != 2500 ||
		!strings.Contains(sections[0]["disable"].(map[string]any)["flow_list"].(string), "10.9.0.1;5201,") {
		t.Errorf("metadata %v", meta)
	}
}

// TestParquetText converts a text log and a JSON log together: the text
// rows have the 27 SIFTR columns under the JSON names and nulls elsewhere.
func TestParquetText(t *testing.T) {
	dir := t.TempDir()
	txt := writeLog(t, dir, "a.log", output.SIFTR(), 1500)
	js := writeLog(t, dir, "b.jsonl", output.JSONL(), 10)
	out := filepath.Join(dir, "a.parquet")
	if _, err := Convert(Config{Paths: []string{txt, js}, To: "parquet", Out: out, RowGroupRows: 500}); err != nil {
		t.Fatal(err)
	}
	names, rows, meta := readParquet(t, out)
	f, _ := os.Open(txt)
	l, err := siftrlog.Parse(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(l.Lines)+10 {
		t.Fatalf("%d rows, want %d", len(rows), len(l.Lines)+10)
	}
	col := map[string]int{}
	for i, n := range names {
		col[n] = i
	}
	for i, ln := range l.Lines {
		r := rows[i]
		dir := map[byte]string{'i': "in", 'o': "out"}[ln.Dir]
		if r[col["direction"]] != dir || r[col["time"]] != float64(ln.TimeUS)/1e6 ||
			r[col["local_addr"]] != ln.Local.Addr().String() || r[col["remote_port"]] != uint64(ln.Remote.Port()) {
			t.Fatalf("row %d: %v, want %+v", i, r, ln)
		}
		for k := siftrlog.FSsthresh; k < siftrlog.NumFields; k++ {
			if r[col[siftrlog.JSONKeyOf(k)]] != ln.Num[k] {
				t.Fatalf("row %d %s: %v, want %d", i, siftrlog.JSONKeyOf(k), r[col[siftrlog.JSONKeyOf(k)]], ln.Num[k])
			}
		}
		if r[col["cong"]] != nil || r[col["time_ns"]] != nil {
			t.Fatalf("row %d: JSON-only columns not null: %v %v", i, r[col["cong"]], r[col["time_ns"]])
		}
	}
	if last := rows[len(rows)-1]; last[col["cong"]] == nil {
		t.Errorf("JSON row without cong")
	}
	if meta["siftr.format"] != "siftr,jsonl" || !strings.Contains(meta["siftr.sources"], `"rows":1500`) {
		t.Errorf("metadata %v", meta)
	}
}

func TestCSV(t *testing.T) {
	dir := t.TempDir()
	txt := writeLog(t, dir, "a.log", output.SIFTR(), 300)
	var out bytes.Buffer
	if _, err := Convert(Config{Paths: []string{"-"}, Stdin: mustOpen(t, txt), To: "csv", Out: "-", Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&out).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(txt)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	data := lines[1 : len(lines)-1]
	if len(recs) != len(data)+1 || strings.Join(recs[0], ",") != "direction,time,local_addr,local_port,remote_addr,remote_port,snd_ssthresh,snd_cwnd,t_flags2,snd_wnd,rcv_wnd,snd_scale,rcv_scale,conn_state,mss,srtt_us,sack_enabled,t_flags,rto_us,snd_buf_hiwater,snd_buf_cc,rcv_buf_hiwater,rcv_buf_cc,inflight_bytes,t_segqlen,flowid,flowtype" {
		t.Fatalf("%d rows, header %v", len(recs), recs[0])
	}
	for i, l := range data {
		want := strings.Join(recs[i+1][1:], ",")
		if !strings.HasSuffix(l, want) || recs[i+1][0] != map[byte]string{'i': "in", 'o': "out"}[l[0]] {
			t.Fatalf("row %d: %v, line %q", i, recs[i+1], l)
		}
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.log")
	os.WriteFile(empty, []byte("enable_time_secs=1\tenable_time_usecs=000000\tsiftrver=1.3.0\tsysname=Linux\tsysver=1\tipmode=4\n"), 0o644)
	out := filepath.Join(dir, "x.parquet")
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Paths: []string{empty}, To: "parquet", Out: out}, "no data line in the input: nothing to convert"},
		{Config{Paths: []string{filepath.Join(dir, "no.log")}, To: "csv", Out: out}, filepath.Join(dir, "no.log") + ": no such file"},
		{Config{Paths: []string{empty}, To: "xlsx", Out: out}, `unknown output format "xlsx" (want parquet or csv)`},
	} {
		_, err := Convert(c.cfg)
		if err == nil || err.Error() != c.want {
			t.Errorf("%v: error %v, want %q", c.cfg.Paths, err, c.want)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*x.parquet*")); len(m) != 0 {
		t.Errorf("left behind: %v", m)
	}
}
