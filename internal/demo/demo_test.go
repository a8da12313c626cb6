package demo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
)

func TestIntegrationDemo(t *testing.T) {
	labtest.RequireRoot(t)
	logfile := filepath.Join(t.TempDir(), "demo.log")
	var out, errw bytes.Buffer
	err := Run(context.Background(), Config{Duration: time.Second, LogFile: logfile, Stdout: &out, Stderr: &errw})
	if err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errw.String())
	}
	f, err := os.Open(logfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := siftrlog.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	var v4, v6 int
	for _, ln := range l.Lines {
		if ln.Local.Addr().Is4() {
			v4++
		} else {
			v6++
		}
	}
	if v4 < 100 || v6 < 100 {
		t.Errorf("%d IPv4 and %d IPv6 lines, want both transfers logged", v4, v6)
	}
	s := out.String()
	for _, p := range []string{PlotPaths(logfile, ".html"), PlotPaths(logfile, ".png")} {
		if st, err := os.Stat(p); err != nil || st.Size() < 10000 {
			t.Errorf("plot %s: %v", p, err)
		}
	}
	for _, want := range []string{"flow (local -> remote)", "10.77.0.1:", "[fd77::1]:", "cwnd min..max", "staleness", "lab removed",
		"plots:   " + PlotPaths(logfile, ".html"), "siftr-probe summary " + logfile} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	// The lab is gone.
	if m, _ := filepath.Glob("/run/netns/siftr-demo-*"); len(m) > 0 {
		t.Errorf("namespaces left behind: %v", m)
	}
}
