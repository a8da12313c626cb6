package metrics

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/siftr-probe/siftr-probe/capture"
	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/diag"
	"github.com/siftr-probe/siftr-probe/exact"
	"github.com/siftr-probe/siftr-probe/internal/buildinfo"
	"github.com/siftr-probe/siftr-probe/internal/clockstep"
	"github.com/siftr-probe/siftr-probe/internal/hist"
	"github.com/siftr-probe/siftr-probe/output"
)

var update = flag.Bool("update", false, "rewrite testdata/metrics.golden")

var testInfo = buildinfo.Info{Version: "v1.2.3", GoVersion: "go1.26.0", Revision: "0123456789ab"}

// fakeStats has a distinct value in every field, so that a metric reading
// the wrong field shows in the golden file.
func fakeStats() Stats {
	var h hist.Histogram
	for _, v := range []int64{
		0, 50e3, // <= 100µs
		99e3,         // in a hist bucket that straddles 100µs: <= 250µs
		150e3,        // <= 250µs
		900e3, 1.2e6, // <= 1ms, <= 2.5ms
		3e6, 3e6, 3e6, // <= 5ms
		40e6,  // <= 50ms
		700e6, // <= 1s
		20e9,  // above 10s: +Inf only
	} {
		h.Record(v)
	}
	return Stats{
		Enabled:    true,
		PPL:        10,
		Port:       5201,
		Cycle:      3,
		CycleStart: time.Unix(1795629936, 586330000),
		Counts: correlate.Counts{
			Packets:    [2]uint64{1000, 2000},
			SampledOut: [2]uint64{11, 12},
			SkipMalloc: [2]uint64{21, 22},
			SkipTCPCB:  [2]uint64{31, 32},
			SkipInPCB:  [2]uint64{41, 42},
		},
		Engine: correlate.Stats{
			ActiveFlows:     5,
			UnverifiedFlows: 4,
			FlowsEvicted:    9,
			FlowsCreated:    17,
			FlowsPruned:     12,
			FlowTableFull:   3,
			FlowListDropped: 1,
			SinkRejected:    4,
			CookieReuses:    6,
		},
		Resolve: correlate.ResolveStats{
			Lookups:      2800,
			Batches:      400,
			LookupErrors: 2,
			HandoffFull:  7,
		},
		Capture: capture.Stats{
			Frames:            3050,
			Packets:           [2]uint64{1000, 2000},
			NotLocal:          8,
			Truncated:         9,
			Malformed:         10,
			Filtered:          23,
			KernelPackets:     3100,
			KernelDrops:       50,
			KernelFreezes:     2,
			VLAN:              24,
			KernelStatsErrors: 25,
			DrainLeft:         26,
		},
		Writer: output.WriterStats{
			Records:          2767,
			Bytes:            512000,
			QueueDepth:       3,
			QueueCap:         1024,
			QueueRecords:     150,
			Held:             80,
			Rejected:         4,
			Forced:           13,
			Late:             14,
			WriteErrors:      1,
			LostToWriteError: 64,
			LogUnlinked:      1,
			Pcap:             output.PcapStats{Packets: 30, Stated: 18, Bytes: 4096, Dropped: 2, WriteErrors: 1, Lost: 3},
			Staleness:        h.Snapshot(),
		},
		Exact: exact.Stats{
			Attach: "tcx", Records: 900, RingFull: [2]uint64{3, 4}, NotLocal: [2]uint64{5, 6}, Malformed: [2]uint64{7, 8},
			Lost: 9, Confirmed: 400, Unconfirmed: 10, StrayConfirms: 11, ConfirmsLost: 12, RunNanos: 1500000000, RunCount: 7000,
		},
		Diag: diag.Stats{
			Lookups:         2790,
			Batches:         410,
			Found:           2700,
			NotEstablished:  60,
			NoSocket:        30,
			ListenerReplies: 5,
			Errors:          15,
			Overruns:        16,
			Resent:          18,
		},
		NetNS: []NetNSStats{
			{Origin: correlate.Origin{NetNS: 4026532000, NetNSName: "cni-1", PodNamespace: "default", PodName: "web-0"}, Iface: "eth0",
				Counts: correlate.Counts{Packets: [2]uint64{600, 700}, SampledOut: [2]uint64{1, 2}, SkipTCPCB: [2]uint64{3, 4}}},
			{Origin: correlate.Origin{NetNS: 4026532001}, Iface: "eth1", Counts: correlate.Counts{Packets: [2]uint64{50, 60}}},
			{Origin: correlate.Origin{NetNS: 4026532002, NetNSName: "gone"}, Iface: "eth0", Ended: true,
				Counts: correlate.Counts{Packets: [2]uint64{5, 6}}},
		},
		NetNSBeyondMax: 2,
		Pods:           &PodStats{Known: 31, Synced: true, Lists: 1, Watches: 3, Errors: 2},
		ClockSteps:     clockstep.Stats{Steps: 37, Last: -2 * time.Second},
	}
}

