package plot

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/logset"
	"github.com/siftr-probe/siftr-probe/internal/logtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/output"
	"github.com/siftr-probe/siftr-probe/tcp"
)

var start = time.Unix(1700000000, 0)

// writeLog writes n synthetic records of nflows flows; spike, if > 0, is
// the cwnd (segments) of one outbound record of flow 0 in the middle.
func writeLog(t testing.TB, f output.Format, n, nflows int, spike uint32) string {
	t.Helper()
	flows := logtest.Flows(nflows)
	var buf bytes.Buffer
	buf.Write(f.AppendHeader(nil, logtest.Header(start)))
	i := 0
	logtest.Synthetic(flows, n, start, func(r *correlate.Record) {
		if spike > 0 && i == n/2/3*3 && r.Pkt.Dir == tcp.DirOut {
			r.Snap.Info.SndCwnd = spike
		}
		i++
		buf.Write(f.AppendRecord(nil, r))
	})
	p := filepath.Join(t.TempDir(), "a.log")
	os.WriteFile(p, buf.Bytes(), 0o644)
	return p
}

func TestParseFields(t *testing.T) {
	f, err := ParseFields("cwnd, srtt,cwnd")
	if err != nil || len(f) != 2 || f[0].Name != "cwnd" || f[1].Panel != PanelTime {
		t.Errorf("%v %v", f, err)
	}
	if _, err := ParseFields("cwnd,bogus"); err == nil || !strings.Contains(err.Error(), `unknown field "bogus" (known: cwnd, ssthresh`) {
		t.Errorf("error %v", err)
	}
	if _, err := KindOf("x.jpg"); err == nil {
		t.Error("x.jpg accepted")
	}
}

// TestDecimation: beyond MaxPoints a flow is bucketed, the number of
// points stays bounded, and a one-record peak survives.
func TestDecimation(t *testing.T) {
	fields, _ := ParseFields("cwnd,ssthresh")
	for _, c := range []struct {
		n, limit    int
		wantBuckets bool
	}{{3000, 0, false}, {3000, 5000, false}, {200000, 1000, true}} {
		col := &collector{fields: fields, limit: c.limit, vals: make([]float32, 2)}
		flows := logtest.Flows(1)
		f := &logset.Flow{ID: 1}
		var rd *siftrlog.Reader
		var buf bytes.Buffer
		i := 0
		logtest.Synthetic(flows, c.n, start, func(r *correlate.Record) {
			if i == c.n/2 {
				r.Pkt.Dir = tcp.DirOut
				r.Snap.Info.SndCwnd = 100000
			}
			i++
			buf.Write(output.SIFTR().AppendRecord(nil, r))
		})
		rd = siftrlog.NewReader(&buf)
		for rd.Next() == nil {
			col.Record(nil, f, rd.Record())
		}
		s := col.series[0]
		if got := s.BucketUS > 0; got != c.wantBuckets {
			t.Errorf("n %d limit %d: bucketed %v", c.n, c.limit, got)
		}
		var peak float32
		inf := 0
		for d := range 2 {
			pts := s.Points(d)
			if c.limit > 0 && len(pts) > c.limit {
				t.Errorf("n %d limit %d: %d points in direction %d", c.n, c.limit, len(pts), d)
			}
			for j, p := range pts {
				peak = max(peak, p.V[0])
				if math.IsNaN(float64(p.V[1])) {
					inf++
				}
				if j > 0 && p.X < pts[j-1].X {
					t.Fatalf("points out of order at %d", j)
				}
			}
		}
		if peak != 100000*1448 {
			t.Errorf("n %d limit %d: peak %v lost", c.n, c.limit, peak)
		}
		if inf == 0 {
			t.Errorf("n %d: the infinite ssthresh of slow start is not absent", c.n)
		}
		if !c.wantBuckets && s.NumPoints() != c.n {
			t.Errorf("%d points, want every record (%d)", s.NumPoints(), c.n)
		}
	}
}

