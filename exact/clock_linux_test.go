//go:build linux

package exact

import (
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
)

// TestIntegrationClockStep steps the wall clock forward by 2 ms while the
// source runs, then makes a connection: its records must carry times in
// the clock's new frame, not 2 ms early. The programs stamp records with
// CLOCK_MONOTONIC, so this holds only if the reader follows the step
// (before followClock it followed once a second and these records were
// early). The clock is stepped back at the end: other tests see 2 ms.
func TestIntegrationClockStep(t *testing.T) {
	const step = 2 * time.Millisecond
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	labtest.HoldClock(t)
	listen(t, &lab.B, "10.77.0.2:5201")
	run := start(t, open(t, &lab.A, Config{Port: 5201}))
	time.Sleep(50 * time.Millisecond) // the reader polls with the offset it started with

	labtest.StepClock(t, step)
	stepped := true
	defer func() {
		if stepped {
			labtest.StepClock(t, -step)
		}
	}()
	time.Sleep(20 * time.Millisecond) // several polls
	before := time.Now().UnixNano()
	send(t, &lab.A, "10.77.0.2:5201", 64<<10)
	recs, c := run.finish(t)
	labtest.StepClock(t, -step)
	stepped = false

	checkIdentity(t, recs, c)
	if len(recs) < 10 {
		t.Fatalf("%d records, want a transfer's", len(recs))
	}
	slack := int64(200 * time.Microsecond)
	early := 0
	for _, r := range recs {
		if r.Pkt.Time < before-slack {
			early++
		}
	}
	if early > 0 {
		t.Errorf("%d of %d records are stamped before the connection began (by up to the %v step): the reader did not follow the clock",
			early, len(recs), step)
	}
}
