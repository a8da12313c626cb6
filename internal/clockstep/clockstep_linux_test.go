package clockstep

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
)

// stepBy steps the wall clock by d relative to itself (adjtimex
// ADJ_SETOFFSET): a pair of opposite steps leaves it where it was.
func stepBy(t *testing.T, d time.Duration) {
	t.Helper()
	tx := unix.Timex{Modes: unix.ADJ_SETOFFSET | unix.ADJ_NANO}
	sec, nsec := int64(d/time.Second), int64(d%time.Second)
	if nsec < 0 { // the kernel wants 0 <= nsec < 1e9
		sec, nsec = sec-1, nsec+int64(time.Second)
	}
	tx.Time = unix.Timeval{Sec: sec, Usec: nsec}
	if _, err := unix.ClockAdjtime(unix.CLOCK_REALTIME, &tx); err != nil {
		t.Fatalf("step the wall clock by %v: %v", d, err)
	}
}

// TestWatchSteps steps the host's wall clock forward and back by 2 ms (net
// change none) and checks that both steps are noticed with their sizes,
// and that a clock left alone makes none. The steps are small so that a
// probe tested beside it meanwhile sees a skew its writer's delay (5 ms)
// absorbs.
func TestWatchSteps(t *testing.T) {
	labtest.RequireRoot(t)
	steps := make(chan Step, 4)
	w, err := Watch(func(s Step) { steps <- s })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	time.Sleep(50 * time.Millisecond)
	if s := w.Stats(); s.Steps != 0 {
		t.Fatalf("%d steps noticed with the clock left alone", s.Steps)
	}
	for _, d := range []time.Duration{2 * time.Millisecond, -2 * time.Millisecond} {
		stepBy(t, d)
		select {
		case s := <-steps:
			if diff := s.By - d; diff < -500*time.Microsecond || diff > 500*time.Microsecond {
				t.Errorf("a step of %v measured as %v", d, s.By)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("a step of %v was not noticed", d)
		}
	}
	if s := w.Stats(); s.Steps != 2 || s.Last > -1500*time.Microsecond || s.Last < -2500*time.Microsecond {
		t.Errorf("stats %+v, want 2 steps, the last about -2ms", s)
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