func gatherText(t *testing.T, g prometheus.Gatherer, keep func(name string) bool) []byte {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if !keep(mf.GetName()) {
			continue
		}
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func isSiftr(name string) bool { return strings.HasPrefix(name, "siftr_") }

// TestGolden checks the exposition text of fixed stats against
// testdata/metrics.golden (go test -run TestGolden -update rewrites it).
func TestGolden(t *testing.T) {
	reg := NewRegistry(NewCollector(fakeStats, testInfo))
	got := gatherText(t, reg, isSiftr)
	path := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("exposition differs from %s (-want +got); rerun with -update if intended:\n%s", path, diff)
	}
	// The same through testutil, which parses the golden text.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.CollectAndCompare(NewCollector(fakeStats, testInfo), f); err != nil {
		t.Error(err)
	}
}

// TestNamesAndHelp checks that every metric but the Go runtime's and the
// process's is named siftr_*, has HELP text and passes the linter.
func TestNamesAndHelp(t *testing.T) {
	c := NewCollector(fakeStats, testInfo)
	mfs, err := NewRegistry(c).Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		name := mf.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		n++
		if !isSiftr(name) {
			t.Errorf("metric %s is not named siftr_*", name)
		}
		if strings.TrimSpace(mf.GetHelp()) == "" {
			t.Errorf("metric %s has no HELP text", name)
		}
	}
	if want := len(c.descs()); n != want {
		t.Errorf("%d siftr metric families gathered, want one per Desc (%d)", n, want)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// The Go and process collectors are on the private registry.
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		found := false
		for _, mf := range mfs {
			found = found || mf.GetName() == want
		}
		if !found {
			t.Errorf("%s not gathered", want)
		}
	}
}

func TestHistogram(t *testing.T) {
	le := []float64{0.001, 0.01, 1}
	for _, tc := range []struct {
		name    string
		values  []int64 // ns
		count   uint64
		sum     float64
		buckets map[float64]uint64
	}{
		{"empty", nil, 0, 0, map[float64]uint64{0.001: 0, 0.01: 0, 1: 0}},
		// 1ms and 10ms share their hist buckets with values just above
		// them: they are counted in the next bound, never below a value.
		{"on the bounds", []int64{0, 1e6, 10e6}, 3, 0.011, map[float64]uint64{0.001: 1, 0.01: 2, 1: 3}},
		{"above every bound", []int64{2e9, 500e9}, 2, 502, map[float64]uint64{0.001: 0, 0.01: 0, 1: 0}},
		// 999µs and 1.01ms are in the same hist bucket, which straddles 1ms.
		{"straddling", []int64{1.01e6, 999_000}, 2, 0.002009, map[float64]uint64{0.001: 0, 0.01: 2, 1: 2}},
		{"spread", []int64{5e5, 5e6, 5e8, 5e10}, 4, 50.5055, map[float64]uint64{0.001: 1, 0.01: 2, 1: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h hist.Histogram
			for _, v := range tc.values {
				h.Record(v)
			}
			s := h.Snapshot()
			count, sum, buckets := Histogram(&s, le)
			if count != tc.count || math.Abs(sum-tc.sum) > 1e-9 {
				t.Errorf("count %d sum %g, want %d %g", count, sum, tc.count, tc.sum)
			}
			if diff := cmp.Diff(tc.buckets, buckets); diff != "" {
				t.Errorf("buckets (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHistogramNeverOvercounts checks the bound contract for many values:
// a cumulative bucket never counts a value above its bound, and counts
// every value at most 1/16 below it.
func TestHistogramNeverOvercounts(t *testing.T) {
	for v := int64(1); v < 20e9; v = v*17/16 + 1 {
		var h hist.Histogram
		h.Record(v)
		s := h.Snapshot()
		_, _, buckets := Histogram(&s, StalenessBuckets)
		for _, le := range StalenessBuckets {
			bound := le * 1e9
			switch n := buckets[le]; {
			case n == 1 && float64(v) > bound:
				t.Fatalf("%dns counted in le=%g", v, le)
			case n == 0 && float64(v) <= bound*15/16:
				t.Fatalf("%dns not counted in le=%g", v, le)
			}
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	healthErr := make(chan error, 1)
	healthErr <- nil
	health := func() error {
		err := <-healthErr
		healthErr <- err
		return err
	}
	s := Serve(ln, &Config{Read: fakeStats, Health: health, Info: testInfo})
	base := "http://" + s.Addr().String()

	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, want := range []string{
		`siftr_packets_total{direction="out"} 2000`,
		`siftr_build_info{goversion="go1.26.0",revision="0123456789ab",version="v1.2.3"} 1`,
		"go_goroutines ",
		"process_cpu_seconds_total ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q, want 200 ok", code, body)
	}
	<-healthErr
	healthErr <- errors.New("stopping")
	if code, body := get(t, base+"/healthz"); code != http.StatusServiceUnavailable || body != "stopping\n" {
		t.Errorf("/healthz when unhealthy: %d %q, want 503 stopping", code, body)
	}
	if code, _ := get(t, base+"/nosuch"); code != http.StatusNotFound {
		t.Errorf("/nosuch: %d, want 404", code)
	}
	resp, err := http.Post(base+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d, want 405", resp.StatusCode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still serving after Close")
	}
}

// TestServerNilHealth: without a Health function /healthz is always ok.
func TestServerNilHealth(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(ln, &Config{Read: func() Stats { return Stats{} }})
	defer s.Close(context.Background())
	if code, body := get(t, "http://"+s.Addr().String()+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, "http://"+s.Addr().String()+"/metrics"); code != http.StatusOK || !strings.Contains(body, "siftr_records_total 0") {
		t.Errorf("/metrics of zero stats: %d %q", code, body)
	}
}