func TestImages(t *testing.T) {
	in := writeLog(t, output.JSONL(), 30000, 2, 900)
	dir := t.TempDir()
	for _, name := range []string{"a.png", "a.svg"} {
		out := filepath.Join(dir, name)
		res, err := Plot(Config{Paths: []string{in}, Out: out, MaxPoints: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Flows) != 2 || len(res.Decimated()) != 2 || !strings.Contains(res.Decimated()[0], "records drawn as") {
			t.Errorf("%s: %+v %v", name, res.Flows, res.Decimated())
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, ".png") {
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w < 1000 || h < 600 {
				t.Errorf("png %dx%d", w, h)
			}
		} else {
			s := string(b)
			for _, want := range []string{"<svg", "flowid " + itoa(logtest.Flows(1)[0].FlowID()), "cc cubic", "milliseconds (log scale)", "decimated"} {
				if !strings.Contains(s, want) {
					t.Errorf("svg lacks %q", want)
				}
			}
		}
	}
	if _, err := Plot(Config{Paths: []string{in}, Out: filepath.Join(dir, "b.png"), FlowIDs: []uint32{12345}}); err == nil {
		t.Error("no error for a flowid not in the log")
	}
}

func itoa(v uint32) string { b, _ := json.Marshal(v); return string(b) }

// pageData extracts the embedded data of a page.
func pageData(t *testing.T, page string) map[string]any {
	t.Helper()
	m := regexp.MustCompile(`(?s)<script type="application/json" id="siftr-data">(.*?)</script>`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no data in the page")
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(m[1]), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestHTMLData(t *testing.T) {
	in := writeLog(t, output.SIFTR(), 600, 3, 0) // flow 0 has 201 records
	out := filepath.Join(t.TempDir(), "a.html")
	if _, err := Plot(Config{Paths: []string{in}, Out: out, MaxPoints: -1}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	page := string(b)
	if strings.Contains(page, "http://") && !strings.Contains(page, "uPlot") {
		t.Error("page refers to the network")
	}
	for _, bad := range []string{`src="http`, `href="http`, "<link "} {
		if strings.Contains(page, bad) {
			t.Errorf("page loads an outside resource: %q", bad)
		}
	}
	d := pageData(t, page)
	flows := d["flows"].([]any)
	if len(flows) != 3 {
		t.Fatalf("%d flows", len(flows))
	}
	f0 := flows[0].(map[string]any)
	x, dirs, vals := f0["x"].([]any), f0["d"].([]any), f0["v"].([]any)
	if len(x) != 201 || len(dirs) != 201 || len(vals) != 7 || len(vals[0].([]any)) != 201 || f0["bucket_us"].(float64) != 0 {
		t.Errorf("flow 0: %d x, %d d, %d fields", len(x), len(dirs), len(vals))
	}
	if vals[1].([]any)[0] != nil {
		t.Errorf("infinite ssthresh not null: %v", vals[1].([]any)[0])
	}
}

// TestBrowser opens a page in headless Chromium: it loads without console
// errors and draws the series the data holds. Without Chromium it skips,
// except under CI=true, where that is a failure.
func TestBrowser(t *testing.T) {
	in := writeLog(t, output.JSONL(), 60000, 2, 0)
	dir := t.TempDir()
	out := filepath.Join(dir, "a.html")
	fields, _ := ParseFields(DefaultFields)
	if _, err := Plot(Config{Paths: []string{in}, Out: out, MaxPoints: 5000, Fields: fields}); err != nil {
		t.Fatal(err)
	}
	st, console := openInChromium(t, out)
	if len(console) > 0 {
		t.Errorf("console errors: %q", console)
	}
	if len(st.Errors) > 0 {
		t.Errorf("page errors: %q", st.Errors)
	}
	// Per flow: every field in both directions, on two charts.
	if want := 2 * len(fields) * 2; st.Series != want || st.Flows != 2 || st.Charts != 4 || st.DataSeries != itoa(uint32(want)) {
		t.Errorf("page drew %+v, want %d series on 4 charts", st, want)
	}
	if st.Canvases < 4 || st.Decimated != 2 {
		t.Errorf("%d canvases, %d decimation notes", st.Canvases, st.Decimated)
	}
}
