//go:build linux

package probe

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/ctl"
	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
)

// TestIntegrationControl drives a pipeline through its control methods on
// lo: settings made while disabled apply at the next enable, each cycle is
// a section of the log, a log path that cannot be used changes nothing,
// and no change is taken once the run ends.
func TestIntegrationControl(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{})
	dir := t.TempDir()
	first, second := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	p, err := New(Config{
		Iface: "lo", NetNS: lab.A.NetNS, Port: 5201, LogFile: first,
		Control: filepath.Join(dir, "ctl"), StartDisabled: true, Stderr: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.ControlPath() != filepath.Join(dir, "ctl") {
		t.Errorf("ControlPath() = %q", p.ControlPath())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var sum *Summary
	go func() {
		var err error
		sum, err = p.Run(ctx)
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); p.Status().Started.IsZero(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Run did not start")
		}
	}
	if s := p.Status(); s.Enabled || s.Cycle != 0 || s.PPL != 1 || s.Port != 5201 || s.Counts != nil {
		t.Errorf("started disabled: %+v", s)
	}
	if b, err := os.ReadFile(first); err != nil || len(b) != 0 {
		t.Errorf("the log after a disabled start: %q, %v; want it made (checked) and empty", b, err)
	}
	if p.CycleSummary() != nil {
		t.Error("a summary before any cycle")
	}
	// Settings while disabled: for the next enable.
	if ch, err := p.SetPPL(3); err != nil || ch.Before != nil || ch.Old != "1" || ch.New != "3" {
		t.Errorf("SetPPL while disabled: %+v %v", ch, err)
	}
	if _, err := p.SetPort(0); err != nil {
		t.Fatal(err)
	}
	if _, err := p.SetLogFile(filepath.Join(dir, "no", "such.log")); err == nil || !strings.Contains(err.Error(), "its directory does not exist") {
		t.Errorf("SetLogFile to a missing directory: %v", err)
	}
	if _, err := p.SetPPL(0); err == nil {
		t.Error("SetPPL(0) succeeded")
	}
	for range 2 {
		if began, err := p.Enable(); !began || err != nil {
			t.Fatalf("Enable: %v %v", began, err)
		}
		if began, err := p.Enable(); began || err != nil {
			t.Errorf("second Enable: %v %v", began, err)
		}
		if s := p.Status(); !s.Enabled || s.PPL != 3 || s.Port != 0 || s.Counts == nil {
			t.Errorf("enabled: %+v", s)
		}
		s, err := p.Disable()
		if err != nil || s == nil || s.PPL != 3 {
			t.Fatalf("Disable: %+v %v", s, err)
		}
	}
	if s, err := p.Disable(); s != nil || err != nil {
		t.Errorf("Disable while disabled: %+v %v", s, err)
	}
	if _, err := p.SetLogFile(second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(second); err != nil {
		t.Errorf("SetLogFile while disabled did not check the file: %v", err)
	}
	if _, err := p.Enable(); err != nil {
		t.Fatal(err)
	}
	if st := p.Status(); st.Cycle != 3 || st.LogFile != second {
		t.Errorf("third cycle: %+v", st)
	}
	r := p.handle(&ctl.Request{Cmd: ctl.CmdSet, Name: ctl.SetPort, Value: "70000"})
	if r.Error == "" || r.Exit != ctl.ExitUsage {
		t.Errorf("set port 70000: %+v", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if sum == nil || sum.Cycle != 3 || sum.LogFile != second {
		t.Errorf("the run's summary: %+v, want the third cycle's", sum)
	}
	if _, err := p.Enable(); !errors.Is(err, ErrStopping) {
		t.Errorf("Enable after the run: %v, want ErrStopping", err)
	}
	for path, want := range map[string]int{first: 2, second: 1} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		l, err := siftrlog.Parse(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(l.Enable) != want || len(l.Disable) != want {
			t.Errorf("%s: %d enable and %d disable lines, want %d of each", path, len(l.Enable), len(l.Disable), want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "ctl")); !os.IsNotExist(err) {
		t.Errorf("the control socket is still there: %v", err)
	}
}
