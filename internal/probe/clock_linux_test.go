//go:build linux

package probe

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/syncbuf"
)

// TestIntegrationClockStep sets the host's wall clock (to the time it
// reads: a step of microseconds) while a transfer is logged, in both state
// sources: the run says so on stderr with its time, counts it in the
// summary, and its log and counts are whole.
func TestIntegrationClockStep(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 20e6})
	labtest.HoldClock(t)
	for _, state := range []string{"diag", "exact"} {
		t.Run(state, func(t *testing.T) {
			var ln net.Listener
			if err := lab.B.Do(func() (err error) { ln, err = net.Listen("tcp4", lab.B.Addr4.String()+":0"); return err }); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
			port := uint16(ln.Addr().(*net.TCPAddr).Port)
			logPath := filepath.Join(t.TempDir(), "clock.log")
			var stderr syncbuf.Buffer
			stop := startRun(t, Config{
				Iface: lab.B.Iface, NetNS: lab.B.NetNS, Port: port, LogFile: logPath, State: state, Stderr: &stderr,
			})

			var c net.Conn
			if err := lab.A.Do(func() (err error) {
				c, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16<<10)
			stepped := false
			for end := time.Now().Add(time.Second); time.Now().Before(end); {
				if _, err := c.Write(buf); err != nil {
					t.Fatal(err)
				}
				if !stepped && time.Until(end) < 500*time.Millisecond {
					stepped = true
					var ts unix.Timespec
					if err := unix.ClockGettime(unix.CLOCK_REALTIME, &ts); err != nil {
						t.Fatal(err)
					}
					if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
						t.Fatalf("set the wall clock: %v", err)
					}
				}
			}
			c.Close()
			time.Sleep(200 * time.Millisecond)
			sum := stop()
			if sum.ClockSteps.Steps != 1 {
				t.Errorf("%d clock steps in the summary, want 1", sum.ClockSteps.Steps)
			}
			var printed strings.Builder
			sum.Print(&printed)
			if !strings.Contains(printed.String(), "the wall clock stepped once during the run") {
				t.Errorf("the summary does not say the clock stepped:\n%s", printed.String())
			}
			if !strings.Contains(stderr.String(), "the wall clock stepped") {
				t.Errorf("stderr does not say the clock stepped:\n%s", stderr.String())
			}
			l := parseLog(t, logPath)
			cn := sum.Counts
			pkts, skipped := cn.Totals()
			if lines := uint64(len(l.Lines)); lines < 100 || pkts != lines+cn.SampledOut[0]+cn.SampledOut[1]+skipped {
				t.Errorf("identity: %d packets, %d lines, %d sampled out, %d skipped (want 100 lines or more)", pkts, lines, cn.SampledOut[0]+cn.SampledOut[1], skipped)
			}
			if sum.Engine.FlowsPruned > 1 {
				t.Errorf("%d flows pruned, want the transfer's one at most", sum.Engine.FlowsPruned)
			}
		})
	}
}
